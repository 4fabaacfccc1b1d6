"""Unit constants and converters (ASE conventions: Å, eV, amu).

All of hip-head works in eV, Å, eV/Å and eV/Å². The quantum-chemistry codes many users feed
Hessians to (PySCF, pysisyphus, geomeTRIC) use Hartree/Bohr²; convert at the boundary only.
"""

from __future__ import annotations

from typing import TypeVar

from ase import units

#: Hartree/Bohr² expressed in eV/Å² (≈ 97.1736).
HARTREE_PER_BOHR2_IN_EV_PER_A2: float = units.Hartree / units.Bohr**2

ArrayLike = TypeVar("ArrayLike")


def ev_per_a2_to_hartree_per_bohr2(hessian: ArrayLike) -> ArrayLike:
    """Convert a Hessian from eV/Å² to Hartree/Bohr².

    Args:
        hessian: any shape, eV/Å² (torch tensor, numpy array or float).

    Returns:
        Same shape and type, Hartree/Bohr².
    """
    return hessian / HARTREE_PER_BOHR2_IN_EV_PER_A2


def hartree_per_bohr2_to_ev_per_a2(hessian: ArrayLike) -> ArrayLike:
    """Convert a Hessian from Hartree/Bohr² to eV/Å².

    Args:
        hessian: any shape, Hartree/Bohr².

    Returns:
        Same shape and type, eV/Å².
    """
    return hessian * HARTREE_PER_BOHR2_IN_EV_PER_A2
