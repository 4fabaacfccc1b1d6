"""Lightning training of a :class:`~hip_head.model.HIPModel` on Hessian data.

- :class:`HIPLightningModule`: the model, its loss and metrics, AdamW with warm-up + cosine,
  an exponential moving average (EMA) of the trained weights, clear errors on NaN/inf losses
  and out-of-memory batches.
- :class:`HessianDataModule`: train/val/test datasets from files or the shipped default
  dataset, split by molecule, batched into :class:`~hip_head.graph.AtomicGraph` with flat
  Hessian labels by a resumable, DDP-aware batch sampler.
- :class:`AtomicCheckpointIO`: checkpoints written to a temporary file and renamed.

Units everywhere: positions Å, energies eV, forces eV/Å, Hessians eV/Å².
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from hip_head.autograd import autograd_hessian_rows, flat_hessian_rows
from hip_head.errors import HIPError
from hip_head.finetune.config import DataConfig, FinetuneConfig
from hip_head.finetune.data import (
    AseDbDataset,
    HessianDataset,
    HormLMDBDataset,
    collate_hessian,
    molecule_key,
    read_extxyz,
    split_by_molecule,
)
from hip_head.finetune.losses import LossWeights, energy_loss, forces_loss, hessian_metrics
from hip_head.finetune.losses import total_loss as weighted_loss
from hip_head.graph import AtomicGraph
from hip_head.model import HIPModel, full_precision

__all__ = [
    "AtomicCheckpointIO",
    "BatchTooLargeError",
    "EpochBatchSampler",
    "HIPLightningModule",
    "HessianDataModule",
    "ParameterEMA",
    "TrainingDivergedError",
    "default_dataset_path",
    "open_source",
]


class TrainingDivergedError(HIPError, RuntimeError):
    """The loss became NaN or infinite; training stopped, the last checkpoint is intact."""


class BatchTooLargeError(HIPError, RuntimeError):
    """A batch did not fit in memory; the message names a batch size to try."""


#: Names that :func:`open_source` resolves to shipped datasets (``hip_head/assets``).
SHIPPED_DATASETS = {
    "default": "default_xtb.db",
    "extra": "extra_xtb.db",
    "reactions": "reactions_xtb.db",
    "unseen_large": "unseen_large_xtb.db",
}


def default_dataset_path() -> Path:
    """Path of the default GFN2-xTB dataset (``data/default_xtb.db`` of a checkout)."""
    from hip_head.assets import dataset_path

    return dataset_path(SHIPPED_DATASETS["default"])


# ---------------------------------------------------------------------------------- checkpoints
class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that never leaves a half-written file.

    The checkpoint is written to ``<path>.tmp`` in the same directory, flushed to disk and
    renamed over ``<path>`` (``os.replace`` is atomic on POSIX), so a crash or SIGKILL during
    the write leaves the previous checkpoint intact.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        """Write ``checkpoint`` atomically to ``path``."""
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)


# ---------------------------------------------------------------------------------- EMA
class ParameterEMA(nn.Module):
    """Exponential moving average of a model's trainable parameters.

    ``shadow = decay * shadow + (1 - decay) * param`` after every optimizer step, with the
    usual warm-up ``decay_t = min(decay, (1 + t) / (10 + t))`` so early averages are not
    dominated by the random start. The shadows are buffers: they are saved in checkpoints.

    Args:
        model: the model whose ``requires_grad`` parameters are averaged.
        decay: the EMA decay in [0, 1).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        self.decay = float(decay)
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        for i, name in enumerate(self.names):
            self.register_buffer(f"shadow_{i}", model.get_parameter(name).detach().clone())
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def _shadows(self) -> list[torch.Tensor]:
        return [getattr(self, f"shadow_{i}") for i in range(len(self.names))]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current parameters of ``model`` into the averages."""
        t = int(self.num_updates)
        decay = min(self.decay, (1.0 + t) / (10.0 + t))
        params = [model.get_parameter(n) for n in self.names]
        shadows = self._shadows()
        torch._foreach_lerp_(shadows, [p.detach() for p in params], 1.0 - decay)
        self.num_updates += 1

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[None]:
        """Context in which ``model`` holds the averaged weights (restored afterwards)."""
        params = [model.get_parameter(n) for n in self.names]
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, s in zip(params, self._shadows(), strict=True):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved, strict=True):
                    p.copy_(s)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into ``model`` for good."""
        for name, shadow in zip(self.names, self._shadows(), strict=True):
            model.get_parameter(name).copy_(shadow)


