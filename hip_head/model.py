"""HIPModel: a backbone (through its adapter) plus the Hessian readout head."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from ase import Atoms
from torch import nn

from hip_head.adapters.base import BackboneAdapter
from hip_head.assemble import (
    BlockSparseHessian,
    blocks_to_flat,
    check_dense_fits,
    flat_hessian_size,
    split_flat,
)
from hip_head.errors import InvalidArgumentError
from hip_head.graph import AtomicGraph, PairGraph, build_pair_graph
from hip_head.quiet import quiet_model_loading
from hip_head.readout import HessianReadout

#: Marker stored in saved files so :func:`load` can tell a HIP file from other pickles.
FILE_FORMAT = "hip-head/1"
HESSIAN_OUTPUTS = ("flat", "dense", "blocks")


def full_precision(graph: AtomicGraph) -> torch.autocast:
    """Autocast switched off on the graph's device: where the backbone, its forces and its
    autograd Hessian run (mixed precision applies to the head only)."""
    return torch.autocast(graph.positions.device.type, enabled=False)


class HIPModel(nn.Module):
    """Energy, forces and Hessian from a backbone MLIP with a HIP readout head.

    Args:
        adapter: the backbone wrapped in its adapter (holds the backbone as ``adapter.backbone``).
        readout: the Hessian head reading the adapter's node irreps.
        hessian: ``"head"`` (predict, one forward pass) or ``"autograd"`` (the backbone's own
            exact second derivative by batched VJPs: the baseline to compare against).
    """

    def __init__(
        self, adapter: BackboneAdapter, readout: HessianReadout, hessian: str = "head"
    ) -> None:
        super().__init__()
        if hessian not in ("head", "autograd"):
            raise InvalidArgumentError(f"hessian must be 'head' or 'autograd', got {hessian!r}")
        self.adapter = adapter
        self.readout = readout
        self.hessian_method = hessian

    @property
    def backbone(self) -> nn.Module:
        """The wrapped backbone MLIP (unchanged by wrapping)."""
        return self.adapter.backbone

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the head's parameters."""
        return next(self.readout.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """Device of the head's parameters."""
        return next(self.readout.parameters()).device

    def run_backbone(self, graph: AtomicGraph) -> Any:
        """The adapter's output for ``graph``, always at full precision.

        Mixed precision (``torch.autocast``, Lightning's ``bf16-mixed``) applies to the head
        only: forces are derivatives of the energy and need the backbone in its own dtype (and
        MACE's symmetric contraction rejects mixed dtypes under autocast).

        Returns:
            :class:`~hip_head.adapters.base.BackboneOutput`: energy [B] eV and node features
            [N, node_irreps.dim].
        """
        with full_precision(graph):
            return self.adapter(graph)

    def forward(
        self,
        graph: AtomicGraph,
        compute_forces: bool = True,
        compute_hessian: bool = True,
        hessian_output: str = "flat",
        *,
        hessian: str | None = None,
        frozen_backbone: bool = False,
        memory_budget_gb: float | None = None,
    ) -> dict[str, Any]:
        """Predict energy, forces and Hessian for a batch.

        Args:
            graph: the batch (positions [N, 3] Å).
            compute_forces: also return forces = -dE/dr by autograd.
            compute_hessian: also return the Hessian.
            hessian_output: ``"flat"`` ([Σ_g (3N_g)²]), ``"dense"`` (list of (3N_g, 3N_g)) or
                ``"blocks"`` (:class:`BlockSparseHessian`, no N² allocation).
            hessian: the Hessian's source for this call, ``"head"`` or ``"autograd"``
                (default: the model's ``hessian_method``; the model itself is not changed).
            frozen_backbone: run the backbone without autograd and let the head read its
                detached features: the cheap path for training the head alone. The energy
                comes back detached; forces and the autograd Hessian are not available.
            memory_budget_gb: GiB the Hessian head may use (see
                :meth:`HessianReadout.forward`): in inference (under ``torch.no_grad()``, as
                :meth:`predict` runs) its pairs are evaluated in chunks that fit it. Default:
                half the available memory.

        Returns:
            ``{"energy": [B] eV, "forces": [N, 3] eV/Å, "hessian": ... eV/Å²}``; in training
            mode everything stays differentiable w.r.t. the parameters.

        Raises:
            ValueError: an unknown ``hessian_output`` or ``hessian``, or ``frozen_backbone``
                with forces or the autograd Hessian requested.
            DenseHessianTooLargeError: a flat or dense Hessian that would not fit in memory
                (checked before the backbone runs).
            HeadMemoryError: the head would not fit within the budget or the available memory
                (checked before it allocates per-pair tensors).
        """
        if hessian_output not in HESSIAN_OUTPUTS:
            raise InvalidArgumentError(f"hessian_output must be one of {HESSIAN_OUTPUTS}")
        method = self.hessian_method if hessian is None else hessian
        if method not in ("head", "autograd"):
            raise InvalidArgumentError(f"hessian must be 'head' or 'autograd', got {method!r}")
        graph.validate()
        if graph.positions.dtype != self.dtype:
            raise InvalidArgumentError(
                f"the graph's positions are {graph.positions.dtype} but the model is "
                f"{self.dtype}: build the graph in the model's dtype "
                f"(AtomicGraph.from_ase(atoms, dtype={self.dtype}) or graph.to(dtype=...)), or "
                "use HIPModel.predict(atoms), which does it"
            )
        self.adapter.check_elements(graph)
        if compute_hessian and hessian_output != "blocks":
            check_dense_fits(flat_hessian_size(graph.atoms_per_graph), self.dtype, self.device)
        if frozen_backbone:
            if compute_forces or (compute_hessian and method == "autograd"):
                raise InvalidArgumentError(
                    "frozen_backbone=True runs the backbone without autograd: it gives no "
                    "forces and no autograd Hessian (pass compute_forces=False, hessian='head')"
                )
            return self._frozen_backbone_forward(
                graph, compute_hessian, hessian_output, memory_budget_gb
            )
        positions = graph.positions
        if not positions.requires_grad:
            positions = positions.detach().requires_grad_(True)
        graph = graph.with_positions(positions)
        keep_graph = (
            self.training
            or torch.is_grad_enabled()
            and any(p.requires_grad for p in self.parameters())
        )
        with torch.enable_grad():
            head = compute_hessian and method == "head"
            if head:
                # Nothing will differentiate the blocks unless the graph is kept: then the
                # head records none (its per-pair activations are the pass's largest tensors).
                with torch.set_grad_enabled(keep_graph):
                    pairs = self._head_pairs(graph, keep_graph, memory_budget_gb)
            out = self.run_backbone(graph)
            result: dict[str, Any] = {"energy": out.energy}
            blocks = None
            if head:
                with torch.set_grad_enabled(keep_graph):
                    blocks = self.readout(
                        out.node_feats, graph, pairs, memory_budget_gb=memory_budget_gb
                    ).to(out.node_feats.dtype)
            if compute_forces:
                with full_precision(graph):  # backward ops would otherwise autocast too
                    (grad,) = torch.autograd.grad(
                        out.energy.sum(),
                        positions,
                        create_graph=self.training,
                        retain_graph=keep_graph,
                    )
                result["forces"] = -grad
            if compute_hessian:
                if blocks is not None:
                    result["hessian"] = self._format(blocks, graph, hessian_output)
                else:
                    with full_precision(graph):
                        result["hessian"] = self._autograd_hessian(graph, hessian_output)
        if not keep_graph:
            result = {k: _detach(v) for k, v in result.items()}
        return result

    def _frozen_backbone_forward(
        self,
        graph: AtomicGraph,
        compute_hessian: bool,
        hessian_output: str,
        memory_budget_gb: float | None = None,
    ) -> dict[str, Any]:
        """Energy (detached) and head Hessian from backbone features computed without grad."""
        if compute_hessian:
            recording = torch.is_grad_enabled() and any(
                p.requires_grad for p in self.readout.parameters()
            )
            pairs = self._head_pairs(graph, recording, memory_budget_gb)
        with torch.no_grad():
            out = self.run_backbone(graph)
        result: dict[str, Any] = {"energy": out.energy.detach()}
        if compute_hessian:
            feats = out.node_feats.detach()
            blocks = self.readout(feats, graph, pairs, memory_budget_gb=memory_budget_gb)
            blocks = blocks.to(feats.dtype)
            result["hessian"] = self._format(blocks, graph, hessian_output)
        return result

    def _head_pairs(
        self, graph: AtomicGraph, requires_grad: bool, memory_budget_gb: float | None
    ) -> PairGraph:
        """The head's pair graph, and the head's memory check before the backbone runs.

        Raises:
            HeadMemoryError: the head would not fit (see :meth:`HessianReadout.estimate_memory`).
        """
        pairs = build_pair_graph(graph, self.readout.hessian_cutoff)
        self.readout.estimate_memory(
            graph.num_atoms,
            pairs.num_pairs,
            dtype=self.dtype,
            device=self.device,
            requires_grad=requires_grad,
            memory_budget_gb=memory_budget_gb,
        )
        return pairs

    def hessian_rows(
        self, graph: AtomicGraph, rows: torch.Tensor, create_graph: bool | None = None
    ) -> torch.Tensor:
        """Selected rows of the backbone's exact (autograd) Hessian, at full precision.

        The HORM-style baseline trains the backbone on a few random rows per structure.

        Args:
            graph: the batch (positions [N, 3] Å).
            rows: [B, K] local row indices ``3a + α`` per structure (or [K] for all).
            create_graph: keep the rows differentiable w.r.t. the parameters (default: in
                training mode).

        Returns:
            [K, 3N] rows, eV/Å², in the layout of
            :func:`hip_head.autograd.autograd_hessian_rows`.
        """
        from hip_head.autograd import autograd_hessian_rows

        graph.validate()
        self.adapter.check_elements(graph)

        def energy_fn(positions: torch.Tensor) -> torch.Tensor:
            return self.run_backbone(graph.with_positions(positions)).energy

        keep = self.training if create_graph is None else create_graph
        with full_precision(graph):
            return autograd_hessian_rows(
                energy_fn, graph.positions, rows, graph.ptr, create_graph=keep
            )

    def _format(self, blocks, graph: AtomicGraph, hessian_output: str):
        if hessian_output == "blocks":
            return BlockSparseHessian.from_blocks(blocks, graph)
        flat = blocks_to_flat(blocks, graph)
        if hessian_output == "dense":
            return split_flat(flat, graph.atoms_per_graph)
        return flat

    def _autograd_hessian(self, graph: AtomicGraph, hessian_output: str):
        from hip_head.autograd import autograd_hessian

        def energy_fn(positions: torch.Tensor) -> torch.Tensor:
            return self.run_backbone(graph.with_positions(positions)).energy

        flat = autograd_hessian(
            energy_fn, graph.positions, ptr=graph.ptr, create_graph=self.training
        )
        if hessian_output == "dense":
            return split_flat(flat, graph.atoms_per_graph)
        if hessian_output == "blocks":
            raise InvalidArgumentError(
                "the autograd Hessian is dense; use hessian_output='flat' or 'dense'"
            )
        return flat

    # ------------------------------------------------------------------ convenience
    def predict(
        self,
        atoms: Atoms | Sequence[Atoms],
        compute_hessian: bool = True,
        *,
        memory_budget_gb: float | None = None,
    ) -> dict[str, Any]:
        """Energy, forces and dense Hessian of ``ase.Atoms`` as numpy arrays (float64).

        Runs under ``torch.no_grad()``: the head evaluates its pairs in chunks.

        Args:
            atoms: one structure or a list (evaluated as one batch).
            compute_hessian: include the Hessian.
            memory_budget_gb: GiB the head may use (default: half the available memory).

        Returns:
            For one structure: ``{"energy": float eV, "forces": (N, 3) eV/Å,
            "hessian": (3N, 3N) eV/Å²}``; for a list, a list of such dicts.
        """
        single = isinstance(atoms, Atoms)
        graph = AtomicGraph.from_ase(atoms, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            out = self.forward(
                graph,
                compute_hessian=compute_hessian,
                hessian_output="dense",
                memory_budget_gb=memory_budget_gb,
            )
        out = {k: _detach(v) for k, v in out.items()}
        energy = out["energy"].double().cpu().numpy()
        forces = out["forces"].double().cpu().numpy()
        results = []
        for g in range(graph.num_graphs):
            start, stop = int(graph.ptr[g]), int(graph.ptr[g + 1])
            item = {"energy": float(energy[g]), "forces": forces[start:stop]}
            if compute_hessian:
                item["hessian"] = out["hessian"][g].double().cpu().numpy()
            results.append(item)
        return results[0] if single else results

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Save the whole model (backbone, adapter options, head) to ``path``.

        The file opens without running code (``torch.load(weights_only=True)``) when the
        backbone has a safe rebuild recipe (MACE / ScaleShiftMACE, torch-geometric SchNet and
        ViSNet): weights as tensors plus a JSON description of the adapter, the head and the
        backbone (see :mod:`hip_head.serialization`). Other backbones are pickled, with a
        :class:`~hip_head.serialization.PickleFormatWarning`; such a file opens only with
        ``hip_head.load(path, trust=True)``.

        The file is written to a temporary name and renamed, so a crash never leaves a
        half-written model. Load it with :func:`hip_head.load`.
        """
        from hip_head.serialization import save_model

        save_model(self, path)


def _detach(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, list):
        return [_detach(v) for v in value]
    if isinstance(value, BlockSparseHessian):
        value.blocks = value.blocks.detach()
    return value


#: Names :func:`load` resolves to models shipped in ``hip_head/assets``.
SHIPPED_MODELS = {"pretrained": "hip_pretrained.model"}


def load(
    path: str | Path,
    map_location: str | torch.device | None = "cpu",
    *,
    trust: bool = False,
) -> HIPModel:
    """Load a model saved with :meth:`HIPModel.save`, or a shipped one by name.

    Args:
        path: file path, or ``"pretrained"``: the shipped trained HIP (a small MACE with a
            HIP head trained on GFN2-xTB Hessians of H/C/N/O molecules, reactions included;
            ``docs/pretrained.md`` says what it was trained on and how well it scores).
        map_location: device to load onto.
        trust: also open files in the pickle format (written by older hip-head versions, or
            for backbones without a safe recipe), which can run code while loading: only for
            files from a source you trust (a :class:`~hip_head.serialization.PickleFormatWarning`
            is emitted). Safe-format files never need it.

    Returns:
        The :class:`HIPModel` in eval mode. The backbone's library (e.g. mace-torch) must be
        installed; the training extras are not needed.

    Raises:
        FileNotFoundError: no such file, or ``"pretrained"`` was asked for but the file is not
            installed (the message names the script that trains it).
        UntrustedFileError: the file holds pickled objects and ``trust`` is False; nothing
            from the file was run (:class:`~hip_head.serialization.UntrustedFileError`).
        ValueError: the file is not a hip-head model file.
    """
    from hip_head.serialization import load_model

    if isinstance(path, str) and path in SHIPPED_MODELS:
        from hip_head.assets import asset_path

        path = asset_path(SHIPPED_MODELS[path])
    with quiet_model_loading():
        model = load_model(path, map_location, trust=trust)
    return model  # type: ignore[return-value]
