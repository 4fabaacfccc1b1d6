"""Exceptions raised by hip-head. Each message says what is wrong and what to do."""

from __future__ import annotations


class HIPError(Exception):
    """Base class of every hip-head error."""


class InvalidStructureError(HIPError, ValueError):
    """The structure cannot be evaluated: empty, non-finite positions, coincident atoms."""


class UnsupportedElementError(HIPError, ValueError):
    """The backbone was not trained on an element of the structure."""


class NoAdapterError(HIPError, TypeError):
    """No registered adapter handles the given model type."""


class DenseHessianTooLargeError(HIPError, MemoryError):
    """A dense Hessian would not fit in memory; use the block-sparse output instead."""


class MissingBackboneError(HIPError, ImportError):
    """The backbone library an adapter needs is not installed."""


class ChemistryError(HIPError, ValueError):
    """A chemistry request that cannot be carried out as asked (the message says why): e.g. a
    "transition state" whose saddle index is not 1, or ends with different atoms."""


class UntrustedFileError(HIPError, ValueError):
    """The file holds pickled Python objects; it is opened only when trusted (``trust=True``)."""


class NoSafeRecipeError(HIPError, TypeError):
    """A model cannot be written to (or rebuilt from) the safe, pickle-free format."""


class InvalidArgumentError(HIPError, ValueError):
    """An argument value hip-head cannot use (the message names it and the accepted values)."""


class IrrepsContractError(HIPError, ValueError):
    """An adapter's declared node irreps break the head's contract (l ≤ 2, a 0e part, the
    declared feature width); see :func:`hip_head.adapters.base.check_irreps_contract`."""


class CloseContactWarning(UserWarning):
    """Two atoms are closer than any chemical bond: the model's output there is not meaningful."""


class HeadMemoryError(HIPError, MemoryError):
    """The Hessian head would not fit in memory (raised before it allocates); the message gives
    the estimate, the memory available and what to change."""


class AdapterCheckError(HIPError, AssertionError):
    """A property of the test kit failed (an ``AssertionError``, so pytest reports a failure).

    The message starts with the property and the dtype (``"rotation equivariance [float32]"``)
    and names the transformation applied (Q, t or the permutation) and every molecule involved
    as an ``ase.Atoms(...)`` expression that rebuilds it exactly.

    Attributes:
        property_name: the failed property, one of :data:`hip_head.testing.PROPERTIES`.
        relative: the largest error divided by the compared quantity's scale (None when the
            failure is not a tolerance comparison).
    """

    def __init__(self, message: str, property_name: str = "", relative: float | None = None):
        super().__init__(message)
        self.property_name = property_name
        self.relative = relative
