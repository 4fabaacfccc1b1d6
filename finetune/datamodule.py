"""Lightning data module: train/val/test datasets of a run, batched for training.

Datasets come from files or the shipped datasets (:func:`~hip_head.finetune.data.open_source`),
split by the ``split`` column or by molecule, and batched into
:class:`~hip_head.graph.AtomicGraph` with flat Hessian labels (eV/Å²) by the resumable,
DDP-aware :class:`~hip_head.finetune.data.EpochBatchSampler`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch

from hip_head.errors import InvalidArgumentError
from hip_head.finetune.config import DataConfig
from hip_head.finetune.data.collate import HessianDataset, collate_hessian
from hip_head.finetune.data.sampler import EpochBatchSampler, _DataPosition
from hip_head.finetune.data.sources import _columns, _limit, _Subset, open_source, repeat_by_kind
from hip_head.finetune.data.splits import split_by_molecule

__all__ = ["HessianDataModule"]


class HessianDataModule(pl.LightningDataModule):
    """Train/val/test data for :class:`~hip_head.finetune.module.HIPLightningModule`.

    Args:
        config: the data section of the run configuration.
        dtype: floating dtype of the batches (the model's).
    """

    def __init__(self, config: DataConfig, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.config = config
        self.dtype = dtype
        self.position = _DataPosition()
        self.splits: dict[str, Any] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        c = self.config
        train_parts: list[Any] = []
        val_parts: list[Any] = []
        test_parts: list[Any] = []
        for path in c.train:
            source = open_source(path, c)
            splits, keys, kinds = _columns(source)
            has_split = any(s is not None for s in splits)
            if has_split:
                tr = [i for i, s in enumerate(splits) if s == "train"]
                va = [i for i, s in enumerate(splits) if s == "val"]
                te = [i for i, s in enumerate(splits) if s == "test"]
            else:
                tr, va, te = list(range(len(source))), [], []
            tr = _limit(tr, keys, c.max_train_frames, c.seed)
            train_parts.append((source, tr, keys, kinds))
            if not c.val:
                val_parts.append(_Subset(source, _limit(va, keys, c.max_val_frames, c.seed)))
            if not c.test and te:
                test_parts.append(_Subset(source, te))
        if not c.val and not any(len(v) for v in val_parts):
            # no validation rows anywhere: hold out val_fraction of the training molecules
            val_parts, new_train = [], []
            for source, tr, keys, kinds in train_parts:
                keep, held = split_by_molecule(
                    [keys[i] for i in tr], (1 - c.val_fraction, c.val_fraction), seed=c.seed
                )
                new_train.append((source, [tr[i] for i in keep], keys, kinds))
                held_idx = _limit([tr[i] for i in held], keys, c.max_val_frames, c.seed)
                val_parts.append(_Subset(source, held_idx))
            train_parts = new_train
        for path in c.val:
            val_parts.append(open_source(path, c))
        for path in c.test:
            test_parts.append(open_source(path, c))
        self.splits = {
            "train": HessianDataset(
                [
                    _Subset(s, repeat_by_kind(tr, kinds, c.kind_repeats))
                    for s, tr, _, kinds in train_parts
                ]
            ),
            "val": HessianDataset(val_parts),
            "test": HessianDataset(test_parts),
        }
        for name in ("train", "val"):
            if len(self.splits[name]) == 0:
                raise InvalidArgumentError(f"the {name} set is empty (data section: {self.config})")

    def _collate(self, samples: Sequence[Any]) -> Any:
        return collate_hessian(samples, dtype=self.dtype)

    def _loader(self, name: str, shuffle: bool) -> torch.utils.data.DataLoader:
        dataset = self.splits[name]
        trainer = self.trainer

        def epoch_fn() -> int:
            return int(trainer.current_epoch) if trainer is not None else 0

        sampler = EpochBatchSampler(
            len(dataset),
            self.config.batch_size,
            self.config.seed,
            epoch_fn,
            position=self.position if shuffle else None,
            shuffle=shuffle,
            drop_last=shuffle,
        )
        return torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self._collate,
            num_workers=self.config.num_workers,
            persistent_workers=self.config.num_workers > 0,
        )

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader("test", shuffle=False)

    def state_dict(self) -> dict[str, Any]:
        """The data position (saved in every checkpoint)."""
        return {"epoch": self.position.epoch, "batches": self.position.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next training epoch skips the batches consumed before the checkpoint."""
        self.position.epoch = int(state["epoch"])
        self.position.batches = int(state["batches"])
        self.position.resume = (self.position.epoch, self.position.batches)
