"""Adapter for MACE (``mace-torch``): ``MACE``, ``ScaleShiftMACE`` and their subclasses.

The adapter turns an :class:`~hip_head.graph.AtomicGraph` into the input dictionary MACE's
``forward`` reads (one-hot ``node_attrs`` over the model's element table, a radius graph within
``r_max`` with MACE's sender/receiver convention, shifts, cell, batch, ptr, head), runs the
unmodified backbone with ``compute_force=False`` and returns its total energy together with the
node features of the chosen interaction layers (the outputs of ``backbone.products[i]``, l <= 2
only). The features are recorded by :class:`~hip_head.adapters.FeatureTap` s in a view of the
backbone that shares all its parameters; the backbone is never modified.

``mace`` itself is imported lazily: importing this module does not import it, and a missing
installation raises :class:`~hip_head.errors.MissingBackboneError` naming the extra to install.

Example:
    >>> from hip_head.adapters.mace import MACEAdapter, make_random_mace  # doctest: +SKIP
    >>> adapter = MACEAdapter(make_random_mace(channels=16), layers="all")  # doctest: +SKIP
    >>> out = adapter(AtomicGraph.from_ase(ase.build.molecule("H2O")))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from hip_head._e3nn import o3
from hip_head.errors import InvalidArgumentError
from hip_head.graph import AtomicGraph
from hip_head.quiet import quiet_model_loading

from ._common import FeatureTap, default_dtype, module_view, neighbor_edges, seeded
from .base import (
    BackboneAdapter,
    BackboneOutput,
    class_path_matches,
    filter_irreps,
    import_backbone,
    register,
)

__all__ = ["MACEAdapter", "make_random_mace"]

#: Fully qualified class names the adapter accepts (subclasses included, matched on the MRO).
MACE_CLASSES = {"mace.modules.models.MACE", "mace.modules.models.ScaleShiftMACE"}

#: Graph-level embedding features of charge/spin-conditioned MACE models, and their defaults
#: when the graph has no ``charge`` / ``spin`` (MACE's own defaults: neutral, singlet).
_GRAPH_FEATURES = {"total_charge": ("charge", 0.0), "total_spin": ("spin", 1.0)}


def _import_mace(module: str = "mace") -> ModuleType:
    """Import ``module`` from mace-torch, or raise a :class:`MissingBackboneError`."""
    return import_backbone(module, "mace-torch", "mace")


@register
class MACEAdapter(BackboneAdapter):
    """Adapter for MACE models (``mace.modules.models.MACE`` / ``ScaleShiftMACE``).

    Node features are the outputs of the selected interaction layers' product blocks
    (``backbone.products[i]``, irreps ``backbone.products[i].linear.irreps_out``), concatenated
    in layer order, with every irrep of l > 2 dropped. MACE's last layer usually outputs only
    scalars (``Cx0e``), so the equivariant (l = 1, 2) information sits in the earlier layers.

    Args:
        backbone: a MACE model (e.g. a foundation model loaded with
            ``torch.load(path, weights_only=False)``). It is used as is, never modified.
        layers: ``"all"`` or a sequence of interaction-layer indices (negative counts from the
            end, ``[-1]`` is the last layer) whose node features feed the Hessian head.
        head: for multi-head models, the head's name or index (negative counts from the end).
            None picks the head named ``"default"`` (any case) if there is one, else the first.

    Raises:
        ValueError: an empty or out-of-range ``layers``, an unknown ``head``, or a model whose
            graph-level embeddings need features hip-head does not provide.
        NotImplementedError: a model converted to cuEquivariance's ``ir_mul`` layout.
    """

    name = "mace"
    extra = "mace"
    parity = True

    def __init__(
        self,
        backbone: nn.Module,
        layers: str | Sequence[int] = "all",
        head: str | int | None = None,
    ) -> None:
        super().__init__(backbone)
        num_layers = len(backbone.products)
        self.layers: list[int] = _resolve_layers(layers, num_layers)
        self.heads: list[str] = list(getattr(backbone, "heads", None) or ["Default"])
        self.head_index: int = _resolve_head(head, self.heads)
        self.head: str = self.heads[self.head_index]
        _check_layout(backbone)
        specs = getattr(backbone, "embedding_specs", None) if _has_joint(backbone) else None
        unknown = sorted(set(specs or {}) - set(_GRAPH_FEATURES))
        if unknown:
            raise InvalidArgumentError(
                f"this MACE model embeds the graph features {unknown}, which hip-head does not "
                f"provide (it provides {sorted(_GRAPH_FEATURES)} from AtomicGraph.charge/spin)"
            )

        kept, columns, offset = [], [], 0
        for i in self.layers:
            irreps = o3().Irreps(backbone.products[i].linear.irreps_out)
            layer_kept, layer_columns = filter_irreps(irreps, lmax=2)
            kept.extend(layer_kept)
            columns.append(layer_columns + offset)
            offset += irreps.dim
        self._node_irreps = o3().Irreps(kept)
        index = torch.cat(columns)
        self._gather = not torch.equal(index, torch.arange(offset))
        self.register_buffer("_columns", index, persistent=False)

        table = backbone.atomic_numbers.detach().cpu().long()
        lookup = torch.full((int(table.max()) + 1,), -1, dtype=torch.long)
        lookup[table] = torch.arange(table.numel())
        self.register_buffer("_z_to_index", lookup, persistent=False)

    # ------------------------------------------------------------------ protocol
    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """True for ``MACE``, ``ScaleShiftMACE`` and their subclasses (mace is not imported).

        Args:
            model: any ``nn.Module``.

        Returns:
            Whether a class in ``type(model).__mro__`` is one of :data:`MACE_CLASSES`.
        """
        return class_path_matches(model, MACE_CLASSES)

    @property
    def node_irreps(self) -> Any:
        """e3nn ``Irreps`` of the concatenated selected layers' features (l <= 2)."""
        return self._node_irreps

    @property
    def feature_dim(self) -> int:
        """Number of feature columns ``forward`` gathers from the selected layers' outputs."""
        return int(self._columns.numel())

    @property
    def supported_atomic_numbers(self) -> list[int]:
        """Atomic numbers of the backbone's element table (``backbone.atomic_numbers``)."""
        return [int(z) for z in self.backbone.atomic_numbers.tolist()]

    @property
    def cutoff(self) -> float:
        """The backbone's radial cutoff ``r_max``, Å."""
        return float(self.backbone.r_max)

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the backbone's parameters (inputs are cast to it)."""
        return next(self.backbone.parameters()).dtype

    def forward(self, graph: AtomicGraph) -> BackboneOutput:
        """Run the backbone and collect its energy and node features.

        Args:
            graph: the batch; ``graph.positions`` [N, 3] Å. The returned energy is differentiable
                with respect to this very tensor (when it requires grad), so forces are
                ``-dE/d(graph.positions)``. Positions are cast to the backbone's dtype.

        Returns:
            ``BackboneOutput`` with ``energy`` [B] eV (MACE's total ``energy`` output, E0s
            included), ``node_feats`` [N, node_irreps.dim] and ``node_irreps``.

        Raises:
            UnsupportedElementError: the graph holds an element outside the backbone's table.
        """
        self.check_elements(graph)
        positions = graph.positions
        if not positions.requires_grad:
            # MACE calls ``positions.requires_grad_(True)``: give it an alias, so the caller's
            # tensor is not flipped in place (no gradient can flow to it anyway).
            positions = positions.detach()
        data = self.input_dict(graph, positions)

        captured: dict[int, torch.Tensor] = {}
        products = self.backbone.products
        taps = {str(i): FeatureTap(products[i], captured, key=i) for i in self.layers}
        view = module_view(self.backbone, {"products": module_view(products, taps)})
        out = view(data, training=False, compute_force=False)
        missing = [i for i in self.layers if i not in captured]
        if missing:
            raise RuntimeError(
                f"MACE's products{missing} were not called during forward; is the backbone "
                "scripted or compiled? Wrap the eager model instead"
            )
        feats = torch.cat([captured[i] for i in self.layers], dim=-1)
        if self._gather:
            feats = feats.index_select(-1, self._columns)
        return BackboneOutput(energy=out["energy"], node_feats=feats, node_irreps=self.node_irreps)

    def layer_groups(self) -> list[list[nn.Module]]:
        """One group per MACE message-passing layer: ``interactions[i]``, ``products[i]``
        and ``readouts[i]`` (the embeddings and scale/shift are never in a group)."""
        b = self.backbone
        return [
            [b.interactions[i], b.products[i], b.readouts[i]] for i in range(len(b.interactions))
        ]

    def native_energy_forces(self, graph: AtomicGraph) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy and forces computed by the bare model (``compute_force=True``).

        Args:
            graph: the batch; ``graph.positions`` [N, 3] Å (not modified).

        Returns:
            (energy [B] eV, forces [N, 3] eV/Å), detached.
        """
        self.check_elements(graph)
        with torch.enable_grad():
            positions = graph.positions.detach().to(self.dtype).clone()
            data = self.input_dict(graph, positions)
            out = self.backbone(data, training=False, compute_force=True)
        return out["energy"].detach(), out["forces"].detach()

    # ------------------------------------------------------------------ inputs
    def input_dict(
        self, graph: AtomicGraph, positions: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Build the dictionary MACE's ``forward`` reads, in MACE's collated layout.

        Args:
            graph: the batch (N atoms, B structures, E edges within ``r_max``).
            positions: [N, 3] positions to put in the dict, Å (default ``graph.positions``);
                shifts are built from the graph's cell, so gradients flow to both.

        Returns:
            ``positions`` [N, 3], ``node_attrs`` [N, num_elements] one-hot, ``edge_index``
            [2, E] (sender, receiver), ``shifts`` [E, 3] Å and ``unit_shifts`` [E, 3] with
            ``r_receiver - r_sender + shifts`` the edge vector, ``cell`` [3B, 3], ``rcell``
            [3B, 3], ``volume`` [B], ``pbc`` [B, 3], ``batch`` [N], ``ptr`` [B + 1], ``head``
            [B], ``total_charge`` [B], ``total_spin`` [B].
        """
        dtype = self.dtype
        positions = graph.positions if positions is None else positions
        if positions.dtype != dtype:
            positions = positions.to(dtype)
        device = positions.device
        num_graphs = graph.num_graphs
        species = self._z_to_index.to(device)[graph.atomic_numbers.to(device)]
        node_attrs = nn.functional.one_hot(species, len(self.supported_atomic_numbers)).to(dtype)

        if graph.cell is not None:
            cell = graph.cell.to(device=device, dtype=dtype)
        else:
            cell = torch.zeros(num_graphs, 3, 3, dtype=dtype, device=device)
        if graph.pbc is not None:
            pbc = graph.pbc.to(device=device, dtype=torch.bool)
        else:
            pbc = torch.zeros(num_graphs, 3, dtype=torch.bool, device=device)
        edge_index, unit_shifts = neighbor_edges(
            positions, graph.batch, self.cutoff, graph.cell, graph.pbc
        )
        unit_shifts = unit_shifts.to(dtype)
        shifts = torch.einsum(
            "ei,eij->ej", unit_shifts, cell[graph.batch.to(device)[edge_index[0]]]
        )

        volume = torch.linalg.det(cell.detach())
        rcell = torch.zeros_like(cell)
        periodic = volume.abs() > 0
        if periodic.any():
            rcell[periodic] = 2 * torch.pi * torch.linalg.inv(cell.detach()[periodic].mT)
        data = {
            "positions": positions,
            "node_attrs": node_attrs,
            "edge_index": edge_index,
            "shifts": shifts,
            "unit_shifts": unit_shifts,
            "cell": cell.reshape(-1, 3),
            "rcell": rcell.reshape(-1, 3),
            "volume": volume,
            "pbc": pbc,
            "batch": graph.batch.to(device),
            "ptr": graph.ptr.to(device),
            "head": torch.full((num_graphs,), self.head_index, dtype=torch.long, device=device),
        }
        for key, (attribute, default) in _GRAPH_FEATURES.items():
            value = getattr(graph, attribute)
            if value is None:
                value = torch.full((num_graphs,), default)
            data[key] = value.to(device=device, dtype=dtype)
        return data

    def extra_repr(self) -> str:
        """Layers, head and irreps, for ``print(adapter)``."""
        return f"layers={self.layers}, head={self.head!r}, node_irreps={self.node_irreps}"