# ---------------------------------------------------------------------------------- module
def _cosine_with_warmup(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear from 0 over ``warmup`` steps, then cosine to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / float(warmup)
    progress = min(1.0, (step - warmup) / float(max(1, total - warmup)))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def trainable_backbone_modules(model: HIPModel, mode: str, last_k: int) -> list[nn.Module]:
    """Backbone modules that train in ``mode`` (``"head"``: none; ``"full"``: the backbone;
    ``"last_k"``: the adapter's last ``last_k`` layer groups)."""
    if mode == "head":
        return []
    if mode == "full":
        return [model.backbone]
    groups = model.adapter.layer_groups()
    if last_k > len(groups):
        raise ValueError(
            f"train.last_k = {last_k} but the backbone has only {len(groups)} layer groups"
        )
    return [m for group in groups[-last_k:] for m in group]


class HIPLightningModule(pl.LightningModule):
    """Fine-tunes a :class:`HIPModel` (its head, and in some modes its backbone).

    Args:
        model: the model (head randomly initialised or already trained).
        config: the run configuration (mode, loss weights, optimiser).
    """

    def __init__(self, model: HIPModel, config: FinetuneConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.save_hyperparameters({"config": config.to_dict()})
        mode, target = config.train.mode, config.train.target
        if target == "autograd":
            model.hessian_method = "autograd"
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        for module in trainable_backbone_modules(model, mode, config.train.last_k):
            for p in module.parameters():
                p.requires_grad_(True)
        for p in model.readout.parameters():
            p.requires_grad_(target == "head")
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError("nothing to train: every parameter is frozen")
        lo = config.loss
        train_backbone = mode != "head"
        self.weights = LossWeights(
            energy=lo.energy if train_backbone else 0.0,
            forces=lo.forces if train_backbone else 0.0,
            hessian=lo.hessian,
            subspace=lo.subspace if target == "head" else 0.0,
            subspace_k=lo.subspace_k,
            subspace_basis=lo.subspace_basis,
            hessian_kind=lo.hessian_kind,
            hessian_normalization=lo.hessian_normalization,
        )
        self.ema = ParameterEMA(model, config.optim.ema_decay) if config.optim.ema_decay else None
        self._data_position: Any = None  # set by the data module: records consumed batches

    # -------------------------------------------------------------- set-up
    def configure_optimizers(self) -> Any:
        o, t = self.config.optim, self.config.train
        head = [p for p in self.model.readout.parameters() if p.requires_grad]
        backbone = [p for p in self.model.backbone.parameters() if p.requires_grad]
        groups = []
        if head:
            groups.append({"params": head, "lr": o.lr, "name": "head"})
        if backbone:
            lr = o.backbone_lr if o.backbone_lr is not None else o.lr
            groups.append({"params": backbone, "lr": lr, "name": "backbone"})
        optimizer = torch.optim.AdamW(groups, weight_decay=o.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: _cosine_with_warmup(step, o.warmup_steps, t.max_steps, o.min_lr_ratio),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def on_fit_start(self) -> None:
        if self.config.train.mode == "head":
            self.model.backbone.eval()  # frozen: no dropout / batch-norm updates
        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = self.config.train.tf32
            torch.backends.cudnn.allow_tf32 = self.config.train.tf32

    def on_train_epoch_start(self) -> None:
        if self.config.train.mode == "head":
            self.model.backbone.eval()

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int):
        graph, labels = batch
        return graph.to(device=device), {k: v.to(device) for k, v in labels.items()}

    # -------------------------------------------------------------- predictions
    def _autograd_rows(self, graph: AtomicGraph, labels: dict[str, torch.Tensor]):
        """Random Hessian rows of the backbone (HORM baseline) and the matching labels."""
        counts = graph.atoms_per_graph.tolist()
        k = min(self.config.loss.autograd_rows, 3 * min(counts))
        gen = torch.Generator().manual_seed(
            self.config.train.seed * 1_000_003 + int(self.global_step)
        )
        rows = torch.stack([torch.randperm(3 * n, generator=gen)[:k] for n in counts])
        rows = rows.to(graph.positions.device)

        def energy_fn(positions: torch.Tensor) -> torch.Tensor:
            return self.model.run_backbone(graph.with_positions(positions)).energy

        with full_precision(graph):
            pred = autograd_hessian_rows(energy_fn, graph.positions, rows, graph.ptr)
        target = flat_hessian_rows(labels["hessian"], counts, rows)
        return pred, target

    def _loss(self, graph: AtomicGraph, labels: dict[str, torch.Tensor]):
        counts = graph.atoms_per_graph
        w = self.weights
        if self.config.train.target == "autograd":
            pred = self.model(graph, compute_forces=w.forces > 0, compute_hessian=False)
            parts: dict[str, torch.Tensor] = {}
            total = pred["energy"].new_zeros(())
            if w.energy > 0:
                parts["energy"] = energy_loss(
                    pred["energy"], labels["energy"], "mae", False, counts
                )
                total = total + w.energy * parts["energy"]
            if w.forces > 0:
                parts["forces"] = forces_loss(pred["forces"], labels["forces"], "mae")
                total = total + w.forces * parts["forces"]
            rows_pred, rows_target = self._autograd_rows(graph, labels)
            diff = rows_pred - rows_target
            parts["hessian"] = diff.abs().mean() if w.hessian_kind == "mae" else diff.pow(2).mean()
            total = total + w.hessian * parts["hessian"]
            parts = {k: v.detach() for k, v in parts.items()}
            parts["total"] = total.detach()
            return total, parts
        if self.config.train.mode == "head":
            # frozen backbone: its features need no graph (no backprop into the backbone)
            with torch.no_grad():
                graph.validate()
                self.model.adapter.check_elements(graph)
                features = self.model.run_backbone(graph)
            feats = features.node_feats.detach()
            blocks = self.model.readout(feats, graph).to(feats.dtype)
            pred = {"energy": features.energy, "hessian": self.model._format(blocks, graph, "flat")}
            return weighted_loss(
                pred, labels, counts, w, None, graph.positions, graph.atomic_numbers
            )
        pred = self.model(
            graph,
            compute_forces=w.forces > 0,
            compute_hessian=w.hessian > 0 or w.subspace > 0,
        )
        return weighted_loss(pred, labels, counts, w, None, graph.positions, graph.atomic_numbers)

    # -------------------------------------------------------------- steps
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        graph, labels = batch
        if self._data_position is not None:
            self._data_position.consumed(self.current_epoch, batch_idx)
        try:
            loss, parts = self._loss(graph, labels)
        except torch.OutOfMemoryError as exc:
            raise self._oom_error(graph, exc) from exc
        except RuntimeError as exc:
            if "out of memory" in str(exc) or "can't allocate memory" in str(exc):
                raise self._oom_error(graph, exc) from exc
            raise
        self._stop_if_not_finite(loss, parts)
        b = graph.num_graphs
        for name, value in parts.items():
            self.log(f"train/{name}", value, batch_size=b, prog_bar=name == "total")
        for group in self.optimizers().param_groups:  # type: ignore[union-attr]
            self.log(f"lr/{group.get('name', 'group')}", group["lr"], batch_size=b)
        return loss

    def _oom_error(self, graph: AtomicGraph, exc: BaseException) -> BatchTooLargeError:
        b = graph.num_graphs
        largest = int(graph.atoms_per_graph.max())
        suggestion = max(1, b // 2)
        return BatchTooLargeError(
            f"out of memory on a batch of {b} structures ({graph.num_atoms} atoms, largest "
            f"{largest}) at step {self.global_step}: try data.batch_size={suggestion}"
            + ("" if b > 1 else " is already 1: use a smaller hessian_cutoff or a bigger device")
            + f" ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        )

    def _stop_if_not_finite(self, loss: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        bad = torch.tensor(0.0 if torch.isfinite(loss) else 1.0, device=loss.device)
        if self.trainer.world_size > 1:  # every rank stops together (no hang in all-reduce)
            bad = self.trainer.strategy.reduce(bad, reduce_op="sum")
        if float(bad) > 0:
            ckpt = Path(self.config.train.out_dir) / "checkpoints" / "last.ckpt"
            kept = f"the last good checkpoint is {ckpt}" if ckpt.exists() else "no checkpoint yet"
            values = ", ".join(f"{k}={float(v):.4g}" for k, v in parts.items())
            raise TrainingDivergedError(
                f"loss is not finite at step {self.global_step} ({values}); training stopped "
                f"and {kept}. Lower optim.lr, keep optim.grad_clip > 0, or check the labels "
                "with hip_head.finetune.data.validate_sample."
            )

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:  # before the checkpoint callbacks of this step run
            self.ema.update(self.model)

    def _evaluation_context(self):
        return self.ema.swapped_in(self.model) if self.ema is not None else contextlib.nullcontext()

    def _evaluate(self, batch: Any, prefix: str) -> None:
        graph, labels = batch
        with self._evaluation_context(), torch.enable_grad():
            self.model.eval()
            pred = self.model(graph, compute_forces=True, compute_hessian=True)
        pred = {k: v.detach() for k, v in pred.items()}
        counts = graph.atoms_per_graph
        b = graph.num_graphs
        metrics = hessian_metrics(
            pred["hessian"],
            labels["hessian"],
            counts,
            graph.positions,
            graph.atomic_numbers,
            graph.ptr,
        )
        metrics.pop("num_structures", None)
        if "energy" in labels:
            metrics["energy_mae"] = float((pred["energy"] - labels["energy"]).abs().mean())
        if "forces" in labels:
            metrics["forces_mae"] = float((pred["forces"] - labels["forces"]).abs().mean())
        for name, value in metrics.items():
            self.log(f"{prefix}/{name}", float(value), batch_size=b, sync_dist=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_validation_end(self) -> None:
        self.model.train()
        if self.config.train.mode == "head":
            self.model.backbone.eval()

    def final_model(self) -> HIPModel:
        """The trained :class:`HIPModel` with the EMA weights written in, in eval mode."""
        if self.ema is not None:
            self.ema.copy_to(self.model)
        return self.model.eval()


# ---------------------------------------------------------------------------------- data
def open_source(path: str, data: DataConfig) -> Any:
    """A reader for one data file, or a shipped dataset by name (:data:`SHIPPED_DATASETS`).

    ``"default"`` is the default GFN2-xTB dataset (train/val/test splits); ``"extra"`` is the
    extra fine-tuning set of molecules the shipped backbone never saw (train rows only,
    ``scripts/make_extra_dataset.py``); ``"reactions"`` is the GFN2-xTB reaction set
    (transition states, IRC frames, minima and thermal frames; train/val/test split by
    reactant molecule; in a repository checkout only, ``data/reactions_xtb.db``);
    ``"unseen_large"`` holds minima and thermal frames of 15-26-atom molecules no other set
    has (test rows only, ``data/unseen_large_xtb.db``).

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
    raise ValueError(f"{path}: unknown data format (expected .db, .lmdb, .xyz or .extxyz)")


def _columns(source: Any) -> tuple[list[Any], list[str]]:
    """Per-record ``split`` values and molecule keys of a reader, cheaply where possible."""
    if isinstance(source, AseDbDataset):
        splits = source.column("split")
        molecules = source.column("molecule")
        if any(m is None for m in molecules):
            formulas = source.column("formula")
            molecules = [
                m if m is not None else f for m, f in zip(molecules, formulas, strict=True)
            ]
        return splits, [str(m) for m in molecules]
    keys = []
    for i in range(len(source)):
        sample = source[i]
        keys.append(molecule_key(sample) if sample is not None else f"bad-{i}")
    return [None] * len(source), keys


class _Subset(torch.utils.data.Dataset):
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
        epoch_fn: Any,
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


class HessianDataModule(pl.LightningDataModule):
    """Train/val/test data for :class:`HIPLightningModule`.

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
            splits, keys = _columns(source)
            has_split = any(s is not None for s in splits)
            if has_split:
                tr = [i for i, s in enumerate(splits) if s == "train"]
                va = [i for i, s in enumerate(splits) if s == "val"]
                te = [i for i, s in enumerate(splits) if s == "test"]
            else:
                tr, va, te = list(range(len(source))), [], []
            tr = _limit(tr, keys, c.max_train_frames, c.seed)
            train_parts.append((source, tr, keys))
            if not c.val:
                val_parts.append(_Subset(source, _limit(va, keys, c.max_val_frames, c.seed)))
            if not c.test and te:
                test_parts.append(_Subset(source, te))
        if not c.val and not any(len(v) for v in val_parts):
            # no validation rows anywhere: hold out val_fraction of the training molecules
            val_parts, new_train = [], []
            for source, tr, keys in train_parts:
                keep, held = split_by_molecule(
                    [keys[i] for i in tr], (1 - c.val_fraction, c.val_fraction), seed=c.seed
                )
                new_train.append((source, [tr[i] for i in keep], keys))
                held_idx = _limit([tr[i] for i in held], keys, c.max_val_frames, c.seed)
                val_parts.append(_Subset(source, held_idx))
            train_parts = new_train
        for path in c.val:
            val_parts.append(open_source(path, c))
        for path in c.test:
            test_parts.append(open_source(path, c))
        self.splits = {
            "train": HessianDataset([_Subset(s, tr) for s, tr, _ in train_parts]),
            "val": HessianDataset(val_parts),
            "test": HessianDataset(test_parts),
        }
        for name in ("train", "val"):
            if len(self.splits[name]) == 0:
                raise ValueError(f"the {name} set is empty (data section: {self.config})")

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
