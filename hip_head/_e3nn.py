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

import contextlib
import types
import warnings
from collections.abc import Iterator

import torch


def _allow_slice_in_torch_load() -> None:
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is not None:
        add_safe_globals([slice])


_allow_slice_in_torch_load()
# e3nn 0.4.4 scripts its generated modules; torch >= 2.x warns about it on every construction.
warnings.filterwarnings(
    "ignore", message="The TorchScript type system doesn't support instance-level annotations"
)

from e3nn import o3 as _o3  # noqa: E402


def o3() -> types.ModuleType:
    """Return the ``e3nn.o3`` module, imported with the torch.load work-around applied."""
    return _o3


@contextlib.contextmanager
def float64_default() -> Iterator[None]:
    """Build e3nn modules exactly and picklably: float64 default dtype, eager e3nn code.

    e3nn >= 0.5 on torch < 2.10 defaults to ``jit_mode="script"``: its modules then hold
    TorchScript functions that cannot be deep-copied or pickled, so a model holding them could
    not be saved (:meth:`HIPModel.save`) or copied. Inside this context e3nn builds eager
    modules; both settings are restored on exit (other libraries' models are unaffected).
    """
    old = torch.get_default_dtype()
    import e3nn

    get_defaults = getattr(e3nn, "get_optimization_defaults", None)
    old_jit = get_defaults().get("jit_mode") if get_defaults is not None else None
    torch.set_default_dtype(torch.float64)
    if old_jit not in (None, "eager"):
        e3nn.set_optimization_defaults(jit_mode="eager")
    try:
        yield
    finally:
        torch.set_default_dtype(old)
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
