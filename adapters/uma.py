"""Adapter for fairchem-core 2.x UMA / eSEN-md models (``HydraModel`` with an ``eSCNMDBackbone``).

What a user has: ``pretrained_mlip.get_predict_unit("uma-s-1p1")`` returns a predict unit whose
``unit.model.module`` is the :class:`fairchem.core.models.base.HydraModel` (an
``eSCNMDBackbone`` or its mixture-of-linear-experts subclass ``eSCNMDMoeBackbone`` plus output
heads). Wrap that::

    unit = pretrained_mlip.get_predict_unit("uma-s-1p1", device="cpu")  # doctest: +SKIP
    options = {"task_name": "omol"}
    model = hip_head.wrap(unit.model.module, adapter_options=options)  # doctest: +SKIP

The adapter runs the model's own ``forward`` on a *view*: a shallow copy sharing every parameter
and buffer, in which (a) the backbone and heads compute energy only (their ``regress_config``
has forces, stress and the Hessian switched off, so no head calls ``autograd.grad`` on a graph
hip-head still needs), and (b) the backbone takes hip-head's edge list (``otf_graph=False``: every
pair of the same structure closer than the cutoff) and builds the edge vectors itself from
``data["pos"]``, which *is* ``graph.positions``, so the energy is differentiable in them. The
original model is never modified.

Node features: the backbone's ``node_embedding`` [N, (lmax+1)^2, C] (after the final norm, what the
energy head reads) stores SO(3) coefficients l-major, m = -l..l. Fitting the matrix that acts on
each l block under a rotation shows that fairchem's real spherical-harmonic basis *equals*
e3nn's (l = 1 in e3nn's (x, y, z) order, l = 2 identical too): the conversion is only the
transpose to e3nn's multiplicity-major layout, ``feats[:, c*(2l+1) + m] = emb[:, l*l + m, c]``,
giving ``C x 0e + C x 1o + C x 2e``.

Parity: eSCN's SO(2) convolutions mix the m and -m components of edge-aligned features, which is
SO(3)- but not O(3)-equivariant; numerically, mirroring a molecule changes even the l = 0
features. ``parity = False``.

Exactness: with ``ff_type="grid"`` (and ``act_type="s2"``) the backbone's nonlinearity is
evaluated on a finite S2 grid and is equivariant only to ~1e-5 relative (a property of the
model, not of the adapter); with ``ff_type="spectral"`` and ``act_type="gate"`` it is exact to
~1e-15 in float64.

Only non-periodic structures are supported (the head is molecular).
"""

from __future__ import annotations

import dataclasses
from types import ModuleType

import torch
from torch import nn

from hip_head.errors import InvalidArgumentError
from hip_head.graph import AtomicGraph

from ._common import (
    FeatureTap,
    SphericalEmbeddingAdapter,
    default_dtype,
    neighbor_edges,
    require_molecular,
    seeded,
    tree_view,
)
from .base import BackboneOutput, class_path_matches, import_backbone, register

__all__ = ["UMAAdapter", "make_random_uma"]

#: Fully qualified class names accepted (subclasses included, matched on the MRO).
HYDRA_CLASSES = {
    "fairchem.core.models.base.HydraModel",
    "fairchem.core.models.base.HydraModelV2",
}
BACKBONE_CLASSES = {"fairchem.core.models.uma.escn_md.eSCNMDBackbone"}

#: fairchem's defaults for the total charge and the spin multiplicity of a task.
DEFAULT_CHARGE = 0
DEFAULT_SPIN = {"omol": 1}


def _import_fairchem(module: str = "fairchem.core") -> ModuleType:
    """Import ``module`` from fairchem-core, or raise a :class:`MissingBackboneError`."""
    return import_backbone(module, "fairchem-core", "fairchem")


