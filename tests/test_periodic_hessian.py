"""Periodic Hessians of a full HIP (MACE backbone + head) in cells smaller than the cutoffs.

The Hessian of a periodic cell is the Γ-point Hessian: the second derivative of the cell's
energy when every image of an atom moves with it. For a 2x1x1 supercell it is the supercell
Hessian folded: H_cell[a, b] = Σ_images H_super[a, b'] over the images b' of b. Both the head
(blocks summed over every periodic image pair within the cutoff) and the backbone must agree
with that to float64 round-off, whatever the cell size relative to the cutoffs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

pytest.importorskip("mace")

import hip_head  # noqa: E402
from hip_head.adapters.mace import make_random_mace  # noqa: E402

pytestmark = pytest.mark.mace


def _water_box(edge: float = 9.0, n: int = 8, seed: int = 0) -> Atoms:
    """``n`` water molecules on a jittered 2x2x2 lattice in a cubic cell of ``edge`` Å."""
    rng = np.random.default_rng(seed)
    box = Atoms(cell=[edge, edge, edge], pbc=True)
    sites = [(i, j, k) for i in range(2) for j in range(2) for k in range(2)][:n]
    for site in sites:
        water = molecule("H2O")
        water.rotate(rng.uniform(0, 360), rng.normal(size=3))
        water.translate((np.array(site) + 0.25 + 0.1 * rng.random(3)) * edge / 2)
        box += water
    return box


def _fold(h_super: np.ndarray, n: int, copies: int) -> np.ndarray:
    """(3N, 3N) Γ-point Hessian of the cell from the (3cN, 3cN) Hessian of its c-fold supercell."""
    blocks = h_super.reshape(copies, n, 3, copies, n, 3)
    return blocks[0].sum(axis=2).reshape(3 * n, 3 * n)


@pytest.fixture(scope="module")
def hip():
    backbone = make_random_mace(channels=16, max_ell=2, num_interactions=2, seed=3)
    return hip_head.wrap(backbone, hessian_cutoff=12.0).double().eval()


@pytest.mark.parametrize("hessian", ["head", "autograd"])
def test_water_box_smaller_than_the_cutoff_equals_the_folded_supercell(hip, hessian):
    cell = _water_box(9.0)
    supercell = cell.repeat((2, 1, 1))
    model = hip if hessian == "head" else hip_head.HIPModel(hip.adapter, hip.readout, "autograd")
    h_cell = model.predict(cell)["hessian"]
    h_super = model.predict(supercell)["hessian"]
    folded = _fold(h_super, len(cell), 2)
    assert np.abs(h_cell).max() > 1e-3  # not vacuous
    np.testing.assert_allclose(h_cell, folded, rtol=0, atol=1e-10)
    if hessian == "head":  # symmetric by construction; autograd only to round-off
        np.testing.assert_array_equal(h_cell, h_cell.T)


def test_triclinic_slab_with_small_cell_equals_its_folded_supercell(hip):
    slab = _water_box(9.0, n=4, seed=1)
    slab.set_cell([[7.5, 0.0, 0.0], [2.0, 7.0, 0.0], [0.0, 0.0, 30.0]], scale_atoms=False)
    slab.pbc = (True, True, False)
    h_cell = hip.predict(slab)["hessian"]
    h_super = hip.predict(slab.repeat((1, 2, 1)))["hessian"]
    np.testing.assert_allclose(h_cell, _fold(h_super, len(slab), 2), rtol=0, atol=1e-10)


def test_a_singular_cell_with_pbc_is_a_clear_error(hip):
    atoms = molecule("H2O")
    atoms.pbc = True  # no cell at all
    with pytest.raises(hip_head.InvalidStructureError, match="cell"):
        hip.predict(atoms)
    with torch.no_grad():
        atoms.set_cell([[4.0, 0, 0], [8.0, 0, 0], [0, 0, 4.0]])
        with pytest.raises(hip_head.InvalidStructureError, match="cell"):
            hip.predict(atoms)
