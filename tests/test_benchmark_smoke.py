"""Smoke tests of ``benchmarks/speed.py`` (tiny settings, every column filled, plot written),
of its large-size and batch paths and guards, and of the shared machine description."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

pytestmark = pytest.mark.mace

REPO = Path(__file__).resolve().parents[1]
SPEED = REPO / "benchmarks" / "speed.py"
METHODS = ("ef", "ef_native", "hip", "hip_blocks", "autograd", "fd", "mace_hessian")
RATIOS = (
    "hip_over_ef",
    "hip_over_ef_native",
    "hip_blocks_over_ef",
    "autograd_over_hip",
    "mace_hessian_over_hip",
)


def _load_speed() -> ModuleType:
    """Import benchmarks/speed.py (not a package) under a private module name.

    It puts its own folder on ``sys.path``, so its sibling ``speed_*`` modules import too.
    """
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
    ratios = ("hip_over_ef", "hip_over_ef_native", "hip_blocks_over_ef", "autograd_over_hip")
    for ratio in (*ratios, "fd_over_hip"):
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
    assert "6N = 1200" in speed.skip_reason("fd", 200, settings)
    assert speed.skip_reason("autograd", 200, settings) is None
    assert speed.skip_reason("hip", 200, settings) is None
    assert "--max-flat-atoms 2000" in speed.skip_reason("hip", 5000, settings)
    assert speed.skip_reason("hip_blocks", 5000, settings) is None


def test_large_size_and_batch_paths_smoke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """At a "large" size only the block-sparse HIP runs; the batch runs its five methods."""
    speed = _load_speed()
    out, plot = tmp_path / "speed.json", tmp_path / "speed.png"
    argv = ["--sizes", "20", "--max-flat-atoms", "10", "--batch-small", "--batch-molecules", "4"]
    argv += ["--batch-atoms", "3", "6", "--channels", "8", "--max-ell", "2", "--correlation", "2"]
    argv += ["--num-interactions", "1", "--repeats", "1", "--warmup", "1", "--threads", "1"]
    argv += ["--max-fd-atoms", "5", "--max-mace-hessian-atoms", "5", "--max-autograd-atoms", "6"]
    argv += ["--isolation", "none"]  # one warm-up of TorchScript for all; the guards: below
    argv += ["--out", str(out), "--plot", str(plot)]

    assert speed.main(argv) == 0

    data = json.loads(out.read_text())
    assert data["settings"]["batch_small"] and data["settings"]["max_flat_atoms"] == 10
    (row,) = data["rows"]
    assert row["atoms"] == 20 and row["head_pairs"] > 0
    assert row["hip_blocks_ms"] > 0 and row["ef_ms"] > 0 and row["ef_native_ms"] > 0
    for method in ("hip", "autograd", "fd", "mace_hessian"):
        assert row[f"{method}_ms"] is None and method in row["skipped"], method
    assert "--max-flat-atoms 10" in row["skipped"]["hip"]
    assert row["hip_blocks_over_ef"] > 0 and row["hip_over_ef"] is None
    batch = data["batch"]
    assert batch["molecules"] == 4 and 3 <= batch["atoms_per_molecule"][0]
    assert batch["atoms_per_molecule"][1] <= 6 and batch["atoms"] >= 12
    assert batch["methods"] == ["ef", "ef_native", "hip", "hip_blocks", "autograd"]
    assert batch["skipped"] == {}, batch["skipped"]
    for method in batch["methods"]:
        assert batch[f"{method}_ms"] > 0 and batch[f"{method}_peak_mb"] > 0, method
    assert batch["autograd_over_hip"] > 0
    printed = capsys.readouterr().out
    assert "Batch of 4 molecules" in printed and "HIP blocks" in printed


def test_a_structure_too_big_is_reported_not_fatal(tmp_path: Path) -> None:
    """A memory limit no child can meet: every method and the counts report the guard."""
    speed = _load_speed()
    out = tmp_path / "speed.json"
    argv = ["--sizes", "5", "--memory-limit", "0.01", "--channels", "8", "--max-ell", "2"]
    argv += ["--batch-small", "--batch-molecules", "2", "--batch-atoms", "3", "4"]
    argv += ["--correlation", "2", "--num-interactions", "1", "--repeats", "1", "--warmup", "0"]
    argv += ["--max-fd-atoms", "3", "--max-mace-hessian-atoms", "3", "--max-autograd-atoms", "3"]
    argv += ["--out", str(out), "--plot", str(tmp_path / "speed.png")]

    assert speed.main(argv) == 0

    data = json.loads(out.read_text())
    (single,) = data["rows"]
    assert single["formula"] == "CH4" and single["head_pairs"] is None
    for row in (single, data["batch"]):
        assert "memory guard" in row["skipped"]["counts"]
        for method in ("ef", "ef_native", "hip", "hip_blocks"):
            assert row[f"{method}_ms"] is None, method
            assert "memory guard" in row["skipped"][method], method
    assert data["batch"]["molecules"] == 2


def test_fork_guard_stops_a_child_that_runs_too_long_or_fails() -> None:
    _load_speed()
    from speed_isolation import run_in_fork

    def sleeps() -> dict:
        time.sleep(30)
        return {}

    assert run_in_fork(lambda: {"value": 1}, 1, 30.0) == {"ok": True, "value": 1}
    assert "timeout" in run_in_fork(sleeps, 1, 0.3)["error"]
    failed = run_in_fork(lambda: {"value": 1 / 0}, 1, 30.0)
    assert not failed["ok"] and "ZeroDivisionError" in failed["error"]


def test_fork_guard_stops_a_child_that_grows_too_big() -> None:
    _load_speed()
    from speed_isolation import run_in_fork
    from speed_measure import proc_status_mib

    rss = proc_status_mib("VmRSS")
    if rss is None:
        pytest.skip(
            "the memory guard reads a child's resident set from /proc/<pid>/status (Linux); "
            "this system has no /proc, so the guard is inactive here and there is nothing to test"
        )

    def grows() -> dict:
        block = bytearray(400 * 2**20)  # 400 MiB, touched
        block[::4096] = b"x" * len(block[::4096])
        time.sleep(30)
        return {"size": len(block)}

    roomy = rss / 1024 + 1.0  # GiB; a child starts at most at this process's resident set
    assert run_in_fork(lambda: {"value": 1}, 1, 30.0, roomy) == {"ok": True, "value": 1}
    result = run_in_fork(grows, 1, 60.0, memory_limit_gb=0.35)  # it grows past 0.39 GiB
    assert not result["ok"] and "memory guard" in result["error"]


def test_small_molecule_batch_is_seeded_and_in_range() -> None:
    speed = _load_speed()
    batch = speed.small_molecule_batch(6, 4, 9, seed=3)
    assert len(batch) == 6 and all(4 <= len(m) <= 9 for m in batch)
    again = speed.small_molecule_batch(6, 4, 9, seed=3)
    assert all((a.positions == b.positions).all() for a, b in zip(batch, again, strict=True))
    with pytest.raises(ValueError):
        speed.small_molecule_batch(2, 9, 4)


def test_min_distance_matches_the_full_distance_matrix() -> None:
    _load_speed()
    from speed_molecules import min_distance

    molecule = _load_speed().organic_molecule(61, seed=2)
    full = molecule.get_all_distances()[np.triu_indices(61, 1)].min()
    assert min_distance(molecule.positions) == pytest.approx(full, rel=1e-12)


def test_old_result_files_render_as_before() -> None:
    """Files written before hip_blocks existed still give their tables (methods from rows)."""
    speed = _load_speed()
    old = json.loads((REPO / "docs" / "benchmarks" / "speed_cpu.json").read_text())
    text = speed.markdown(old)
    assert (
        "| atoms | formula | E+F (ms) | bare E+F (ms) | HIP E+F+H (ms) | autograd H (ms) " in text
    )
    assert "HIP blocks" not in text and "| 200 | C57H125N9O9 |" in text


def test_machine_description_names_cpu_cores_and_versions() -> None:
    from hip_head.provenance import machine_description

    info = machine_description(["ase", "not-a-package-xyz"], device="cpu")
    for key in ("platform", "python", "cpu", "cpu_count", "cpus_usable", "torch", "date"):
        assert info[key], key
    versions = info["versions"]
    for package in ("torch", "e3nn", "numpy", "hip-head", "ase"):
        assert versions[package], package
    assert versions["not-a-package-xyz"] is None
    assert info["torch"] == versions["torch"]
    assert "gpu" not in info  # a CPU measurement names no GPU
    json.dumps(info)  # plain JSON


def test_head_scaling_reports_pairs_and_time_per_pair(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/head_scaling.py times the head alone: one row per size, with the pair count
    of the head's cutoff (every ordered pair for a molecule smaller than the cutoff)."""
    spec = importlib.util.spec_from_file_location(
        "_hip_head_benchmark_head_scaling", REPO / "benchmarks" / "head_scaling.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--sizes", "5", "12", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.split() and line.split()[0].isdigit()]
    assert [int(r[0]) for r in rows] == [5, 12]
    assert [int(r[1]) for r in rows] == [5 * 4, 12 * 11]
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows)
