"""A tiny O(3)-equivariant backbone and its adapter: the model the kit's own tests run on."""

import torch
from torch import Tensor, nn

from hip_head import o3  # e3nn.o3, imported safely under any torch / e3nn combination
from hip_head.adapters import BackboneAdapter, BackboneOutput, register
from hip_head.graph import AtomicGraph
from hip_head.testing import float64_default


class ToyBackbone(nn.Module):
    """Species embedding -> one e3nn convolution -> energy = Σ_atoms MLP(scalars).

    Node features ``channels x (0e + 1o + 2e)``. Args: ``max_z`` (largest Z), ``cutoff`` (Å).
    """

    def __init__(self, max_z: int = 10, channels: int = 8, cutoff: float = 4.0) -> None:
        super().__init__()
        self.cutoff, self.channels = cutoff, channels
        self.irreps_sh = o3.Irreps.spherical_harmonics(2)  # 1x0e + 1x1o + 1x2e
        self.irreps_out = o3.Irreps(f"{channels}x0e + {channels}x1o + {channels}x2e")
        self.embedding = nn.Embedding(max_z + 1, channels)
        self.tp = o3.FullyConnectedTensorProduct(
            f"{channels}x0e", self.irreps_sh, self.irreps_out, shared_weights=False
        )
        self.register_buffer("centers", torch.linspace(0.0, cutoff, 8))
        self.radial = nn.Sequential(
            nn.Linear(8, 16), nn.SiLU(), nn.Linear(16, self.tp.weight_numel)
        )
        self.energy_mlp = nn.Sequential(nn.Linear(channels, 16), nn.SiLU(), nn.Linear(16, 1))

    def forward(self, positions: Tensor, numbers: Tensor, batch: Tensor, num_graphs: int):
        """Positions [N, 3] Å -> (energy [num_graphs] eV, node features [N, irreps_out.dim])."""
        with torch.no_grad():  # neighbour list: same structure, within the cutoff
            close = (torch.cdist(positions, positions) < self.cutoff) & (batch[:, None] == batch)
            close.fill_diagonal_(False)
        receiver, sender = torch.nonzero(close, as_tuple=True)
        vectors = positions[sender] - positions[receiver]
        length = vectors.norm(dim=-1, keepdim=True)
        envelope = 0.5 * (torch.cos(torch.pi * length / self.cutoff) + 1.0)  # smooth cutoff
        basis = torch.exp(-(((length - self.centers) * 2.0) ** 2)) * envelope  # [E, 8]
        sh = o3.spherical_harmonics(self.irreps_sh, vectors, normalize=True)
        species = self.embedding(numbers)  # [N, channels]
        messages = self.tp(species[sender], sh, self.radial(basis))
        feats = messages.new_zeros(len(numbers), messages.shape[1]).index_add(0, receiver, messages)
        feats = torch.cat([feats[:, : self.channels] + species, feats[:, self.channels :]], -1)
        atom_energy = self.energy_mlp(feats[:, : self.channels]).squeeze(-1)
        energy = atom_energy.new_zeros(num_graphs).index_add(0, batch, atom_energy)
        return energy, feats


@register
class ToyAdapter(BackboneAdapter):
    """Hands the toy's energy and node features to the Hessian head."""

    name = "toy"
    parity = True  # built from O(3)-equivariant e3nn operations: reflections hold

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return isinstance(model, ToyBackbone)

    @property
    def node_irreps(self) -> o3.Irreps:
        return self.backbone.irreps_out

    def forward(self, graph: AtomicGraph) -> BackboneOutput:
        args = graph.atomic_numbers, graph.batch, graph.num_graphs
        energy, feats = self.backbone(graph.positions, *args)
        return BackboneOutput(energy=energy, node_feats=feats, node_irreps=self.node_irreps)

    def native_energy_forces(self, graph: AtomicGraph) -> tuple[Tensor, Tensor]:
        """The bare backbone's energy [B] eV and forces -dE/dr [N, 3] eV/Å."""
        positions = graph.positions.detach().requires_grad_(True)
        energy, _ = self.backbone(positions, graph.atomic_numbers, graph.batch, graph.num_graphs)
        return energy.detach(), -torch.autograd.grad(energy.sum(), positions)[0]


def make_toy(**kwargs) -> ToyBackbone:
    """A ToyBackbone built in float64 (e3nn constants exact; the kit casts copies to float32)."""
    with float64_default():
        return ToyBackbone(**kwargs)
