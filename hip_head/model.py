"""HIPModel: a backbone (through its adapter) plus the Hessian readout head."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from ase import Atoms
from torch import nn

from hip_head.adapters.base import BackboneAdapter
from hip_head.assemble import BlockSparseHessian, blocks_to_flat, split_flat
from hip_head.graph import AtomicGraph
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
            raise ValueError(f"hessian must be 'head' or 'autograd', got {hessian!r}")
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
    ) -> dict[str, Any]:
        """Predict energy, forces and Hessian for a batch.

        Args:
            graph: the batch (positions [N, 3] Å).
            compute_forces: also return forces = -dE/dr by autograd.
            compute_hessian: also return the Hessian.
            hessian_output: ``"flat"`` ([Σ_g (3N_g)²]), ``"dense"`` (list of (3N_g, 3N_g)) or
                ``"blocks"`` (:class:`BlockSparseHessian`, no N² allocation).

        Returns:
            ``{"energy": [B] eV, "forces": [N, 3] eV/Å, "hessian": ... eV/Å²}``; in training
            mode everything stays differentiable w.r.t. the parameters.
        """
        if hessian_output not in HESSIAN_OUTPUTS:
            raise ValueError(f"hessian_output must be one of {HESSIAN_OUTPUTS}")
        graph.validate()
        self.adapter.check_elements(graph)
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
            out = self.run_backbone(graph)
            result: dict[str, Any] = {"energy": out.energy}
            blocks = None
            if compute_hessian and self.hessian_method == "head":
                blocks = self.readout(out.node_feats, graph).to(out.node_feats.dtype)
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
            raise ValueError("the autograd Hessian is dense; use hessian_output='flat' or 'dense'")
        return flat

    # ------------------------------------------------------------------ convenience
    def predict(
        self, atoms: Atoms | Sequence[Atoms], compute_hessian: bool = True
    ) -> dict[str, Any]:
        """Energy, forces and dense Hessian of ``ase.Atoms`` as numpy arrays (float64).

        Args:
            atoms: one structure or a list (evaluated as one batch).
            compute_hessian: include the Hessian.

        Returns:
            For one structure: ``{"energy": float eV, "forces": (N, 3) eV/Å,
            "hessian": (3N, 3N) eV/Å²}``; for a list, a list of such dicts.
        """
        single = isinstance(atoms, Atoms)
        graph = AtomicGraph.from_ase(atoms, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            out = self.forward(graph, compute_hessian=compute_hessian, hessian_output="dense")
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

        The file is written to a temporary name and renamed, so a crash never leaves a
        half-written model. Load it with :func:`hip_head.load`.
        """
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"format": FILE_FORMAT, "model": self}, tmp)
        tmp.replace(path)


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


def load(path: str | Path, map_location: str | torch.device | None = "cpu") -> HIPModel:
    """Load a model saved with :meth:`HIPModel.save`, or a shipped one by name.

    Args:
        path: file path, or ``"pretrained"``: the shipped trained HIP (a small MACE with a
            HIP head trained on GFN2-xTB Hessians of H/C/N/O molecules, reactions included;
            ``docs/pretrained.md`` says what it was trained on and how well it scores).
        map_location: device to load onto.

    Returns:
        The :class:`HIPModel` in eval mode. The backbone's library (e.g. mace-torch) must be
        installed; the training extras are not needed.

    Raises:
        FileNotFoundError: ``"pretrained"`` was asked for but the file is not installed (the
            message names the script that trains it).
        ValueError: the file is not a hip-head model file.
    """
    if isinstance(path, str) and path in SHIPPED_MODELS:
        from hip_head.assets import asset_path

        path = asset_path(SHIPPED_MODELS[path])
    payload = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
        raise ValueError(f"{path} is not a hip-head model file (expected format {FILE_FORMAT})")
    model = payload["model"]
    model.eval()
    return model
