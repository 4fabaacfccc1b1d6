"""Plumbing shared by the adapters: one place for each concern every backbone needs.

* **Views** (:func:`module_view`, :func:`tree_view`): run a backbone's own ``forward`` on a
  shallow copy that shares every parameter and buffer with the original and differs only in the
  submodules or instance attributes an adapter replaces. The original model is never modified,
  not even for the duration of a call (no hooks, no patched attributes).
* **Feature taps** (:class:`FeatureTap`): a submodule of a view that runs the original one and
  records its output (or its first input) into a dict the adapter reads after the call.
* **Layout** (:func:`l_major_to_e3nn`, :func:`natural_irreps`): SO(3) coefficients stored
  l-major ``[N, Σ(2l+1), C]`` (fairchem, ViSNet) to e3nn's multiplicity-major ``[N, C·Σ(2l+1)]``;
  :class:`SphericalEmbeddingAdapter` declares irreps and width for fairchem's embeddings.
* **dtype and RNG** (:func:`default_dtype`, :func:`seeded`): temporary, restored on exit.
* **Neighbours** (:func:`neighbor_edges`): hip-head's one radius graph
  (:func:`hip_head.neighbors.radius_graph`) in the conventions the adapters need.
* :func:`require_molecular` (for molecular backbones) and :func:`gradient_energy_forces`
  (energy and -dE/dr of a bare model).
"""

from __future__ import annotations

import copy
import warnings
from abc import abstractmethod
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Literal

import torch
from torch import nn

from hip_head._e3nn import o3
from hip_head.errors import InvalidArgumentError
from hip_head.graph import AtomicGraph
from hip_head.neighbors import radius_graph
from hip_head.torch_state import default_dtype, seeded  # noqa: F401 - re-exported

from .base import MAX_NODE_L, BackboneAdapter

__all__ = [
    "FeatureTap",
    "SphericalEmbeddingAdapter",
    "default_dtype",
    "gradient_energy_forces",
    "l_major_to_e3nn",
    "module_view",
    "natural_irreps",
    "neighbor_edges",
    "require_molecular",
    "seeded",
    "tree_view",
]


# ---------------------------------------------------------------------- views and taps
def module_view(
    module: nn.Module, modules: Mapping[str, nn.Module] | None = None, **attributes: Any
) -> nn.Module:
    """A shallow copy of ``module`` sharing its parameters and buffers, with some parts replaced.

    Args:
        module: the original (left unchanged).
        modules: submodules of the copy to replace, by attribute name (e.g. ``{"lin1": tap}``).
        **attributes: instance attributes of the copy to set (e.g. ``derivative=False``); they
            shadow class attributes and methods of the same name.

    Returns:
        The view: ``view(...)`` runs ``type(module).forward`` with the replacements.
    """
    view = copy.copy(module)
    view.__dict__["_modules"] = {**module._modules, **(modules or {})}
    view.__dict__.update(attributes)
    return view


def tree_view(
    root: nn.Module, edit: Callable[[nn.Module, nn.Module], nn.Module | None]
) -> nn.Module:
    """A view of a whole module tree in which ``edit`` replaces some modules.

    Every module is visited once, children first (a submodule shared by several parents gets one
    replacement, shared the same way). ``edit(original, view)`` receives the original and a
    :func:`module_view` of it whose children are already viewed; it returns the module to use
    in its place (``view`` after setting attributes on it, or e.g. a :class:`FeatureTap`
    around it), or None to keep the module as it is. Parents of a replaced module are viewed
    too; everything else is the original object.

    Args:
        root: the original model (left unchanged).
        edit: the rewrite rule (see above).

    Returns:
        The view of ``root`` (``root`` itself when nothing was replaced).
    """
    memo: dict[int, nn.Module] = {}

    def visit(module: nn.Module) -> nn.Module:
        key = id(module)
        if key not in memo:
            children = {}
            for name, child in module._modules.items():
                if child is not None and (viewed := visit(child)) is not child:
                    children[name] = viewed
            view = module_view(module, children)
            replaced = edit(module, view)
            memo[key] = replaced if replaced is not None else (view if children else module)
        return memo[key]

    return visit(root)


