"""Scoped changes of torch's process-wide state: the default dtype and the global RNG.

Each helper is a context manager that restores the caller's state on exit, so hip-head never
leaves a setting changed behind a call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["default_dtype", "seeded"]


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Make ``dtype`` torch's default inside the block, restoring the previous one on exit.

    Process-wide while it lasts: enter it only around a library call that allocates tensors in
    the default dtype (model construction, mostly), never around a whole forward pass.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator inside the block; the caller's RNG state is restored on exit.

    For building random test models with a library's own constructors (which draw from the
    global generator). Only the CPU generator is seeded (``torch.manual_seed`` would also queue
    a seed for every CUDA device); build on CPU and move the model afterwards.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield
