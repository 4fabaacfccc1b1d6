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
