"""Normal-mode animations, stick spectra and the ``hip predict`` / ``hip vib`` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import molecule
from ase.io import read, write

from hip_head.chem import analysis_commands
from hip_head.chem.analysis_commands import main_predict, main_vib
from hip_head.chem.properties import (
    frequency_table,
    mode_trajectory,
    normal_mode_trajectory,
    plot_spectrum,
    write_mode_trajectories,
)
from hip_head.vibrations import vibrational_analysis
from tests.chem.test_thermo import TableModel, hessian_with_eigenvalues

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Ethanol-sized spread of eigenvalues (eV/Å²/amu), the lowest one imaginary.
TS_LAM = np.array([-3.0, 0.5, 2.0, 5.0, 9.0, 14.0, 20.0, 27.0, 35.0])


@pytest.fixture
def ch4_ts():
    """CH4 with a synthetic Hessian: one imaginary mode, eight real ones."""
    ch4 = molecule("CH4")
    return ch4, hessian_with_eigenvalues(ch4, TS_LAM)


# ----------------------------------------------------------------------------- modes
def test_mode_trajectory_amplitude_and_shape():
    water = molecule("H2O")
    mode = np.array([[0.0, 0.0, 0.1], [0.0, 0.3, 0.0], [0.0, -0.2, 0.0]])
    frames = mode_trajectory(water, mode, amplitude_A=0.25, frames=8)
    assert len(frames) == 8
    assert np.allclose(frames[0].positions, water.positions)
    quarter = frames[2].positions - water.positions  # sin(π/2) = 1: full amplitude
    assert np.linalg.norm(quarter, axis=1).max() == pytest.approx(0.25)
    assert np.allclose(quarter, mode * 0.25 / 0.3)
    assert np.allclose(frames[6].positions - water.positions, -quarter)
    assert frames[2].calc is None and frames[2] is not water
    with pytest.raises(ValueError, match="mode must be"):
        mode_trajectory(water, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="zero"):
        mode_trajectory(water, np.zeros((3, 3)))


def test_normal_mode_trajectory_follows_a_generalised_eigenvector(ch4_ts):
    """The Cartesian displacement d of mode k satisfies H d = λ_k M d."""
    ch4, h = ch4_ts
    masses = np.repeat(ch4.get_masses(), 3)
    for k in (0, 4, 8):
        frames = normal_mode_trajectory(ch4, h, k, amplitude_A=0.3, frames=4)
        d = (frames[1].positions - ch4.positions).reshape(-1)
        assert np.linalg.norm(d.reshape(-1, 3), axis=1).max() == pytest.approx(0.3)
        assert np.allclose(h @ d, TS_LAM[k] * masses * d, atol=1e-9 * np.abs(h).max())
    with pytest.raises(IndexError, match="9 modes"):
        normal_mode_trajectory(ch4, h, 9)


def test_write_mode_trajectories_one_readable_file_per_mode(ch4_ts, tmp_path):
    ch4, h = ch4_ts
    vib = vibrational_analysis(h, ch4)
    paths = write_mode_trajectories(ch4, vib, tmp_path / "modes", frames=6)
    assert [p.name for p in paths] == [f"mode_{i:02d}.traj" for i in range(9)]
    images = read(paths[0], index=":")
    assert len(images) == 6
    assert images[0].get_chemical_formula() == "CH4"
    assert np.allclose(images[0].positions, ch4.positions)


def test_plot_spectrum_writes_png(tmp_path):
    path = plot_spectrum([-512.0, 300.0, 1600.0, 3700.0], tmp_path / "s.png", title="test")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 5000


def test_frequency_table_marks_imaginary_modes(ch4_ts):
    ch4, h = ch4_ts
    lines = frequency_table(vibrational_analysis(h, ch4)).splitlines()
    assert len(lines) == 1 + 9
    assert lines[1].endswith("imaginary") and lines[1].split()[0] == "0"
    assert not any(line.endswith("imaginary") for line in lines[2:])


# ----------------------------------------------------------------------------- commands (table)
@pytest.fixture
def fake_model(ch4_ts, monkeypatch):
    """``--model`` resolves to a stand-in that knows the synthetic CH4 saddle."""
    ch4, h = ch4_ts
    model = TableModel([(ch4, -24.0, h)])
    monkeypatch.setattr(analysis_commands, "model_from_argument", lambda args: model)
    return ch4


def test_main_predict_json_with_a_stand_in_model(fake_model, tmp_path, capsys):
    write(tmp_path / "ch4.xyz", fake_model)
    assert main_predict([str(tmp_path / "ch4.xyz"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["energy_eV"] == -24.0
    assert data["saddle_index"] == 1 and len(data["imaginary_cm1"]) == 1
    assert len(data["frequencies_cm1"]) == 9 and data["frequencies_cm1"][0] < 0
    positive = np.array(data["frequencies_cm1"][1:])
    assert data["zpe_eV"] == pytest.approx(0.5 * positive.sum() * units.invcm)


def test_main_vib_writes_modes_and_plot(fake_model, tmp_path, capsys):
    write(tmp_path / "ch4.xyz", fake_model)
    out = tmp_path / "vib"
    assert main_vib([str(tmp_path / "ch4.xyz"), "--out", str(out), "--plot"]) == 0
    text = capsys.readouterr().out
    assert "imaginary" in text and "9 modes" in text
    assert len(list(out.glob("mode_*.traj"))) == 9
    assert (out / "spectrum.png").read_bytes()[:8] == PNG_MAGIC


def test_commands_report_bad_input_in_one_line(tmp_path, capsys):
    (tmp_path / "bad.xyz").write_text("2\n\nXx 0 0 0\nH 0 0 0.7\n")
    (tmp_path / "dummy.xyz").write_text("1\n\nX 0 0 0\n")  # ASE's dummy atom, Z = 0
    (tmp_path / "garbage.xyz").write_text("not a structure\n")
    for main in (main_predict, main_vib):
        assert main([str(tmp_path / "missing.xyz")]) == 2
        assert "missing.xyz: no such file" in capsys.readouterr().err
        assert main([str(tmp_path / "garbage.xyz")]) == 2
        err = capsys.readouterr().err
        assert "cannot read a structure" in err and len(err.strip().splitlines()) == 1
        assert main([str(tmp_path / "bad.xyz")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"hip {main.__name__.removeprefix('main_')}: error: ")
        assert "Traceback" not in err
        assert main([str(tmp_path / "dummy.xyz")]) == 2
        assert "unknown element" in capsys.readouterr().err
    assert main_vib([str(tmp_path / "bad.xyz"), "--frames", "1"]) == 2
    assert "--frames" in capsys.readouterr().err


# ----------------------------------------------------------------------------- shipped model
@pytest.fixture(scope="module")
def pretrained():
    """The shipped HIP (loaded once here so later loads by the commands are fast)."""
    pytest.importorskip("mace")
    import hip_head

    return hip_head.load("pretrained")


@pytest.mark.mace
def test_predict_json_with_the_shipped_model(pretrained, tmp_path, capsys):
    water = molecule("H2O")
    write(tmp_path / "h2o.xyz", water)
    assert main_predict([str(tmp_path / "h2o.xyz"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    direct = pretrained.predict(water)
    assert data["energy_eV"] == pytest.approx(direct["energy"], abs=1e-5)
    assert data["max_force_eV_per_A"] == pytest.approx(np.abs(direct["forces"]).max(), abs=1e-5)
    freqs = np.array(data["frequencies_cm1"])
    assert freqs.shape == (3,) and data["saddle_index"] == 0
    assert 1000.0 < freqs[0] < 2200.0 and 2800.0 < freqs[-1] < 4500.0  # bend, O-H stretches
    assert data["zpe_eV"] == pytest.approx(0.5 * freqs.sum() * units.invcm, rel=1e-6)
    assert data["wall_time_s"] > 0 and data["model"] == "pretrained"


@pytest.mark.mace
def test_vib_with_the_shipped_model(pretrained, tmp_path, capsys):
    ethylene = molecule("C2H4")
    write(tmp_path / "c2h4.xyz", ethylene)
    out = tmp_path / "modes"
    assert main_vib([str(tmp_path / "c2h4.xyz"), "--out", str(out), "--plot"]) == 0
    assert "12 modes" in capsys.readouterr().out
    trajs = sorted(out.glob("mode_*.traj"))
    assert len(trajs) == 12
    last = read(trajs[-1], index=":")
    shift = np.linalg.norm(last[5].positions - ethylene.positions, axis=1).max()
    assert shift == pytest.approx(0.3)  # frame 5 of 20: a quarter period, full amplitude
    assert (out / "spectrum.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.mace
def test_shipped_model_errors(pretrained, tmp_path, capsys):
    write(tmp_path / "ch3cl.xyz", molecule("CH3Cl"))
    assert main_predict([str(tmp_path / "ch3cl.xyz")]) == 2
    err = capsys.readouterr().err
    assert "Cl" in err and "H, C, N, O" in err
    write(tmp_path / "h2o.xyz", molecule("H2O"))
    assert main_vib([str(tmp_path / "h2o.xyz"), "--model", str(tmp_path / "none.model")]) == 2
    assert "no HIP model" in capsys.readouterr().err
    single = Atoms("H", positions=[[0.0, 0.0, 0.0]])
    write(tmp_path / "h.xyz", single)
    assert main_predict([str(tmp_path / "h.xyz"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["frequencies_cm1"] == []
