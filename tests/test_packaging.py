"""A non-editable install maps adapters/ and finetune/ into the hip_head namespace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_pip_install_maps_subpackages(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), "."],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    assert (target / "hip_head" / "adapters" / "mace.py").is_file()
    assert (target / "hip_head" / "finetune" / "__init__.py").is_file()
    assert not (target / "adapters").exists() and not (target / "finetune").exists()
    code = (
        "import hip_head, hip_head.adapters, hip_head.finetune, hip_head.adapters.mace;"
        "print(hip_head.__file__)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, capture_output=True
    )
    assert str(target) in result.stdout.decode()
    # the wheel carries weights and at most small samples; the datasets stay in data/
    installed = {p.name: p.stat().st_size for p in (target / "hip_head" / "assets").iterdir()}
    assert "mace_pretrained.model" in installed
    assert sum(installed.values()) < 12e6, installed
    assert not any(name in installed for name in ("default_xtb.db", "extra_xtb.db"))
    code = (
        "from hip_head.assets import dataset_path\n"
        "try:\n    dataset_path('reactions_xtb.db')\n"
        "except FileNotFoundError as exc:\n    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, capture_output=True
    )
    assert "repository" in result.stdout.decode()
