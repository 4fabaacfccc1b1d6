"""A catalogue of adapter bugs planted in the toy backbone's adapter, and the property that the
test kit must name for each (``tests/test_kit_planted_bugs.py`` runs them all).

Each bug is an adapter class: ``check_adapter(make_toy(), adapter=Bug)``. The toy's node
features are ``C x 0e + C x 1o + C x 2e`` (``C = backbone.channels``), multiplicity-major.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from hip_head import o3
from hip_head.adapters import BackboneOutput
from hip_head.graph import AtomicGraph
from tests.toy_backbone import ToyAdapter


def _parts(feats: Tensor, c: int) -> tuple[Tensor, Tensor, Tensor]:
    """Scalars [N, C], vectors [N, C, 3] and l = 2 parts [N, C, 5] of the toy's features."""
    return feats[:, :c], feats[:, c : 4 * c].reshape(-1, c, 3), feats[:, 4 * c :].reshape(-1, c, 5)


def _join(scalars: Tensor, vectors: Tensor, tensors: Tensor) -> Tensor:
    n = scalars.shape[0]
    return torch.cat([scalars, vectors.reshape(n, -1), tensors.reshape(n, -1)], dim=1)


class _FeatureBug(ToyAdapter):
    """Runs the toy adapter, then edits its node features with :meth:`edit`."""

    def edit(self, feats: Tensor, graph: AtomicGraph) -> Tensor:
        raise NotImplementedError

    def forward(self, graph: AtomicGraph) -> BackboneOutput:
        out = super().forward(graph)
        return BackboneOutput(out.energy, self.edit(out.node_feats, graph), self.node_irreps)


# ---------------------------------------------------------------- rotation and reflection
class WrongIrrepsOrder(_FeatureBug):
    """Features stored 0e, 2e, 1o while declared ``0e + 1o + 2e``."""

    name = "bug-irreps-order"

    def edit(self, feats, graph):
        s, v, d = _parts(feats, self.backbone.channels)
        n = s.shape[0]
        return torch.cat([s, d.reshape(n, -1), v.reshape(n, -1)], dim=1)


class WrongL1Basis(_FeatureBug):
    """l = 1 components handed over as (y, z, x) instead of e3nn's (x, y, z)."""

    name = "bug-l1-basis"

    def edit(self, feats, graph):
        s, v, d = _parts(feats, self.backbone.channels)
        return _join(s, v[..., [1, 2, 0]], d)


class WrongLayout(_FeatureBug):
    """l = 1 block stored component-major ``[3, C]`` instead of multiplicity-major ``[C, 3]``."""

    name = "bug-layout"

    def edit(self, feats, graph):
        s, v, d = _parts(feats, self.backbone.channels)
        return _join(s, v.transpose(1, 2).reshape(v.shape), d)


class PseudoscalarClaimedO3(_FeatureBug):
    """A chiral triple product (a 0o pseudo-scalar, SO(3)-only) declared ``0e``, parity True."""

    name = "bug-pseudoscalar"

    def edit(self, feats, graph):
        s, v, d = _parts(feats, self.backbone.channels)
        triple = (torch.linalg.cross(v[:, 0], v[:, 1]) * v[:, 2]).sum(-1, keepdim=True)
        return _join(torch.cat([triple, s[:, 1:]], dim=1), v, d)


class VectorsDeclaredAxial(ToyAdapter):
    """Polar l = 1 features (the toy's 1o) declared ``1e`` (axial vectors)."""

    name = "bug-axial"

    @property
    def node_irreps(self):
        c = self.backbone.channels
        return o3.Irreps(f"{c}x0e + {c}x1e + {c}x2e")


# ---------------------------------------------------------------- translation
def _position_energy(positions: Tensor, graph: AtomicGraph) -> Tensor:
    """0.05 eV/Å² Σ_a |r_a|² per molecule: depends on where the molecule is, [B] eV."""
    per_atom = 0.05 * (positions**2).sum(-1)
    return per_atom.new_zeros(graph.num_graphs).index_add(0, graph.batch, per_atom)


