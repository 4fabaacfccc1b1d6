"""Weights shipped with hip-head, and where its datasets live.

In ``hip_head/assets`` (installed with the package):

- ``mace_pretrained.model``: a small ScaleShiftMACE pretrained on energies and forces
  (``scripts/pretrain_mace.py``, see ``docs/pretrained.md``);
- ``hip_pretrained.model``: the shipped trained HIP, ``hip_head.load("pretrained")``
  (``scripts/train_hip.py``, see ``docs/pretrained.md``).

In the repository's ``data/`` folder only (a checkout or an editable install; not in the
wheel), found by :func:`dataset_path` (see ``docs/data.md``):

- ``default_xtb.db``: the default GFN2-xTB Hessian dataset (``scripts/make_default_dataset.py``);
- ``extra_xtb.db``: more molecules, train rows only (``scripts/make_extra_dataset.py``);
- ``reactions_xtb.db``: the reaction set (``scripts/make_reaction_dataset.py``);
- ``reactions_extra_xtb.db``, ``reactions_extra2_xtb.db``: more training reactions
  (``scripts/make_reaction_extra_dataset.py``, parts 1 and 2);
- ``unseen_large_xtb.db``: larger molecules for evaluation only
  (``scripts/make_large_dataset.py``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["asset_path", "dataset_path"]

_ASSETS = Path(__file__).resolve().parent
#: The repository's data folder (present in a checkout or an editable install only).
_REPO_DATA = _ASSETS.parents[1] / "data"

_MAKERS = {
    "default_xtb.db": "scripts/make_default_dataset.py",
    "extra_xtb.db": "scripts/make_extra_dataset.py",
    "mace_pretrained.model": "scripts/pretrain_mace.py",
    "hip_pretrained.model": "scripts/train_hip.py",
    "reactions_xtb.db": "scripts/make_reaction_dataset.py",
    "reactions_extra_xtb.db": "scripts/make_reaction_extra_dataset.py",
    "reactions_extra2_xtb.db": "scripts/make_reaction_extra_dataset.py --part 2",
    "unseen_large_xtb.db": "scripts/make_large_dataset.py",
}


def asset_path(name: str) -> Path:
    """Path of a shipped asset file.

    Args:
        name: file name inside ``hip_head/assets`` (e.g. ``"mace_pretrained.model"``).

    Returns:
        The absolute path.

    Raises:
        FileNotFoundError: the asset is missing (names the script that makes it).
    """
    path = _ASSETS / name
    if not path.is_file():
        hint = f"; regenerate it with `python {_MAKERS[name]}`" if name in _MAKERS else ""
        raise FileNotFoundError(f"hip-head asset {path} is missing{hint}")
    return path


def dataset_path(name: str) -> Path:
    """Path of a shipped dataset: in ``hip_head/assets`` (wheel) or the checkout's ``data/``.

    Args:
        name: file name (e.g. ``"default_xtb.db"``, ``"reactions_xtb.db"``).

    Returns:
        The absolute path.

    Raises:
        FileNotFoundError: neither place has it; the message says that the file is kept in
            the hip-head repository only (clone it, or regenerate it with the named script).
    """
    for folder in (_ASSETS, _REPO_DATA):
        if (folder / name).is_file():
            return folder / name
    hint = f" or regenerate it with `python {_MAKERS[name]}`" if name in _MAKERS else ""
    raise FileNotFoundError(
        f"hip-head dataset {name!r} is not installed with the package: it is kept in the "
        f"repository's data/ folder only; clone the hip-head repository{hint}"
    )
