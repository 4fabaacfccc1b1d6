"""Low-level file handling shared by hip-head's model and backbone files.

Reading a file safely (``torch.load(weights_only=True)`` first; a pickle only with trust),
writing atomically, the library versions recorded in a file, and restoring state dicts and
which tensors are parameters. The public API is :mod:`hip_head.serialization`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import pickle
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hip_head.errors import InvalidArgumentError, NoSafeRecipeError, UntrustedFileError
from hip_head.quiet import quiet_model_loading


class PickleFormatWarning(UserWarning):
    """A model was written or read in the pickle format (needs trust to open)."""


# ---------------------------------------------------------------------- reading
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _read(path: str | Path, map_location: Any, trust: bool, how: str) -> tuple[Any, bool]:
    """``torch.load`` with ``weights_only=True``; unpickle only when ``trust``.

    Returns:
        (payload, True when it was unpickled with ``weights_only=False``).

    Raises:
        FileNotFoundError: no such file.
        UntrustedFileError: the file needs unpickling and ``trust`` is False (nothing ran).
        ValueError: not a file torch can read.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {os.fspath(path)!r}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True), False
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower():
            raise InvalidArgumentError(f"{path} is not a hip-head model file: {exc}") from None
        found = _GLOBAL.search(str(exc))
        holds = f" (e.g. {found.group(1)})" if found else ""
        if not trust:
            raise UntrustedFileError(
                f"{path} holds pickled Python objects{holds}, and unpickling can run arbitrary "
                f"code: {how} only if you trust its source (convert a trusted file once with "
                "`python -m hip_head.serialization IN OUT --trust` to get one that opens safely)"
            ) from None
    except Exception as exc:  # noqa: BLE001 - any other failure: not a torch file at all
        raise InvalidArgumentError(
            f"{path} is not a hip-head model file ({type(exc).__name__}: {exc})"
        ) from None
    warnings.warn(
        f"unpickling {path} (trust=True): only do this for files from a source you trust",
        PickleFormatWarning,
        stacklevel=3,
    )
    with quiet_model_loading():
        return torch.load(path, map_location=map_location, weights_only=False), True


def _atomic_save(payload: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temporary name, then rename (never a half-written file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _versions(*distributions: str) -> dict[str, str]:
    found = {}
    for name in ("hip-head", "torch", *distributions):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def _load_state(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Assign the saved tensors (their own dtypes and devices) to a rebuilt module."""
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise NoSafeRecipeError(
            f"the saved {what} weights do not fit the {what} rebuilt from the file's "
            f"description (written with other library versions?): {exc}"
        ) from None


def _registration(module: nn.Module) -> dict[str, list[str]]:
    """Which tensors are parameters, and which of those are frozen (``requires_grad`` off)."""
    named = list(module.named_parameters())
    return {
        "parameters": [name for name, _ in named],
        "frozen": [name for name, p in named if not p.requires_grad],
    }


def _restore_registration(module: nn.Module, saved: Mapping[str, Any]) -> None:
    """Register each tensor as parameter or buffer as saved (a model may have turned a buffer
    into a parameter after construction), and freeze the parameters that were frozen."""
    if "parameters" in saved:
        parameters = set(saved["parameters"])
        buffers = dict(module.named_buffers())
        for name in parameters & buffers.keys():
            owner, _, leaf = name.rpartition(".")
            holder = module.get_submodule(owner)
            del holder._buffers[leaf]
            holder.register_parameter(leaf, nn.Parameter(buffers[name]))
        for name, parameter in list(module.named_parameters()):
            if name not in parameters:
                owner, _, leaf = name.rpartition(".")
                holder = module.get_submodule(owner)
                del holder._parameters[leaf]
                holder.register_buffer(leaf, parameter.detach())
    frozen = set(saved.get("frozen", ()))
    for name, parameter in module.named_parameters():
        if name in frozen:
            parameter.requires_grad_(False)


@contextlib.contextmanager
def _describing(what: str) -> Iterator[None]:
    """Turn a failure to read a model's configuration into :class:`NoSafeRecipeError` (so
    :func:`save_model` falls back to the pickle format instead of failing)."""
    try:
        yield
    except NoSafeRecipeError:
        raise
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        raise NoSafeRecipeError(f"{what} cannot be described: {exc!r}") from exc