def _energy_only_view(model: nn.Module, store: dict | None = None) -> nn.Module:
    """View of ``model`` whose modules compute energy only (parameters shared, model unchanged).

    Every module holding a ``regress_config`` gets forces, stress and the Hessian off; the
    ``eSCNMDBackbone`` takes the edge list from its input (``otf_graph=False``) and, when
    ``store`` is given, records its output dict there as ``"backbone"``.
    """

    def edit(module: nn.Module, view: nn.Module) -> nn.Module | None:
        config = module.__dict__.get("regress_config")
        if config is not None:
            off = dataclasses.replace(config, forces=False, stress=False, hessian=False)
            view.__dict__["regress_config"] = off
        if class_path_matches(module, BACKBONE_CLASSES):
            view.__dict__["otf_graph"] = False
            return view if store is None else FeatureTap(view, store, "backbone")
        return view if config is not None else None

    return tree_view(model, edit)


def _flatten(out, path: tuple = ()):
    """Yield (key path, tensor) for every tensor in a nested dict of model outputs."""
    if isinstance(out, dict):
        for key, value in out.items():
            yield from _flatten(value, (*path, str(key)))
    elif isinstance(out, torch.Tensor):
        yield path, out


def _find_output(out: dict, prop: str, task: str) -> torch.Tensor | None:
    """The output ``prop`` ("energy" / "forces") of task ``task`` in HydraModel's output dict.

    UMA's dataset-specific heads name it ``f"{task}_{prop}"`` (e.g. ``omol_energy``), plain heads
    ``prop``; the value may be wrapped as ``{prop: tensor}``.
    """
    found = list(_flatten(out))
    for wanted in (f"{task}_{prop}", prop):
        hits = [t for path, t in found if wanted in path and path[-1] != "embeddings"]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise InvalidArgumentError(f"the fairchem model returns several {wanted!r} outputs")
    return None


