"""Transition-state search (hip_head.chem.ts) and path interpolation (hip_head.chem.paths).

The reference for HCN ⇄ HNC is GFN2-xTB (tblite), the level the shipped HIP was trained on: its
TS is found here with the same ``find_ts`` through the xTB potential (3 atoms, a few seconds).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms

pytest.importorskip("sella")
pytest.importorskip("tblite")
pytest.importorskip("geodesic_interpolate")

from hip_head.chem._common import ChemistryError  # noqa: E402
from hip_head.chem.optimize import optimize  # noqa: E402
from hip_head.chem.paths import interpolate, rmsd  # noqa: E402
from hip_head.chem.potentials import XTBPotential  # noqa: E402
from hip_head.chem.search_commands import main_ts  # noqa: E402
from hip_head.chem.ts import connects, find_ts  # noqa: E402

pytestmark = pytest.mark.chem


@pytest.fixture(scope="module")
def xtb():
    return XTBPotential()


@pytest.fixture(scope="module")
def hcn_ends(xtb):
    """GFN2-xTB minima of HCN and HNC, same atom order (H, C, N)."""
    hcn = Atoms("HCN", positions=[[0, 0, -1.07], [0, 0, 0], [0, 0, 1.16]])
    hnc = Atoms("HCN", positions=[[0.02, 0.0, 2.16], [0, 0, 0], [0, 0, 1.17]])
    ends = []
    for start in (hcn, hnc):
        result = optimize(start, xtb, method="bfgs", fmax=0.002, check_saddle=False)
        assert result.converged
        ends.append(result.atoms)
    return tuple(ends)


@pytest.fixture(scope="module")
def xtb_ts(hcn_ends, xtb):
    """The GFN2-xTB HCN ⇄ HNC transition state (find_ts with the xTB oracle, no IRC)."""
    result = find_ts(*hcn_ends, model=xtb, irc=False)
    assert result.verdict == "ts", result.reason
    return result


@pytest.fixture(scope="module")
def pretrained():
    pytest.importorskip("mace")
    from hip_head.chem._common import load_model

    return load_model("pretrained")


def _write(path, atoms):
    from ase.io import write

    write(path, atoms, format="extxyz")
    return str(path)


# ---------------------------------------------------------------------------------- paths
@pytest.mark.parametrize("method", ["geodesic", "idpp"])
def test_interpolate_ends_and_length(hcn_ends, method):
    reactant, product = hcn_ends
    moved = product.copy()
    moved.rotate(40, "y", center="COM")
    moved.translate([1.0, -2.0, 0.5])
    path = interpolate(reactant, moved, n_images=7, method=method)
    assert len(path) == 7
    assert np.allclose(path[0].positions, reactant.positions, atol=1e-8)
    assert rmsd(path[-1], product) < 1e-6  # the product, aligned onto the reactant
    # the H migrates: its distance to C grows monotonically along a sensible path
    d_hc = [im.get_distance(0, 1) for im in path]
    assert d_hc[0] < d_hc[3] < d_hc[-1]
    assert [im.info["image"] for im in path] == list(range(7))


def test_interpolate_rejects_mismatched_atoms(hcn_ends):
    reactant, _ = hcn_ends
    with pytest.raises(ChemistryError, match="different atom counts"):
        interpolate(reactant, Atoms("HCNH", positions=np.arange(12.0).reshape(4, 3)))
    swapped = Atoms("CHN", positions=reactant.positions)
    with pytest.raises(ChemistryError, match="reorder the atoms"):
        interpolate(reactant, swapped)
    with pytest.raises(ChemistryError, match="differ in their elements"):
        interpolate(reactant, Atoms("HCO", positions=reactant.positions))
    with pytest.raises(ChemistryError, match="unknown interpolation"):
        interpolate(reactant, reactant, method="linear")
    with pytest.raises(ChemistryError, match="at least 3"):
        interpolate(reactant, reactant, n_images=2)


# ---------------------------------------------------------------------------------- find_ts
def test_xtb_oracle_ts_and_irc(hcn_ends, xtb, xtb_ts):
    """The oracle seam: find_ts with GFN2-xTB, verified by its own Hessian and IRC."""
    ts = xtb_ts
    assert ts.saddle_index == 1 and ts.converged and ts.fmax_eV_per_A < 0.01
    assert -1600 < ts.imaginary_cm1 < -1300  # GFN2-xTB: about 1426i cm⁻¹
    assert 60 < ts.atoms.get_angle(0, 1, 2) < 75  # H bridging C and N
    full = find_ts(guess=ts.atoms, reactant=hcn_ends[0], product=hcn_ends[1], model=xtb)
    assert full.verdict == "ts", full.reason
    assert full.steps <= 2
    assert full.irc is not None
    ok, _ = connects(full.irc.ends, *hcn_ends)
    assert ok
    assert full.model_calls > 0 and full.hessian_calls >= 1 and full.model_seconds > 0


def test_pair_potential_and_guess_only(xtb_ts):
    """A (calculator, hessian_function) pair works as the model; a guess alone needs no ends."""
    from tblite.ase import TBLite

    pair = (TBLite(method="GFN2-xTB", accuracy=0.01, verbosity=0), XTBPotential().hessian)
    guess = xtb_ts.atoms.copy()
    guess.positions[0] += [0.05, -0.05, 0.0]
    result = find_ts(guess=guess, model=pair, irc=False)
    assert result.verdict == "ts", result.reason
    assert rmsd(result.atoms, xtb_ts.atoms) < 0.01
    assert result.start_label == "guess" and result.path == []


def test_not_converged_is_a_result(hcn_ends, xtb):
    result = find_ts(*hcn_ends, model=xtb, max_steps=2)
    assert result.verdict == "not converged"
    assert result.steps == 2
    assert result.fmax_eV_per_A > 0.01
    assert not result.converged and not result.ok
    assert "2 steps" in result.reason and "step limit" in result.reason
    assert result.irc is None
    json.dumps(result.summary())  # JSON-ready


def test_time_limit_stops_the_search(hcn_ends, xtb):
    result = find_ts(*hcn_ends, model=xtb, time_limit_s=0.0)
    assert result.verdict == "not converged"
    assert "time limit" in result.reason


def test_minimum_as_guess_is_wrong_saddle_index(hcn_ends, xtb):
    result = find_ts(guess=hcn_ends[0], model=xtb)
    assert result.verdict == "wrong saddle index 0"
    assert "minimum" in result.reason and "cm⁻¹" in result.reason
    assert result.irc is None


def test_hessian_every_and_none(hcn_ends, xtb, xtb_ts):
    every = find_ts(*hcn_ends, model=xtb, hessian_every=3, irc=False)
    none = find_ts(*hcn_ends, model=xtb, hessian="none", irc=False)
    for result in (every, none):
        assert result.verdict == "ts", result.reason
        assert rmsd(result.atoms, xtb_ts.atoms) < 0.02
    # hessian="none": only the saddle-index check asks for a Hessian
    assert none.hessian_calls == 1
    assert every.hessian_calls < every.steps + 1


def test_failing_potential_gives_a_failed_verdict(xtb_ts):
    from tblite.ase import TBLite

    def broken(atoms):
        raise RuntimeError("no Hessian today")

    pair = (TBLite(method="GFN2-xTB", accuracy=0.01, verbosity=0), broken)
    result = find_ts(guess=xtb_ts.atoms, model=pair)
    assert result.verdict == "failed"
    assert "no Hessian today" in result.reason


def test_bad_arguments(hcn_ends, xtb):
    with pytest.raises(ChemistryError, match="reactant and a product, or a TS guess"):
        find_ts(hcn_ends[0], model=xtb)
    with pytest.raises(ChemistryError, match="different atom counts"):
        find_ts(hcn_ends[0], Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]), model=xtb)
    with pytest.raises(ChemistryError, match="hessian must be"):
        find_ts(*hcn_ends, model=xtb, hessian="exact")
    with pytest.raises(ChemistryError, match="cannot use a int"):
        find_ts(*hcn_ends, model=3)


def test_connects_by_bond_graph(hcn_ends):
    hcn, hnc = hcn_ends
    assert connects([hnc, hcn], hcn, hnc)[0]  # either order
    ok, text = connects([hcn, hcn], hcn, hnc)
    assert not ok and "[H][C][N]" in text


# ---------------------------------------------------------------------------------- HIP
@pytest.mark.mace
@pytest.mark.slow
def test_hcn_hnc_pretrained_hip_matches_xtb(hcn_ends, xtb_ts, pretrained):
    """The shipped HIP finds the HCN ⇄ HNC TS within 0.1 Å of GFN2-xTB's, with one imaginary
    mode, and its IRC reaches both ends."""
    result = find_ts(*hcn_ends, model=pretrained)
    distance = rmsd(xtb_ts.atoms, result.atoms)
    print(
        f"\nHIP TS: verdict {result.verdict}; RMSD to xTB {distance:.4f} Å; imaginary "
        f"{result.imaginary_cm1:.1f} (HIP) vs {xtb_ts.imaginary_cm1:.1f} (xTB) cm⁻¹; steps "
        f"{result.steps} (xTB {xtb_ts.steps}); {result.wall_s:.1f} s, "
        f"{result.model_seconds:.1f} s in the model; {result.reason}"
    )
    assert result.verdict == "ts", result.reason
    assert result.saddle_index == 1
    assert distance < 0.1
    assert result.irc is not None
    assert connects(result.irc.ends, *hcn_ends)[0]
    assert all(
        b.saddle_index == 0 and b.converged for b in (result.irc.reverse, result.irc.forward)
    )


@pytest.mark.mace
@pytest.mark.slow
def test_cli_ts(tmp_path, hcn_ends, pretrained, capsys):
    """`hip ts r.xyz p.xyz`: files, JSON, rc 0; bad input: one line on stderr, rc 2."""
    r = _write(tmp_path / "hcn.xyz", hcn_ends[0])
    p = _write(tmp_path / "hnc.xyz", hcn_ends[1])
    out = tmp_path / "out"
    rc = main_ts([r, p, "--out", str(out), "--hessian-every", "2"])
    captured = capsys.readouterr()
    assert rc == 0, captured.out + captured.err
    assert "step    0" in captured.out and "verdict: ts" in captured.out
    for name in ("ts.xyz", "path.xyz", "irc_ends.xyz", "irc_path.xyz", "irc_profile.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "result.json").read_text())
    assert summary["verdict"] == "ts" and summary["saddle_index"] == 1
    assert summary["irc"]["forward"]["saddle_index"] == 0

    # a non-converging search: rc 1, result still written
    rc = main_ts([r, p, "--out", str(tmp_path / "short"), "--steps", "2", "--no-irc", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 1 and "not converged" in captured.out
    assert json.loads((tmp_path / "short" / "result.json").read_text())["steps"] == 2

    # an element the model does not know
    si = _write(tmp_path / "si.xyz", Atoms("SiH", positions=[[0, 0, 0], [0, 0, 1.5]]))
    rc = main_ts(["--guess", si, "--out", str(tmp_path / "si")])
    captured = capsys.readouterr()
    assert rc == 2 and "Si" in captured.err
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err


def test_cli_ts_bad_input(tmp_path, capsys):
    """Input errors are found before the model loads: one line on stderr, rc 2."""
    missing = str(tmp_path / "missing.xyz")
    assert main_ts([missing, missing]) == 2
    assert "no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.xyz"
    junk.write_text("this is not\nan xyz file\n")
    assert main_ts(["--guess", str(junk)]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and len(err.strip().splitlines()) == 1
    assert main_ts([str(junk)]) == 2
    assert "two end structures" in capsys.readouterr().err
    assert main_ts([]) == 2
    assert "--guess" in capsys.readouterr().err
    ghost = tmp_path / "x.xyz"
    ghost.write_text("2\n\nX 0 0 0\nH 0 0 1\n")
    assert main_ts(["--guess", str(ghost)]) == 2
    assert "unknown element" in capsys.readouterr().err
