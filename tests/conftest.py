"""Shared fixtures: deterministic seeds and small real molecules."""

from __future__ import annotations

import pytest
import torch
from ase.build import molecule


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def small_molecules():
    """Three real molecules of different sizes (G2 geometries, Å)."""
    return [molecule("CH3CH2OH"), molecule("H2O"), molecule("CH4")]


@pytest.fixture(scope="session")
def tiny_mace():
    """A small random ScaleShiftMACE (H, C, N, O; 8 channels, 2 layers), float64."""
    from hip_head.adapters.mace import make_random_mace

    return make_random_mace(channels=8, max_ell=2, correlation=2, dtype=torch.float64)
