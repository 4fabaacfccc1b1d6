"""Adapter for fairchem-core 1.x EquiformerV2 (``HydraModel`` with an ``EquiformerV2Backbone``, or
the monolithic ``EquiformerV2``).

Which models: fairchem-core 1.x (tested with 1.10, torch 2.4) builds EquiformerV2 either as a
``fairchem.core.models.base.HydraModel`` whose ``backbone`` is an ``EquiformerV2Backbone`` (or its
DeNS subclass ``EqV2DeNSBackbone``, the OMat24 models) with an energy head
(``equiformerV2_scalar_head``, ``equiformer_v2_energy_head``, ``eqV2_DeNS_scalar_head``), or as the
older monolithic ``EquiformerV2`` (``equiformer_v2``, energy and force blocks inside). Pass the
model itself (for a checkpoint loaded by ``OCPCalculator``, ``calc.trainer.model``, unwrapped from
any ``DistributedDataParallel`` / ``OCPDataParallel`` with ``.module``).

How it runs: on a *view* of the model, a shallow copy sharing every parameter and buffer (the
model is never modified), in which

* the neighbour list is fairchem's own ``radius_graph_pbc`` (same cutoff, same periodic images,
  same ``max_neighbors`` truncation as the model) but the edge vectors are rebuilt from
  ``graph.positions`` and the cell in the positions' dtype (fairchem adds its periodic offsets in
  float32), so the energy is differentiable in the positions;
* the edge frames and Wigner-D matrices keep their gradient. fairchem 1.x ``detach()``-es both
  (``init_edge_rot_mat`` and ``SO3_Rotation.set_wigner``), so autograd through the bare model
  gives only the distance part of dE/dr, not the forces. The view uses fairchem's own frame
  (value unchanged, bit for bit) and attaches the derivative of a smooth frame with the same edge
  axis; the Wigner matrix of a rotation R is differentiated as D(R) = D(R R0ᵀ R1) D(R1)ᵀ D(R0)
  (R0 = R held fixed, R1 a fixed generic rotation), which avoids the gimbal-lock singularity of
  fairchem's Euler angles (an edge along ±y) and is exact to all orders;
* only the energy is computed (no direct-force head), and the node embedding is recorded.

Forces: EquiformerV2 1.x predicts forces *directly* (a separate attention head, not -dE/dr; no
conservative option exists in 1.x). hip-head's forces are always -dE/dr of the model's energy,
exact thanks to the differentiable frames (checked against finite differences of the unmodified
model). The model's own direct forces are :meth:`EquiformerV2Adapter.direct_forces`.
:meth:`~EquiformerV2Adapter.native_energy_forces` returns the unmodified model's energy and -dE/dr
taken through the model's own graph generation.

Node features: the final (normalised) node embedding [N, (lmax+1)^2, C], coefficients l-major
with m = -l..l. Fitting the matrix that acts on each l block under rotations shows that
fairchem's real spherical-harmonic basis *equals* e3nn's (l = 1 in e3nn's (x, y, z) order, l = 2
identical too; fairchem's Wigner matrices are e3nn 0.4's): the conversion is only the transpose to
e3nn's multiplicity-major layout, ``feats[:, c*(2l+1) + m] = emb[:, l*l + m, c]``, giving
``C x 0e + C x 1o + C x 2e``.

Parity: SO(2) convolutions over edge frames: SO(3)- but not O(3)-equivariant, ``parity = False``.

Exactness: with ``use_gate_act=True`` (gate activations everywhere) the model is equivariant to
~1e-15 in float64. The pretrained models use S2 activations on a finite sphere grid
(``use_gate_act=False``): equivariant only to ~1e-8 relative in float64 (forces of the random
test model), and the energy then also varies at ~1e-12 with the random edge frames fairchem draws
(``torch.rand_like``) in every call.

Empty graphs: fairchem 1.x cannot run a batch without any edge (a lone atom, or atoms all farther
apart than the cutoff); such a batch gets a ghost H2 molecule appended, whose outputs are dropped.

Units: the energy is the model's output as is. fairchem 1.x trainers apply their normalizers
(``target_mean`` / ``target_std``) and element references *outside* the model: for such a
checkpoint the raw output is not in eV until those are applied.

dtype: fairchem 1.x builds some tensors in torch's default dtype; calls run with the default dtype
temporarily set to the positions' dtype (process-wide, restored afterwards).
"""

