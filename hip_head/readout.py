"""The Hessian readout head: node irreps -> symmetric, equivariant 3x3 Hessian blocks.

Data flow for a batch with N atoms and P ordered pairs (a, b) within ``hessian_cutoff`` (the
pair graph of :func:`~hip_head.graph.build_pair_graph`: one radius search, periodic images
included; nothing here is quadratic in N)::

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

How it is evaluated. The modules above hold the parameters (their names are those of saved
heads); the forward pass evaluates the same formulas in an order that never forms the wide
per-pair features. Every map after a tensor product is linear, so:

- ``pair_out`` and ``node_pair_out`` act on x_ab path by path: their weights are folded, per
  tensor-product path and output irrep, into the last layer of the weight MLP, which then
  gives per pair the channel coefficients of each (path, block component) directly. A pair
  yields 15 numbers (M_ab and its term of N_a) instead of x_ab's (``74 x channels`` for
  ``0e + 1o`` hidden features); ``Linear(Σ_b x_ab) = Σ_b Linear(x_ab)`` gives the diagonal.
- Paths whose output irrep no linear map reads (e.g. ``1o``, ``2o`` outputs of the final
  products, ``1e``/``2e`` messages for a ``0e + 1o`` hidden space) are not evaluated, nor the
  MLP weights that feed them.
- Interaction messages are summed per atom before their (per-atom) linear map, as before.
- Pairs are evaluated in chunks when autograd records nothing (inference): the head's working
  memory is then bounded by ``memory_budget_gb`` (see :mod:`hip_head.memory`), and a request
  that cannot fit stops with :class:`~hip_head.errors.HeadMemoryError` before allocating.

The results equal the e3nn modules' composition up to floating-point rounding (float64:
~1e-15 relative).
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import torch
from torch import nn

from hip_head._e3nn import ExactConstantsMixin, float64_default, o3
from hip_head.blocks import HessianBlocks
from hip_head.cartesian import BLOCK_IRREPS, SYMMETRIC_BLOCK_IRREPS, irreps_to_cartesian
from hip_head.errors import InvalidArgumentError
from hip_head.graph import AtomicGraph, PairGraph, build_pair_graph
from hip_head.memory import HeadMemoryEstimate, plan_head_memory
from hip_head.pair_interaction import PairInteraction, _RadialMLP  # noqa: F401 - class paths of pickled heads
from hip_head.radial import BesselBasis, PolynomialEnvelope
from hip_head.readout_plans import (
    _channelwise_tensor_product,
    _convert,
    _MessagePlan,
    _readout_plan,
    _ReadoutPlan,
    _scalar_mask,
)

#: Irreps the hidden node features may hold (l <= 2, both parities).
_HIDDEN_CANDIDATES = ("0e", "1o", "1e", "2e", "2o", "0o")
#: Irreps of ``hidden_irreps="full"``: every l <= 2 irrep a symmetric Hessian block can use
#: (0e, 2e) and the vectors and pseudo-vectors that build them.
_FULL_HIDDEN = ("0e", "1o", "1e", "2e")
#: Evaluation plans of each head, by (diagonal mode[, dtype, device]): derived from the modules'
#: structure, held outside the modules so that they are never pickled, saved or compared.
_PLANS: weakref.WeakKeyDictionary[nn.Module, dict[Any, Any]] = weakref.WeakKeyDictionary()


def _check_head_arguments(**values: Any) -> None:
    """The head's numeric settings, each named in the error when out of range.

    Raises:
        InvalidArgumentError: a count below its minimum (``channels``, ``num_radial``,
            ``radial_hidden`` >= 1, ``num_interactions`` >= 0), or a length / scale that is
            not a positive number (``hessian_cutoff`` may be ``inf``: complete pair graphs).
    """
    minimum = {"channels": 1, "num_radial": 1, "radial_hidden": 1, "num_interactions": 0}
    for name, low in minimum.items():
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidArgumentError(f"{name} must be an integer >= {low}, got {value!r}")
    for name in ("hessian_cutoff", "avg_num_pairs", "block_scale"):
        value = values[name]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        if not ok or (name != "hessian_cutoff" and not math.isfinite(value)):
            raise InvalidArgumentError(
                f"{name} must be a positive number, got {value!r}"
                + (" (Å; inf: every pair)" if name == "hessian_cutoff" else "")
            )


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

    Cost: time and memory grow with the number of pairs P within ``hessian_cutoff``. In
    inference (autograd recording nothing) pairs are evaluated in chunks, so the working memory
    stays within a budget (``forward(..., memory_budget_gb=...)``); with autograd recording, all
    pairs are evaluated at once and their activations are kept for the backward pass.
    :meth:`estimate_memory` gives the estimate the forward pass checks before it allocates.
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
        _check_head_arguments(
            channels=channels,
            hessian_cutoff=hessian_cutoff,
            num_interactions=num_interactions,
            num_radial=num_radial,
            radial_hidden=radial_hidden,
            avg_num_pairs=avg_num_pairs,
            block_scale=block_scale,
        )
        dtype = torch.get_default_dtype()
        with float64_default():  # e3nn constants built exactly; see ExactConstantsMixin
            if diagonal not in ("learned", "sum_rule"):
                raise InvalidArgumentError(
                    f"diagonal must be 'learned' or 'sum_rule', got {diagonal!r}"
                )
            irreps_in = o3().Irreps(node_irreps).simplify()
            if not any(ir.l == 0 and ir.p == 1 for _, ir in irreps_in):
                raise InvalidArgumentError(
                    f"node irreps {irreps_in} hold no 0e scalars; the head needs them"
                )
            if hidden_irreps not in ("backbone", "full"):
                raise InvalidArgumentError(
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

    # ------------------------------------------------------------------ evaluation plans
    def _plans(
        self, dtype: torch.dtype, device: torch.device
    ) -> tuple[list[_MessagePlan], _ReadoutPlan]:
        """The interactions' and the final products' plans in ``dtype`` on ``device`` (cached;
        the plans hold index and Wigner-3j tensors only, no parameters)."""
        cache = _PLANS.setdefault(self, {})
        key = (self.diagonal_mode, dtype, device)
        if key not in cache:
            master = cache.get(self.diagonal_mode)
            if master is None:
                master = cache[self.diagonal_mode] = self._build_plans()
            cache[key] = _convert(master, dtype, device)
        return cache[key]

    def _build_plans(self) -> tuple[list[_MessagePlan], _ReadoutPlan]:
        messages = [interaction.plan() for interaction in self.interactions]
        # Weights and blocks of x_ab = [sender, receiver, pair] follow one another.
        sender, receiver = self.tp_sender, self.tp_receiver
        weights = sender.weight_numel + receiver.weight_numel
        blocks = len(sender.irreps_out) + len(receiver.irreps_out)
        products = [
            (sender, 1, False, 0, 0),
            (receiver, 0, False, sender.weight_numel, len(sender.irreps_out)),
            (self.tp_pair, 0, True, weights, blocks),
        ]
        targets = [(self.pair_out, 0, 0)]
        if self.diagonal_mode == "learned":
            targets.append(
                (self.node_pair_out, self.pair_out.irreps_out.dim, self.pair_out.weight_numel)
            )
        return messages, _readout_plan(products, targets, self.irreps_sh)

    def _target_weights(self) -> torch.Tensor:
        """The weights of the linear maps folded into the final products, concatenated."""
        if self.diagonal_mode == "learned":
            return torch.cat([self.pair_out.weight, self.node_pair_out.weight])
        return self.pair_out.weight

    # ------------------------------------------------------------------ memory
    def _floats_per_pair(self) -> tuple[int, int]:
        """(working set, activations kept for backward) per pair, in numbers of the dtype.

        Working set: the largest set of per-pair tensors alive at once while one chunk is
        evaluated. Kept: what autograd stores per pair when every pair is evaluated at once.
        """
        messages, readout = self._plans(torch.float64, torch.device("cpu"))
        geometry = self.irreps_sh.dim + 1 + 2 * self.radial_basis.frequencies.numel()
        scalars = self.pair_radial.net[0].in_features
        hidden = 2 * self.pair_radial.net[0].out_features
        dim_h = self.hidden_irreps.dim
        passes = []
        for plan in messages:
            groups = sum(g.dim * g.width + 3 * g.mul * g.width for g in plan.groups)
            passes.append(dim_h + groups)
        features = int(readout.blocks.shape[0])
        groups = 0
        for g in readout.groups:
            if g.channelwise:
                groups += g.mul * g.dim1 * g.dim2 + g.rows * g.dim1 * g.dim2
            else:
                groups += g.rows * g.dim1
        passes.append(
            int(readout.weight_rows.numel()) + 2 * dim_h + groups + 2 * features + readout.out_dim
        )
        per_pass = geometry + scalars + hidden
        work = per_pass + max(passes)
        kept = sum(per_pass + p for p in passes)
        return work, kept

    def estimate_memory(
        self,
        num_atoms: int,
        num_pairs: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        requires_grad: bool = False,
        memory_budget_gb: float | None = None,
    ) -> HeadMemoryEstimate:
        """Memory the head will need, and the chunk size that keeps it within the budget.

        Args:
            num_atoms: N, atoms in the batch.
            num_pairs: P, ordered pairs within ``hessian_cutoff`` (``PairGraph.num_pairs``).
            dtype: dtype of the evaluation (default: the head's).
            device: where it runs (default: the head's device).
            requires_grad: autograd records the head (training, or gradients requested): all
                pairs at once, activations kept.
            memory_budget_gb: GiB the head may use (default: a fraction
                :data:`hip_head.memory.DEFAULT_MEMORY_FRACTION` of the available memory).

        Returns:
            :class:`~hip_head.memory.HeadMemoryEstimate` (bytes, chunk size in pairs).

        Raises:
            HeadMemoryError: the head would not fit, even in chunks of
                :data:`hip_head.memory.MIN_CHUNK_PAIRS` pairs (inference) or with all pairs at
                once (autograd recording). Nothing has been allocated.
        """
        parameter = next(self.parameters())
        dtype = dtype or parameter.dtype
        device = torch.device(device) if device is not None else parameter.device
        work, kept = self._floats_per_pair()
        node_floats = 4 * self.hidden_irreps.dim + sum(
            plan.out_dim for plan in self._plans(torch.float64, torch.device("cpu"))[0]
        )
        return plan_head_memory(
            num_atoms=num_atoms,
            num_pairs=num_pairs,
            dtype=dtype,
            device=device,
            work_floats_per_pair=work,
            kept_floats_per_pair=kept,
            floats_per_atom=node_floats,
            requires_grad=requires_grad,
            memory_budget_gb=memory_budget_gb,
        )

    # ------------------------------------------------------------------ forward
    def _geometry(
        self, pairs: PairGraph, chunk: slice
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(a [p], b [p], Y(r̂) [p, 9], envelope [p], basis x envelope [p, B]) of a chunk."""
        a, b = pairs.index[:, chunk]
        lengths = pairs.lengths[chunk]
        sh = self.spherical_harmonics(pairs.vectors[chunk])
        envelope = self.envelope(lengths)
        basis = self.radial_basis(lengths) * envelope.unsqueeze(-1)
        return a, b, sh, envelope, basis

    def _interaction(
        self,
        interaction: PairInteraction,
        plan: _MessagePlan,
        h: torch.Tensor,
        pairs: PairGraph,
        chunks: list[slice],
    ) -> torch.Tensor:
        """One interaction's update of h [N, hidden.dim], messages summed chunk by chunk."""
        scalars = h[:, self.scalar_mask]
        aggregated: list[torch.Tensor] = []
        for chunk in chunks:
            a, b, sh, envelope, basis = self._geometry(pairs, chunk)
            pair_scalars = torch.cat([basis, scalars[a], scalars[b]], dim=-1)
            messages = interaction.messages(h[b], sh, pair_scalars, envelope, plan)
            if not aggregated:
                aggregated = [m.new_zeros(h.shape[0], m.shape[1]) for m in messages]
            for total, m in zip(aggregated, messages):
                total.index_add_(0, a, m)
        return interaction.update(h, aggregated, plan, self.norm)

    def _pair_outputs(
        self,
        plan: _ReadoutPlan,
        folded: torch.Tensor,
        h: torch.Tensor,
        pairs: PairGraph,
        chunk: slice,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``pair_out(x_ab)`` and ``node_pair_out(x_ab)`` of a chunk, without forming x_ab.

        Args:
            plan: the final products' plan.
            folded: [R * mul, radial_hidden] last MLP layer times the linear maps' weights.
            h: [N, hidden.dim] node features.
            pairs: the pair graph.
            chunk: the pairs to evaluate.

        Returns:
            (a [p], [p, out_dim]: the 9 irrep components of M_ab, then (``"learned"``
            diagonal) the 6 of this pair's term of N_a).
        """
        a, b, sh, envelope, basis = self._geometry(pairs, chunk)
        scalars = h[:, self.scalar_mask]
        pair_scalars = torch.cat([basis, scalars[a], scalars[b]], dim=-1)
        hidden = self.pair_radial.hidden(pair_scalars) * envelope.unsqueeze(-1)
        coefficients = hidden @ folded.T  # [p, R * mul]
        p = sh.shape[0]
        inputs = (h[a], h[b])
        features = []
        for g in plan.groups:
            c = coefficients[:, g.columns].reshape(p, g.rows, g.mul)
            first = inputs[g.atom][:, g.first].reshape(p, g.mul, g.dim1)
            if g.channelwise:
                second = inputs[1][:, g.second].reshape(p, g.mul, g.dim2)
                outer = (first.unsqueeze(-1) * second.unsqueeze(-2)).reshape(p, g.mul, -1)
                features.append(torch.bmm(c, outer).reshape(p, -1))
            else:
                q = torch.bmm(c, first)  # [p, rows, dim1]
                for rows, harmonics in g.parts:
                    y = sh[:, harmonics]
                    features.append((q[:, rows, :, None] * y[:, None, None, :]).reshape(p, -1))
        return a, torch.cat(features, dim=-1) @ plan.blocks

    def forward(
        self,
        node_feats: torch.Tensor,
        graph: AtomicGraph,
        pairs: PairGraph | None = None,
        *,
        memory_budget_gb: float | None = None,
    ) -> HessianBlocks:
        """Predict the Hessian blocks.

        Args:
            node_feats: [N, node_irreps.dim] adapter features.
            graph: the batch (positions [N, 3] Å).
            pairs: a prebuilt pair graph (built from ``graph`` with ``hessian_cutoff`` if None).
            memory_budget_gb: GiB of memory the head may use. In inference (autograd recording
                nothing) pairs are evaluated in chunks sized to fit it; with autograd recording
                all pairs are evaluated at once and must fit it. Default: a fraction
                (:data:`hip_head.memory.DEFAULT_MEMORY_FRACTION`) of the available memory.

        Returns:
            :class:`HessianBlocks` in eV/Å²: diagonal [N, 3, 3] and off-diagonal [P, 3, 3].

        Raises:
            HeadMemoryError: the estimate (:meth:`estimate_memory`) exceeds the budget or the
                available memory; raised before the head allocates anything per pair.
        """
        if pairs is None:
            pairs = build_pair_graph(graph, self.hessian_cutoff)
        num_atoms, num_pairs = graph.num_atoms, pairs.num_pairs
        recording = torch.is_grad_enabled() and (
            node_feats.requires_grad
            or pairs.vectors.requires_grad
            or any(p.requires_grad for p in self.parameters())
        )
        estimate = self.estimate_memory(
            num_atoms,
            num_pairs,
            dtype=torch.promote_types(node_feats.dtype, next(self.parameters()).dtype),
            device=node_feats.device,
            requires_grad=recording,
            memory_budget_gb=memory_budget_gb,
        )
        h = self.node_linear(node_feats)
        learned = self.diagonal_mode == "learned"
        if num_pairs:
            message_plans, plan = self._plans(h.dtype, h.device)
            size = estimate.chunk_pairs
            chunks = [slice(s, min(s + size, num_pairs)) for s in range(0, num_pairs, size)]
            for interaction, message_plan in zip(self.interactions, message_plans):
                h = self._interaction(interaction, message_plan, h, pairs, chunks)
            scale = self._target_weights()[plan.linear_index] * plan.linear_scale
            folded = self.pair_radial.last[plan.weight_rows] * scale.unsqueeze(-1)
            if len(chunks) == 1:
                a, outputs = self._pair_outputs(plan, folded, h, pairs, chunks[0])
                block_irreps = outputs[:, :9]
                node_sum = outputs.new_zeros(num_atoms, plan.out_dim - 9)
                node_sum = node_sum.index_add(0, a, outputs[:, 9:])
            else:
                block_irreps = node_sum = None
                for chunk in chunks:
                    a, outputs = self._pair_outputs(plan, folded, h, pairs, chunk)
                    if block_irreps is None:
                        block_irreps = outputs.new_empty(num_pairs, 9)
                        node_sum = outputs.new_zeros(num_atoms, plan.out_dim - 9)
                    block_irreps[chunk] = outputs[:, :9]
                    node_sum.index_add_(0, a, outputs[:, 9:])
            m = self.block_scale * irreps_to_cartesian(block_irreps)  # [P, 3, 3], M_ab
            offdiagonal = m + m[pairs.reverse].transpose(-1, -2)  # H_ab = M_ab + M_baᵀ
        else:
            offdiagonal = h.new_zeros(0, 3, 3)
            node_sum = h.new_zeros(num_atoms, self.node_pair_out.irreps_out.dim if learned else 0)

        if not learned:
            row_sum = torch.zeros(num_atoms, 3, 3, dtype=offdiagonal.dtype, device=h.device)
            if num_pairs:
                row_sum = row_sum.index_add(0, pairs.index[0], offdiagonal)
            diagonal = -0.5 * (row_sum + row_sum.transpose(-1, -2))
        else:
            n = self.block_scale * irreps_to_cartesian(self.node_out(h) + node_sum / self.norm)
            diagonal = n + n.transpose(-1, -2)  # H_aa = N_a + N_aᵀ
        return HessianBlocks(diagonal=diagonal, offdiagonal=offdiagonal, pairs=pairs)
