"""The readout head's output type: the non-zero 3x3 blocks of a Hessian, with their pairs.

:class:`~hip_head.readout.HessianReadout` returns it; :mod:`hip_head.assemble` turns it into a
dense or block-sparse Hessian.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hip_head.graph import PairGraph


@dataclass
class HessianBlocks:
    """The head's output: the non-zero 3x3 blocks of the Hessian, eV/Å².

    Attributes:
        diagonal: [N, 3, 3] symmetric on-site blocks H_aa.
        offdiagonal: [P, 3, 3] blocks H_ab for each ordered pair (a, b) of ``pairs``;
            ``offdiagonal[reverse[k]]`` is exactly ``offdiagonal[k]ᵀ``. In periodic cells
            smaller than twice the cutoff, the blocks of the periodic images of one pair (and
            of an atom with its own images) add up into the Hessian (see
            :mod:`hip_head.assemble`).
        pairs: the pair graph (indices [2, P], reverse [P], image shifts [P, 3]).
    """

    diagonal: torch.Tensor
    offdiagonal: torch.Tensor
    pairs: PairGraph

    def to(self, dtype: torch.dtype) -> HessianBlocks:
        """The same blocks in ``dtype`` (e.g. back to float32 after a bf16 autocast head)."""
        if self.diagonal.dtype == dtype and self.offdiagonal.dtype == dtype:
            return self
        return HessianBlocks(self.diagonal.to(dtype), self.offdiagonal.to(dtype), self.pairs)