@register
class UMAAdapter(SphericalEmbeddingAdapter):
    """Adapter for fairchem's ``HydraModel`` with an ``eSCNMDBackbone`` (UMA, eSEN-md).

    Pass the HydraModel itself: for a pretrained UMA, ``unit.model.module`` of
    ``fairchem.core.pretrained_mlip.get_predict_unit(...)``. Node features are the backbone's
    final ``node_embedding`` restricted to l <= 2, ``C x 0e + C x 1o + C x 2e`` (C =
    ``sphere_channels``) in e3nn's multiplicity-major layout. The energy is the model's own
    energy output for ``task_name`` (eV).

    Args:
        backbone: a fairchem ``HydraModel`` (or ``HydraModelV2``) whose ``backbone`` is an
            ``eSCNMDBackbone``; used as is and never modified.
        task_name: the dataset / task whose energy head and dataset embedding are used (e.g.
            ``"omol"``, ``"omat"``, ``"oc20"``). Default: ``"omol"`` when the model knows it,
            else the model's only task.

    Raises:
        ValueError: ``task_name`` unknown to the model, or not given for a multi-task model
            without ``omol``.
    """

    name = "uma"
    extra = "fairchem"
    parity = False  # SO(2) convolutions mix m and -m: SO(3)-equivariant only

    def __init__(self, backbone: nn.Module, task_name: str | None = None) -> None:
        super().__init__(backbone)
        tasks = self.task_names
        if task_name is None:
            if tasks is None or "omol" in tasks:
                task_name = "omol"
            elif len(tasks) == 1:
                task_name = tasks[0]
            else:
                raise InvalidArgumentError(
                    f"this UMA model has several tasks {tasks}: pass task_name"
                )
        if tasks is not None and task_name not in tasks:
            raise InvalidArgumentError(f"unknown task_name {task_name!r}; the model knows {tasks}")
        self.task_name = task_name

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """True for a HydraModel with an eSCNMDBackbone (by class name, no fairchem import)."""
        return class_path_matches(model, HYDRA_CLASSES) and class_path_matches(
            getattr(model, "backbone", None), BACKBONE_CLASSES
        )

    @property
    def task_names(self) -> list[str] | None:
        """Datasets of the backbone's dataset embedding, or None when it has none."""
        bb = self.backbone.backbone
        if not getattr(bb, "use_dataset_embedding", False):
            return None
        return sorted(bb.dataset_mapping.keys())

    @property
    def embedding_module(self) -> nn.Module:
        """The ``eSCNMDBackbone`` (``sphere_channels``, ``lmax``, ``max_num_elements``)."""
        return self.backbone.backbone

    @property
    def cutoff(self) -> float:
        """The backbone's cutoff, Å."""
        return float(self.backbone.backbone.cutoff)

    # ------------------------------------------------------------------ input batch
    def _data(self, graph: AtomicGraph, positions: torch.Tensor, edges: bool):
        """fairchem ``AtomicData`` for ``graph`` whose ``pos`` is ``positions`` itself.

        Args:
            graph: the batch (non-periodic).
            positions: [N, 3] Å, used as is (not copied: energy stays differentiable in it).
            edges: list every pair closer than the cutoff (for the ``otf_graph=False`` view);
                otherwise leave the edge list empty for the model's own graph generation.

        Returns:
            A batched ``AtomicData``.
        """
        atomic_data = _import_fairchem("fairchem.core.datasets.atomic_data")
        require_molecular(graph, self.name)
        self.check_elements(graph)
        device, dtype, b = positions.device, positions.dtype, graph.num_graphs
        natoms = graph.atoms_per_graph.to(device)
        if edges:
            limit = getattr(self.backbone.backbone, "max_neighbors", None)
            edge_index, _ = neighbor_edges(  # (source, target = receiver)
                positions, graph.batch, self.cutoff, max_neighbors=limit
            )
            nedges = torch.bincount(graph.batch.to(device)[edge_index[1]], minlength=b)
        else:
            edge_index = torch.zeros(2, 0, dtype=torch.long, device=device)
            nedges = torch.zeros(b, dtype=torch.long, device=device)
        # a cubic box larger than any structure plus the cutoff: never seen by the model
        # (no periodic direction and zero cell offsets), but valid if it forces pbc on
        extent = float(positions.detach().abs().max()) if positions.numel() else 0.0
        side = 2 * extent + 2 * self.cutoff + 10.0
        cell = torch.eye(3, dtype=dtype, device=device).expand(b, 3, 3) * side
        charge = graph.charge if graph.charge is not None else torch.full((b,), DEFAULT_CHARGE)
        spin_default = DEFAULT_SPIN.get(self.task_name, 0)
        spin = graph.spin if graph.spin is not None else torch.full((b,), spin_default)
        n = positions.shape[0]
        zeros = torch.zeros(n, dtype=torch.long, device=device)
        return atomic_data.AtomicData(
            pos=positions,
            atomic_numbers=graph.atomic_numbers.to(device).long(),
            cell=cell.contiguous(),
            pbc=torch.zeros(b, 3, dtype=torch.bool, device=device),
            natoms=natoms,
            edge_index=edge_index,
            cell_offsets=torch.zeros(edge_index.shape[1], 3, dtype=dtype, device=device),
            nedges=nedges,
            charge=torch.round(charge.to(device).double()).long().reshape(b),
            spin=torch.round(spin.to(device).double()).long().reshape(b),
            fixed=zeros,
            tags=zeros.clone(),
            batch=graph.batch.to(device).long(),
            sid=[""] * b,
            dataset=[self.task_name] * b,
        )

    # ------------------------------------------------------------------ forward
    def forward(self, graph: AtomicGraph) -> BackboneOutput:
        """The model's energy for ``task_name`` and the backbone's node embedding (l <= 2).

        Args:
            graph: molecules; ``graph.positions`` [N, 3] Å, the tensor forces are taken of.

        Returns:
            Energy [B] eV (the ``task_name`` head); node features [N, C x (lmax+1)^2], the
            ``node_embedding`` rows l <= 2 in e3nn's layout.
        """
        store: dict = {}
        view = _energy_only_view(self.backbone, store)
        data = self._data(graph, graph.positions, edges=True)
        out = view(data)
        energy = _find_output(out, "energy", self.task_name)
        if energy is None:
            raise InvalidArgumentError("the fairchem model has no energy output")
        emb = store["backbone"]["node_embedding"]  # [N, (lmax+1)^2, C], l-major
        return BackboneOutput(
            energy=energy.reshape(graph.num_graphs),
            node_feats=self.embedding_features(emb),
            node_irreps=self.node_irreps,
        )

    def native_energy_forces(self, graph: AtomicGraph) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy and forces from the unmodified model (its own graph generation and forces).

        Runs the HydraModel as configured: its own neighbour search when ``otf_graph`` is set
        (else hip-head's edge list), and its own forces (gradient or direct force head). When
        the model predicts no forces, they are taken as -dE/dr of its energy.

        Args:
            graph: the batch; ``graph.positions`` [N, 3] Å (not modified).

        Returns:
            (energy [B] eV, forces [N, 3] eV/Å), detached.
        """
        model = self.backbone
        with torch.enable_grad():
            positions = graph.positions.detach().clone().requires_grad_(True)
            data = self._data(graph, positions, edges=not model.backbone.otf_graph)
            out = model(data)
            energy = _find_output(out, "energy", self.task_name)
            forces = _find_output(out, "forces", self.task_name)
            if forces is None:
                (grad,) = torch.autograd.grad(energy.sum(), positions)
                forces = -grad
        return energy.detach().reshape(graph.num_graphs), forces.detach().reshape(-1, 3)


def make_random_uma(
    lmax: int = 2,
    mmax: int = 2,
    sphere_channels: int = 16,
    hidden_channels: int = 16,
    num_layers: int = 2,
    cutoff: float = 5.0,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    ff_type: str = "spectral",
    task_names: tuple[str, ...] = ("omol",),
) -> nn.Module:
    """A small random UMA-like ``HydraModel``: ``eSCNMDBackbone`` + gradient-force ``MLP_EFS_Head``.

    Built as a pretrained UMA is configured for inference (``otf_graph=True``, no periodic
    wrapping, conservative forces, dataset embedding), on CPU, directly in ``dtype``.

    Args:
        lmax: largest l of the node embedding.
        mmax: largest m of the SO(2) convolutions.
        sphere_channels: channels C per coefficient.
        hidden_channels: hidden width of the feed-forward and energy MLPs.
        num_layers: message-passing blocks.
        cutoff: neighbour cutoff, Å.
        dtype: parameter dtype (build in float64 for 1e-10 equivariance tests).
        seed: seed of the random weights (the caller's global RNG state is left unchanged).
        ff_type: ``"spectral"`` (exactly equivariant) or ``"grid"`` (UMA's S2-grid feed-forward,
            equivariant to ~1e-5 only).
        task_names: datasets of the dataset embedding.

    Returns:
        The ``fairchem.core.models.base.HydraModel``, in eval mode.
    """
    base = _import_fairchem("fairchem.core.models.base")
    backbone = dict(
        model="fairchem.core.models.uma.escn_md.eSCNMDBackbone",
        max_num_elements=100,
        sphere_channels=sphere_channels,
        lmax=lmax,
        mmax=mmax,
        otf_graph=True,
        always_use_pbc=False,
        cutoff=cutoff,
        edge_channels=sphere_channels,
        num_distance_basis=sphere_channels,
        direct_forces=False,
        regress_forces=True,
        num_layers=num_layers,
        hidden_channels=hidden_channels,
        norm_type="rms_norm_sh",
        act_type="gate",
        ff_type=ff_type,
        dataset_mapping={name: name for name in task_names},
        use_dataset_embedding=True,
    )
    heads = {"energyandforcehead": {"module": "fairchem.core.models.uma.escn_md.MLP_EFS_Head"}}
    with seeded(seed), default_dtype(dtype):  # constants exact in dtype; caller's RNG kept
        model = base.HydraModel(backbone=backbone, heads=heads, otf_graph=True)
    return model.to(dtype).eval()
