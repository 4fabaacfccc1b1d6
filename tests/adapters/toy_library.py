"""A small backbone written the way MLIP libraries write theirs: the model of the adapter guide.

Like fairchem's and torch-geometric's models it takes a dict batch and returns a dict, searches
its own neighbours inside ``forward`` (a dense, truncating search standing in for a compiled
one), and stores its node embedding l-major, ``[N, (lmax+1)^2, C]`` (row ``l*l + m``), not in
e3nn's layout. It is O(3)-equivariant (e3nn operations and a per-l norm). Its adapter is the
worked example in ``docs/adapters.md``, executed by ``test_docs_adapter_example.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hip_head import o3
from hip_head._e3nn import float64_default


class DenseRadiusGraph(nn.Module):
    """The library's own neighbour search: all pairs, then the ``max_neighbors`` nearest kept."""

    def __init__(self, cutoff: float, max_neighbors: int) -> None:
        super().__init__()
        self.cutoff, self.max_neighbors = cutoff, max_neighbors

    def forward(self, pos: Tensor, batch: Tensor) -> Tensor:
        """[2, E] (sender, receiver) pairs of the same structure closer than the cutoff."""
        with torch.no_grad():
            distance = torch.cdist(pos, pos)
            distance[batch[:, None] != batch[None, :]] = float("inf")
            distance.fill_diagonal_(float("inf"))
            k = min(self.max_neighbors, pos.shape[0])
            nearest, sender = distance.topk(k, dim=0, largest=False)  # [k, N] per receiver
            receiver = torch.arange(pos.shape[0]).expand(k, -1)
            keep = nearest < self.cutoff
        return torch.stack([sender[keep], receiver[keep]])


class SphericalNorm(nn.Module):
    """RMS norm of each degree l of an l-major embedding [N, (lmax+1)^2, C] (equivariant)."""

    def __init__(self, lmax: int) -> None:
        super().__init__()
        self.lmax = lmax

    def forward(self, emb: Tensor) -> Tensor:
        blocks = [emb[:, l * l : (l + 1) ** 2] for l in range(self.lmax + 1)]
        return torch.cat(
            [b / (b.pow(2).mean(dim=(1, 2), keepdim=True) + 1e-6).sqrt() for b in blocks], 1
        )


class ToyLibraryModel(nn.Module):
    """Species embedding -> one e3nn convolution -> l-major embedding -> norm -> energy.

    Args: ``channels`` C, ``lmax`` (<= 2 here), ``cutoff`` Å, ``max_z``, ``max_neighbors``.
    """

    def __init__(
        self,
        channels: int = 8,
        lmax: int = 2,
        cutoff: float = 4.0,
        max_z: int = 10,
        max_neighbors: int = 32,
    ) -> None:
        super().__init__()
        self.channels, self.lmax, self.cutoff = channels, lmax, cutoff
        self.graph = DenseRadiusGraph(cutoff, max_neighbors)
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.irreps_out = o3.Irreps("+".join(f"{channels}x{ir}" for _, ir in self.irreps_sh))
        self.embedding = nn.Embedding(max_z + 1, channels)
        self.tp = o3.FullyConnectedTensorProduct(
            f"{channels}x0e", self.irreps_sh, self.irreps_out, shared_weights=False
        )
        self.register_buffer("centers", torch.linspace(0.0, cutoff, 8))
        self.radial = nn.Sequential(
            nn.Linear(8, 16), nn.SiLU(), nn.Linear(16, self.tp.weight_numel)
        )
        self.norm = SphericalNorm(lmax)
        self.energy_head = nn.Sequential(nn.Linear(channels, 16), nn.SiLU(), nn.Linear(16, 1))

    def forward(self, data: dict[str, Tensor]) -> dict[str, Tensor]:
        """Dict batch (``pos`` [N, 3] Å, ``atomic_numbers``, ``batch``, ``natoms``) -> energy."""
        pos, batch = data["pos"], data["batch"]
        sender, receiver = self.graph(pos, batch)
        vectors = pos[sender] - pos[receiver]
        length = vectors.norm(dim=-1, keepdim=True)
        envelope = 0.5 * (torch.cos(torch.pi * length / self.cutoff) + 1.0)
        basis = torch.exp(-(((length - self.centers) * 2.0) ** 2)) * envelope
        sh = o3.spherical_harmonics(self.irreps_sh, vectors, normalize=True)
        species = self.embedding(data["atomic_numbers"])
        messages = self.tp(species[sender], sh, self.radial(basis))
        feats = messages.new_zeros(pos.shape[0], messages.shape[1]).index_add(0, receiver, messages)
        n, c = pos.shape[0], self.channels
        emb = torch.cat(  # e3nn's layout -> the library's l-major [N, (lmax+1)^2, C]
            [
                feats[:, sl].reshape(n, c, ir.dim).transpose(1, 2)
                for (_, ir), sl in zip(self.irreps_out, self.irreps_out.slices())
            ],
            dim=1,
        )
        emb = self.norm(
            emb + torch.nn.functional.pad(species[:, None], (0, 0, 0, emb.shape[1] - 1))
        )
        atom_energy = self.energy_head(emb[:, 0]).squeeze(-1)
        num_graphs = data["natoms"].shape[0]
        return {"energy": atom_energy.new_zeros(num_graphs).index_add(0, batch, atom_energy)}


def make_toy_library_model(**kwargs) -> ToyLibraryModel:
    """A ToyLibraryModel built in float64 (e3nn constants exact; the kit casts copies)."""
    with float64_default():
        return ToyLibraryModel(**kwargs)
