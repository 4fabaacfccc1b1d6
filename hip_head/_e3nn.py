"""Import e3nn safely under every supported torch / e3nn combination.

e3nn 0.4.4 (pinned by mace-torch) calls ``torch.load`` on its bundled constants at import time.
Under torch >= 2.6 ``torch.load`` defaults to ``weights_only=True`` and refuses the pickled
``slice`` objects in that file, so ``import e3nn.o3`` raises ``UnpicklingError``. Allowing
``slice`` as a safe global (a builtin with no side effects) fixes the import without switching
off the weights-only protection globally. e3nn >= 0.5 does not need it; the call is harmless there.

Every module of hip-head imports e3nn through :func:`o3` so that ``import hip_head`` works
whether or not mace was imported first.
"""

from __future__ import annotations

import types

import torch


def _allow_slice_in_torch_load() -> None:
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is not None:
        add_safe_globals([slice])


_allow_slice_in_torch_load()

from e3nn import o3 as _o3  # noqa: E402


def o3() -> types.ModuleType:
    """Return the ``e3nn.o3`` module, imported with the torch.load work-around applied."""
    return _o3
