"""The Hessian readout head: node irreps -> symmetric, equivariant 3x3 Hessian blocks.

Data flow for a batch with N atoms and P ordered pairs (a, b) within ``hessian_cutoff``::

    node_feats [N, irreps_in] --Linear--> h [N, hidden]         (l <= 2, every parity present)
    r_ab --> Y(r̂_ab) [P, 0e+1o+2e],  radial basis x envelope [P, B]
    weights_ab = MLP(basis, scalars(h_a), scalars(h_b)) * envelope    (both environments)
    (optional) h <- h + Linear(Σ_b TP(h_b ⊗ Y_ab; w_ab)) / sqrt(avg pairs)   (num_interactions)
    x_ab = [TP(h_b ⊗ Y_ab), TP(h_a ⊗ Y_ab), h_a ⊙ h_b (channel-wise TP)]   all with w_ab
    M_ab = cart(Linear(x_ab) -> 0e+1e+2e)              [P, 3, 3]
    N_a  = cart(Linear(h_a) + Linear(Σ_b x_ab) -> 0e+2e) [N, 3, 3]
    H_ab = M_ab + M_baᵀ  (a != b),   H_aa = N_a + N_aᵀ   (symmetric by construction)

Because every ingredient is an e3nn equivariant operation of node irreps and pair vectors, the
blocks rotate as R H_ab Rᵀ; with ``parity`` respected (the ``1e`` part comes from odd x odd
products), they are also O(3)-equivariant when the backbone is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from hip_head._e3nn import ExactConstantsMixin, float64_default, o3
from hip_head.cartesian import BLOCK_IRREPS, SYMMETRIC_BLOCK_IRREPS, irreps_to_cartesian
from hip_head.graph import AtomicGraph, PairGraph, build_pair_graph
from hip_head.radial import BesselBasis, PolynomialEnvelope

#: Irreps the hidden node features may hold (l <= 2, both parities).
_HIDDEN_CANDIDATES = ("0e", "1o", "1e", "2e", "2o", "0o")
#: Irreps of ``hidden_irreps="full"``: every l <= 2 irrep a symmetric Hessian block can use
#: (0e, 2e) and the vectors and pseudo-vectors that build them.
_FULL_HIDDEN = ("0e", "1o", "1e", "2e")


@dataclass
class HessianBlocks:
    """The head's output: the non-zero 3x3 blocks of the Hessian, eV/Å².

    Attributes:
        diagonal: [N, 3, 3] symmetric blocks H_aa.
        offdiagonal: [P, 3, 3] blocks H_ab for each ordered pair (a, b) of ``pairs``;
            ``offdiagonal[reverse[k]]`` is exactly ``offdiagonal[k]ᵀ``.
        pairs: the pair graph (indices [2, P], reverse [P]).
    """

    diagonal: torch.Tensor
    offdiagonal: torch.Tensor
    pairs: PairGraph

    def to(self, dtype: torch.dtype) -> HessianBlocks:
        """The same blocks in ``dtype`` (e.g. back to float32 after a bf16 autocast head)."""
        if self.diagonal.dtype == dtype and self.offdiagonal.dtype == dtype:
            return self
        return HessianBlocks(self.diagonal.to(dtype), self.offdiagonal.to(dtype), self.pairs)


def _channelwise_tensor_product(irreps1, irreps2, lmax: int, mode: str):
    """Channel-wise tensor product (``mode`` 'uvu' or 'uuu'), outputs restricted to l <= lmax.

    'uvu': features x spherical harmonics (each channel of ``irreps1`` times each harmonic);
    'uuu': two features with the same multiplicities, channel by channel.
    """
    irreps_out, instructions = [], []
    for i, (mul, ir1) in enumerate(irreps1):
        for j, (_, ir2) in enumerate(irreps2):
            for ir_out in ir1 * ir2:
                if ir_out.l <= lmax:
                    instructions.append((i, j, len(irreps_out), mode, True))
                    irreps_out.append((mul, ir_out))
    return _sorted_tensor_product(irreps1, irreps2, irreps_out, instructions)


def _sorted_tensor_product(irreps1, irreps2, irreps_out, instructions):
    irreps_out = o3().Irreps(irreps_out)
    irreps_out, permutation, _ = irreps_out.sort()
    instructions = [(i, j, permutation[k], mode, train) for i, j, k, mode, train in instructions]
    return o3().TensorProduct(
        irreps1,
        irreps2,
        irreps_out,
        instructions,
        shared_weights=False,
        internal_weights=False,
    )


def _scalar_mask(irreps) -> torch.Tensor:
    """[dim] bool mask of the ``0e`` components of ``irreps``."""
    mask = torch.zeros(irreps.dim, dtype=torch.bool)
    for (_, ir), sl in zip(irreps, irreps.slices()):
        if ir.l == 0 and ir.p == 1:
            mask[sl] = True
    return mask


class _RadialMLP(nn.Module):
    """Per-pair weights from distance and both atoms' invariants; zero beyond the cutoff."""

    def __init__(self, num_in: int, hidden: int, num_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(num_in, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, num_out, bias=False),
        )

    def forward(self, pair_scalars: torch.Tensor, envelope: torch.Tensor) -> torch.Tensor:
        return self.net(pair_scalars) * envelope.unsqueeze(-1)


