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

* the neighbour list is fairchem's own ``radius_graph_pbc`` (not hip-head's
  :func:`~hip_head.adapters.neighbor_edges`: the model's energy depends on *which* neighbours its
  ``max_neighbors`` truncation keeps, and only fairchem's own search reproduces that choice), but
  the edge vectors are rebuilt from ``graph.positions`` and the cell in the positions' dtype
  (fairchem adds its periodic offsets in float32), so the energy is differentiable in them;
* the edge frames and Wigner-D matrices keep their gradient, which fairchem 1.x ``detach()``-es
  (:mod:`hip_head.adapters._equiformer_v2_frames`: values bit for bit fairchem's, derivatives
  exact, no gimbal-lock singularity for edges along ±y);
* only the energy is computed (no direct-force head), and the node embedding is recorded.

Forces: EquiformerV2 1.x predicts forces *directly* (a separate attention head, not -dE/dr; no
conservative option exists in 1.x). hip-head's forces are always -dE/dr of the model's energy,
exact thanks to the differentiable frames (checked against finite differences of the unmodified
model). The model's own direct forces are :meth:`EquiformerV2Adapter.direct_forces`.
:meth:`~EquiformerV2Adapter.native_energy_forces` returns the unmodified model's energy and -dE/dr
taken through the model's own graph generation.

Node features: the final (normalised) node embedding [N, (lmax+1)^2, C], coefficients l-major
with m = -l..l. fairchem's real spherical-harmonic basis *equals* e3nn's (fitted under rotations;
fairchem's Wigner matrices are e3nn 0.4's), so :func:`~hip_head.adapters.l_major_to_e3nn` only
transposes to e3nn's multiplicity-major layout: ``C x 0e + C x 1o + C x 2e``.

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

dtype: fairchem 1.x allocates some tensors in torch's default dtype. The adapter's views compute
the Wigner matrices in the positions' dtype themselves; the default dtype is set to the positions'
only for the single fairchem calls that need it (``radius_graph_pbc``'s truncation, and the
unmodified model in ``native_energy_forces`` / ``direct_forces``), then restored.
"""

from __future__ import annotations

import contextlib
import types
from typing import Any

import torch
from torch import nn

from hip_head.errors import InvalidArgumentError
from hip_head.graph import AtomicGraph

from ._common import (
    FeatureTap,
    SphericalEmbeddingAdapter,
    default_dtype,
    gradient_energy_forces,
    seeded,
    tree_view,
)
from ._equiformer_v2_frames import PACKAGE as _PACKAGE
from ._equiformer_v2_frames import edge_frames, import_fairchem, set_wigner
from .base import BackboneOutput, class_path_matches, import_backbone, register

__all__ = ["EquiformerV2Adapter", "make_random_equiformer_v2"]

#: The monolithic model (the module moved to ``equiformer_v2_deprecated`` in fairchem-core 1.1).
MODEL_CLASSES = {
    f"{_PACKAGE}.equiformer_v2_deprecated.EquiformerV2",
    f"{_PACKAGE}.equiformer_v2.EquiformerV2",
}
HYDRA_CLASSES = {"fairchem.core.models.base.HydraModel"}
#: Backbones (subclasses such as the DeNS backbone are matched through the MRO).
BACKBONE_CLASSES = {f"{_PACKAGE}.equiformer_v2.EquiformerV2Backbone"}

ROTATION_CLASSES = {f"{_PACKAGE}.so3.SO3_Rotation"}


def _fairchem_dtype(dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Torch's default dtype set to ``dtype`` for one call into fairchem 1.x code that needs it.

    Two fairchem 1.x functions allocate in the default dtype and then mix in the positions'
    dtype: ``SO3_Rotation.set_wigner`` (run by the unmodified model only; the adapter's views
    replace it) and ``radius_graph_pbc``'s ``max_neighbors`` truncation. Only those calls enter
    this context; the default dtype is restored right after each.
    """
    return default_dtype(dtype)


