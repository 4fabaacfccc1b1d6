"""Progress output of a fine-tuning run: one bar on a terminal, one line per validation in logs.

On a terminal, Lightning's progress bar shows the training steps only (no nested validation
bar). When the output is not a terminal (a log file, a batch job), no bar is drawn: a bar
redrawn per step fills logs with carriage returns. Instead :class:`ValidationLines` prints one
line per validation with the step and the main metrics.
"""

from __future__ import annotations

import sys
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

#: Metrics printed per validation, in this order, when logged.
SHOWN_METRICS: tuple[str, ...] = (
    "train/total",
    "val/hessian_mae",
    "val/eckart_eigval1_mae",
    "val/eckart_n_neg_agree",
    "val/energy_mae",
    "val/forces_mae",
)


class TrainingOnlyBar(TQDMProgressBar):
    """Lightning's bar for the training steps, without a second bar for each validation."""

    def init_validation_tqdm(self) -> Any:
        bar = super().init_validation_tqdm()
        bar.disable = True
        return bar


class ValidationLines(pl.Callback):
    """Print ``step S/M: name value, ...`` after every validation (rank zero only)."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        parts = [
            f"{name} {float(metrics[name]):.4g}"
            for name in SHOWN_METRICS
            if name in metrics and metrics[name].numel() == 1
        ]
        print(f"step {trainer.global_step}/{trainer.max_steps}: " + ", ".join(parts), flush=True)


def progress_callbacks(enabled: bool, stream: Any = None) -> tuple[list[pl.Callback], bool]:
    """The progress callbacks for a run and whether Lightning's bar is on.

    Args:
        enabled: ``train.progress_bar`` of the run.
        stream: where the bar would draw (default ``sys.stderr``).

    Returns:
        (callbacks, enable_progress_bar): the training-only bar on a terminal, validation
        lines otherwise, nothing when progress output is off.
    """
    if not enabled:
        return [], False
    stream = sys.stderr if stream is None else stream
    if getattr(stream, "isatty", lambda: False)():
        return [TrainingOnlyBar()], True
    return [ValidationLines()], False
