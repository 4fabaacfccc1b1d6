"""Data sources of a run: files or shipped datasets by name, their columns and subsets."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hip_head.errors import InvalidArgumentError
from hip_head.finetune.data.asedb import AseDbDataset
from hip_head.finetune.data.extxyz import read_extxyz
from hip_head.finetune.data.horm import HormLMDBDataset
from hip_head.finetune.data.splits import molecule_key

if TYPE_CHECKING:
    from hip_head.finetune.config import DataConfig

__all__ = ["SHIPPED_DATASETS", "default_dataset_path", "open_source", "repeat_by_kind"]

#: Names that :func:`open_source` resolves to shipped datasets (``hip_head/assets``).
SHIPPED_DATASETS = {
    "default": "default_xtb.db",
    "extra": "extra_xtb.db",
    "reactions": "reactions_xtb.db",
    "reactions_extra": "reactions_extra_xtb.db",
    "reactions_extra2": "reactions_extra2_xtb.db",
    "unseen_large": "unseen_large_xtb.db",
}


def default_dataset_path() -> Path:
    """Path of the default GFN2-xTB dataset (``data/default_xtb.db`` of a checkout)."""
    from hip_head.assets import dataset_path

    return dataset_path(SHIPPED_DATASETS["default"])


def open_source(path: str, data: DataConfig) -> Any:
    """A reader for one data file, or a shipped dataset by name (:data:`SHIPPED_DATASETS`).

    ``"default"`` is the default GFN2-xTB dataset (train/val/test splits); ``"extra"`` is the
    extra fine-tuning set of molecules the shipped backbone never saw (train rows only,
    ``scripts/make_extra_dataset.py``); ``"reactions"`` is the GFN2-xTB reaction set
    (transition states, IRC frames, minima and thermal frames; train/val/test split by
    reactant molecule; in a repository checkout only, ``data/reactions_xtb.db``);
    ``"reactions_extra"`` and ``"reactions_extra2"`` hold more reactions of the extra set's
    molecules (train rows only, ``scripts/make_reaction_extra_dataset.py``, parts 1 and 2);
    ``"unseen_large"`` holds minima and thermal frames of 15-26-atom molecules no other set
    has (test rows only, ``data/unseen_large_xtb.db``).

    Args:
        path: a ``.db``, ``.lmdb``, ``.xyz`` or ``.extxyz`` file, or a shipped dataset name.
        data: the data section of the run configuration (``on_error``, ``energy_key``).

    Returns:
        An :class:`AseDbDataset`, :class:`HormLMDBDataset` or a list of samples (extxyz).

    Raises:
        ValueError: an unknown file type.
    """
    if path in SHIPPED_DATASETS:
        from hip_head.assets import dataset_path

        path = os.fspath(dataset_path(SHIPPED_DATASETS[path]))
    lower = path.lower()
    if lower.endswith(".db"):
        return AseDbDataset(path, on_error=data.on_error)
    if lower.endswith(".lmdb") or os.path.isdir(path):
        return HormLMDBDataset(path, energy_key=data.energy_key, on_error=data.on_error)
    if lower.endswith((".xyz", ".extxyz")):
        return read_extxyz(path, on_error=data.on_error)
    raise InvalidArgumentError(
        f"{path}: unknown data format (expected .db, .lmdb, .xyz or .extxyz)"
    )


def _columns(source: Any) -> tuple[list[Any], list[str], list[str | None]]:
    """Per-record ``split`` values, molecule keys and ``kind`` tags of a reader, cheaply
    where possible (an ASE database answers from its key-value columns)."""
    if isinstance(source, AseDbDataset):
        splits = source.column("split")
        molecules = source.column("molecule")
        if any(m is None for m in molecules):
            formulas = source.column("formula")
            molecules = [
                m if m is not None else f for m, f in zip(molecules, formulas, strict=True)
            ]
        kinds = [None if k is None else str(k) for k in source.column("kind")]
        return splits, [str(m) for m in molecules], kinds
    keys: list[str] = []
    kinds: list[str | None] = []
    for i in range(len(source)):
        sample = source[i]
        keys.append(molecule_key(sample) if sample is not None else f"bad-{i}")
        kind = sample.meta.get("kind") if sample is not None else None
        kinds.append(None if kind is None else str(kind))
    return [None] * len(source), keys, kinds


def repeat_by_kind(
    indices: Sequence[int], kinds: Sequence[str | None], repeats: Mapping[str, int]
) -> list[int]:
    """``indices`` with each one of kind ``K`` repeated ``repeats[K]`` times (others once).

    Args:
        indices: record indices into a reader.
        kinds: the ``kind`` tag of every record of that reader (None: untagged).
        repeats: kind -> copies per epoch (>= 1).

    Returns:
        The indices in their order, each followed by its extra copies.
    """
    out: list[int] = []
    for i in indices:
        kind = kinds[i]
        out.extend([i] * (int(repeats.get(kind, 1)) if kind is not None else 1))
    return out


class _Subset(torch.utils.data.Dataset):
    """The records ``indices`` of ``dataset``, re-indexed from 0."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[self.indices[i]]


def _limit(indices: list[int], keys: list[str], limit: int | None, seed: int) -> list[int]:
    """At most ``limit`` frames, whole molecules in shuffled order."""
    if limit is None or len(indices) <= limit:
        return indices
    groups: dict[str, list[int]] = {}
    for i in indices:
        groups.setdefault(keys[i], []).append(i)
    names = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(names))
    out: list[int] = []
    for j in order:
        if out and len(out) + len(groups[names[j]]) > limit:
            continue
        out += groups[names[j]]
    return sorted(out)