class PairInteraction(nn.Module):
    """One equivariant message-passing update of node features on the pair graph."""

    def __init__(self, hidden, irreps_sh, lmax: int, radial_in: int, radial_hidden: int):
        super().__init__()
        self.tp = _channelwise_tensor_product(hidden, irreps_sh, lmax, "uvu")
        self.radial = _RadialMLP(radial_in, radial_hidden, self.tp.weight_numel)
        self.linear = o3().Linear(self.tp.irreps_out, hidden)

    def forward(self, h, sh, pair_scalars, envelope, pairs: PairGraph, norm: float):
        a, b = pairs.index
        messages = self.tp(h[b], sh, self.radial(pair_scalars, envelope))
        aggregated = torch.zeros(
            h.shape[0], messages.shape[1], dtype=messages.dtype, device=messages.device
        ).index_add_(0, a, messages)
        return h + self.linear(aggregated) / norm


class HessianReadout(ExactConstantsMixin, nn.Module):
    """SE(3)-equivariant head that predicts the Hessian blocks from node irreps.

    Args:
        node_irreps: e3nn irreps of the node features the adapter provides (l <= 2 used;
            must include ``0e`` scalars).
        channels: multiplicity of each hidden irrep.
        hessian_cutoff: pair cutoff, Å; pairs beyond it have exactly zero blocks.
            ``float("inf")`` gives the complete graph within each molecule.
        num_interactions: equivariant message-passing updates on the pair graph before the
            blocks are read out (>= 1 lets scalar-only backbones produce l = 1, 2 content).
        num_radial: number of Bessel radial functions.
        radial_hidden: width of the radial/weight MLP.
        avg_num_pairs: typical number of partners per atom (normalises sums).
        diagonal: ``"learned"`` (H_aa from node and aggregated pair features) or
            ``"sum_rule"`` (H_aa = -sym(Σ_b H_ab), the translation-invariance sum rule).
        hidden_irreps: ``"backbone"`` (the hidden features hold the l <= 2 irreps the backbone
            provides, e.g. only ``0e + 1o`` for a MACE with ``32x0e+32x1o``) or ``"full"``
            (``0e + 1o + 1e + 2e`` whatever the backbone provides; the head's interactions fill
            the parts the backbone lacks, so it needs ``num_interactions >= 1``).
        block_scale: eV/Å² per unit of the head's raw output: the blocks are the raw,
            unit-scale e3nn outputs times this. Setting it to the labels' RMS (fine-tuning's
            ``block_scale: auto``) starts training at the right magnitude (diagonal entries of
            molecular Hessians are ~20 eV/Å²).
    """

    #: Class default, so heads pickled before ``block_scale`` existed still load and run.
    block_scale: float = 1.0

    def __init__(
        self,
        node_irreps,
        channels: int = 16,
        hessian_cutoff: float = 12.0,
        num_interactions: int = 1,
        num_radial: int = 8,
        radial_hidden: int = 64,
        avg_num_pairs: float = 16.0,
        diagonal: str = "learned",
        hidden_irreps: str = "backbone",
        block_scale: float = 1.0,
    ) -> None:
        super().__init__()
        dtype = torch.get_default_dtype()
        with float64_default():  # e3nn constants built exactly; see ExactConstantsMixin
            if diagonal not in ("learned", "sum_rule"):
                raise ValueError(f"diagonal must be 'learned' or 'sum_rule', got {diagonal!r}")
            irreps_in = o3().Irreps(node_irreps).simplify()
            if not any(ir.l == 0 and ir.p == 1 for _, ir in irreps_in):
                raise ValueError(f"node irreps {irreps_in} hold no 0e scalars; the head needs them")
            if hidden_irreps not in ("backbone", "full"):
                raise ValueError(
                    f"hidden_irreps must be 'backbone' or 'full', got {hidden_irreps!r}"
                )
            present = {str(ir) for _, ir in irreps_in if ir.l <= 2}
            if hidden_irreps == "full":
                present |= set(_FULL_HIDDEN)
            hidden = o3().Irreps([(channels, ir) for ir in _HIDDEN_CANDIDATES if ir in present])
            self.node_irreps = irreps_in
            self.hidden_irreps = hidden.sort().irreps.simplify()
            self.hessian_cutoff = float(hessian_cutoff)
            self.block_scale = float(block_scale)
            self.diagonal_mode = diagonal
            self.norm = math.sqrt(avg_num_pairs)
            self.lmax = 2

            self.irreps_sh = o3().Irreps.spherical_harmonics(2)
            self.spherical_harmonics = o3().SphericalHarmonics(
                self.irreps_sh, normalize=True, normalization="component"
            )
            self.node_linear = o3().Linear(irreps_in, self.hidden_irreps)
            self.register_buffer("scalar_mask", _scalar_mask(self.hidden_irreps), persistent=False)
            num_scalars = int(self.scalar_mask.sum())
            self.radial_basis = BesselBasis(self.hessian_cutoff, num_radial)
            self.envelope = PolynomialEnvelope(self.hessian_cutoff)
            radial_in = num_radial + 2 * num_scalars

            self.interactions = nn.ModuleList(
                PairInteraction(
                    self.hidden_irreps, self.irreps_sh, self.lmax, radial_in, radial_hidden
                )
                for _ in range(num_interactions)
            )
            self.tp_sender = _channelwise_tensor_product(
                self.hidden_irreps, self.irreps_sh, self.lmax, "uvu"
            )
            self.tp_receiver = _channelwise_tensor_product(
                self.hidden_irreps, self.irreps_sh, self.lmax, "uvu"
            )
            self.tp_pair = _channelwise_tensor_product(
                self.hidden_irreps, self.hidden_irreps, self.lmax, "uuu"
            )
            self.pair_irreps = (
                self.tp_sender.irreps_out + self.tp_receiver.irreps_out + self.tp_pair.irreps_out
            )
            num_weights = (
                self.tp_sender.weight_numel
                + self.tp_receiver.weight_numel
                + self.tp_pair.weight_numel
            )
            self.pair_radial = _RadialMLP(radial_in, radial_hidden, num_weights)
            self.pair_out = o3().Linear(self.pair_irreps, o3().Irreps(BLOCK_IRREPS))
            self.node_out = o3().Linear(self.hidden_irreps, o3().Irreps(SYMMETRIC_BLOCK_IRREPS))
            self.node_pair_out = o3().Linear(self.pair_irreps, o3().Irreps(SYMMETRIC_BLOCK_IRREPS))
        self.record_exact_constants()
        self.to(dtype)

    def extra_repr(self) -> str:
        return (
            f"node_irreps={self.node_irreps}, hidden={self.hidden_irreps}, "
            f"cutoff={self.hessian_cutoff} Å, interactions={len(self.interactions)}, "
            f"diagonal={self.diagonal_mode}"
        )

    def _pair_scalars(self, h, basis, pairs: PairGraph) -> torch.Tensor:
        a, b = pairs.index
        scalars = h[:, self.scalar_mask]
        return torch.cat([basis, scalars[a], scalars[b]], dim=-1)

    def forward(
        self, node_feats: torch.Tensor, graph: AtomicGraph, pairs: PairGraph | None = None
    ) -> HessianBlocks:
        """Predict the Hessian blocks.

        Args:
            node_feats: [N, node_irreps.dim] adapter features.
            graph: the batch (positions [N, 3] Å).
            pairs: a prebuilt pair graph (built from ``graph`` with ``hessian_cutoff`` if None).

        Returns:
            :class:`HessianBlocks` in eV/Å²: diagonal [N, 3, 3] and off-diagonal [P, 3, 3].
        """
        if pairs is None:
            pairs = build_pair_graph(graph, self.hessian_cutoff)
        h = self.node_linear(node_feats)
        num_atoms = h.shape[0]
        if pairs.num_pairs:
            a, b = pairs.index
            sh = self.spherical_harmonics(pairs.vectors)
            envelope = self.envelope(pairs.lengths)
            basis = self.radial_basis(pairs.lengths) * envelope.unsqueeze(-1)
            for interaction in self.interactions:
                pair_scalars = self._pair_scalars(h, basis, pairs)
                h = interaction(h, sh, pair_scalars, envelope, pairs, self.norm)
            weights = self.pair_radial(self._pair_scalars(h, basis, pairs), envelope)
            n1, n2 = self.tp_sender.weight_numel, self.tp_receiver.weight_numel
            x = torch.cat(
                [
                    self.tp_sender(h[b], sh, weights[:, :n1]),
                    self.tp_receiver(h[a], sh, weights[:, n1 : n1 + n2]),
                    self.tp_pair(h[a], h[b], weights[:, n1 + n2 :]),
                ],
                dim=-1,
            )
            m = self.block_scale * irreps_to_cartesian(self.pair_out(x))  # [P, 3, 3], M_ab
            offdiagonal = m + m[pairs.reverse].transpose(-1, -2)  # H_ab = M_ab + M_baᵀ
            aggregated = torch.zeros(num_atoms, x.shape[1], dtype=x.dtype, device=x.device)
            aggregated = aggregated.index_add(0, a, x) / self.norm
        else:
            offdiagonal = h.new_zeros(0, 3, 3)
            aggregated = h.new_zeros(num_atoms, self.pair_irreps.dim)

        if self.diagonal_mode == "sum_rule":
            row_sum = torch.zeros(num_atoms, 3, 3, dtype=h.dtype, device=h.device)
            if pairs.num_pairs:
                row_sum = row_sum.index_add(0, pairs.index[0], offdiagonal)
            diagonal = -0.5 * (row_sum + row_sum.transpose(-1, -2))
        else:
            n = self.block_scale * irreps_to_cartesian(
                self.node_out(h) + self.node_pair_out(aggregated)
            )
            diagonal = n + n.transpose(-1, -2)  # H_aa = N_a + N_aᵀ
        return HessianBlocks(diagonal=diagonal, offdiagonal=offdiagonal, pairs=pairs)
