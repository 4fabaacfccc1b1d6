"""One message-passing layer of the Hessian head on its pair graph, and its weight MLP.

Parameters only: :class:`~hip_head.readout.HessianReadout` evaluates the layer through its
evaluation plans (:mod:`hip_head.readout_plans`); :meth:`PairInteraction.forward` is the plain
e3nn composition the plans are checked against.
"""

from __future__ import annotations

import torch
from torch import nn

from hip_head._e3nn import o3
from hip_head.graph import PairGraph
from hip_head.readout_plans import (
    _channelwise_tensor_product,
    _convert,
    _message_plan,
    _MessagePlan,
)


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
        """[P, num_out] weights of [P, num_in] pair scalars and the [P] envelope."""
        return self.net(pair_scalars) * envelope.unsqueeze(-1)

    def hidden(self, pair_scalars: torch.Tensor) -> torch.Tensor:
        """[P, hidden] activations that the last (linear, bias-free) layer reads."""
        return self.net[:-1](pair_scalars)

    @property
    def last(self) -> torch.Tensor:
        """[num_out, hidden] weight of the last layer."""
        return self.net[-1].weight


class PairInteraction(nn.Module):
    """One equivariant message-passing update of node features on the pair graph.

    h_a <- h_a + Linear(Σ_b TP(h_b ⊗ Y_ab; w_ab)) / norm, with w_ab from the radial MLP. Only
    the paths whose output irreps the linear map reads are evaluated (see :class:`_MessagePlan`).
    """

    def __init__(self, hidden, irreps_sh, lmax: int, radial_in: int, radial_hidden: int):
        super().__init__()
        self.tp = _channelwise_tensor_product(hidden, irreps_sh, lmax, "uvu")
        self.radial = _RadialMLP(radial_in, radial_hidden, self.tp.weight_numel)
        self.linear = o3().Linear(self.tp.irreps_out, hidden)

    def plan(self) -> _MessagePlan:
        """The (float64, CPU) evaluation plan of this interaction."""
        return _message_plan(self.tp, self.linear, self.tp.irreps_in2)

    def messages(
        self,
        h_sender: torch.Tensor,
        sh: torch.Tensor,
        pair_scalars: torch.Tensor,
        envelope: torch.Tensor,
        plan: _MessagePlan,
    ) -> list[torch.Tensor]:
        """Messages of a set of pairs, one tensor per group of the plan.

        Args:
            h_sender: [P, hidden.dim] features of atom b of each pair.
            sh: [P, sh_dim] spherical harmonics of r̂_ab.
            pair_scalars: [P, radial_in] radial basis and both atoms' scalars.
            envelope: [P] cutoff envelope.
            plan: :meth:`plan` on the features' device and dtype.

        Returns:
            Per group, [P, mul * width] messages (to be summed over b for each atom a).
        """
        # The envelope scales the last layer's input instead of its (wider) output.
        hidden = self.radial.hidden(pair_scalars) * envelope.unsqueeze(-1)
        p = sh.shape[0]
        out = []
        for g in plan.groups:
            harmonics = (sh @ g.harmonics).view(p, g.dim, g.width)
            x = h_sender[:, g.features].reshape(p, g.mul, g.dim)
            weights = hidden @ self.radial.last[g.weight_rows].T  # [p, mul * width]
            # scalars (dim 1): an outer product, cheaper broadcast than as a batched product
            products = x * harmonics if g.dim == 1 else torch.bmm(x, harmonics)
            out.append(products.reshape(p, -1) * weights)
        return out

    def update(
        self, h: torch.Tensor, aggregated: list[torch.Tensor], plan: _MessagePlan, norm: float
    ) -> torch.Tensor:
        """h + Linear(aggregated messages) / norm; ``aggregated`` as :meth:`messages`, summed
        per atom ([N, mul * width] per group)."""
        summed = torch.cat(aggregated, dim=-1)
        destination = torch.cat([g.destination for g in plan.groups])
        full = summed.new_zeros(h.shape[0], plan.out_dim).index_add(1, destination, summed)
        return h + self.linear(full) / norm

    def forward(self, h, sh, pair_scalars, envelope, pairs: PairGraph, norm: float):
        """The update over every pair of ``pairs`` at once (h [N, hidden.dim] -> same)."""
        plan = _convert(self.plan(), h.dtype, h.device)
        a, b = pairs.index
        messages = self.messages(h[b], sh, pair_scalars, envelope, plan)
        aggregated = [m.new_zeros(h.shape[0], m.shape[1]).index_add(0, a, m) for m in messages]
        return self.update(h, aggregated, plan, norm)