class PositionDependentEnergy(ToyAdapter):
    """The backbone's energy (its own too) holds a term in absolute positions."""

    name = "bug-position-energy"

    def forward(self, graph):
        out = super().forward(graph)
        energy = out.energy + _position_energy(graph.positions, graph)
        return BackboneOutput(energy, out.node_feats, out.node_irreps)

    def native_energy_forces(self, graph):
        positions = graph.positions.detach().requires_grad_(True)
        energy = self.forward(graph.with_positions(positions)).energy
        return energy.detach(), -torch.autograd.grad(energy.sum(), positions)[0]


class PositionAsFeature(ToyAdapter):
    """Absolute positions appended to the node features, declared ``1x1o``."""

    name = "bug-position-feature"

    @property
    def node_irreps(self):
        return self.backbone.irreps_out + o3.Irreps("1x1o")

    def forward(self, graph):
        out = super().forward(graph)
        feats = torch.cat([out.node_feats, graph.positions], dim=1)
        return BackboneOutput(out.energy, feats, self.node_irreps)


# ---------------------------------------------------------------- permutation
def _local_index(graph: AtomicGraph) -> Tensor:
    """[N] index of each atom within its molecule."""
    return torch.arange(graph.num_atoms, device=graph.batch.device) - graph.ptr[graph.batch]


class FeaturesOfTheNextAtom(_FeatureBug):
    """Each atom gets the features of the next atom of its molecule (an off-by-one gather)."""

    name = "bug-next-atom"

    def edit(self, feats, graph):
        counts = graph.atoms_per_graph[graph.batch]
        following = graph.ptr[graph.batch] + (_local_index(graph) + 1) % counts
        return feats[following]


class AtomIndexAsFeature(_FeatureBug):
    """The atom's index within its molecule added to the scalar features."""

    name = "bug-atom-index"

    def edit(self, feats, graph):
        s, v, d = _parts(feats, self.backbone.channels)
        return _join(s + 0.3 * _local_index(graph).to(s.dtype)[:, None], v, d)


# ---------------------------------------------------------------- batching
class BatchMeanLeak(_FeatureBug):
    """The mean of every atom's features in the batch added to each atom's features."""

    name = "bug-batch-mean"

    def edit(self, feats, graph):
        return feats + feats.mean(dim=0, keepdim=True)


class BatchStandardisation(_FeatureBug):
    """Scalar features standardised with the batch's mean and standard deviation."""

    name = "bug-batch-standardise"

    def edit(self, feats, graph):
        s, v, d = _parts(feats, self.backbone.channels)
        mean, std = s.mean(dim=0, keepdim=True), s.std(dim=0, unbiased=False, keepdim=True)
        return _join((s - mean) / (std + 1e-3), v, d)


class BatchCentring(_FeatureBug):
    """Scalar features centred on the batch's mean."""

    name = "bug-batch-centre"

    def edit(self, feats, graph):
        s, v, d = _parts(feats, self.backbone.channels)
        return _join(s - s.mean(dim=0, keepdim=True), v, d)


class MissingBatchVector(ToyAdapter):
    """The backbone is called without the batch vector: every atom in molecule 0."""

    name = "bug-no-batch"

    def forward(self, graph):
        batch = torch.zeros_like(graph.batch)
        energy, feats = self.backbone(
            graph.positions, graph.atomic_numbers, batch, graph.num_graphs
        )
        return BackboneOutput(energy, feats, self.node_irreps)


class ChargedToy(_FeatureBug):
    """Correct: each molecule's total charge (``graph.charge``, e) shifts its scalars."""

    name = "toy-charged"

    def charges(self, graph: AtomicGraph) -> Tensor:
        """[B] total charge of each molecule, e (0 when the graph has none)."""
        if graph.charge is None:
            return graph.positions.new_zeros(graph.num_graphs)
        return graph.charge

    def edit(self, feats, graph):
        s, v, d = _parts(feats, self.backbone.channels)
        return _join(s + 0.3 * self.charges(graph)[graph.batch][:, None], v, d)


class FirstMoleculesCharge(ChargedToy):
    """The first molecule's charge used for every molecule of the batch."""

    name = "bug-first-charge"

    def charges(self, graph):
        return super().charges(graph)[:1].expand(graph.num_graphs)


# ---------------------------------------------------------------- native energy and forces
KCAL_PER_EV = 23.060548


