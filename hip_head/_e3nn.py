"""Import e3nn safely under every supported torch / e3nn combination.

e3nn 0.4.4 (pinned by mace-torch) calls ``torch.load`` on its bundled constants at import time.
Under torch >= 2.6 ``torch.load`` defaults to ``weights_only=True`` and refuses the pickled
``slice`` objects in that file, so ``import e3nn.o3`` raises ``UnpicklingError``. ``slice`` (a
builtin with no side effects) is allowed as a safe global **only while e3nn is imported**
(``torch.serialization.safe_globals``), so the weights-only protection of every later
``torch.load`` is left exactly as it was. e3nn >= 0.5 does not need it; it is harmless there.

Every module of hip-head imports e3nn through :func:`o3` so that ``import hip_head`` works
whether or not mace was imported first. Importing changes no process-wide state: not the
default dtype, the RNG, the warning filters or torch's safe globals.
"""

from __future__ import annotations

import contextlib
import types
import warnings
from collections.abc import Iterator

import torch

from hip_head.quiet import TORCHSCRIPT_ANNOTATION_WARNING
from hip_head.torch_state import default_dtype


def _import_e3nn_o3() -> types.ModuleType:
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    context = safe_globals([slice]) if safe_globals is not None else contextlib.nullcontext()
    with context, warnings.catch_warnings():  # the filters e3nn's dependencies add are undone
        from e3nn import o3

    return o3


_o3 = _import_e3nn_o3()


def o3() -> types.ModuleType:
    """Return the ``e3nn.o3`` module, imported with the torch.load work-around applied."""
    return _o3


@contextlib.contextmanager
def float64_default() -> Iterator[None]:
    """Build e3nn modules exactly and picklably: float64 default dtype, eager e3nn code.

    e3nn >= 0.5 on torch < 2.10 defaults to ``jit_mode="script"``: its modules then hold
    TorchScript functions that cannot be deep-copied or pickled, so a model holding them could
    not be saved (:meth:`HIPModel.save`) or copied. Inside this context e3nn builds eager
    modules and its TorchScript annotation warning is silenced; all three settings are restored
    on exit (other libraries' models are unaffected).
    """
    import e3nn

    get_defaults = getattr(e3nn, "get_optimization_defaults", None)
    old_jit = get_defaults().get("jit_mode") if get_defaults is not None else None
    if old_jit not in (None, "eager"):
        e3nn.set_optimization_defaults(jit_mode="eager")
    try:
        with default_dtype(torch.float64), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=TORCHSCRIPT_ANNOTATION_WARNING)
            yield
    finally:
        if old_jit not in (None, "eager"):
            e3nn.set_optimization_defaults(jit_mode=old_jit)


class ExactConstantsMixin:
    """Keep e3nn's constant buffers (Wigner-3j tensors ...) exact across dtype casts.

    e3nn stores its Wigner-3j coefficients as buffers in the dtype the module was built with;
    ``.float()`` followed by ``.double()`` then leaves them rounded to float32, and a float64
    model is equivariant only to ~1e-8 instead of ~1e-15. Modules using this mixin build their
    e3nn parts under :func:`float64_default`, call :meth:`record_exact_constants`, and every
    later cast re-derives the buffers from the float64 originals.
    """

    def record_exact_constants(self) -> None:
        """Snapshot every floating buffer (call at the end of ``__init__``, built in float64)."""
        self.__dict__["_exact_constants"] = {
            name: buf.detach().to("cpu", torch.float64).clone()
            for name, buf in self.named_buffers()  # type: ignore[attr-defined]
            if buf.is_floating_point()
        }

    def _apply(self, fn, *args, **kwargs):  # noqa: D401 - torch's internal cast hook
        result = super()._apply(fn, *args, **kwargs)  # type: ignore[misc]
        exact = self.__dict__.get("_exact_constants")
        if exact:
            for name, buf in self.named_buffers():  # type: ignore[attr-defined]
                if name in exact and buf.is_floating_point():
                    buf.data = exact[name].to(device=buf.device, dtype=buf.dtype)
        return result
