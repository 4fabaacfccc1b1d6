"""Lightning training of a :class:`~hip_head.model.HIPModel` on Hessian data.

- :class:`HIPLightningModule`: the model, its loss and metrics, AdamW with warm-up + cosine,
  an exponential moving average (EMA) of the trained weights, clear errors on NaN/inf losses
  and out-of-memory batches.
- :class:`AtomicCheckpointIO`: checkpoints written to a temporary file and renamed.

The data side (datasets, splits, the batch sampler) is
:class:`~hip_head.finetune.datamodule.HessianDataModule` and :mod:`hip_head.finetune.data`.

Units everywhere: positions Å, energies eV, forces eV/Å, Hessians eV/Å².
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from hip_head.autograd import flat_hessian_rows
from hip_head.errors import HIPError, InvalidArgumentError
from hip_head.finetune.config import FinetuneConfig, LossConfig
from hip_head.finetune.losses import build_loss_terms, hessian_metrics, total_loss
from hip_head.graph import AtomicGraph
from hip_head.model import HIPModel

__all__ = [
    "AtomicCheckpointIO",
    "BatchTooLargeError",
    "HIPLightningModule",
    "ParameterEMA",
    "TrainingDivergedError",
]


class TrainingDivergedError(HIPError, RuntimeError):
    """The loss became NaN or infinite; training stopped, the last checkpoint is intact."""


class BatchTooLargeError(HIPError, RuntimeError):
    """A batch did not fit in memory; the message names a batch size to try."""


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
        raise InvalidArgumentError(
            f"train.last_k = {last_k} but the backbone has only {len(groups)} layer groups"
        )
    return [m for group in groups[-last_k:] for m in group]


def loss_for_run(config: FinetuneConfig) -> LossConfig:
    """The loss a run trains on: ``config.loss`` with the terms its mode cannot train removed.

    In ``head`` mode the backbone is frozen, so the energy and force weights are set to 0; with
    ``train.target: autograd`` the ``hessian`` weight moves to the sampled autograd rows
    (``hessian_rows``) and the subspace term is off. ``config`` itself is not changed.
    """
    lo = config.loss
    changes: dict[str, Any] = {}
    if config.train.mode == "head":
        changes.update(energy=0.0, forces=0.0)
    if config.train.target == "autograd":
        changes.update(
            hessian=0.0,
            subspace=0.0,
            terms={**lo.terms, "hessian_rows": {"weight": lo.hessian}},
        )
    return dataclasses.replace(lo, **changes)


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
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        for module in trainable_backbone_modules(model, mode, config.train.last_k):
            for p in module.parameters():
                p.requires_grad_(True)
        for p in model.readout.parameters():
            p.requires_grad_(target == "head")
        if not any(p.requires_grad for p in model.parameters()):
            raise InvalidArgumentError("nothing to train: every parameter is frozen")
        self.loss_config = loss_for_run(config)
        #: Model outputs the loss terms read ("energy", "forces", "hessian", ...).
        self.loss_terms = build_loss_terms(self.loss_config)
        self.needed_outputs = {key for _, _, term in self.loss_terms for key in term.keys}
        self.ema = ParameterEMA(model, config.optim.ema_decay) if config.optim.ema_decay else None
        #: The data module's position (set by run_finetune): records the batches consumed.
        self.data_position: Any = None

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
        """Random rows of the backbone's autograd Hessian (HORM baseline) and their labels."""
        counts = graph.atoms_per_graph.tolist()
        k = min(self.config.loss.autograd_rows, 3 * min(counts))
        gen = torch.Generator().manual_seed(
            self.config.train.seed * 1_000_003 + int(self.global_step)
        )
        rows = torch.stack([torch.randperm(3 * n, generator=gen)[:k] for n in counts])
        rows = rows.to(graph.positions.device)
        pred = self.model.hessian_rows(graph, rows, create_graph=True)
        return pred, flat_hessian_rows(labels["hessian"], counts, rows)

    def _loss(self, graph: AtomicGraph, labels: dict[str, torch.Tensor]):
        """The configured loss terms on one batch, through the model's own forward."""
        lo, needed = self.loss_config, self.needed_outputs
        labels = dict(labels)
        if self.config.train.target == "autograd":
            pred = self.model(graph, compute_forces="forces" in needed, compute_hessian=False)
            pred["hessian_rows"], labels["hessian_rows"] = self._autograd_rows(graph, labels)
        elif self.config.train.mode == "head":
            # frozen backbone: its features need no autograd graph
            pred = self.model(graph, compute_forces=False, frozen_backbone=True)
        else:
            pred = self.model(
                graph, compute_forces="forces" in needed, compute_hessian="hessian" in needed
            )
        return total_loss(
            pred,
            labels,
            graph.atoms_per_graph,
            lo,
            positions=graph.positions,
            atomic_numbers=graph.atomic_numbers,
            terms=self.loss_terms,
        )

    # -------------------------------------------------------------- steps
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        graph, labels = batch
        if self.data_position is not None:
            self.data_position.consumed(self.current_epoch, batch_idx)
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
