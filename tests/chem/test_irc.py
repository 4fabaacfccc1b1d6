"""IRC (hip_head.chem.irc): both directions, the fallback, the profile, refusing a minimum."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

pytest.importorskip("sella")
pytest.importorskip("tblite")

from hip_head.chem._common import ChemistryError  # noqa: E402
from hip_head.chem.irc import irc, plot_profile  # noqa: E402
from hip_head.chem.potentials import XTBPotential  # noqa: E402
from hip_head.chem.search_commands import main_irc  # noqa: E402
from hip_head.chem.ts import connects, find_ts  # noqa: E402

pytestmark = pytest.mark.chem

#: GFN2-xTB HCN ⇄ HNC transition state (H, C, N; Å), refined in the fixture.
TS_GUESS = [[0.0, -0.287, -0.636], [0.0, 0.654, 0.045], [0.0, -0.366, 0.681]]


@pytest.fixture(scope="module")
def xtb():
    return XTBPotential()


@pytest.fixture(scope="module")
def xtb_ts(xtb):
    result = find_ts(guess=Atoms("HCN", positions=TS_GUESS), model=xtb, irc=False)
    assert result.verdict == "ts", result.reason
    return result.atoms


def _ends_graphs_differ(result) -> bool:
    from hip_head.finetune.molgraph import bond_graph

    return bond_graph(result.reverse.end) != bond_graph(result.forward.end)


@pytest.mark.parametrize("method", ["auto", "displace"])
def test_irc_reaches_hcn_and_hnc(xtb_ts, xtb, method, tmp_path):
    result = irc(xtb_ts, xtb, method=method)
    hcn = Atoms("HCN", positions=[[0, 0, -1.07], [0, 0, 0], [0, 0, 1.16]])
    hnc = Atoms("HCN", positions=[[0, 0, 2.16], [0, 0, 0], [0, 0, 1.17]])
    assert connects(result.ends, hcn, hnc)[0]
    assert _ends_graphs_differ(result)
    for branch in (result.reverse, result.forward):
        assert branch.converged and branch.saddle_index == 0
        assert branch.fmax < 0.01
        assert branch.energy_eV < result.ts_energy_eV
        if method == "displace":
            assert branch.how == "displace_descent"
    assert result.imaginary_cm1 < -1000
    # HCN lies below HNC: the larger barrier is on the HCN side
    e_hcn = min(result.end_energies_eV)
    assert result.ts_energy_eV - e_hcn > 1.0

    s, e = result.profile()
    assert s.shape == e.shape and np.all(np.diff(s) > 0)
    assert np.argmax(e) == int(np.argmin(np.abs(s)))  # the TS is the highest point, at s = 0
    frames = result.path()
    assert len(frames) == len(s)
    png = plot_profile(result, tmp_path / "profile.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    json.dumps(result.summary())


def test_irc_from_a_minimum_names_the_frequencies(xtb):
    water = molecule("H2O")
    with pytest.raises(ChemistryError, match=r"minimum, not a transition state.*cm⁻¹"):
        irc(water, xtb)


def test_irc_bad_method(xtb_ts, xtb):
    with pytest.raises(ChemistryError, match="unknown IRC method"):
        irc(xtb_ts, xtb, method="euler")


def test_cli_irc_bad_input(tmp_path, capsys):
    assert main_irc([str(tmp_path / "nothing.xyz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hip irc: error:") and "no such file" in err


@pytest.mark.mace
@pytest.mark.slow
def test_cli_irc_with_pretrained(tmp_path, xtb_ts, capsys):
    """`hip irc ts.xyz` with the shipped HIP: both ends, profile; a minimum: rc 2, one line."""
    pytest.importorskip("mace")
    from ase.io import write

    ts_file = tmp_path / "ts.xyz"
    write(ts_file, xtb_ts, format="extxyz")
    out = tmp_path / "irc"
    rc = main_irc([str(ts_file), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.out + captured.err
    for name in ("irc_ends.xyz", "irc_path.xyz", "irc_profile.png", "irc.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "irc.json").read_text())
    assert summary["imaginary_cm1"] < 0

    water = tmp_path / "water.xyz"
    write(water, molecule("H2O"), format="extxyz")
    assert main_irc([str(water), "--out", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "minimum, not a transition state" in err and "cm⁻¹" in err
    assert len(err.strip().splitlines()) == 1
