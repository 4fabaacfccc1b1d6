"""Batches of dataset indices: seeded per epoch, sharded over DDP ranks, resumable."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

__all__ = ["EpochBatchSampler"]


class _DataPosition:
    """Epoch and batches consumed so far (what a resumed run must skip)."""

    def __init__(self) -> None:
        self.epoch = 0
        self.batches = 0
        self.resume: tuple[int, int] | None = None

    def consumed(self, epoch: int, batch_idx: int) -> None:
        # Lightning's batch_idx counts from the start of the epoch, also after a mid-epoch
        # resume (it restores its batch progress), so it equals the batches consumed - 1
        self.epoch, self.batches = epoch, batch_idx + 1


class EpochBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Shuffled batches that are the same on every run, sharded over DDP ranks, resumable.

    Epoch ``e`` uses the permutation ``default_rng(seed + e)`` of the dataset, cut into
    batches of ``batch_size``; rank ``r`` of ``W`` takes batches ``r, r + W, ...`` (the same
    count on every rank; an incomplete last batch is dropped so every step is full-sized).
    After a resume, the first epoch skips the batches already consumed before the checkpoint.

    Args:
        size: dataset length.
        batch_size: structures per batch.
        seed: shuffling seed.
        epoch_fn: returns the current epoch (the trainer's).
        position: the shared consumed-batches record (restored from checkpoints).
        shuffle: False: keep dataset order (validation).
        drop_last: drop the incomplete last batch.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        epoch_fn: Callable[[], int],
        position: _DataPosition | None = None,
        shuffle: bool = True,
        drop_last: bool = True,
    ) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.epoch_fn, self.position = epoch_fn, position
        self.shuffle, self.drop_last = shuffle, drop_last

    @staticmethod
    def _rank_world() -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _batches(self, epoch: int) -> list[list[int]]:
        order = (
            np.random.default_rng(self.seed + epoch).permutation(self.size)
            if self.shuffle
            else np.arange(self.size)
        )
        batches = [
            order[i : i + self.batch_size].tolist() for i in range(0, self.size, self.batch_size)
        ]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size and len(batches) > 1:
            batches.pop()
        rank, world = self._rank_world()
        per_rank = len(batches) // world if self.drop_last else math.ceil(len(batches) / world)
        mine = batches[rank::world][:per_rank]
        return mine

    def __len__(self) -> int:
        return len(self._batches(0))

    def __iter__(self) -> Iterator[list[int]]:
        epoch = int(self.epoch_fn())
        batches = self._batches(epoch)
        start = 0
        if self.position is not None and self.position.resume is not None:
            r_epoch, r_batches = self.position.resume
            if r_epoch == epoch:
                start = r_batches
            else:
                self.position.resume = None
        yield from batches[start:]
        if self.position is not None:
            self.position.resume = None
