"""Scoped silencing of third-party output a user cannot act on.

Each helper is a context manager that changes warning filters, logger levels or stdout only
while it is active and restores them on exit: importing hip-head, or calling one of its
functions, never changes these settings for the rest of the process.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from collections.abc import Iterator

#: e3nn 0.4.4 scripts its generated modules; torch warns about it on every construction and on
#: every unpickling of a model that holds them (MACE).
TORCHSCRIPT_ANNOTATION_WARNING = (
    "The TorchScript type system doesn't support instance-level annotations"
)

#: Lines third-party libraries print (not log) on import, with nothing for a user to do.
IMPORT_NOTICES: tuple[str, ...] = (
    "cuequivariance or cuequivariance_torch is not available",  # mace-torch without cuEq
)

#: Lightning's warnings about settings hip-head chooses on purpose.
LIGHTNING_WARNINGS: tuple[str, ...] = (
    r".*isinstance\(treespec, LeafSpec\)",  # its own pytree deprecation
    r"The number of training batches .* is smaller than the logging interval",
    r"Found \d+ module\(s\) in eval mode",  # a frozen backbone is in eval mode by design
    r"You have overridden `transfer_batch_to_device`",
)

#: Loggers whose INFO lines (accelerator summary, cloud tips, checkpoint notices) are hidden.
LIGHTNING_LOGGERS: tuple[str, ...] = ("lightning.pytorch", "lightning.fabric")


@contextlib.contextmanager
def quiet_model_loading() -> Iterator[None]:
    """Load or build backbone models without e3nn's TorchScript warnings and import notices.

    Output on stdout that is not one of :data:`IMPORT_NOTICES` is passed through unchanged.
    """
    buffer = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buffer):
            warnings.filterwarnings("ignore", message=TORCHSCRIPT_ANNOTATION_WARNING)
            yield
    finally:
        kept = [
            line
            for line in buffer.getvalue().splitlines()
            if not any(notice in line for notice in IMPORT_NOTICES)
        ]
        if kept:
            print("\n".join(kept), file=sys.stdout)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Run a Lightning fit/validate with only warnings and errors from Lightning itself."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    try:
        with warnings.catch_warnings():
            for message in LIGHTNING_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            warnings.filterwarnings("ignore", message=TORCHSCRIPT_ANNOTATION_WARNING)
            for logger in loggers:
                logger.setLevel(logging.WARNING)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