# ---------------------------------------------------------------------- helpers
def _resolve_layers(layers: str | Sequence[int], num_layers: int) -> list[int]:
    """Normalise ``layers`` to sorted, unique, non-negative interaction-layer indices."""
    if isinstance(layers, str):
        if layers != "all":
            raise InvalidArgumentError(
                f'layers must be "all" or a sequence of ints, got {layers!r}'
            )
        return list(range(num_layers))
    resolved = set()
    for i in layers:
        if not -num_layers <= int(i) < num_layers:
            raise InvalidArgumentError(
                f"layer {i} is out of range: this MACE model has {num_layers} interaction "
                f"layers (valid indices {-num_layers}..{num_layers - 1})"
            )
        resolved.add(int(i) % num_layers)
    if not resolved:
        raise InvalidArgumentError("layers is empty: select at least one interaction layer")
    return sorted(resolved)


def _resolve_head(head: str | int | None, heads: list[str]) -> int:
    """Index of ``head`` in the model's ``heads`` (see :class:`MACEAdapter`)."""
    if head is None:
        lowered = [h.lower() for h in heads]
        return lowered.index("default") if "default" in lowered else 0
    if isinstance(head, str):
        if head not in heads:
            raise InvalidArgumentError(f"unknown head {head!r}; this MACE model has heads {heads}")
        return heads.index(head)
    if not -len(heads) <= int(head) < len(heads):
        raise InvalidArgumentError(f"head index {head} is out of range for heads {heads}")
    return int(head) % len(heads)


