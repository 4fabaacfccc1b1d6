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
