"""hip-head: turn any pretrained MLIP into a Hessian Interatomic Potential (HIP).

>>> import hip_head
>>> hip = hip_head.wrap(mace_model)  # doctest: +SKIP
>>> out = hip.predict(ase_atoms)  # energy eV, forces eV/Å, Hessian eV/Å²  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from torch import nn

from hip_head import _e3nn  # applies the e3nn 0.4.4 import work-around first
from hip_head.assemble import BlockSparseHessian, split_flat
from hip_head.blocks import HessianBlocks
from hip_head.errors import (
    AdapterCheckError,
    ChemistryError,
    CloseContactWarning,
    DenseHessianTooLargeError,
    HeadMemoryError,
    HIPError,
    InvalidArgumentError,
    InvalidStructureError,
    IrrepsContractError,
    MissingBackboneError,
    NoAdapterError,
    NoSafeRecipeError,
    UnsupportedElementError,
    UntrustedFileError,
)
from hip_head.graph import AtomicGraph, PairGraph, build_pair_graph
from hip_head.model import HIPModel, load
from hip_head.readout import HessianReadout

__version__ = "0.1.0"

#: ``e3nn.o3``, imported safely (use ``from hip_head import o3`` in adapters and tests).
o3 = _e3nn.o3()


def wrap(
    model: nn.Module,
    adapter: str | type = "auto",
    *,
    hessian: str = "head",
    adapter_options: dict[str, Any] | None = None,
    **head_options: Any,
) -> HIPModel:
    """Wrap a pretrained MLIP into a :class:`HIPModel`.

    Args:
        model: the backbone (e.g. a ``mace.modules.ScaleShiftMACE``, loaded from a file saved
            with ``torch.save(model)``).
        adapter: ``"auto"`` picks the adapter from the model's class; or a registered name
            (see ``hip_head.adapters.registered_adapters()``) or an adapter class.
        hessian: ``"head"`` (predict) or ``"autograd"`` (the backbone's exact second derivative).
        adapter_options: keyword arguments for the adapter (e.g. ``{"layers": [-2, -1]}``).
        **head_options: keyword arguments of :class:`HessianReadout` (``channels``,
            ``hessian_cutoff`` Å, ``num_interactions``, ``diagonal`` ...).

    Returns:
        A :class:`HIPModel` in eval mode, with the backbone's dtype and device; the head is
        randomly initialised (fine-tune it, or load a trained HIP with :func:`load`).

    Raises:
        NoAdapterError: no registered adapter handles ``type(model)``.
        IrrepsContractError: the adapter's node irreps do not suit the head (l > 2, no ``0e``,
            or a width that disagrees with the adapter's ``feature_dim``).
    """
    from hip_head.adapters.base import check_irreps_contract, find_adapter

    adapter_cls = find_adapter(model, adapter)
    wrapped = adapter_cls(model, **(adapter_options or {}))
    check_irreps_contract(wrapped)  # once, before any forward: l <= 2, 0e present, widths agree
    readout = HessianReadout(wrapped.node_irreps, **head_options)
    parameter = next(model.parameters(), None)
    if parameter is not None:
        readout = readout.to(dtype=parameter.dtype, device=parameter.device)
    return HIPModel(wrapped, readout, hessian=hessian).eval()


__all__ = [
    "AdapterCheckError",
    "AtomicGraph",
    "BlockSparseHessian",
    "ChemistryError",
    "CloseContactWarning",
    "DenseHessianTooLargeError",
    "HIPError",
    "HeadMemoryError",
    "HIPModel",
    "HessianBlocks",
    "HessianReadout",
    "InvalidArgumentError",
    "InvalidStructureError",
    "IrrepsContractError",
    "MissingBackboneError",
    "NoAdapterError",
    "NoSafeRecipeError",
    "PairGraph",
    "UnsupportedElementError",
    "UntrustedFileError",
    "build_pair_graph",
    "load",
    "o3",
    "split_flat",
    "wrap",
]