from __future__ import annotations

import contextlib
import copy
import types
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from hip_head._e3nn import o3
from hip_head.graph import AtomicGraph

from .base import BackboneAdapter, BackboneOutput, class_path_matches, import_backbone, register
from .uma import _Tap  # runs a module and records its output as store["backbone"]

__all__ = ["EquiformerV2Adapter", "make_random_equiformer_v2"]

_PACKAGE = "fairchem.core.models.equiformer_v2"
#: The monolithic model (the module moved to ``equiformer_v2_deprecated`` in fairchem-core 1.1).
MODEL_CLASSES = {
    f"{_PACKAGE}.equiformer_v2_deprecated.EquiformerV2",
    f"{_PACKAGE}.equiformer_v2.EquiformerV2",
}
HYDRA_CLASSES = {"fairchem.core.models.base.HydraModel"}
#: Backbones (subclasses such as the DeNS backbone are matched through the MRO).
BACKBONE_CLASSES = {f"{_PACKAGE}.equiformer_v2.EquiformerV2Backbone"}

#: A fixed rotation far from the Euler-angle singularity (beta = 0, pi) of fairchem's Wigner-D.
_GENERIC_ANGLES = (0.3, 1.2, -0.7)


def _import_fairchem(module: str) -> types.ModuleType:
    """Import ``module`` from fairchem-core 1.x, or raise a :class:`MissingBackboneError`."""
    return import_backbone(module, "fairchem-core 1.x", "eqv2")


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Temporarily make ``dtype`` torch's default (fairchem 1.x allocates some tensors in it)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


# ====================================================================== differentiable frames
def _wigner_blocks(rotation: torch.Tensor, lmax: int) -> list[torch.Tensor]:
    """fairchem's Wigner-D blocks of rotations, differentiable and in their dtype.

    The computation of ``SO3_Rotation.RotationToWignerDMatrix`` (Euler angles in e3nn's
    convention, then e3nn 0.4's ``wigner_D``) without its ``detach()`` and default-dtype buffer.

    Args:
        rotation: [E, 3, 3] rotation matrices (fairchem's edge frames).
        lmax: largest l.

    Returns:
        lmax + 1 tensors [E, 2l+1, 2l+1].
    """
    wigner_d = _import_fairchem(f"{_PACKAGE}.wigner").wigner_D
    axis = rotation @ rotation.new_tensor([0.0, 1.0, 0.0])
    alpha, beta = o3().xyz_to_angles(axis)
    rest = o3().angles_to_matrix(alpha, beta, torch.zeros_like(alpha)).transpose(-1, -2) @ rotation
    gamma = torch.atan2(rest[..., 0, 2], rest[..., 0, 0])
    return [wigner_d(l, alpha, beta, gamma) for l in range(lmax + 1)]


def _block_diagonal(blocks: list[torch.Tensor]) -> torch.Tensor:
    """[E, Σ(2l+1), Σ(2l+1)] block-diagonal matrices from per-l blocks [E, 2l+1, 2l+1]."""
    size = sum(b.shape[-1] for b in blocks)
    first = blocks[0]
    out = first.new_zeros(first.shape[0], size, size)
    start = 0
    for block in blocks:
        end = start + block.shape[-1]
        out[:, start:end, start:end] = block
        start = end
    return out


def _differentiable_wigner(rotation: torch.Tensor, lmax: int) -> torch.Tensor:
    """Wigner-D matrices [E, (lmax+1)^2, (lmax+1)^2] of ``rotation`` with their derivative.

    The value is fairchem's (from the detached rotation R0, bit for bit). The derivative is that
    of D(R) = D(R R0ᵀ R1) D(R1)ᵀ D(R0): R R0ᵀ = I in value, so D is evaluated at the generic R1,
    never at the Euler-angle singularity an edge along ±y would give.
    """
    fixed = rotation.detach()
    value = _block_diagonal(_wigner_blocks(fixed, lmax))
    if not rotation.requires_grad:
        return value
    r1 = o3().angles_to_matrix(*(rotation.new_tensor(a) for a in _GENERIC_ANGLES))
    moving = _wigner_blocks(rotation @ fixed.transpose(1, 2) @ r1, lmax)
    pivot = _wigner_blocks(r1.unsqueeze(0), lmax)
    lifted = _block_diagonal([m @ p.transpose(-1, -2) for m, p in zip(moving, pivot)]) @ value
    return value + (lifted - lifted.detach())


