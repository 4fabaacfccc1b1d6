"""The public test kit (hip_head.testing): it passes a correct adapter and catches broken ones."""

from __future__ import annotations

import re

import ase
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from hypothesis import given, settings
from hypothesis import strategies as st

import hip_head
from hip_head.adapters import BackboneOutput
from hip_head.errors import HIPError, InvalidArgumentError
from hip_head.testing import (
    DEFAULT_ELEMENTS,
    PROPERTIES,
    AdapterCheckError,
    assert_batch_independent,
    assert_hessian_equivariant,
    assert_hessian_permutation_equivariant,
    assert_hessian_symmetric,
    assert_translation_invariant,
    check_adapter,
    default_tolerance,
    molecules,
    orthogonal_matrices,
    permutations,
    permute_hessian,
    random_orthogonal,
    random_rotation,
    rotate_hessian,
    rotations,
    transform_atoms,
    translations,
)
from tests.planted_bugs import BatchStandardisation, PseudoscalarClaimedO3
from tests.toy_backbone import ToyAdapter, ToyBackbone, make_toy

FAST = settings(max_examples=40, deadline=None)


# ------------------------------------------------------------------------ check_adapter
def test_toy_backbone_passes_in_float32_and_float64():
    report = check_adapter(make_toy(), max_examples=8, max_atoms=8)
    assert report.adapter == "toy"
    assert report.reflections_checked and report.native_checked
    assert report.dtypes == ("float32", "float64")
    assert set(report.examples) == {"float32", "float64"}
    assert min(report.examples.values()) >= 5  # up to 8 generated + the chiral probe
    for prop in ("rotation", "reflection", "translation", "permutation", "batching", "native"):
        assert report.worst[("float64", prop)] < 1e-12
        assert report.worst[("float32", prop)] < 1e-5
    assert report.tolerances[("float64", "rotation")] == 1e-10
    assert report.tolerances[("float64", "native")] == 1e-6
    assert "reflection" in str(report) and "(tolerance 1e-10)" in str(report)


class ChiralSO3Adapter(PseudoscalarClaimedO3):
    """The chiral features of the planted bug, honestly declared SO(3)-only."""

    name = "toy-chiral-so3"
    parity = False


def test_chiral_features_pass_when_declared_so3():
    report = check_adapter(make_toy(), adapter=ChiralSO3Adapter, max_examples=3, max_atoms=6)
    assert not report.reflections_checked
    assert ("float64", "reflection") not in report.worst
    assert report.worst[("float64", "rotation")] < 1e-12
    with pytest.raises(AdapterCheckError, match="^reflection equivariance"):  # forced: fails
        check_adapter(
            make_toy(),
            adapter=ChiralSO3Adapter,
            dtypes=(torch.float64,),
            max_examples=1,
            check_reflections=True,
        )


def test_zero_head_is_refused():
    model = hip_head.wrap(make_toy())
    with torch.no_grad():
        for parameter in model.readout.parameters():
            parameter.zero_()
    with pytest.raises(AdapterCheckError, match="^non-trivial Hessian"):
        check_adapter(model, max_examples=1)
    with pytest.raises(InvalidArgumentError, match="already wrapped"):
        check_adapter(model, channels=8)


def test_failures_are_assertion_errors_of_the_hip_family():
    assert issubclass(AdapterCheckError, AssertionError) and issubclass(AdapterCheckError, HIPError)
    assert PROPERTIES.index("translation invariance") < PROPERTIES.index("rotation equivariance")
    assert PROPERTIES[0] == "differentiability" and PROPERTIES[-1] == "native energy/forces"


class ConstantOfTheBuildDtype(ToyAdapter):
    """Mixes the l = 1 features with Q Qᵀ: the identity, up to the round-off of the dtype the
    model was built in (as e3nn and MACE constants computed at construction are)."""

    name = "toy-build-constant"

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__(backbone)
        q = torch.as_tensor(random_rotation(0), dtype=next(backbone.parameters()).dtype)
        self.register_buffer("mix", q @ q.T)

    def forward(self, graph):
        out = super().forward(graph)
        c = self.backbone.channels
        vectors = out.node_feats[:, c : 4 * c].reshape(-1, c, 3) @ self.mix.T
        feats = torch.cat(
            [out.node_feats[:, :c], vectors.flatten(1), out.node_feats[:, 4 * c :]], 1
        )
        return BackboneOutput(out.energy, feats, out.node_irreps)


