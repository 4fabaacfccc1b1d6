"""Adapters for the molecular models of torch-geometric: ``SchNet`` and ``ViSNet``.

Both adapters run the backbone's own ``forward`` (its own embedding, interaction blocks,
readout, ``mean`` / ``std`` / ``atomref`` handling) on a *view* of the model: a shallow copy
that shares every parameter and buffer with the original and differs in one submodule only, the
neighbour search. PyG's ``radius_graph`` needs the compiled ``pyg-lib`` (or ``torch-cluster``)
package, truncates neighbour lists at ``max_num_neighbors`` in an arbitrary, rotation-dependent
order, and ViSNet's ``Distance`` stores distances in float32 whatever the model's dtype. The view
uses hip-head's own pure-torch search instead (:class:`RadiusGraph`, :class:`RadiusDistance`, both
built on :func:`hip_head.adapters.neighbor_edges`) that keeps every pair closer than the model's
cutoff, in the positions' dtype. It gives the same graph as PyG's
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

from types import ModuleType

import torch
from torch import nn

from hip_head.errors import InvalidArgumentError
from hip_head.graph import AtomicGraph

from ._common import (
    FeatureTap,
    gradient_energy_forces,
    l_major_to_e3nn,
    module_view,
    natural_irreps,
    neighbor_edges,
    require_molecular,
)
from .base import BackboneAdapter, BackboneOutput, class_path_matches, import_backbone, register

__all__ = ["RadiusDistance", "RadiusGraph", "SchNetAdapter", "ViSNetAdapter"]

#: Fully qualified class names each adapter accepts (subclasses included, matched on the MRO).
SCHNET_CLASSES = {"torch_geometric.nn.models.schnet.SchNet"}
VISNET_CLASSES = {"torch_geometric.nn.models.visnet.ViSNet"}

_RADIUS_INTERACTION_GRAPH = "torch_geometric.nn.models.schnet.RadiusInteractionGraph"
_VISNET_DISTANCE = "torch_geometric.nn.models.visnet.Distance"
#: PyG's name of its neighbour-list truncation (hip-head keeps every pair and warns instead).
_LIMIT = "max_num_neighbors"


def _import_pyg(module: str = "torch_geometric") -> ModuleType:
    """Import ``module`` from torch-geometric, or raise a :class:`MissingBackboneError`."""
    return import_backbone(module, "torch-geometric", "pyg")


# ---------------------------------------------------------------------- neighbour search
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
        edge_index, _ = neighbor_edges(
            pos, batch, self.cutoff, max_neighbors=self.max_num_neighbors, limit_name=_LIMIT
        )
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
        edge_index, _ = neighbor_edges(
            pos,
            batch,
            self.cutoff,
            self_interaction=self.add_self_loops,
            max_neighbors=self.max_num_neighbors,
            limit_name=_LIMIT,
        )
        edge_vec = pos[edge_index[0]] - pos[edge_index[1]]
        mask = edge_index[0] != edge_index[1]
        edge_weight = torch.zeros(edge_vec.shape[0], dtype=pos.dtype, device=pos.device)
        edge_weight[mask] = edge_vec[mask].norm(dim=-1)
        return edge_index, edge_weight, edge_vec


def _is(module: object, path: str) -> bool:
    return class_path_matches(module, {path})


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
            raise InvalidArgumentError(
                "this SchNet predicts a dipole moment (dipole=True), not an energy"
            )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """True for SchNet and its subclasses (checked by class name, without importing PyG)."""
        return class_path_matches(model, SCHNET_CLASSES)

    @property
    def node_irreps(self):
        """``hidden_channels x 0e``."""
        return natural_irreps(self.backbone.hidden_channels, lmax=0)

    @property
    def feature_dim(self) -> int:
        """``hidden_channels``: the width of SchNet's ``lin1`` input."""
        return int(self.backbone.lin1.in_features)

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
            modules["lin1"] = FeatureTap(model.lin1, store, record="input")
        return module_view(model, modules)

    def _energy(self, graph: AtomicGraph, positions: torch.Tensor, store: dict | None):
        _import_pyg("torch_geometric.nn.models")
        self.check_elements(graph)
        require_molecular(graph, self.name)
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
        return BackboneOutput(
            energy=energy, node_feats=store["features"], node_irreps=self.node_irreps
        )

    def native_energy_forces(self, graph: AtomicGraph) -> tuple[torch.Tensor, torch.Tensor]:
        """The bare model's energy and forces -dE/dr (SchNet has no force path of its own).

        Args:
            graph: the batch; ``graph.positions`` [N, 3] Å (not modified).

        Returns:
            (energy [B] eV, forces [N, 3] eV/Å), detached.
        """
        return gradient_energy_forces(lambda p: self._energy(graph, p, None), graph.positions)


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
        return natural_irreps(self.backbone.representation_model.hidden_channels, self.lmax)

    @property
    def feature_dim(self) -> int:
        """``hidden_channels x (lmax + 1)^2``: the scalars and ViSNet's ``vec`` rows."""
        return self.backbone.representation_model.hidden_channels * (self.lmax + 1) ** 2

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
        rep_view: nn.Module = module_view(rep, modules)
        if store is not None:
            rep_view = FeatureTap(rep_view, store)
        return module_view(model, {"representation_model": rep_view}, derivative=derivative)

    def _run(self, graph: AtomicGraph, positions: torch.Tensor, derivative: bool, store):
        _import_pyg("torch_geometric.nn.models")
        self.check_elements(graph)
        require_molecular(graph, self.name)
        view = self._model_view(derivative, store)
        energy, neg_grad = view(graph.atomic_numbers, positions, graph.batch)
        return energy.reshape(graph.num_graphs), neg_grad

    def forward(self, graph: AtomicGraph) -> BackboneOutput:
        """ViSNet's energy and the scalars and vectors of its representation block.

        Args:
            graph: molecules; the energy is differentiable in ``graph.positions`` [N, 3] Å.

        Returns:
            Energy [B] eV; node features [N, hidden x (lmax+1)^2]: ``x``, then the l = 1 (and
            l = 2) rows of ``vec``, each in e3nn's multiplicity-major layout.
        """
        store: dict = {}
        energy, _ = self._run(graph, graph.positions, False, store)
        x, vec = store["features"]  # [N, H], [N, (lmax+1)^2 - 1, H] l-major from l = 1
        feats = torch.cat([x, l_major_to_e3nn(vec, self.lmax, lmin=1)], dim=-1)
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
