"""Smoke test of ``benchmarks/finetune_gpu.py`` on CPU: both sub-commands write their JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning")
pytest.importorskip("mace")

pytestmark = [pytest.mark.mace, pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "finetune_gpu.py"


def _run(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--device", "cpu"], check=True, env=env, timeout=600
    )


def test_probe_times_every_precision_setting(tmp_path):
    _run("probe", "--out", str(tmp_path), "--steps", "3")
    result = json.loads((tmp_path / "probe.json").read_text())
    assert [r["setting"] for r in result["rows"]] == [
        "head fp32, tf32 off",
        "head fp32, tf32 on",
        "head bf16-mixed",
        "full fp32, tf32 off",
    ]
    for row in result["rows"]:
        assert "error" not in row, row
        assert row["steps"] == 3 and row["ms_per_step_median"] > 0


def test_train_evaluates_hip_and_autograd_on_test_frames(tmp_path):
    _run(
        "train", "--out", str(tmp_path), "--name", "smoke", "--steps", "3",
        "--test-frames", "2", "--autograd", "--set", "data.batch_size=2",
    )  # fmt: skip
    result = json.loads((tmp_path / "smoke.json").read_text())
    assert result["steps"] == 3 and result["test_frames"] == 2
    for name in ("hip", "autograd"):
        assert result["metrics"][name]["hessian_mae"] > 0
    assert (tmp_path / "smoke" / "hip_model.pt").is_file()
