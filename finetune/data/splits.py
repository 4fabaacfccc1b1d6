"""Splits by molecule: every frame of one molecule lands in the same split."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from ase.data import chemical_symbols

from hip_head.errors import InvalidArgumentError
from hip_head.finetune.data.sample import HessianSample

__all__ = ["molecule_key", "split_by_molecule"]


def molecule_key(sample: HessianSample) -> str:
    """``meta["molecule"]`` when set, else the Hill formula of the atomic numbers."""
    name = sample.meta.get("molecule")
    if name:
        return str(name)
    counts = Counter(chemical_symbols[int(z)] for z in sample.numbers)
    order = (["C", "H"] if "C" in counts else []) + sorted(
        s for s in counts if not ("C" in counts and s in ("C", "H"))
    )
    return "".join(f"{s}{counts[s] if counts[s] > 1 else ''}" for s in order)


def split_by_molecule(
    samples_or_keys: Sequence[Any],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    key: Callable[[HessianSample], Any] = molecule_key,
) -> list[list[int]]:
    """Split indices so that all frames of one molecule land in the same split.

    Molecules are shuffled with ``seed`` and each is given to the split furthest below its
    target frame count, so split sizes follow ``fractions`` as closely as whole molecules allow.

    Args:
        samples_or_keys: samples (grouped by ``key``) or precomputed group keys (str/int; pass
            these for lazy datasets to avoid reading every record).
        fractions: target fraction of frames per split (normalised to sum 1).
        seed: shuffling seed.
        key: group key of a sample (default :func:`molecule_key`; e.g.
            ``lambda s: s.meta["rxn"]`` for HORM reactions).

    Returns:
        One sorted list of indices per fraction.
    """
    if not fractions or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise InvalidArgumentError(f"fractions must be non-negative and sum > 0, got {fractions}")
    groups: dict[Any, list[int]] = {}
    for i, item in enumerate(samples_or_keys):
        k = key(item) if isinstance(item, HessianSample) else item
        groups.setdefault(k, []).append(i)
    names = sorted(groups, key=repr)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(names))
    total = sum(len(v) for v in groups.values())
    weights = np.asarray(fractions, dtype=np.float64) / float(sum(fractions))
    targets = weights * total
    filled = np.zeros(len(weights))
    splits: list[list[int]] = [[] for _ in weights]
    for j in order:
        members = groups[names[j]]
        deficit = np.where(weights > 0, (targets - filled) / np.maximum(targets, 1e-12), -np.inf)
        s = int(np.argmax(deficit))
        splits[s].extend(members)
        filled[s] += len(members)
    return [sorted(s) for s in splits]
