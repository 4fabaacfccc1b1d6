"""The adapter protocol and registry.

An adapter wraps one backbone family. Given an :class:`~hip_head.graph.AtomicGraph` it returns
the backbone's energy (unchanged) and per-atom irreps features with l <= 2 that the
:class:`~hip_head.readout.HessianReadout` consumes. Adapters import their backbone library
lazily, so ``import hip_head`` never needs mace, fairchem or torch-geometric.

Writing one for a new backbone: subclass :class:`BackboneAdapter`, implement ``matches``,
``node_irreps`` and ``forward``, and decorate the class with :func:`register`. See
``docs/adapters.md``.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

import torch
from ase.data import chemical_symbols
from torch import nn

from hip_head._e3nn import o3
from hip_head.errors import (
    InvalidArgumentError,
    IrrepsContractError,
    MissingBackboneError,
    NoAdapterError,
    UnsupportedElementError,
)
from hip_head.graph import AtomicGraph

#: Largest l the Hessian head reads from node features.
MAX_NODE_L = 2


@dataclass
class BackboneOutput:
    """What an adapter hands to the Hessian head.

    Attributes:
        energy: [B] total energy of each structure, eV (the backbone's own, unchanged).
        node_feats: [N, node_irreps.dim] per-atom features, e3nn layout (irreps concatenated,
            each irrep ``mul x (2l+1)`` stored multiplicity-major), l <= 2 only.
        node_irreps: the e3nn irreps of ``node_feats``.
    """

    energy: torch.Tensor
    node_feats: torch.Tensor
    node_irreps: Any  # e3nn.o3.Irreps


class BackboneAdapter(nn.Module, ABC):
    """Base class of adapters. Holds the backbone as the submodule ``backbone``.

    Class attributes every adapter sets:
        name: the registry key (e.g. ``"mace"``).
        extra: the pip extra that installs the backbone (``pip install hip-head[<extra>]``).
        parity: True when the backbone is O(3)-equivariant (reflections included), False for
            SO(3)-only backbones. The test kit checks reflections only when True.
    """

    name: ClassVar[str] = ""
    extra: ClassVar[str] = ""
    parity: ClassVar[bool] = True

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    @classmethod
    @abstractmethod
    def matches(cls, model: nn.Module) -> bool:
        """True when this adapter handles ``model`` (decided without importing the backbone)."""

    @property
    @abstractmethod
    def node_irreps(self) -> Any:
        """e3nn ``Irreps`` of the node features ``forward`` returns (l <= 2)."""

    @property
    def feature_dim(self) -> int | None:
        """Width of the ``node_feats`` that ``forward`` returns, derived from the backbone's own
        configuration (not from ``node_irreps``), or None when the adapter does not declare it.

        :func:`check_irreps_contract` demands that it equals ``node_irreps.dim``.
        """
        return None

    @property
    def supported_atomic_numbers(self) -> list[int] | None:
        """Atomic numbers the backbone knows, or None when it accepts any element."""
        return None

    @property
    def cutoff(self) -> float | None:
        """The backbone's interaction cutoff, Å, if it has one."""
        return None

    @abstractmethod
    def forward(self, graph: AtomicGraph) -> BackboneOutput:
        """Run the backbone on ``graph`` (positions must be the tensor forces are taken of).

        Args:
            graph: the batch; ``graph.positions`` [N, 3] Å.

        Returns:
            Energy [B] eV and node features [N, node_irreps.dim].
        """

    def native_energy_forces(self, graph: AtomicGraph) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Energy [B] (eV) and forces [N, 3] (eV/Å) computed the backbone's own way.

        Used by the test kit to prove that wrapping changes neither. Return None when the
        backbone has no separate force path (the kit then skips that comparison).
        """
        return None

    def layer_groups(self) -> list[list[nn.Module]]:
        """The backbone's layers in forward order, each a list of modules trained together.

        Fine-tuning's ``last_k`` mode trains the last k groups. The default is one group per
        direct child module of the backbone that has parameters; adapters override it with the
        backbone's real layer structure (e.g. MACE: interaction + product + readout of each
        message-passing layer).
        """
        return [[m] for m in self.backbone.children() if any(True for _ in m.parameters())]

    def check_elements(self, graph: AtomicGraph) -> None:
        """Raise :class:`UnsupportedElementError` naming any element the backbone does not know."""
        supported = self.supported_atomic_numbers
        if supported is None:
            return
        present = set(torch.unique(graph.atomic_numbers).tolist())
        unknown = sorted(present - set(supported))
        if unknown:
            names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in unknown)
            known = ", ".join(chemical_symbols[z] for z in sorted(supported))
            raise UnsupportedElementError(
                f"the {self.name} backbone was not trained on {names}; it supports: {known}"
            )


def filter_irreps(irreps: Any, lmax: int = 2) -> tuple[Any, torch.Tensor]:
    """Keep the irreps with l <= ``lmax``.

    Args:
        irreps: e3nn Irreps of a feature vector.
        lmax: largest l kept.

    Returns:
        (kept irreps, [dim_kept] int64 column indices into the full feature vector).
    """
    irreps = o3().Irreps(irreps)
    kept, columns = [], []
    for (mul, ir), sl in zip(irreps, irreps.slices()):
        if ir.l <= lmax:
            kept.append((mul, ir))
            columns.append(torch.arange(sl.start, sl.stop))
    index = torch.cat(columns) if columns else torch.zeros(0, dtype=torch.long)
    return o3().Irreps(kept), index


def check_irreps_contract(adapter: BackboneAdapter) -> None:
    """Check, once before any forward pass, that an adapter's node irreps suit the head.

    The contract: ``node_irreps`` is an e3nn ``Irreps`` (or a string of one) with every l <=
    :data:`MAX_NODE_L`, at least one ``0e`` scalar, and, when the adapter declares
    :attr:`BackboneAdapter.feature_dim`, a dimension equal to it.

    Args:
        adapter: the constructed adapter.

    Raises:
        IrrepsContractError: naming the adapter class and every broken clause.
    """
    owner = f"{type(adapter).__module__}.{type(adapter).__qualname__}"
    try:
        irreps = o3().Irreps(adapter.node_irreps)
    except (ValueError, TypeError, AssertionError) as exc:
        raise IrrepsContractError(
            f"{owner}.node_irreps = {adapter.node_irreps!r} is not an e3nn Irreps: {exc}"
        ) from exc
    problems = []
    too_high = [str(ir) for _, ir in irreps if ir.l > MAX_NODE_L]
    if too_high:
        problems.append(
            f"irreps with l > {MAX_NODE_L} ({', '.join(too_high)}); drop them, e.g. with "
            f"hip_head.adapters.filter_irreps(irreps, lmax={MAX_NODE_L})"
        )
    if not any(ir.l == 0 and ir.p == 1 and mul > 0 for mul, ir in irreps):
        problems.append("no 0e scalars (the head needs at least one)")
    width = adapter.feature_dim
    if width is not None and width != irreps.dim:
        problems.append(
            f"it declares node features of width feature_dim = {width}, but the irreps have "
            f"dim {irreps.dim}"
        )
    if problems:
        raise IrrepsContractError(
            f"{owner} breaks the node irreps contract: node_irreps = {irreps}: "
            + "; ".join(problems)
        )


_REGISTRY: dict[str, type[BackboneAdapter]] = {}


def register(cls: type[BackboneAdapter]) -> type[BackboneAdapter]:
    """Class decorator: add an adapter to the registry under ``cls.name``."""
    if not cls.name:
        raise InvalidArgumentError(f"{cls.__name__} must set the class attribute `name`")
    _REGISTRY[cls.name] = cls
    return cls


def registered_adapters() -> dict[str, type[BackboneAdapter]]:
    """A copy of the registry: adapter name -> adapter class."""
    _load_builtin_adapters()
    return dict(_REGISTRY)


def find_adapter(model: nn.Module, adapter: str | type[BackboneAdapter] = "auto"):
    """Pick the adapter class for ``model``.

    Args:
        model: the backbone.
        adapter: ``"auto"`` (match on the model's class), a registered name, or a class.

    Returns:
        The adapter class.

    Raises:
        NoAdapterError: no registered adapter handles the model (lists the registered ones).
    """
    if isinstance(adapter, type):
        return adapter
    registry = registered_adapters()
    if adapter != "auto":
        if adapter not in registry:
            raise NoAdapterError(
                f"unknown adapter {adapter!r}; registered adapters: {', '.join(sorted(registry))}"
            )
        return registry[adapter]
    for cls in registry.values():
        if cls.matches(model):
            return cls
    raise NoAdapterError(
        f"no adapter handles a model of type {type(model).__module__}.{type(model).__qualname__}; "
        f"registered adapters: {', '.join(sorted(registry))}. Write one with the shared "
        "helpers of hip_head.adapters: see docs/adapters.md"
    )


def import_backbone(module: str, library: str, extra: str) -> ModuleType:
    """Import a backbone library lazily, or raise :class:`MissingBackboneError`.

    Args:
        module: the module to import (e.g. ``"mace.modules"``).
        library: the pip distribution users install (e.g. ``"mace-torch"``).
        extra: the hip-head extra that brings it (``pip install hip-head[<extra>]``).

    Returns:
        The imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingBackboneError(
            f"this adapter needs {library} ({module} could not be imported: {exc}); "
            f"install it with `pip install hip-head[{extra}]`"
        ) from exc


def class_path_matches(model: Any, candidates: set[str]) -> bool:
    """True when any class in ``type(model).__mro__`` is named ``module.QualName`` in candidates."""
    return any(f"{c.__module__}.{c.__qualname__}" in candidates for c in type(model).__mro__)


_BUILTIN: list[Callable[[], None]] = []


def _load_builtin_adapters() -> None:
    """Import the adapter modules shipped with hip-head (they register themselves)."""
    for module in (
        "hip_head.adapters.mace",
        "hip_head.adapters.torch_geometric",
        "hip_head.adapters.uma",
        "hip_head.adapters.equiformer_v2",
    ):
        importlib.import_module(module)