class FeatureTap(nn.Module):
    """Runs ``inner`` unchanged and records its output (or first input) as ``store[key]``.

    Put one in a view in place of the module whose features the head reads. Recording the
    tensor itself (not a copy) keeps it differentiable in the positions.

    Args:
        inner: the module to run.
        store: the dict receiving the recorded value (one per call of the adapter).
        key: the key to record under.
        record: ``"output"`` (what ``inner`` returns) or ``"input"`` (its first argument,
            positional or keyword).
    """

    def __init__(
        self,
        inner: nn.Module,
        store: dict,
        key: Hashable = "features",
        record: Literal["output", "input"] = "output",
    ) -> None:
        super().__init__()
        if record not in ("output", "input"):
            raise InvalidArgumentError(f"record must be 'output' or 'input', got {record!r}")
        self.inner = inner
        self.store, self.key, self.record = store, key, record

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """``inner(*args, **kwargs)``, recording the chosen value on the way."""
        out = self.inner(*args, **kwargs)
        if self.record == "output":
            self.store[self.key] = out
        else:
            self.store[self.key] = args[0] if args else next(iter(kwargs.values()))
        return out


# ---------------------------------------------------------------------- SO(3) layout
def l_major_to_e3nn(coefficients: torch.Tensor, lmax: int, lmin: int = 0) -> torch.Tensor:
    """SO(3) coefficients stored l-major to e3nn's multiplicity-major layout.

    Row ``l*l - lmin*lmin + m`` (m = 0..2l, i.e. -l..l) of ``coefficients`` holds component m of
    every channel for degree l; e3nn stores irreps ``C x l`` one after the other, each
    channel-major: ``out[:, offset_l + c*(2l+1) + m] = coefficients[:, l*l - lmin*lmin + m, c]``.
    Only the layout changes: the m basis must already be e3nn's (true for fairchem and ViSNet,
    whose l = 1 order is (x, y, z)).

    Args:
        coefficients: [N, R, C] with R >= (lmax+1)² - lmin² (extra rows, l > lmax, are dropped).
        lmax: largest l kept.
        lmin: l of the first row block (0, or 1 for vectors stored without the scalar row).

    Returns:
        [N, C · ((lmax+1)² - lmin²)] features of irreps :func:`natural_irreps` (C, lmax, lmin).
    """
    n, start = coefficients.shape[0], lmin * lmin
    parts = [
        coefficients[:, l * l - start : (l + 1) ** 2 - start, :].transpose(1, 2).reshape(n, -1)
        for l in range(lmin, lmax + 1)
    ]
    return torch.cat(parts, dim=-1)