def _set_wigner(self: nn.Module, rot_mat3x3: torch.Tensor) -> None:
    """``SO3_Rotation.set_wigner`` keeping the gradient (bound to the view's copies)."""
    self.device, self.dtype = rot_mat3x3.device, rot_mat3x3.dtype
    self.wigner = _differentiable_wigner(rot_mat3x3, self.lmax)
    self.wigner_inv = torch.transpose(self.wigner, 1, 2).contiguous()


def _edge_frames(data: Any, edge_index: torch.Tensor, edge_vec: torch.Tensor) -> torch.Tensor:
    """fairchem's edge frames [E, 3, 3] (value unchanged) with the derivative of a smooth frame.

    fairchem's ``init_edge_rot_mat`` returns detached rows (z, x, -y) with x = the edge direction
    and z perpendicular to it through a random vector. The derivative attached is that of the
    frame (z', x, -x × z') with z' = z held fixed and re-orthogonalised to the moving edge
    direction: a rotation about the edge axis, to which the model is invariant, does not change
    the energy, so any such smooth frame gives the exact dE/dr.
    """
    if edge_vec.shape[0] == 0:  # fairchem's init_edge_rot_mat fails on an empty edge list
        return edge_vec.new_zeros(0, 3, 3)
    frames = _import_fairchem(f"{_PACKAGE}.edge_rot_mat").init_edge_rot_mat(edge_vec)
    if not edge_vec.requires_grad:
        return frames
    x = edge_vec / edge_vec.norm(dim=-1, keepdim=True)
    z = frames[:, 0]
    z = z - (z * x).sum(-1, keepdim=True) * x
    z = z / z.norm(dim=-1, keepdim=True)
    moving = torch.stack([z, x, -torch.cross(x, z, dim=-1)], dim=1)
    return frames + (moving - moving.detach())


# ====================================================================== views of the model
def _is_rotation(module: nn.Module) -> bool:
    return class_path_matches(module, {f"{_PACKAGE}.so3.SO3_Rotation"})


def _is_equiformer(module: nn.Module) -> bool:
    return class_path_matches(module, BACKBONE_CLASSES | MODEL_CLASSES)


def _view(module: nn.Module, memo: dict[int, nn.Module], settings: dict[str, Any]) -> nn.Module:
    """Shallow copy of ``module`` sharing all parameters, with differentiable edge rotations.

    Every ``SO3_Rotation`` is replaced (once: modules sharing it share the replacement) by a copy
    whose ``set_wigner`` keeps the gradient; every module holding one is copied to point at it.
    The EquiformerV2 module itself gets ``settings`` as instance attributes (frames, graph
    generation, ``regress_forces``) and its final ``norm`` wrapped in a :class:`_Tap`.
    """
    key = id(module)
    if key in memo:
        return memo[key]
    children = {}
    for name, child in module._modules.items():
        if child is not None:
            viewed = _view(child, memo, settings)
            if viewed is not child:
                children[name] = viewed
    special = _is_rotation(module) or _is_equiformer(module)
    if not children and not special:
        memo[key] = module
        return module
    view = copy.copy(module)
    view.__dict__["_modules"] = {**module._modules, **children}
    if _is_rotation(module):
        view.__dict__["set_wigner"] = types.MethodType(_set_wigner, view)
    if _is_equiformer(module):
        for name, value in settings.items():
            if name == "store":
                view.__dict__["_modules"]["norm"] = _Tap(view._modules["norm"], value)
            else:
                view.__dict__[name] = value
    memo[key] = view
    return view


