"""Radial basis and smooth cutoff envelope for the head's pair graph."""

from __future__ import annotations

import math

import torch
from torch import nn


class PolynomialEnvelope(nn.Module):
    """Smooth cutoff u(r): 1 at r = 0, 0 with zero first and second derivative at r = cutoff.

    The polynomial of Klicpera et al. (DimeNet), the one MACE and NequIP use, with ``p = 6``.
    Beyond the cutoff the envelope is exactly zero.

    Args:
        cutoff: Å; ``inf`` gives an envelope of 1 everywhere (complete graphs).
        p: polynomial order.
    """

    def __init__(self, cutoff: float, p: int = 6) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.p = p

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """Envelope of distances ``r`` [P] (Å). Returns [P], dimensionless."""
        if math.isinf(self.cutoff):
            return torch.ones_like(r)
        p = self.p
        x = r / self.cutoff
        value = (
            1.0
            - (p + 1.0) * (p + 2.0) / 2.0 * x**p
            + p * (p + 2.0) * x ** (p + 1)
            - p * (p + 1.0) / 2.0 * x ** (p + 2)
        )
        return value * (x < 1.0)


class BesselBasis(nn.Module):
    """sin(nπ r / r_c) / r radial basis (n = 1..num_basis), the basis of DimeNet/MACE.

    Args:
        cutoff: Å; the basis length scale (a finite value is needed; ``inf`` uses ``fallback``).
        num_basis: number of functions.
        fallback: length scale (Å) used when ``cutoff`` is infinite.
    """

    def __init__(self, cutoff: float, num_basis: int = 8, fallback: float = 12.0) -> None:
        super().__init__()
        self.length = float(cutoff) if math.isfinite(cutoff) else fallback
        self.register_buffer(
            "frequencies", math.pi / self.length * torch.arange(1, num_basis + 1).float()
        )
        self.prefactor = math.sqrt(2.0 / self.length)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """Basis values for distances ``r`` [P] (Å). Returns [P, num_basis]."""
        r = r.unsqueeze(-1)
        freq = self.frequencies.to(r.dtype)
        return self.prefactor * torch.sin(freq * r) / r