# ====================================================================== views of the model
def _view(model: nn.Module, settings: dict[str, Any], store: dict | None) -> nn.Module:
    """View of ``model`` (parameters shared, model unchanged) with differentiable edge rotations.

    Every ``SO3_Rotation`` gets a copy whose ``set_wigner`` keeps the gradient (modules sharing
    it share the copy); the EquiformerV2 module gets ``settings`` as instance attributes (frames,
    graph generation, ``regress_forces``) and, when ``store`` is given, its final ``norm``
    wrapped in a :class:`FeatureTap` recording the node embedding as ``"embedding"``.
    """

    def edit(module: nn.Module, view: nn.Module) -> nn.Module | None:
        if class_path_matches(module, ROTATION_CLASSES):
            view.__dict__["set_wigner"] = types.MethodType(set_wigner, view)
            return view
        if class_path_matches(module, BACKBONE_CLASSES | MODEL_CLASSES):
            view.__dict__.update(settings)
            if store is not None:
                view._modules["norm"] = FeatureTap(view._modules["norm"], store, "embedding")
            return view
        return None

    return tree_view(model, edit)


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
    radius_graph_pbc = import_fairchem("fairchem.core.common.utils").radius_graph_pbc
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
        with _fairchem_dtype(pos.dtype):
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
    base = import_fairchem("fairchem.core.models.base")
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
class EquiformerV2Adapter(SphericalEmbeddingAdapter):
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
            raise InvalidArgumentError(
                "only single-resolution EquiformerV2 models (one lmax) are supported"
            )
        self.energy_head = None
        if self.is_hydra:
            heads = backbone.output_heads
            if energy_head is None:
                found = [k for k, h in heads.items() if getattr(h, "output_name", "") == "energy"]
                if len(found) != 1:
                    raise InvalidArgumentError(
                        f"pass energy_head: heads with output 'energy': {found} of {list(heads)}"
                    )
                energy_head = found[0]
            if energy_head not in heads:
                raise InvalidArgumentError(
                    f"unknown energy_head {energy_head!r}; heads: {list(heads)}"
                )
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
    def embedding_module(self) -> nn.Module:
        """:attr:`equiformer` (``sphere_channels``, ``lmax_list``, ``max_num_elements``)."""
        return self.equiformer

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
            store: receives the final node embedding [N, (lmax+1)^2, C] as ``"embedding"``.
        """
        settings: dict[str, Any] = {"_init_edge_rot_mat": edge_frames, "regress_forces": False}
        if edges is not None:
            settings["generate_graph"] = lambda *args, **kwargs: edges
        return self._energy(_view(self.backbone, settings, store), data)

    def forward(self, graph: AtomicGraph) -> BackboneOutput:
        """The model's energy and its final node embedding (l <= 2).

        Args:
            graph: the batch; ``graph.positions`` [N, 3] Å (the tensor forces are taken of).

        Returns:
            Energy [B] (the model's units, eV for a model trained on eV) and node features
            [N, node_irreps.dim].
        """
        store: dict = {}
        data, edges = self._prepare(graph, graph.positions)
        energy = self._run_view(data, edges, store=store)
        emb = store["embedding"][: graph.num_atoms]  # [N, (lmax+1)^2, C], l-major
        return BackboneOutput(
            energy=energy[: graph.num_graphs],
            node_feats=self.embedding_features(emb),
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
        b, positions = graph.num_graphs, graph.positions.detach()
        _, forces = gradient_energy_forces(
            lambda p: self._run_view(self._prepare(graph, p)[0], None)[:b], positions
        )
        with torch.no_grad(), _fairchem_dtype(positions.dtype):
            energy = self._energy(self.backbone, self._prepare(graph, positions)[0])
        return energy[:b].detach(), forces

    def direct_forces(self, graph: AtomicGraph) -> torch.Tensor | None:
        """The model's own (direct, non-conservative) force prediction.

        Args:
            graph: the batch; ``graph.positions`` [N, 3] Å.

        Returns:
            [N, 3] forces (the model's units, eV/Å for a model trained on eV/Å), detached; None
            when the model has no force output.
        """
        forces = None
        with torch.no_grad(), _fairchem_dtype(graph.positions.dtype):
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
        seed: seed of the random weights (the caller's global RNG state is left unchanged).

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
    with seeded(seed), default_dtype(dtype):  # constants exact in dtype; caller's RNG kept
        if hydra:
            base = import_fairchem("fairchem.core.models.base")
            import_fairchem(f"{_PACKAGE}.equiformer_v2")  # registers backbone and heads
            heads = {
                "energy": {"module": "equiformerV2_scalar_head"},
                "forces": {"module": "equiformerV2_vector_head"},
            }
            backbone = {"model": "equiformer_v2_backbone", **config}
            model = base.HydraModel(backbone=backbone, heads=heads, otf_graph=True)
        else:
            module = import_fairchem(f"{_PACKAGE}.equiformer_v2_deprecated")
            model = module.EquiformerV2(**config)
    return model.to(dtype).eval()