# ====================================================================== neighbour list
def _graph_data(backbone: nn.Module, data: Any, cell: torch.Tensor, pbc: torch.Tensor) -> Any:
    """The model's neighbour list (fairchem's ``radius_graph_pbc``) with exact edge vectors.

    Replaces ``GraphModelMixin.generate_graph`` in the view: the same edges (cutoff, periodic
    images, ``max_neighbors`` truncation) as the model's own search, but the vectors
    r_source + shift - r_target are computed in the positions' dtype, differentiable in them.

    Args:
        backbone: the EquiformerV2 module (``cutoff``, ``max_neighbors``, ``use_pbc``).
        data: the fairchem batch (``pos`` [N, 3] Å, ``natoms`` [B], ``batch`` [N]).
        cell: [B, 3, 3] lattice vectors as rows, Å, in the positions' dtype.
        pbc: [B, 3] bool periodic directions (ignored when the model has ``use_pbc=False``).

    Returns:
        fairchem's ``GraphData`` (edge_index [2, E] as (source, target), distances [E] Å,
        vectors [E, 3] Å, integer cell offsets [E, 3], edges per structure [B]).
    """
    radius_graph_pbc = _import_fairchem("fairchem.core.common.utils").radius_graph_pbc
    pos = data.pos
    device = pos.device
    if not getattr(backbone, "use_pbc", True):
        pbc = torch.zeros_like(pbc)
    ptr = torch.cat([data.natoms.new_zeros(1), torch.cumsum(data.natoms, 0)])
    edges, offsets = [], []
    neighbors = torch.zeros(len(data.natoms), dtype=torch.long, device=device)
    for pattern in torch.unique(pbc, dim=0):  # radius_graph_pbc takes one pbc pattern per call
        graphs = torch.nonzero((pbc == pattern).all(dim=1)).flatten().tolist()
        atoms = torch.cat(
            [torch.arange(int(ptr[g]), int(ptr[g + 1]), device=device) for g in graphs]
        )
        group = types.SimpleNamespace(
            pos=pos.detach()[atoms],
            natoms=data.natoms[graphs],
            cell=cell.detach()[graphs].float(),  # as fairchem's data pipeline stores it
            pbc=pbc[graphs],
        )
        edge_index, cell_offsets, counts = radius_graph_pbc(
            group,
            backbone.cutoff,
            backbone.max_neighbors,
            getattr(backbone, "enforce_max_neighbors_strictly", True),
        )
        edges.append(atoms[edge_index])
        offsets.append(cell_offsets.to(pos.dtype))
        neighbors[graphs] = counts.long()
    edge_index = torch.cat(edges, dim=1)
    offsets = torch.cat(offsets)
    source, target = edge_index
    shift = torch.einsum("ei,eij->ej", offsets, cell[data.batch[target]])
    vec = pos[source] + shift - pos[target]
    base = _import_fairchem("fairchem.core.models.base")
    return base.GraphData(
        edge_index=edge_index,
        edge_distance=vec.norm(dim=-1),
        edge_distance_vec=vec,
        cell_offsets=offsets,
        offset_distances=shift,
        neighbors=neighbors,
        batch_full=data.batch,
        atomic_numbers_full=data.atomic_numbers.long(),
        node_offset=0,
    )