def _has_joint(backbone: nn.Module) -> bool:
    return hasattr(backbone, "joint_embedding")


def _check_layout(backbone: nn.Module) -> None:
    """Refuse cuEquivariance ``ir_mul`` models: their features are not in e3nn's layout."""
    for product in backbone.products:
        config = getattr(product, "cueq_config", None)
        if config is not None and getattr(config, "enabled", False):
            if getattr(config, "layout_str", "mul_ir") == "ir_mul":
                raise NotImplementedError(
                    "this MACE model uses cuEquivariance's ir_mul layout; convert it back with "
                    "`mace.cli.convert_cueq_e3nn` before wrapping it"
                )


# ---------------------------------------------------------------------- factory
def make_random_mace(
    atomic_numbers: Sequence[int] = (1, 6, 7, 8),
    channels: int = 64,
    max_ell: int = 3,
    hidden_lmax: int = 1,
    num_interactions: int = 2,
    correlation: int = 3,
    r_max: float = 5.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    scale_shift: bool = True,
    heads: Sequence[str] | None = None,
) -> nn.Module:
    """A randomly initialised MACE built with mace's own constructors (as ``mace_run_train``).

    The architecture follows mace's defaults: ``RealAgnosticResidualInteractionBlock`` for every
    layer, 8 Bessel functions, polynomial cutoff p = 5, ``16x0e`` readout MLP with SiLU gate,
    radial MLP [64, 64, 64]. Atomic energies (E0s) are random in [-10, -1] eV. The global torch
    RNG is left untouched.

    Args:
        atomic_numbers: the element table Z (sorted internally).
        channels: multiplicity of every hidden irrep.
        max_ell: largest l of the edge spherical harmonics.
        hidden_lmax: largest l of the hidden irreps: ``channels x (0e + 1o + 2e ...)``; 2 gives
            ``64x0e+64x1o+64x2e`` for 64 channels.
        num_interactions: number of interaction layers (the last outputs scalars only).
        correlation: body order of the product basis.
        r_max: radial cutoff, Å.
        seed: seeds the weights and E0s.
        dtype: parameter dtype.
        scale_shift: build a ``ScaleShiftMACE`` (scale 1, shift 0) rather than a ``MACE``.
        heads: head names of a multi-head model (each with its own E0s and readouts); None
            gives MACE's single ``"Default"`` head.

    Returns:
        The model in eval mode.

    Raises:
        MissingBackboneError: mace-torch is not installed.
    """
    modules = _import_mace("mace.modules")
    irreps = o3().Irreps

    table = sorted(int(z) for z in atomic_numbers)
    hidden = "+".join(f"{channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(hidden_lmax + 1))
    rng = np.random.default_rng(seed)
    num_heads = 1 if heads is None else len(heads)
    e0s = rng.uniform(-10.0, -1.0, size=len(table) if heads is None else (num_heads, len(table)))
    config = dict(
        r_max=float(r_max),
        num_bessel=8,
        num_polynomial_cutoff=5,
        max_ell=max_ell,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=num_interactions,
        num_elements=len(table),
        hidden_irreps=irreps(hidden),
        MLP_irreps=irreps("16x0e"),
        gate=torch.nn.functional.silu,
        atomic_energies=e0s,
        avg_num_neighbors=8.0,
        atomic_numbers=table,
        correlation=correlation,
        radial_MLP=[64, 64, 64],
        radial_type="bessel",
        heads=None if heads is None else list(heads),
    )
    # e3nn constants exact in dtype; the caller's RNG kept; e3nn's TorchScript warnings hidden
    with seeded(seed), default_dtype(dtype), quiet_model_loading():
        if scale_shift:
            model = modules.ScaleShiftMACE(
                atomic_inter_scale=[1.0] * num_heads if heads else 1.0,
                atomic_inter_shift=[0.0] * num_heads if heads else 0.0,
                **config,
            )
        else:
            model = modules.MACE(**config)
    return model.to(dtype).eval()
