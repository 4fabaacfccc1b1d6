"""Data and weights shipped with hip-head (made by the scripts in ``scripts/``).

- ``default_xtb.db``: the default GFN2-xTB Hessian dataset (``scripts/make_default_dataset.py``,
  see ``docs/data.md``).
- ``extra_xtb.db``: extra GFN2-xTB Hessians of molecules the default dataset and the
  backbone never saw, all ``split = "train"`` (``scripts/make_extra_dataset.py``).
- ``mace_pretrained.model``: a small ScaleShiftMACE pretrained on its train split
  (``scripts/pretrain_mace.py``, see ``docs/pretrained.md``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["asset_path"]

_ASSETS = Path(__file__).resolve().parent


def asset_path(name: str) -> Path:
    """Path of a shipped asset file.

    Args:
        name: file name inside ``hip_head/assets`` (e.g. ``"default_xtb.db"``).

    Returns:
        The absolute path.

    Raises:
        FileNotFoundError: the asset is missing (names the script that makes it).
    """
    path = _ASSETS / name
    if not path.is_file():
        makers = {
            "default_xtb.db": "scripts/make_default_dataset.py",
            "extra_xtb.db": "scripts/make_extra_dataset.py",
            "mace_pretrained.model": "scripts/pretrain_mace.py",
        }
        hint = f"; regenerate it with `python {makers[name]}`" if name in makers else ""
        raise FileNotFoundError(f"hip-head asset {path} is missing{hint}")
    return path
