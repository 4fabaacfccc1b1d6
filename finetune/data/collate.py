"""Samples as torch data: concatenated datasets, batch collation, label statistics.

:func:`collate_hessian` batches samples into an :class:`~hip_head.graph.AtomicGraph` and flat
label tensors (energy [B] eV, forces [N, 3] eV/Å, Hessian [Σ_g (3N_g)²] eV/Å²).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hip_head.errors import InvalidArgumentError
from hip_head.finetune.data.sample import HessianDataError, HessianSample, _normalize_index
from hip_head.graph import AtomicGraph

__all__ = ["HessianDataset", "collate_hessian", "hessian_rms"]


class HessianDataset(torch.utils.data.Dataset):
    """Concatenation of readers and samples as one torch ``Dataset``.

    Args:
        sources: each item a :class:`HessianSample` (one record) or a sequence-like of samples
            (a reader, a list): anything with ``__len__`` and ``__getitem__``.

    ``dataset[i]`` returns a :class:`HessianSample`, or None for a record its reader skipped;
    :func:`collate_hessian` drops those.
    """

    def __init__(self, sources: Sequence[Any]) -> None:
        self.sources = [[s] if isinstance(s, HessianSample) else s for s in sources]
        self._offsets = [0]
        for source in self.sources:
            self._offsets.append(self._offsets[-1] + len(source))

    def __len__(self) -> int:
        return self._offsets[-1]

    def __getitem__(self, index: int) -> HessianSample | None:
        index = _normalize_index(index, len(self))
        k = bisect.bisect_right(self._offsets, index) - 1
        return self.sources[k][index - self._offsets[k]]


def collate_hessian(
    samples: Sequence[HessianSample | None], dtype: torch.dtype | None = None
) -> tuple[AtomicGraph, dict[str, torch.Tensor]]:
    """Batch samples into an :class:`AtomicGraph` and label tensors.

    ``None`` entries (records skipped by a reader) are dropped. Labels missing on some samples
    are NaN there (mask with ``torch.isfinite``); a label missing on all is left out.

    Args:
        samples: the samples.
        dtype: floating dtype (default: torch's default dtype).

    Returns:
        ``(graph, labels)``: the graph (positions Å, charge, spin) and labels ``"energy"`` [B]
        eV, ``"forces"`` [N, 3] eV/Å, ``"hessian"`` [Σ_g (3N_g)²] eV/Å² in the flat batch
        layout (each molecule's (3N, 3N) row-major block, index ``3a + α``, concatenated).

    Raises:
        ValueError: no samples are left.
    """
    dtype = dtype or torch.get_default_dtype()
    kept = [s for s in samples if s is not None]
    if not kept:
        raise InvalidArgumentError("empty batch: every sample was skipped or none was given")
    counts = np.array([s.num_atoms for s in kept], dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    graph = AtomicGraph(
        positions=torch.from_numpy(np.concatenate([s.positions for s in kept])).to(dtype),
        atomic_numbers=torch.from_numpy(np.concatenate([s.numbers for s in kept])),
        batch=torch.from_numpy(np.repeat(np.arange(len(kept)), counts)),
        ptr=torch.from_numpy(ptr),
        charge=torch.tensor([float(s.charge) for s in kept], dtype=dtype),
        spin=torch.tensor([float(s.spin) for s in kept], dtype=dtype),
    )
    labels: dict[str, torch.Tensor] = {}
    if any(s.energy is not None for s in kept):
        energies = [np.nan if s.energy is None else s.energy for s in kept]
        labels["energy"] = torch.tensor(energies, dtype=dtype)
    if any(s.forces is not None for s in kept):
        parts = [
            s.forces if s.forces is not None else np.full((s.num_atoms, 3), np.nan) for s in kept
        ]
        labels["forces"] = torch.from_numpy(np.concatenate(parts)).to(dtype)
    if any(s.hessian is not None for s in kept):
        parts = [
            s.hessian if s.hessian is not None else np.full((3 * s.num_atoms) ** 2, np.nan)
            for s in kept
        ]
        labels["hessian"] = torch.from_numpy(np.concatenate(parts)).to(dtype)
    return graph, labels


# ---------------------------------------------------------------------------------- statistics
def hessian_rms(dataset: Any, max_frames: int = 256, seed: int = 0) -> float:
    """Root mean square of the Hessian label entries, eV/Å² (the head's ``block_scale: auto``).

    Args:
        dataset: indexable samples (``len`` and ``[i]`` giving :class:`HessianSample`).
        max_frames: at most this many frames, drawn without replacement (seeded).
        seed: seed of the draw.

    Returns:
        sqrt(mean over all entries of all drawn frames of H²).

    Raises:
        HessianDataError: no drawn frame has a Hessian.
    """
    n = len(dataset)
    rng = np.random.default_rng(seed)
    indices = rng.choice(n, size=min(n, max_frames), replace=False) if n else []
    total, count = 0.0, 0
    for i in indices:
        hessian = dataset[int(i)].hessian
        if hessian is not None:
            total += float(np.square(hessian).sum())
            count += hessian.size
    if count == 0:
        raise HessianDataError(
            "training data", None, "no Hessian labels to take the RMS of (block_scale: auto)"
        )
    return float(np.sqrt(total / count))