# ====================================================================== the adapter
@register
class EquiformerV2Adapter(BackboneAdapter):
    """Adapter for fairchem-core 1.x EquiformerV2 (hydra model or monolithic ``EquiformerV2``).

    Node features are the final normalised node embedding restricted to l <= 2,
    ``C x 0e + C x 1o + C x 2e`` (C = ``sphere_channels``) in e3nn's multiplicity-major layout.
    The energy is the model's energy output (unchanged; see the module docstring about units and
    fairchem's normalizers). Molecules and periodic cells (any periodic directions).

    Args:
        backbone: a fairchem ``HydraModel`` with an ``EquiformerV2Backbone`` (or subclass) and
            an energy head, or a monolithic ``EquiformerV2``; used as is and never modified.
        energy_head: key of the hydra head giving the energy. Default: the only head whose
            ``output_name`` is ``"energy"``.

    Raises:
        ValueError: several resolutions (``len(lmax_list) > 1``), or no unique energy head.
    """

    name = "equiformer_v2"
    extra = "eqv2"
    parity = False  # SO(2) convolutions in edge frames: SO(3)-equivariant only

    def __init__(self, backbone: nn.Module, energy_head: str | None = None) -> None:
        super().__init__(backbone)
        if len(self.equiformer.lmax_list) != 1:
            raise ValueError("only single-resolution EquiformerV2 models (one lmax) are supported")
        self.energy_head = None
        if self.is_hydra:
            heads = backbone.output_heads
            if energy_head is None:
                found = [k for k, h in heads.items() if getattr(h, "output_name", "") == "energy"]
                if len(found) != 1:
                    raise ValueError(
                        f"pass energy_head: heads with output 'energy': {found} of {list(heads)}"
                    )
                energy_head = found[0]
            if energy_head not in heads:
                raise ValueError(f"unknown energy_head {energy_head!r}; heads: {list(heads)}")
            self.energy_head = energy_head

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """True for a monolithic EquiformerV2, or a HydraModel with an EquiformerV2 backbone."""
        if class_path_matches(model, MODEL_CLASSES):
            return True
        return class_path_matches(model, HYDRA_CLASSES) and class_path_matches(
            getattr(model, "backbone", None), BACKBONE_CLASSES
        )

    @property
    def is_hydra(self) -> bool:
        """True when the model is a ``HydraModel`` (backbone + heads)."""
        return class_path_matches(self.backbone, HYDRA_CLASSES)

    @property
    def equiformer(self) -> nn.Module:
        """The module holding the EquiformerV2 layers (the hydra backbone or the model itself)."""
        return self.backbone.backbone if self.is_hydra else self.backbone

    @property
    def channels(self) -> int:
        """``sphere_channels`` C."""
        return int(self.equiformer.sphere_channels)

    @property
    def lmax(self) -> int:
        """Largest l handed to the head: min(backbone lmax, 2)."""
        return min(int(self.equiformer.lmax_list[0]), 2)

    @property
    def node_irreps(self):
        """``C x 0e + C x 1o + C x 2e`` (fewer when the backbone's lmax < 2)."""
        labels = ["0e", "1o", "2e"][: self.lmax + 1]
        return o3().Irreps("+".join(f"{self.channels}x{ir}" for ir in labels))

    @property
    def supported_atomic_numbers(self) -> list[int]:
        """Z = 1 .. ``max_num_elements`` - 1 (the model's embedding is indexed by Z)."""
        return list(range(1, int(self.equiformer.max_num_elements)))

    @property
    def cutoff(self) -> float:
        """The backbone's ``max_radius``, Å."""
        return float(self.equiformer.cutoff)

    # ------------------------------------------------------------------ input batch
    def _batch(self, graph: AtomicGraph, positions: torch.Tensor, ghost: bool = False):
        """A torch-geometric ``Batch`` as fairchem 1.x's data pipeline builds it.

        Args:
            graph: the batch (molecules and/or periodic cells).
            positions: [N, 3] Å, used as is (the batch's ``pos`` is differentiable in it).
            ghost: append a ghost H2 molecule (see :meth:`_prepare`).

        Returns:
            (the ``Batch``: ``pos``, ``atomic_numbers``, ``natoms``, ``cell`` [B, 3, 3] in float32
            as fairchem stores it, ``pbc``, ``tags``, ``fixed``, ``batch``; the cell [B, 3, 3] Å
            in the positions' dtype, zeros for molecules; pbc [B, 3] bool).
        """
        pyg_data = import_backbone("torch_geometric.data", "torch-geometric", "eqv2")
        self.check_elements(graph)
        device, dtype, b = positions.device, positions.dtype, graph.num_graphs
        cell = torch.zeros(b + ghost, 3, 3, dtype=dtype, device=device)
        pbc = torch.zeros(b + ghost, 3, dtype=torch.bool, device=device)
        if graph.is_periodic:
            cell[:b] = graph.cell.to(device=device, dtype=dtype)
            pbc[:b] = graph.pbc.to(device)
        ptr = graph.ptr.tolist()
        structures = [
            (positions[ptr[g] : ptr[g + 1]], graph.atomic_numbers[ptr[g] : ptr[g + 1]])
            for g in range(b)
        ]
        if ghost:
            h2 = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.74]], dtype=dtype, device=device)
            structures.append((h2, torch.ones(2, dtype=torch.long)))
        items = []
        for g, (pos, numbers) in enumerate(structures):
            zeros = torch.zeros(pos.shape[0], dtype=torch.long, device=device)
            items.append(
                pyg_data.Data(
                    pos=pos,
                    atomic_numbers=numbers.to(device).long(),
                    natoms=torch.tensor([pos.shape[0]], device=device),
                    cell=cell[g : g + 1].detach().float(),
                    pbc=pbc[g : g + 1],
                    tags=zeros,
                    fixed=zeros.clone(),
                )
            )
        return pyg_data.Batch.from_data_list(items), cell, pbc

    def _prepare(self, graph: AtomicGraph, positions: torch.Tensor) -> tuple[Any, Any]:
        """The fairchem batch and its neighbour list (:func:`_graph_data`).

        fairchem 1.x cannot run a batch without any edge (a lone atom, or atoms all farther
        apart than the cutoff). Such a batch gets a ghost H2 molecule appended, whose outputs the
        callers drop: structures do not interact, so the others' results are unchanged.

        Args:
            graph: the batch.
            positions: [N, 3] Å (the batch's ``pos`` is differentiable in it).

        Returns:
            (fairchem ``Batch``, ``GraphData``); the first ``graph.num_graphs`` structures and
            ``graph.num_atoms`` atoms are ``graph``'s.
        """
        data, cell, pbc = self._batch(graph, positions)
        edges = _graph_data(self.equiformer, data, cell, pbc)
        if edges.edge_index.shape[1] == 0:
            data, cell, pbc = self._batch(graph, positions, ghost=True)
            edges = _graph_data(self.equiformer, data, cell, pbc)
        return data, edges

    # ------------------------------------------------------------------ running the model
    def _energy(self, model: nn.Module, data: Any) -> torch.Tensor:
        """[B] energy of ``model`` (the original or a view) on ``data``."""
        if not self.is_hydra:
            return model(data)["energy"]
        head = model.output_heads[self.energy_head]
        return head(data, model.backbone(data))[head.output_name]

    def _run_view(self, data: Any, edges: Any | None, store: dict | None = None) -> torch.Tensor:
        """Energy [B] from a view with differentiable frames (see the module docstring).

        Args:
            data: the fairchem batch; its ``pos`` is what the energy is differentiable in.
            edges: the ``GraphData`` to use (from :meth:`_prepare`); None keeps the model's own
                ``generate_graph``.
            store: receives the final node embedding [N, (lmax+1)^2, C] as ``"backbone"``.
        """
        settings: dict[str, Any] = {"_init_edge_rot_mat": _edge_frames, "regress_forces": False}
        if edges is not None:
            settings["generate_graph"] = lambda *args, **kwargs: edges
        if store is not None:
            settings["store"] = store
        return self._energy(_view(self.backbone, {}, settings), data)

    def forward(self, graph: AtomicGraph) -> BackboneOutput:
        """The model's energy and its final node embedding (l <= 2).

        Args:
            graph: the batch; ``graph.positions`` [N, 3] Å (the tensor forces are taken of).

        Returns:
            Energy [B] (the model's units, eV for a model trained on eV) and node features
            [N, node_irreps.dim].
        """
        store: dict = {}
        with _default_dtype(graph.positions.dtype):
            data, edges = self._prepare(graph, graph.positions)
            energy = self._run_view(data, edges, store=store)
        n = graph.num_atoms
        emb = store["backbone"][:n]  # [N, (lmax+1)^2, C]
        parts = [
            emb[:, l * l : (l + 1) ** 2, :].transpose(1, 2).reshape(n, -1)
            for l in range(self.lmax + 1)
        ]
        return BackboneOutput(
            energy=energy[: graph.num_graphs],
            node_feats=torch.cat(parts, dim=-1),
            node_irreps=self.node_irreps,
        )

    def native_energy_forces(self, graph: AtomicGraph) -> tuple[torch.Tensor, torch.Tensor]:
        """The unmodified model's energy, and -dE/dr through the model's own graph generation.

        The energy comes from the model exactly as it is (its own neighbour search, frames and
        heads). EquiformerV2 1.x has no conservative forces (its force head is direct, see
        :meth:`direct_forces`) and detaches its edge frames, so the forces are -dE/dr of the
        same energy, taken on the model's own graph with differentiable frames.

        Args:
            graph: the batch; ``graph.positions`` [N, 3] Å (not modified).

        Returns:
            (energy [B], forces [N, 3] = -dE/dr), detached.
        """
        b = graph.num_graphs
        with torch.enable_grad(), _default_dtype(graph.positions.dtype):
            positions = graph.positions.detach().clone().requires_grad_(True)
            energy = self._run_view(self._prepare(graph, positions)[0], None)[:b]
            (grad,) = torch.autograd.grad(energy.sum(), positions)
            energy = self._energy(self.backbone, self._prepare(graph, positions.detach())[0])
        return energy[:b].detach(), -grad

    def direct_forces(self, graph: AtomicGraph) -> torch.Tensor | None:
        """The model's own (direct, non-conservative) force prediction.

        Args:
            graph: the batch; ``graph.positions`` [N, 3] Å.

        Returns:
            [N, 3] forces (the model's units, eV/Å for a model trained on eV/Å), detached; None
            when the model has no force output.
        """
        forces = None
        with torch.no_grad(), _default_dtype(graph.positions.dtype):
            data = self._prepare(graph, graph.positions.detach())[0]
            if not self.is_hydra:
                if self.backbone.regress_forces:
                    forces = self.backbone(data)["forces"]
            else:
                emb = self.backbone.backbone(data)
                for head in self.backbone.output_heads.values():
                    if getattr(head, "output_name", "") == "forces":
                        forces = head(data, emb)["forces"]
        return None if forces is None else forces.detach()[: graph.num_atoms]


