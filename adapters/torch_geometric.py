"""Adapters for the molecular models of torch-geometric: ``SchNet`` and ``ViSNet``.

Both adapters run the backbone's own ``forward`` (its own embedding, interaction blocks,
readout, ``mean`` / ``std`` / ``atomref`` handling) on a *view* of the model: a shallow copy
that shares every parameter and buffer with the original and differs in one submodule only, the
neighbour search. PyG's ``radius_graph`` needs the compiled ``pyg-lib`` (or ``torch-cluster``)
package, truncates neighbour lists at ``max_num_neighbors`` in an arbitrary, rotation-dependent
order, and ViSNet's ``Distance`` stores distances in float32 whatever the model's dtype. The view
uses a pure-torch search instead (:class:`RadiusGraph`, :class:`RadiusDistance`) that keeps every
pair closer than the model's cutoff, in the positions' dtype. It gives the same graph as PyG's
whenever no atom has more than ``max_num_neighbors`` neighbours (a warning is raised otherwise).
A user-supplied SchNet ``interaction_graph`` is used unchanged. The original model is never
modified.

Node features:

* **SchNet** (:class:`SchNetAdapter`) is invariant: the node features are the per-atom hidden
  scalars after the last interaction block (the input of ``lin1``), ``hidden_channels x 0e``.
* **ViSNet** (:class:`ViSNetAdapter`) is O(3)-equivariant: the node features are the outputs of
  its representation block, the scalars ``x`` (``hidden x 0e``) and the vectors ``vec``, whose
  l = 1 rows are ``hidden x 1o`` and, for ``lmax = 2``, l = 2 rows ``hidden x 2e``. ViSNet's
  ``Sphere`` is e3nn's real spherical-harmonic basis (l = 1 in (x, y, z) order) up to a factor
  per l, so the rows are only transposed to e3nn's multiplicity-major layout.

Accuracy cost of a scalar-only backbone: with SchNet the head receives no l >= 1 features at
all. The l = 1 and l = 2 content of every Hessian block comes only from the head's own pair
messages (spherical harmonics of the interatomic vectors weighted by functions of the SchNet
scalars), so the head has to learn all angular structure itself. Expect a noticeably less
accurate Hessian than from an equivariant backbone with l >= 1 features (ViSNet, MACE) of the
same size and training data; give the head more ``num_interactions`` to compensate.

``torch_geometric`` is imported lazily: importing this module does not import it, and a missing
installation raises :class:`~hip_head.errors.MissingBackboneError` naming the extra to install.

Example:
    >>> from torch_geometric.nn.models import SchNet  # doctest: +SKIP
    >>> model = hip_head.wrap(SchNet(hidden_channels=64, cutoff=5.0))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import warnings
from types import ModuleType

import torch
from torch import nn

from hip_head._e3nn import o3
from hip_head.graph import AtomicGraph, pairs_within_structures

from .base import BackboneAdapter, BackboneOutput, class_path_matches, import_backbone, register

__all__ = ["RadiusDistance", "RadiusGraph", "SchNetAdapter", "ViSNetAdapter", "radius_pairs"]

#: Fully qualified class names each adapter accepts (subclasses included, matched on the MRO).
SCHNET_CLASSES = {"torch_geometric.nn.models.schnet.SchNet"}
VISNET_CLASSES = {"torch_geometric.nn.models.visnet.ViSNet"}

_RADIUS_INTERACTION_GRAPH = "torch_geometric.nn.models.schnet.RadiusInteractionGraph"
_VISNET_DISTANCE = "torch_geometric.nn.models.visnet.Distance"


def _import_pyg(module: str = "torch_geometric") -> ModuleType:
    """Import ``module`` from torch-geometric, or raise a :class:`MissingBackboneError`."""
    return import_backbone(module, "torch-geometric", "pyg")


# ---------------------------------------------------------------------- neighbour search
def radius_pairs(
    pos: torch.Tensor,
    batch: torch.Tensor,
    cutoff: float,
    loop: bool = False,
    max_num_neighbors: int | None = None,
) -> torch.Tensor:
    """All ordered pairs of atoms of the same structure closer than ``cutoff`` (pure torch).

    Vectorised over structures (sum of N_g^2 candidates). The search runs on detached positions;
    callers build differentiable distances from ``pos`` themselves.

    Args:
        pos: [N, 3] positions, Å.
        batch: [N] int64 structure index of each atom, sorted (PyG's convention).
        cutoff: radius, Å (pairs with distance < cutoff are kept).
        loop: also list every atom's self-pair (a, a).
        max_num_neighbors: when given, warn if an atom has more neighbours than this (PyG's
            ``radius_graph`` would then drop some of them; this search keeps all).

    Returns:
        [2, E] int64 (sender, receiver) indices, both directions of every pair.
    """
    device = pos.device
    pos = pos.detach()
    if batch.numel() == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=device)
    counts = torch.bincount(batch.to(device))
    ptr = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    a, b = pairs_within_structures(ptr)
    keep = (pos[b] - pos[a]).norm(dim=-1) < cutoff
    if max_num_neighbors is not None and keep.any():
        most = int(torch.bincount(b[keep], minlength=pos.shape[0]).max())
        if most > max_num_neighbors:
            warnings.warn(
                f"an atom has {most} neighbours within {cutoff} Å, more than the model's "
                f"max_num_neighbors={max_num_neighbors}; hip-head keeps all of them, so the "
                "energy differs from PyG's truncated radius_graph",
                stacklevel=3,
            )
    edges = torch.stack([a[keep], b[keep]])
    if loop:  # self-loops, merged into the (a, b)-sorted order
        atoms = torch.arange(pos.shape[0], device=device)
        edges = torch.cat([edges, torch.stack([atoms, atoms])], dim=1)
        edges = edges[:, torch.argsort(edges[0] * pos.shape[0] + edges[1])]
    return edges


class RadiusGraph(nn.Module):
    """Pure-torch stand-in for SchNet's ``RadiusInteractionGraph`` (no pyg-lib needed).

    Usable as SchNet's ``interaction_graph`` argument. Keeps every pair within ``cutoff``.

    Args:
        cutoff: radius, Å.
        max_num_neighbors: only used to warn when PyG would have truncated a neighbour list.
    """

    def __init__(self, cutoff: float = 10.0, max_num_neighbors: int | None = None) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.max_num_neighbors = max_num_neighbors

    def forward(self, pos: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Edges and distances.

        Args:
            pos: [N, 3] positions, Å.
            batch: [N] structure index of each atom.

        Returns:
            (edge_index [2, E], edge_weight [E] distances in Å, differentiable in ``pos``).
        """
        edge_index = radius_pairs(pos, batch, self.cutoff, False, self.max_num_neighbors)
        row, col = edge_index
        return edge_index, (pos[row] - pos[col]).norm(dim=-1)


class RadiusDistance(nn.Module):
    """Pure-torch stand-in for ViSNet's ``Distance`` (self-loops included, as ViSNet's default).

    Unlike PyG's ``Distance`` the distances keep the positions' dtype (PyG's are float32).

    Args:
        cutoff: radius, Å.
        max_num_neighbors: only used to warn when PyG would have truncated a neighbour list.
        add_self_loops: list each atom's self-pair, with distance 0 and vector 0.
    """

    def __init__(
        self, cutoff: float, max_num_neighbors: int | None = None, add_self_loops: bool = True
    ) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.max_num_neighbors = max_num_neighbors
        self.add_self_loops = add_self_loops

    def forward(
        self, pos: torch.Tensor, batch: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Edges, distances and edge vectors.

        Args:
            pos: [N, 3] positions, Å.
            batch: [N] structure index of each atom.

        Returns:
            (edge_index [2, E], edge_weight [E] Å, edge_vec [E, 3] Å
            ``pos[edge_index[0]] - pos[edge_index[1]]``), differentiable in ``pos``.
        """
        edge_index = radius_pairs(
            pos, batch, self.cutoff, self.add_self_loops, self.max_num_neighbors
        )
        edge_vec = pos[edge_index[0]] - pos[edge_index[1]]
        mask = edge_index[0] != edge_index[1]
        edge_weight = torch.zeros(edge_vec.shape[0], dtype=pos.dtype, device=pos.device)
        edge_weight[mask] = edge_vec[mask].norm(dim=-1)
        return edge_index, edge_weight, edge_vec


def _is(module: object, path: str) -> bool:
    return class_path_matches(module, {path})


def _view(module: nn.Module, modules: dict[str, nn.Module], **attributes: object) -> nn.Module:
    """A shallow copy of ``module`` sharing its parameters, with some submodules replaced."""
    view = copy.copy(module)
    view.__dict__["_modules"] = {**module._modules, **modules}
    for key, value in attributes.items():
        view.__dict__[key] = value
    return view


class _Tap(nn.Module):
    """Runs ``inner`` and records its input (``record="input"``) or output into ``store``."""

    def __init__(self, inner: nn.Module, store: dict, record: str) -> None:
        super().__init__()
        self.inner, self.store, self.record = inner, store, record

    def forward(self, *args):
        out = self.inner(*args)
        self.store[self.inner] = args[0] if self.record == "input" else out
        return out


def _check_molecular(graph: AtomicGraph, name: str) -> None:
    if graph.pbc is not None and bool(graph.pbc.any()):
        raise ValueError(f"the {name} backbone is molecular: periodic structures are not supported")


# ---------------------------------------------------------------------- SchNet
@register
class SchNetAdapter(BackboneAdapter):
    """Adapter for ``torch_geometric.nn.models.SchNet`` (energy models, ``dipole=False``).

    Node features are SchNet's per-atom hidden scalars after the last interaction block (the
    input of ``lin1``), irreps ``hidden_channels x 0e``. The energy is the model's own output
    ``model(z, pos, batch)`` (readout, ``mean``, ``std``, ``atomref`` and ``scale`` included),
    in the model's units (eV for hip-head's purposes). SchNet only sees distances, so it is
    invariant under reflections too: ``parity = True``.

    Args:
        backbone: a SchNet model, used as is and never modified.

    Raises:
        ValueError: a dipole model (``dipole=True``), which predicts no energy.
    """

    name = "schnet"
    extra = "pyg"
    parity = True

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__(backbone)
        if getattr(backbone, "dipole", False):
            raise ValueError("this SchNet predicts a dipole moment (dipole=True), not an energy")

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """True for SchNet and its subclasses (checked by class name, without importing PyG)."""
        return class_path_matches(model, SCHNET_CLASSES)

    @property
    def node_irreps(self):
        """``hidden_channels x 0e``."""
        return o3().Irreps(f"{self.backbone.hidden_channels}x0e")

    @property
    def supported_atomic_numbers(self) -> list[int]:
        """Z = 1 .. size of the embedding table - 1 (Z = 0 is SchNet's padding)."""
        return list(range(1, self.backbone.embedding.num_embeddings))

    @property
    def cutoff(self) -> float:
        """SchNet's interaction cutoff, Å."""
        return float(self.backbone.cutoff)

    def _model_view(self, store: dict | None = None) -> nn.Module:
        model = self.backbone
        modules: dict[str, nn.Module] = {}
        graph_fn = model.interaction_graph
        if _is(graph_fn, _RADIUS_INTERACTION_GRAPH):
            modules["interaction_graph"] = RadiusGraph(graph_fn.cutoff, graph_fn.max_num_neighbors)
        if store is not None:
            modules["lin1"] = _Tap(model.lin1, store, "input")
        return _view(model, modules)

    def _energy(self, graph: AtomicGraph, positions: torch.Tensor, store: dict | None):
        _import_pyg("torch_geometric.nn.models")
        self.check_elements(graph)
        _check_molecular(graph, self.name)
        out = self._model_view(store)(graph.atomic_numbers, positions, graph.batch)
        return out.reshape(graph.num_graphs)

    def forward(self, graph: AtomicGraph) -> BackboneOutput:
        """SchNet's energy and last hidden scalars.

        Args:
            graph: the batch; ``graph.positions`` [N, 3] Å (the tensor forces are taken of).

        Returns:
            Energy [B] eV and node features [N, hidden_channels] (``hidden_channels x 0e``).
        """
        store: dict = {}
        energy = self._energy(graph, graph.positions, store)
        (feats,) = store.values()
        return BackboneOutput(energy=energy, node_feats=feats, node_irreps=self.node_irreps)

    def native_energy_forces(self, graph: AtomicGraph) -> tuple[torch.Tensor, torch.Tensor]:
        """The bare model's energy and forces -dE/dr (SchNet has no force path of its own).

        Args:
            graph: the batch; ``graph.positions`` [N, 3] Å (not modified).

        Returns:
            (energy [B] eV, forces [N, 3] eV/Å), detached.
        """
        with torch.enable_grad():
            positions = graph.positions.detach().clone().requires_grad_(True)
            energy = self._energy(graph, positions, None)
            (grad,) = torch.autograd.grad(energy.sum(), positions)
        return energy.detach(), -grad


# ---------------------------------------------------------------------- ViSNet
@register
class ViSNetAdapter(BackboneAdapter):
    """Adapter for ``torch_geometric.nn.models.ViSNet``.

    Node features are the outputs of ViSNet's representation block (after ``out_norm`` and
    ``vec_out_norm``): the scalars ``x`` [N, hidden] as ``hidden x 0e``, the l = 1 rows of
    ``vec`` as ``hidden x 1o`` and, for ``lmax = 2``, its l = 2 rows as ``hidden x 2e``, each in
    e3nn's multiplicity-major layout (column ``channel * (2l + 1) + m``). ViSNet is
    O(3)-equivariant: its vectors are built from edge directions times scalars and combined only
    through dot products and norms (no cross product), so ``parity = True``.

    The energy is the model's own output run with ``derivative=False`` (hip-head takes the
    forces); :meth:`native_energy_forces` runs the model's own ``derivative=True`` path.

    Args:
        backbone: a ViSNet model, used as is and never modified.
    """

    name = "visnet"
    extra = "pyg"
    parity = True

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """True for ViSNet and its subclasses (checked by class name, without importing PyG)."""
        return class_path_matches(model, VISNET_CLASSES)

    @property
    def lmax(self) -> int:
        """Largest l of ViSNet's vector features (1 or 2)."""
        return int(self.backbone.representation_model.lmax)

    @property
    def node_irreps(self):
        """``hidden x 0e + hidden x 1o`` (``+ hidden x 2e`` when ``lmax = 2``)."""
        h = self.backbone.representation_model.hidden_channels
        return o3().Irreps(f"{h}x0e+{h}x1o" + (f"+{h}x2e" if self.lmax == 2 else ""))

    @property
    def supported_atomic_numbers(self) -> list[int]:
        """Z = 1 .. ``max_z`` - 1."""
        return list(range(1, self.backbone.representation_model.max_z))

    @property
    def cutoff(self) -> float:
        """ViSNet's cutoff, Å."""
        return float(self.backbone.representation_model.cutoff)

    def _model_view(self, derivative: bool, store: dict | None = None) -> nn.Module:
        model = self.backbone
        rep = model.representation_model
        modules: dict[str, nn.Module] = {}
        if _is(rep.distance, _VISNET_DISTANCE):
            d = rep.distance
            modules["distance"] = RadiusDistance(d.cutoff, d.max_num_neighbors, d.add_self_loops)
        rep_view: nn.Module = _view(rep, modules)
        if store is not None:
            rep_view = _Tap(rep_view, store, "output")
        return _view(model, {"representation_model": rep_view}, derivative=derivative)

    def _run(self, graph: AtomicGraph, positions: torch.Tensor, derivative: bool, store):
        _import_pyg("torch_geometric.nn.models")
        self.check_elements(graph)
        _check_molecular(graph, self.name)
        view = self._model_view(derivative, store)
        energy, neg_grad = view(graph.atomic_numbers, positions, graph.batch)
        return energy.reshape(graph.num_graphs), neg_grad

    def forward(self, graph: AtomicGraph) -> BackboneOutput:
        """ViSNet's energy and equivariant node features.

        Args:
            graph: the batch; ``graph.positions`` [N, 3] Å (the tensor forces are taken of).

        Returns:
            Energy [B] eV and node features [N, node_irreps.dim].
        """
        store: dict = {}
        energy, _ = self._run(graph, graph.positions, False, store)
        ((x, vec),) = store.values()
        n = x.shape[0]
        parts = [x, vec[:, :3, :].transpose(1, 2).reshape(n, -1)]
        if self.lmax == 2:
            parts.append(vec[:, 3:8, :].transpose(1, 2).reshape(n, -1))
        feats = torch.cat(parts, dim=-1)
        return BackboneOutput(energy=energy, node_feats=feats, node_irreps=self.node_irreps)

    def native_energy_forces(self, graph: AtomicGraph) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy and forces from ViSNet's own ``derivative=True`` path.

        Args:
            graph: the batch; ``graph.positions`` [N, 3] Å (not modified).

        Returns:
            (energy [B] eV, forces [N, 3] eV/Å), detached.
        """
        with torch.enable_grad():
            positions = graph.positions.detach().clone()
            energy, forces = self._run(graph, positions, True, None)
        return energy.detach(), forces.detach()
