"""The adapter guide's own example runs as printed: docs/adapters.md defines a tiny e3nn model
and its adapter (``tiny_mlip.py``) and a pytest + Hypothesis file (``test_tiny_mlip.py``) that
uses every public name of the test kit; both are written out and run with pytest."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import hip_head.testing

DOC = Path(__file__).resolve().parents[1] / "docs" / "adapters.md"
#: A code block the guide marks as (part of) a file: ``<!-- file: name.py -->`` then the block.
FILE_BLOCK = re.compile(r"<!-- file: (\S+) -->\n```python\n(.*?)```", re.S)


def _files() -> dict[str, str]:
    """File name -> its text: the guide's marked blocks of that name, joined in page order."""
    files: dict[str, list[str]] = {}
    for name, source in FILE_BLOCK.findall(DOC.read_text()):
        files.setdefault(name, []).append(source)
    return {name: "\n\n".join(parts) for name, parts in files.items()}


def test_the_guide_holds_a_short_model_an_adapter_and_a_test_file():
    files = _files()
    assert set(files) == {"tiny_mlip.py", "test_tiny_mlip.py"}, set(files)
    model = files["tiny_mlip.py"]
    assert "class TinyMLIP(nn.Module)" in model and "class TinyAdapter(BackboneAdapter)" in model
    code_lines = [line for line in model.splitlines() if line.strip()]
    assert len(code_lines) <= 60, f"the worked example grew to {len(code_lines)} lines of code"


def test_the_guides_test_file_uses_every_public_name_of_the_kit():
    test_file = _files()["test_tiny_mlip.py"]
    prose = DOC.read_text()
    for name in ("DEFAULT_ELEMENTS", "PROPERTIES", "CheckReport"):
        assert re.search(rf"\b{name}\b", prose), name
    body = test_file.split("from tiny_mlip import")[1]  # what follows the imports
    shown_elsewhere = {"DEFAULT_ELEMENTS", "PROPERTIES", "CheckReport"}  # named in the prose
    unused = [
        name
        for name in hip_head.testing.__all__
        if name not in shown_elsewhere and not re.search(rf"\b{name}\b", body)
    ]
    assert not unused, f"docs/adapters.md shows no use of {unused}"


def test_every_python_block_of_the_guide_is_run_by_a_test():
    """The marked files run here; the library-style adapter in tests/adapters/."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    marked = len(FILE_BLOCK.findall(DOC.read_text()))
    library = [b for b in blocks if "class ToyLibraryAdapter" in b]
    assert len(blocks) == marked + len(library) and len(library) == 1


@pytest.mark.slow
def test_the_guides_files_run_as_printed(tmp_path):
    """Written to a fresh directory and run with pytest in a new interpreter, as a reader would."""
    files = _files()
    for name, source in files.items():
        (tmp_path / name).write_text(source)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_tiny_mlip.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    tests = len(re.findall(r"^def test_", files["test_tiny_mlip.py"], re.M))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert re.search(rf"\b{tests} passed\b", result.stdout), result.stdout[-3000:]
