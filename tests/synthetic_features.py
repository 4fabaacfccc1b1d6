"""Equivariant node features computed directly from positions (no backbone needed).

For atom a: f_a = Σ_b Y(r_ab) exp(-|r_ab|) z_b^k for k = 0..3, with Y the l = 0, 1, 2
spherical harmonics: an O(3)-equivariant, permutation-equivariant function of the structure.
"""

from __future__ import annotations

import torch

from hip_head._e3nn import o3
from hip_head.graph import AtomicGraph, all_pairs, pair_vectors

IRREPS = "4x0e+4x1o+4x2e"
_SPHERICAL_HARMONICS = o3().SphericalHarmonics("0e+1o+2e", normalize=True)


def synthetic_features(graph: AtomicGraph) -> torch.Tensor:
    """[N, 36] features with irreps ``IRREPS``."""
    pairs = all_pairs(graph)
    vec = pair_vectors(graph, pairs)
    sh = _SPHERICAL_HARMONICS(vec)
    z = graph.atomic_numbers.to(vec.dtype)[pairs[1]].unsqueeze(-1) / 8.0
    weight = torch.exp(-vec.norm(dim=-1, keepdim=True))
    parts = []
    for sl in (slice(0, 1), slice(1, 4), slice(4, 9)):
        for k in range(4):
            message = sh[:, sl] * weight * z**k
            agg = vec.new_zeros(graph.num_atoms, message.shape[1]).index_add(0, pairs[0], message)
            parts.append(agg)
    return torch.cat(parts, dim=-1)
