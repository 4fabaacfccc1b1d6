"""``benchmarks/ts_search.py``: reaction choice and summary, and a one-reaction smoke run."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ts_search.py"
DB = Path(__file__).resolve().parents[1] / "data" / "reactions_xtb.db"

#: Fields every finished search writes.
FIELDS = (
    "reaction", "method", "label", "model", "atoms", "verdict", "reason", "success", "converged",
    "steps", "saddle_index", "exact_saddle_index", "xtb_saddle_index", "xtb_one_imaginary",
    "irc_connects", "rmsd_A", "ts_positions", "dE_kcal", "dE_ref_kcal", "barrier_error_kcal",
    "log10k_error", "log10k_basis",
    "model_seconds", "search_wall_s", "total_wall_s",
)  # fmt: skip


def _load() -> ModuleType:
    """Import benchmarks/ts_search.py (not a package) under a private module name."""
    name = "_hip_head_benchmark_ts_search"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_reaction_choice_is_seeded_and_nested() -> None:
    bench = _load()
    ids = [f"{i}:{j}" for i in range(10) for j in range(3)]
    five = bench.pick_reactions(ids, 5, seed=0)
    assert five == bench.pick_reactions(ids, 5, seed=0)
    assert len(set(five)) == 5 and set(five) <= set(ids)
    assert bench.pick_reactions(ids, 12, seed=0)[:5] == five  # reruns with more extend
    assert bench.pick_reactions(ids, 5, seed=1) != five


def test_summary_counts_and_errors() -> None:
    bench = _load()
    base = {"method": "hip", "model_seconds": 1.0, "total_wall_s": 2.0, "search_wall_s": 2.0}
    records = [
        {**base, "verdict": "ts", "success": True, "converged": True, "steps": 10,
         "xtb_saddle_index": 1, "rmsd_A": 0.1, "barrier_error_kcal": -2.0,
         "log10k_error": 1.5, "log10k_basis": "dG"},
        {**base, "verdict": "wrong saddle index 2", "success": False, "converged": True,
         "steps": 30, "xtb_saddle_index": 1, "rmsd_A": 0.9, "barrier_error_kcal": 9.0,
         "log10k_error": -7.0, "log10k_basis": "dE"},
        {"method": "hip", "verdict": "error", "success": False, "converged": False,
         "error": "RuntimeError: boom", "total_wall_s": 0.5},
    ]  # fmt: skip
    s = bench.summarize(records)
    assert (s["n"], s["success"], s["converged"], s["xtb_one_imaginary"]) == (3, 1, 2, 2)
    assert s["errors"] == 1 and s["verdicts"]["error"] == 1
    assert s["median_rmsd_A"] == pytest.approx(0.1)  # over the successful searches
    assert s["mae_barrier_kcal"] == pytest.approx(2.0)
    assert s["mae_log10k"] == pytest.approx(1.5) and s["log10k_from_dG"] == 1
    assert s["median_steps"] == pytest.approx(20.0)
    assert s["model_seconds"] == pytest.approx(2.0)
    table = bench.format_table({"hip": s})
    assert "| HIP | 1/3 | 2/3 | – | 0.100 | 2.00 | 1.50 (1/1 ΔG‡) | 20 |" in table
    empty = bench.format_table({"none": bench.summarize([records[2] | {"method": "none"}])})
    assert "| no Hessian | 0/1 | 0/1 | – | – | – | – | – |" in empty


def test_split_option_picks_val_reactions() -> None:
    assert DB.is_file(), f"{DB} is part of the repository; the checkout is incomplete"
    bench = _load()
    test_ids = bench.held_out_reaction_ids(DB, "test")
    val_ids = bench.held_out_reaction_ids(DB, "val")
    assert test_ids and val_ids and not set(test_ids) & set(val_ids)
    assert bench.parse_args([]).split == "test"
    assert bench.parse_args(["--split", "val"]).split == "val"
    with pytest.raises(SystemExit, match="not val-split reactions"):
        bench.main(["--split", "val", "--reaction", min(test_ids, key=bench._reaction_key)])


def test_eyring_log_matches_the_rate() -> None:
    bench = _load()
    from hip_head.chem.thermo import eyring_rate

    for barrier in (0.0, 0.5, 1.2):
        assert bench.log10_eyring(barrier) == pytest.approx(
            math.log10(eyring_rate(barrier, 298.15))
        )
    assert bench.log10_eyring(20.0) < -300  # no underflow


@pytest.mark.slow
@pytest.mark.chem
@pytest.mark.mace
def test_ts_search_benchmark_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sella")
    pytest.importorskip("tblite")
    pytest.importorskip("geodesic_interpolate")
    assert DB.is_file(), f"{DB} is part of the repository; the checkout is incomplete"
    bench = _load()
    sizes = bench.held_out_reaction_ids(DB)
    smallest = min(sizes, key=lambda r: (sizes[r], bench._reaction_key(r)))
    out, report, png = tmp_path / "run", tmp_path / "ts.json", tmp_path / "ts.png"
    argv = ["--reaction", smallest, "--methods", "hip", "none", "--time-limit", "25"]
    argv += ["--out", str(out), "--json", str(report), "--plot", str(png)]

    assert bench.main(argv) == 0

    lines = (out / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["reaction"], r["method"]) for r in records] == [
        (smallest, "hip"),
        (smallest, "none"),
    ]
    for r in records:
        assert r["error"] is None, r.get("traceback")
        for field in FIELDS:
            assert field in r, (r["method"], field)
        assert r["atoms"] == sizes[smallest] and r["model"] == "pretrained"
        assert r["log10k_basis"] in ("dG", "dE")
        assert r["model_seconds"] > 0 and r["total_wall_s"] >= r["search_wall_s"] > 0
    printed = capsys.readouterr().out
    assert "| method | success | 1 imag. (xTB) |" in printed
    assert "| HIP | " in printed and "| no Hessian | " in printed
    data = json.loads(report.read_text())
    assert set(data["summary"]) == {"hip", "none"} and data["summary"]["hip"]["n"] == 1
    assert data["machine"]["cpu"] and data["machine"]["torch"] and data["machine"]["date"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a rerun finds both searches done: nothing is searched again
    assert bench.main(argv) == 0
    assert (out / "results.jsonl").read_text().splitlines() == lines
