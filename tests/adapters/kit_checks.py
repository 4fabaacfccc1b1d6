"""Checks shared by the adapter tests: the kit's verdict, and features rotating as e3nn irreps."""

from __future__ import annotations

import ase.build
import torch

from hip_head._e3nn import o3
from hip_head.graph import AtomicGraph
from hip_head.testing import CheckReport, check_adapter

#: Properties whose worst float64 error must stay below 1e-10 (the kit's own bound).
EXACT_PROPERTIES = ("rotation", "reflection", "translation", "permutation", "batching")


def assert_passes_the_kit(backbone: torch.nn.Module, parity: bool, **options) -> CheckReport:
    """Run :func:`check_adapter` in float32 and float64 and demand native and 1e-10 checks.

    Args:
        backbone: the raw backbone (wrapped by the kit with a random head).
        parity: the adapter's declared parity (reflections are checked exactly when True).
        **options: further keyword arguments of :func:`check_adapter`.

    Returns:
        The kit's report (also printed).
    """
    report = check_adapter(backbone, dtypes=(torch.float32, torch.float64), **options)
    print(report)
    assert report.native_checked
    assert report.reflections_checked is parity
    worst64 = {
        prop: err
        for (dtype, prop), err in report.worst.items()
        if dtype == "float64" and prop in EXACT_PROPERTIES
    }
    assert worst64 and max(worst64.values()) < 1e-10, worst64
    return report


def molecules_graph(dtype: torch.dtype = torch.float64) -> AtomicGraph:
    """A batch of three molecules: water, ethanol and ammonia (positions Å)."""
    atoms = [ase.build.molecule(name) for name in ("H2O", "CH3CH2OH", "NH3")]
    return AtomicGraph.from_ase(atoms, dtype=dtype)


def sh_wigner_d(l: int, rotation: torch.Tensor) -> torch.Tensor:
    """[2l+1, 2l+1] D(R) fitted from e3nn's spherical harmonics (exact in float64)."""
    x = torch.randn(100, 3, dtype=torch.float64)
    y = o3().spherical_harmonics(l, x, normalize=True)
    y_rot = o3().spherical_harmonics(l, x @ rotation.T, normalize=True)
    return torch.linalg.lstsq(y, y_rot).solution.T


def assert_features_rotate_with_e3nn(adapter: torch.nn.Module, graph: AtomicGraph) -> None:
    """Each irrep of the adapter's node features rotates by e3nn's D(R) of its l (to 1e-10).

    Proves a layout / basis conversion: D is fitted from e3nn's spherical harmonics, not taken
    from the conversion under test. ``graph`` must be float64 (the adapter's backbone too).
    """
    rotation = o3().rand_matrix(dtype=torch.float64)
    with torch.no_grad():
        feats = adapter(graph).node_feats
        feats_rot = adapter(graph.with_positions(graph.positions @ rotation.T)).node_feats
    irreps = adapter.node_irreps
    for (mul, ir), sl in zip(irreps, irreps.slices()):
        d = sh_wigner_d(ir.l, rotation)
        x = feats[:, sl].reshape(-1, mul, ir.dim)
        y = feats_rot[:, sl].reshape(-1, mul, ir.dim)
        torch.testing.assert_close(x @ d.T, y, rtol=0, atol=1e-10)
