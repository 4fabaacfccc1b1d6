"""The ten-line example at the top of docs/chemistry.md runs as written and says what it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ase import Atoms

pytest.importorskip("sella")
pytest.importorskip("mace")

DOC = Path(__file__).resolve().parents[2] / "docs" / "chemistry.md"


@pytest.mark.chem
@pytest.mark.mace
@pytest.mark.slow
def test_chemistry_page_example_runs(tmp_path, monkeypatch, capsys):
    first_block = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    Atoms("HCN", positions=[[0, 0, -1.07], [0, 0, 0], [0, 0, 1.16]]).write("hcn.xyz")
    Atoms("HCN", positions=[[0.02, 0.0, 2.16], [0, 0, 0], [0, 0, 1.17]]).write("hnc.xyz")
    namespace: dict = {}
    exec(compile(first_block, str(DOC), "exec"), namespace)  # noqa: S102 - our own docs
    ts = namespace["ts"]
    assert ts.verdict == "ts", ts.reason
    assert -2500 < ts.imaginary_cm1 < -800  # the HCN -> HNC hydrogen shift
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("ts ") for line in lines), lines
    assert float(lines[-1]) > 0  # a rate constant, s^-1