def test_a_backbone_built_in_float32_gets_a_note_about_the_cast():
    float64_only = {"dtypes": (torch.float64,), "max_examples": 2}
    check_adapter(make_toy(), adapter=ConstantOfTheBuildDtype, **float64_only)  # built in float64
    torch.manual_seed(0)
    backbone = ToyBackbone()  # built in float32, checked in float64
    with pytest.raises(AdapterCheckError, match="built in float32 and cast to float64") as info:
        check_adapter(backbone, adapter=ConstantOfTheBuildDtype, **float64_only)
    assert info.value.relative is not None and 1e-10 < info.value.relative < 1e-4


def test_a_batching_failure_rebuilds_from_its_message_alone():
    """The ase.Atoms(...) expressions of the message reproduce the failure exactly."""
    with pytest.raises(AdapterCheckError) as info:
        check_adapter(make_toy(), adapter=BatchStandardisation, dtypes=(torch.float64,))
    expressions = re.findall(r"(ase\.Atoms\(numbers=.*?\]\]\))", str(info.value))
    assert len(expressions) == 3, str(info.value)
    rebuilt = [eval(e, {"ase": ase}) for e in expressions]  # noqa: S307 - the kit's own output
    index = int(re.search(r"molecule (\d) of a batch of 3", str(info.value)).group(1))
    order = [index] + [i for i in range(3) if i != index]  # message: the molecule, then mates
    batch = [None] * 3
    for position, atoms in zip(order, rebuilt):
        batch[position] = atoms
    model = hip_head.wrap(make_toy(), adapter=BatchStandardisation)
    with pytest.raises(AdapterCheckError, match=r"^batching \[float64\]"):
        assert_batch_independent(model, batch)


def test_elements_follow_the_adapter():
    class CarbonOnly(ToyAdapter):
        name = "toy-carbon"

        @property
        def supported_atomic_numbers(self) -> list[int]:
            return [6, 14]

    report = check_adapter(
        make_toy(), adapter=CarbonOnly, dtypes=(torch.float64,), max_examples=2, max_atoms=4
    )
    assert report.elements == (6,)


# ------------------------------------------------------------------------ single assertions
def test_single_assertions_on_the_toy():
    model = hip_head.wrap(make_toy())
    atoms = Atoms(
        "CH3OH",
        positions=[
            [0, 0, 0],
            [1.09, 0, 0],
            [-0.4, 1.0, 0],
            [-0.4, -0.5, 0.9],
            [-0.3, -0.6, -1.3],
            [0.6, -1.1, -1.6],
        ],
    )
    errors = assert_hessian_equivariant(model, atoms, random_orthogonal(3), [0.5, -2.0, 1.0])
    assert errors["hessian"] < 1e-12
    errors = assert_hessian_equivariant(model, atoms, random_rotation(4), dtype=torch.float32)
    assert errors["hessian"] < 1e-5
    assert (
        assert_hessian_permutation_equivariant(model, atoms, [5, 3, 1, 0, 2, 4])["hessian"] < 1e-12
    )
    assert next(model.parameters()).dtype == torch.float64  # the model itself is not cast
    assert assert_translation_invariant(model, atoms, [3.0, -1.0, 7.5])["hessian"] < 1e-12
    others = [molecule("H2O"), molecule("HCN"), molecule("NH3")]
    assert assert_batch_independent(model, [atoms, *others])["hessian"] < 1e-12
    with pytest.raises(InvalidArgumentError, match="two or more"):
        assert_batch_independent(model, [atoms])


def test_transform_atoms_rotates_about_a_center_and_keeps_the_charge():
    atoms = molecule("CH3OH")
    atoms.info["charge"] = -1
    center = atoms.positions.mean(axis=0)
    moved = transform_atoms(atoms, random_rotation(5), center=center)
    assert np.allclose(moved.positions.mean(axis=0), center, atol=1e-12)
    assert np.allclose(moved.get_all_distances(), atoms.get_all_distances(), atol=1e-12)
    assert moved.info["charge"] == -1 and atoms.info["charge"] == -1