class WrongEnergyUnit(ToyAdapter):
    """Energy handed over in kcal/mol while the backbone's own is in eV."""

    name = "bug-energy-unit"

    def forward(self, graph):
        out = super().forward(graph)
        return BackboneOutput(out.energy * KCAL_PER_EV, out.node_feats, out.node_irreps)


class ShiftedEnergy(ToyAdapter):
    """0.01 eV added to every molecule's energy by the adapter."""

    name = "bug-energy-shift"

    def forward(self, graph):
        out = super().forward(graph)
        return BackboneOutput(out.energy + 0.01, out.node_feats, out.node_irreps)


class NativeForcesWrongSign(ToyAdapter):
    """``native_energy_forces`` returns +dE/dr as the forces."""

    name = "bug-native-sign"

    def native_energy_forces(self, graph):
        energy, forces = super().native_energy_forces(graph)
        return energy, -forces


# ---------------------------------------------------------------- differentiability
class DetachedPositions(ToyAdapter):
    """The backbone is fed a detached copy of the positions."""

    name = "bug-detached"

    def forward(self, graph):
        args = graph.atomic_numbers, graph.batch, graph.num_graphs
        energy, feats = self.backbone(graph.positions.detach(), *args)
        return BackboneOutput(energy, feats, self.node_irreps)


@dataclass(frozen=True)
class PlantedBug:
    """One planted bug: its adapter, the property the kit must name, the kit's options.

    Attributes:
        adapter: the buggy adapter class.
        prop: the property the failure must name (one of ``hip_head.testing.PROPERTIES``).
        must_mention: fragments the message must hold (the transformation applied).
        options: extra keyword arguments of ``check_adapter`` (the defaults otherwise).
    """

    adapter: type
    prop: str
    must_mention: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


ROTATION, REFLECTION = "rotation equivariance", "reflection equivariance"
TRANSLATION, PERMUTATION = "translation invariance", "permutation equivariance"
BATCHING, NATIVE, DIFFERENTIABILITY = "batching", "native energy/forces", "differentiability"
Q, T, P = "Q = ", "t = ", "permutation = "
MATES = "its batch-mates"
CATALOGUE: dict[str, PlantedBug] = {
    "wrong irreps order": PlantedBug(WrongIrrepsOrder, ROTATION, (Q,)),
    "wrong l=1 basis": PlantedBug(WrongL1Basis, ROTATION, (Q,)),
    "wrong [3, mul] layout": PlantedBug(WrongLayout, ROTATION, (Q,)),
    "SO(3)-only feature claimed O(3)": PlantedBug(PseudoscalarClaimedO3, REFLECTION, (Q,)),
    "polar vectors declared 1e": PlantedBug(VectorsDeclaredAxial, REFLECTION, (Q,)),
    "position-dependent energy": PlantedBug(PositionDependentEnergy, TRANSLATION, (T,)),
    "position appended as a feature": PlantedBug(PositionAsFeature, TRANSLATION, (T,)),
    "features of the next atom": PlantedBug(FeaturesOfTheNextAtom, PERMUTATION, (P,)),
    "atom index as a feature": PlantedBug(AtomIndexAsFeature, PERMUTATION, (P,)),
    "batch leak through a feature mean": PlantedBug(BatchMeanLeak, BATCHING, (MATES,)),
    "batch standardisation": PlantedBug(BatchStandardisation, BATCHING, (MATES,)),
    "batch centring": PlantedBug(BatchCentring, BATCHING, (MATES,)),
    "missing batch vector": PlantedBug(MissingBatchVector, BATCHING, (MATES,)),
    "first molecule's charge for the batch": PlantedBug(
        FirstMoleculesCharge, BATCHING, (MATES, "'charge'"), {"charges": (-1, 0, 1)}
    ),
    "wrong energy unit": PlantedBug(WrongEnergyUnit, NATIVE, ("native_energy_forces",)),
    "energy shifted by 0.01 eV": PlantedBug(ShiftedEnergy, NATIVE, ("native_energy_forces",)),
    "native forces with the wrong sign": PlantedBug(
        NativeForcesWrongSign, NATIVE, ("native_energy_forces",)
    ),
    "detached positions": PlantedBug(
        DetachedPositions, DIFFERENTIABILITY, ("not differentiable with respect to the positions",)
    ),
}