# ====================================================================== a small test model
def make_random_equiformer_v2(
    lmax: int = 2,
    mmax: int = 2,
    sphere_channels: int = 16,
    hidden_channels: int = 16,
    num_layers: int = 2,
    num_heads: int = 2,
    cutoff: float = 5.0,
    max_neighbors: int = 20,
    use_gate_act: bool = True,
    hydra: bool = True,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> nn.Module:
    """A small random EquiformerV2 with energy and direct-force heads, as fairchem 1.x builds it.

    Configured like the pretrained OC20 / OMat24 models (``use_pbc=True``, ``otf_graph=True``,
    ``rms_norm_sh``, separate energy and force heads) but small, on CPU, in ``dtype``, without
    dropout.

    Args:
        lmax: largest l of the node embedding.
        mmax: largest m of the SO(2) convolutions.
        sphere_channels: channels C per coefficient.
        hidden_channels: width of the attention and feed-forward hidden layers and edge MLPs.
        num_layers: transformer blocks.
        num_heads: attention heads.
        cutoff: ``max_radius``, Å.
        max_neighbors: neighbours kept per atom (the nearest).
        use_gate_act: gate activations (exactly equivariant); False gives the pretrained models'
            S2-grid activations (equivariant to ~1e-8 only in float64).
        hydra: a ``HydraModel`` (``EquiformerV2Backbone`` + ``equiformerV2_scalar_head`` +
            ``equiformerV2_vector_head``); False: the monolithic ``EquiformerV2``.
        dtype: parameter dtype (float64 for 1e-10 equivariance tests).
        seed: torch seed for the random weights.

    Returns:
        The model, in eval mode.
    """
    config = dict(
        use_pbc=True,
        regress_forces=True,
        otf_graph=True,
        max_neighbors=max_neighbors,
        max_radius=cutoff,
        max_num_elements=90,
        num_layers=num_layers,
        sphere_channels=sphere_channels,
        attn_hidden_channels=hidden_channels,
        num_heads=num_heads,
        attn_alpha_channels=hidden_channels // 2,
        attn_value_channels=hidden_channels // 4,
        ffn_hidden_channels=hidden_channels,
        norm_type="rms_norm_sh",
        lmax_list=[lmax],
        mmax_list=[mmax],
        edge_channels=hidden_channels,
        use_gate_act=use_gate_act,
        alpha_drop=0.0,
        drop_path_rate=0.0,
        proj_drop=0.0,
        weight_init="uniform",
    )
    torch.manual_seed(seed)
    with _default_dtype(dtype):
        if hydra:
            base = _import_fairchem("fairchem.core.models.base")
            _import_fairchem(f"{_PACKAGE}.equiformer_v2")  # registers backbone and heads
            heads = {
                "energy": {"module": "equiformerV2_scalar_head"},
                "forces": {"module": "equiformerV2_vector_head"},
            }
            backbone = {"model": "equiformer_v2_backbone", **config}
            model = base.HydraModel(backbone=backbone, heads=heads, otf_graph=True)
        else:
            module = _import_fairchem(f"{_PACKAGE}.equiformer_v2_deprecated")
            model = module.EquiformerV2(**config)
    return model.to(dtype).eval()