def test_symmetry_checker():
    h = torch.randn(9, 9, dtype=torch.float64)
    with pytest.raises(AssertionError, match=r"not symmetric exactly .* max \|H - Hᵀ\|"):
        assert_hessian_symmetric(h)
    symmetric = h + h.T
    assert_hessian_symmetric(symmetric)
    assert_hessian_symmetric([symmetric, symmetric.numpy()])
    nearly = symmetric.clone()
    nearly[0, 3] += 1e-14
    assert_hessian_symmetric(nearly, exact=False)
    with pytest.raises(AssertionError, match="Hessian 1 of the list"):
        assert_hessian_symmetric([symmetric, nearly])
    with pytest.raises(AssertionError, match="non-finite"):
        assert_hessian_symmetric(torch.full((3, 3), float("nan")))


def test_default_tolerance():
    assert default_tolerance(torch.float64) == 1e-10
    assert default_tolerance(torch.float32, 50.0) == pytest.approx(5e-3)
    with pytest.raises(InvalidArgumentError):
        default_tolerance(torch.int64)


# ------------------------------------------------------------------------ strategies
@FAST
@given(atoms=molecules(min_atoms=2, max_atoms=20, min_distance=0.9, max_bond=1.5))
def test_molecules_are_compact_and_never_overlap(atoms):
    assert 2 <= len(atoms) <= 20
    assert set(atoms.numbers) <= set(DEFAULT_ELEMENTS)
    distances = atoms.get_all_distances()
    np.fill_diagonal(distances, np.inf)
    assert distances.min() >= 0.9
    assert (distances.min(axis=1) <= 1.5 + 1e-9).all()  # every atom has a bonded neighbour
    assert np.allclose(atoms.positions.mean(axis=0), 0.0, atol=1e-9)


@FAST
@given(q=orthogonal_matrices(), r=rotations(), t=translations(scale=3.0), p=permutations(5))
def test_transform_strategies(q, r, t, p):
    assert np.allclose(q.T @ q, np.eye(3), atol=1e-12)
    assert abs(abs(np.linalg.det(q)) - 1.0) < 1e-12
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-12)
    assert t.shape == (3,) and np.all(np.abs(t) <= 3.0)
    assert sorted(p.tolist()) == list(range(5))


def _pair_potential_hessian(atoms: Atoms) -> torch.Tensor:
    """Exact (3N, 3N) Hessian of a Morse-like pair potential, index 3a + α."""
    n = len(atoms)
    i, j = torch.triu_indices(n, n, 1)

    def energy(x: torch.Tensor) -> torch.Tensor:
        d = (x.reshape(n, 3)[i] - x.reshape(n, 3)[j]).norm(dim=-1)
        return ((1 - torch.exp(-1.3 * (d - 1.2))) ** 2).sum()

    x = torch.as_tensor(atoms.positions, dtype=torch.float64).reshape(-1)
    return torch.autograd.functional.hessian(energy, x)


@FAST
@given(atoms=molecules(max_atoms=6), q=orthogonal_matrices(), t=translations(), data=st.data())
def test_expected_transforms_match_an_exact_hessian(atoms, q, t, data):
    """The kit's H -> (I⊗Q) H (I⊗Q)ᵀ and H -> P H Pᵀ agree with a real potential's Hessian."""
    perm = data.draw(permutations(len(atoms)))
    hessian = _pair_potential_hessian(atoms)
    moved = _pair_potential_hessian(transform_atoms(atoms, q, t))
    assert torch.allclose(moved, rotate_hessian(hessian, q), atol=1e-10)
    permuted = _pair_potential_hessian(transform_atoms(atoms, permutation=perm))
    assert torch.allclose(permuted, permute_hessian(hessian, perm), atol=1e-12)


def test_random_matrices_are_reproducible():
    assert np.array_equal(random_rotation(7), random_rotation(7))
    assert np.linalg.det(random_rotation(7)) == pytest.approx(1.0)
    assert np.linalg.det(random_orthogonal(7)) == pytest.approx(-1.0)
