"""irreps <-> 3x3 conversion: orthonormal, exact round trip, equivariant, right symmetry parts."""

from __future__ import annotations

import pytest
import torch

from hip_head._e3nn import o3
from hip_head.cartesian import (
    BLOCK_IRREPS,
    cartesian_basis,
    cartesian_to_irreps,
    irreps_to_cartesian,
)


def test_basis_is_orthonormal():
    basis = cartesian_basis().reshape(9, 9)
    assert torch.allclose(basis.T @ basis, torch.eye(9, dtype=torch.float64), atol=1e-14)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-13), (torch.float32, 1e-5)])
def test_round_trip(dtype, atol):
    coefficients = torch.randn(50, 9, dtype=dtype)
    assert torch.allclose(
        cartesian_to_irreps(irreps_to_cartesian(coefficients)), coefficients, atol=atol
    )
    blocks = torch.randn(50, 3, 3, dtype=dtype)
    assert torch.allclose(irreps_to_cartesian(cartesian_to_irreps(blocks)), blocks, atol=atol)


def exact_block_wigner_d(q: torch.Tensor) -> torch.Tensor:
    """[9, 9] D(q) of 0e+1e+2e, fitted from e3nn's spherical harmonics (exact to ~1e-15).

    e3nn >= 0.5 computes ``D_from_matrix`` from float32 constants (errors ~1e-7 in float64), so
    the float64 tests derive D from the spherical harmonics, which are exact in both lines.
    """
    rotation = q * torch.linalg.det(q)  # even-parity irreps: D(-R) = D(R)
    x = torch.randn(100, 3, dtype=torch.float64)
    blocks = []
    for l in (0, 1, 2):
        y = o3().spherical_harmonics(l, x, normalize=True)
        y_rot = o3().spherical_harmonics(l, x @ rotation.T, normalize=True)
        blocks.append(torch.linalg.lstsq(y, y_rot).solution.T)
    return torch.block_diag(*blocks)


@pytest.mark.parametrize("improper", [False, True])
def test_equivariance_including_reflections(improper):
    rotation = o3().rand_matrix(dtype=torch.float64)
    q = -rotation if improper else rotation
    d = exact_block_wigner_d(q)
    assert torch.allclose(d, o3().Irreps(BLOCK_IRREPS).D_from_matrix(q), atol=1e-5)
    c = torch.randn(20, 9, dtype=torch.float64)
    expected = q @ irreps_to_cartesian(c) @ q.T
    assert torch.allclose(irreps_to_cartesian(c @ d.T), expected, atol=1e-13)


def test_parts_have_the_right_symmetry():
    c = torch.zeros(3, 9, dtype=torch.float64)
    c[0, 0] = 1.0  # l = 0: isotropic
    c[1, 1:4] = torch.randn(3)  # l = 1: antisymmetric
    c[2, 4:] = torch.randn(5)  # l = 2: symmetric traceless
    m = irreps_to_cartesian(c)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(m[0], eye / 3**0.5, atol=1e-15)
    assert torch.allclose(m[1], -m[1].T, atol=1e-15)
    assert torch.allclose(m[2], m[2].T, atol=1e-15)
    assert abs(float(torch.trace(m[2]))) < 1e-14


def test_l1_part_is_the_cross_product_matrix():
    """The l=1 basis is derived, not assumed: its antisymmetric block must encode (x, y, z)."""
    v = torch.tensor([0.3, -1.2, 0.7], dtype=torch.float64)
    c = torch.zeros(9, dtype=torch.float64)
    c[1:4] = o3().spherical_harmonics(1, v, normalize=False, normalization="norm")
    m = irreps_to_cartesian(c)
    w = torch.tensor([m[2, 1], m[0, 2], m[1, 0]])  # axial vector of an antisymmetric matrix
    assert torch.allclose(w / w.norm(), v / v.norm(), atol=1e-14) or torch.allclose(
        w / w.norm(), -v / v.norm(), atol=1e-14
    )


def test_symmetric_six_coefficients():
    c6 = torch.randn(4, 6, dtype=torch.float64)
    m = irreps_to_cartesian(c6)
    assert torch.allclose(m, m.transpose(-1, -2), atol=1e-14)
    with pytest.raises(ValueError, match="coefficients"):
        irreps_to_cartesian(torch.randn(4, 7))