def natural_irreps(channels: int, lmax: int, lmin: int = 0) -> Any:
    """``C x 0e + C x 1o + C x 2e ...`` for l = lmin..lmax (parity (-1)^l), as e3nn Irreps."""
    labels = [f"{channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(lmin, lmax + 1)]
    return o3().Irreps("+".join(labels))


class SphericalEmbeddingAdapter(BackboneAdapter):
    """Base of adapters for backbones whose node embedding is l-major SO(3) coefficients.

    fairchem's eSCN family (UMA, eSEN, EquiformerV2) keeps ``[N, (L+1)^2, C]`` with C =
    ``sphere_channels``; the head gets its l <= 2 rows as :func:`natural_irreps` through
    :meth:`embedding_features`. Subclasses name the module holding ``sphere_channels``,
    ``max_num_elements`` and ``lmax`` (or ``lmax_list``) as :attr:`embedding_module`.
    """

    @property
    @abstractmethod
    def embedding_module(self) -> nn.Module:
        """The backbone module that owns the spherical node embedding's configuration."""

    @property
    def channels(self) -> int:
        """``sphere_channels`` C."""
        return int(self.embedding_module.sphere_channels)

    @property
    def lmax(self) -> int:
        """Largest l handed to the head: min(backbone lmax, 2)."""
        module = self.embedding_module
        lmax = module.lmax_list[0] if hasattr(module, "lmax_list") else module.lmax
        return min(int(lmax), MAX_NODE_L)

    @property
    def node_irreps(self) -> Any:
        """``C x 0e + C x 1o + C x 2e`` (fewer when the backbone's lmax < 2)."""
        return natural_irreps(self.channels, self.lmax)

    @property
    def feature_dim(self) -> int:
        """``C x (lmax + 1)^2``: the embedding's rows up to l = lmax, every channel."""
        return self.channels * (self.lmax + 1) ** 2

    @property
    def supported_atomic_numbers(self) -> list[int]:
        """Z = 1 .. ``max_num_elements`` - 1 (the embedding table is indexed by Z)."""
        return list(range(1, int(self.embedding_module.max_num_elements)))

    def embedding_features(self, embedding: torch.Tensor) -> torch.Tensor:
        """[N, (L+1)^2, C] l-major embedding -> [N, feature_dim] node features (e3nn layout)."""
        return l_major_to_e3nn(embedding, self.lmax)


# ---------------------------------------------------------------------- dtype and RNG
# ---------------------------------------------------------------------- neighbours
def neighbor_edges(
    positions: torch.Tensor,
    batch: torch.Tensor,
    cutoff: float,
    cell: torch.Tensor | None = None,
    pbc: torch.Tensor | None = None,
    *,
    self_interaction: bool = False,
    max_neighbors: int | None = None,
    limit_name: str = "max_neighbors",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every directed edge shorter than ``cutoff`` (hip-head's one radius graph).

    Both directions of every pair; in periodic directions one edge per image within the cutoff
    (an atom may neighbour itself or another atom several times). The search runs without
    gradient; build differentiable vectors as
    ``positions[j] - positions[i] + shifts @ cell[batch[i]]``.

    Args:
        positions: [N, 3] positions, Å.
        batch: [N] int64 structure index of each atom.
        cutoff: radius, Å (edges with distance < cutoff are kept).
        cell: [B, 3, 3] lattice vectors as rows, Å, or None (e.g. ``graph.cell``).
        pbc: [B, 3] bool periodic directions, or None (e.g. ``graph.pbc``).
        self_interaction: also list each atom with itself (zero shift), as some models want.
        max_neighbors: the backbone's own per-atom limit, if it truncates its neighbour list
            (hip-head keeps every edge and warns when an atom exceeds the limit).
        limit_name: the backbone's name of that limit, for the warning.

    Returns:
        (edge_index [2, E] int64 ``(i, j)`` = (sender, receiver), sorted by i then j;
        shifts [E, 3] int64 image offsets in lattice vectors), on the positions' device.
    """
    device = positions.device
    periodic = cell is not None and pbc is not None and bool(pbc.any())
    edge_index, shifts = radius_graph(
        positions,
        cutoff,
        batch.to(device),
        cell.to(device) if periodic else None,
        pbc.to(device) if periodic else None,
        self_interaction=self_interaction,
    )
    if max_neighbors is not None:
        real = (edge_index[0] != edge_index[1]) | shifts.any(dim=1)  # self-loops do not count
        _warn_truncated(edge_index[1][real], positions.shape[0], max_neighbors, cutoff, limit_name)
    return edge_index, shifts


# ---------------------------------------------------------------------- checks and forces
def require_molecular(graph: AtomicGraph, adapter: str) -> None:
    """Raise ``ValueError`` when ``graph`` holds a periodic structure (for molecular backbones)."""
    if graph.pbc is not None and bool(graph.pbc.any()):
        raise InvalidArgumentError(
            f"the {adapter} adapter supports non-periodic structures only; this batch has a "
            "periodic one"
        )


def _warn_truncated(
    receivers: torch.Tensor, num_atoms: int, limit: int | None, cutoff: float, option: str
) -> None:
    """Warn when an atom has more neighbours than a backbone's own neighbour list would keep.

    Args:
        receivers: [E] receiving atom of every edge.
        num_atoms: N.
        limit: the backbone's limit (e.g. PyG's ``max_num_neighbors``), or None for none.
        cutoff: the radius the edges were searched within, Å.
        option: the backbone's name of the limit, for the message.
    """
    if limit is None or receivers.numel() == 0:
        return
    most = int(torch.bincount(receivers, minlength=num_atoms).max())
    if most > limit:
        warnings.warn(
            f"an atom has {most} neighbours within {cutoff} Å, more than the model's "
            f"{option}={limit}; hip-head keeps all of them, so the energy differs from the "
            "backbone library's truncated neighbour list",
            stacklevel=4,
        )


def gradient_energy_forces(
    energy_fn: Callable[[torch.Tensor], torch.Tensor], positions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Energy and forces -dE/dr of ``energy_fn`` at a detached copy of ``positions``.

    Args:
        energy_fn: positions [N, 3] Å -> energy [B] eV, differentiable.
        positions: [N, 3] Å (not modified).

    Returns:
        (energy [B] eV, forces [N, 3] eV/Å), both detached.
    """
    with torch.enable_grad():
        moving = positions.detach().clone().requires_grad_(True)
        energy = energy_fn(moving)
        (grad,) = torch.autograd.grad(energy.sum(), moving)
    return energy.detach(), -grad
