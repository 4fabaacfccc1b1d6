"""Smoke test of ``benchmarks/speed.py``: tiny settings, every column filled, plot written."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.mace

SPEED = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"
METHODS = ("ef", "ef_native", "hip", "autograd", "fd", "mace_hessian")
RATIOS = ("hip_over_ef", "hip_over_ef_native", "autograd_over_hip", "mace_hessian_over_hip")


def _load_speed() -> ModuleType:
    """Import benchmarks/speed.py (not a package) under a private module name."""
    name = "_hip_head_benchmark_speed"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SPEED)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("atoms", [3, 4, 5, 9, 10, 20, 30, 61])
def test_molecules_have_the_requested_size_and_sane_geometry(atoms: int) -> None:
    speed = _load_speed()
    molecule = speed.organic_molecule(atoms)
    assert len(molecule) == atoms
    assert set(molecule.numbers) <= {1, 6, 7, 8}
    distances = molecule.get_all_distances()
    assert distances[distances > 0].min() >= 0.9
    again = speed.organic_molecule(atoms)
    assert (again.positions == molecule.positions).all()  # deterministic


def test_speed_benchmark_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    speed = _load_speed()
    out, plot = tmp_path / "speed.json", tmp_path / "speed.png"
    argv = ["--sizes", "3", "5", "--channels", "8", "--max-ell", "2", "--correlation", "2"]
    argv += ["--num-interactions", "2", "--repeats", "1", "--warmup", "1", "--threads", "1"]
    argv += ["--max-fd-atoms", "5", "--max-mace-hessian-atoms", "5", "--max-autograd-atoms", "5"]
    argv += ["--out", str(out), "--plot", str(plot)]

    assert speed.main(argv) == 0

    data = json.loads(out.read_text())
    machine = data["machine"]
    for key in ("platform", "cpu", "cpu_count", "versions", "dtype", "device", "date"):
        assert machine[key], key
    assert machine["versions"]["torch"] and machine["versions"]["mace-torch"]
    assert machine["dtype"] == "float32" and machine["device"] == "cpu"
    assert data["settings"]["sizes"] == [3, 5]
    assert [row["atoms"] for row in data["rows"]] == [3, 5]
    for row in data["rows"]:
        assert row["skipped"] == {}, row["skipped"]
        for method in METHODS:
            for column in (f"{method}_ms", f"{method}_peak_mb"):
                value = row[column]
                assert isinstance(value, float) and value > 0, (row["atoms"], column, value)
            assert row["raw"][method]["times_ms"]
        for ratio in RATIOS:
            assert row[ratio] > 0, ratio
        assert row["hip_over_ef"] == pytest.approx(row["hip_ms"] / row["ef_ms"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "| atoms | formula |" in printed and "| 5 | CH4 |" in printed


@pytest.mark.pyg
def test_speed_benchmark_smoke_schnet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch_geometric")
    speed = _load_speed()
    out, plot = tmp_path / "speed_schnet.json", tmp_path / "speed_schnet.png"
    argv = ["--backbone", "schnet", "--sizes", "5", "--channels", "8", "--num-interactions", "2"]
    argv += ["--repeats", "1", "--warmup", "1", "--threads", "1", "--isolation", "none"]
    argv += ["--max-fd-atoms", "5", "--max-autograd-atoms", "5"]
    argv += ["--out", str(out), "--plot", str(plot)]

    assert speed.main(argv) == 0

    data = json.loads(out.read_text())
    assert data["settings"]["backbone"] == "schnet"
    assert data["machine"]["adapter"] == "SchNetAdapter"
    assert data["machine"]["versions"]["torch-geometric"]
    assert data["methods"] == [m for m in METHODS if m != "mace_hessian"]
    (row,) = data["rows"]
    assert row["skipped"] == {} and row["backbone_edges"] > 0
    assert "mace_hessian_ms" not in row and "mace_hessian_over_hip" not in row
    for method in data["methods"]:
        assert row[f"{method}_ms"] > 0, method
    for ratio in ("hip_over_ef", "hip_over_ef_native", "autograd_over_hip", "fd_over_hip"):
        assert row[ratio] > 0, ratio
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "SchNet" in printed and "MACE H" not in printed and "| 5 | CH4 |" in printed


def test_default_outputs_are_named_per_backbone() -> None:
    speed = _load_speed()
    mace = speed.parse_args([])
    assert mace.out.name == "speed_cpu.json" and mace.plot.name == "speed_cpu.png"
    assert (mace.channels, mace.num_interactions, mace.max_ell) == (64, 2, 3)
    uma = speed.parse_args(["--backbone", "uma", "--channels", "32"])
    assert uma.out.name == "speed_cpu_uma.json" and uma.plot.name == "speed_cpu_uma.png"
    assert (uma.channels, uma.num_interactions, uma.max_ell) == (32, 4, 2)


def test_skipped_methods_are_null_with_a_reason() -> None:
    speed = _load_speed()
    settings = speed.Settings(sizes=[200], max_fd_atoms=60, max_autograd_atoms=None)
    assert "6N = 1200" in speed._skip_reason("fd", 200, settings)
    assert speed._skip_reason("autograd", 200, settings) is None
    assert speed._skip_reason("hip", 200, settings) is None
