"""What the speed benchmark runs: methods, random backbones and the run's settings.

Used by ``benchmarks/speed.py`` (the command line) and the modules it is split into.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BACKBONES",
    "BATCH",
    "BATCH_METHODS",
    "COLUMNS",
    "LABELS",
    "METHODS",
    "RATIOS",
    "Settings",
    "Structure",
    "backbone_config",
    "build_backbone",
    "methods_for",
    "ratios_for",
]

#: Methods in the order they run at each size (``mace_hessian`` for MACE only).
METHODS: tuple[str, ...] = (
    "ef",
    "ef_native",
    "hip",
    "hip_blocks",
    "autograd",
    "fd",
    "mace_hessian",
)
#: Methods timed on the batch of small molecules (``--batch-small``).
BATCH_METHODS: tuple[str, ...] = ("ef", "ef_native", "hip", "hip_blocks", "autograd")
#: What is timed: one generated molecule with that many atoms, or the batch of small molecules.
Structure = int | str
#: The :data:`Structure` naming the batch of small molecules.
BATCH = "batch"
#: Per backbone: the random model's defaults of ``--channels``, ``--num-interactions`` and
#: ``--max-ell``, its cutoff (Å), the package that provides it and how it is built.
BACKBONES: dict[str, dict[str, Any]] = {
    "mace": dict(
        channels=64,
        num_interactions=2,
        max_ell=3,
        cutoff=5.0,
        package="mace-torch",
        description="random ScaleShiftMACE (make_random_mace)",
    ),
    "schnet": dict(
        channels=128,
        num_interactions=6,
        max_ell=0,
        cutoff=5.0,
        package="torch-geometric",
        description="random torch_geometric SchNet (hidden = filters = channels, 50 Gaussians)",
    ),
    "visnet": dict(
        channels=128,
        num_interactions=6,
        max_ell=1,
        cutoff=5.0,
        package="torch-geometric",
        description="random torch_geometric ViSNet (8 heads, 32 RBFs, lmax = max_ell)",
    ),
    "uma": dict(
        channels=128,
        num_interactions=4,
        max_ell=2,
        cutoff=6.0,
        package="fairchem-core",
        description="random UMA-S-like eSCN-MD HydraModel (make_random_uma; sphere = hidden "
        "channels, mmax 2, one dataset embedding, no mixture of experts)",
    ),
    "eqv2": dict(
        channels=128,
        num_interactions=8,
        max_ell=4,
        cutoff=6.0,
        package="fairchem-core",
        description="random EquiformerV2 31M-like HydraModel (make_random_equiformer_v2; "
        "8 heads, mmax 2, 20 neighbours, gate activations)",
    ),
}
LABELS = {
    "ef": "E+F (adapter)",
    "ef_native": "E+F (bare backbone)",
    "hip": "HIP E+F+H",
    "hip_blocks": "HIP E+F+H (block-sparse)",
    "autograd": "autograd H (vmap)",
    "fd": "finite differences",
    "mace_hessian": "MACE compute_hessian",
}
#: Ratios reported per row: name -> (numerator method, denominator method).
RATIOS = {
    "hip_over_ef": ("hip", "ef"),
    "hip_over_ef_native": ("hip", "ef_native"),
    "hip_blocks_over_ef": ("hip_blocks", "ef"),
    "autograd_over_hip": ("autograd", "hip"),
    "fd_over_hip": ("fd", "hip"),
    "mace_hessian_over_hip": ("mace_hessian", "hip"),
}
COLUMNS = {
    "atoms": "number of atoms N of the molecule (of all molecules, for the batch)",
    "formula": "its formula (see 'molecules')",
    "mace_edges": "directed edges within the backbone's r_max (backbone_edges for other backbones)",
    "head_pairs": "ordered atom pairs within the head's hessian_cutoff",
    "ef_ms": "energy + forces through the adapter, hip(graph, compute_hessian=False), ms",
    "ef_native_ms": "energy + forces of the bare backbone, adapter.native_energy_forces(graph), ms",
    "hip_ms": "energy + forces + Hessian with the HIP head, hip(graph), ms",
    "hip_blocks_ms": "the same with block-sparse output, hip(graph, hessian_output='blocks') "
    "(no (3N)^2 array), ms",
    "autograd_ms": "energy + forces + exact Hessian by batched VJPs "
    "(wrap(backbone, hessian='autograd')), ms",
    "fd_ms": "Hessian by central differences of the bare backbone's forces (6N E+F calls, "
    "step --fd-step), ms",
    "mace_hessian_ms": "MACE's own model(data, compute_force=True, compute_hessian=True), ms "
    "(MACE only)",
    "*_peak_mb": "peak resident-set growth during the timed calls over the RSS right before "
    "them (CPU, fresh child process) or torch.cuda.max_memory_allocated growth (CUDA), MiB",
    "hip_over_ef": "hip_ms / ef_ms",
    "hip_over_ef_native": "hip_ms / ef_native_ms",
    "hip_blocks_over_ef": "hip_blocks_ms / ef_ms",
    "autograd_over_hip": "autograd_ms / hip_ms",
    "fd_over_hip": "fd_ms / hip_ms",
    "mace_hessian_over_hip": "mace_hessian_ms / hip_ms (MACE only)",
    "skipped": "method -> why its columns are null (too big: the limit, timeout or memory guard)",
    "raw": "method -> every timed call (ms), baseline RSS (MiB), repeats, memory method, and "
    "the machine's 1-minute load average before and after the measurement (the measuring "
    "process counts 1)",
    "batch": "(--batch-small) the same columns for one batch of small molecules, plus "
    "'molecules' and 'atoms_per_molecule' [smallest, largest]",
}


@dataclass
class Settings:
    """Everything one benchmark run depends on (stored in the JSON as ``settings``).

    Sizes are atom counts; ``max_*_atoms`` skip a method above that size (None: never);
    ``timeout`` (s) and ``memory_limit_gb`` (GiB of resident set, None: no limit) stop one
    measurement that runs too long or grows too big (process isolation only); the ``batch_*``
    fields describe the batch of small molecules timed with ``batch_small``.
    """

    sizes: list[int]
    backbone: str = "mace"
    dtype: str = "float32"
    device: str = "cpu"
    channels: int = 64
    num_interactions: int = 2
    max_ell: int = 3
    correlation: int = 3
    repeats: int = 3
    warmup: int = 3
    warmup_budget: float = 10.0
    repeat_budget: float = 60.0
    max_autograd_atoms: int | None = 30
    max_fd_atoms: int | None = 60
    max_mace_hessian_atoms: int | None = 60
    max_flat_atoms: int | None = 2000
    fd_step: float = 1e-3
    threads: int | None = None
    isolation: str = "process"
    timeout: float = 1800.0
    memory_limit_gb: float | None = None
    seed: int = 0
    batch_small: bool = False
    batch_molecules: int = 64
    batch_atoms: list[int] = field(default_factory=lambda: [10, 30])


def methods_for(backbone: str, batch: bool = False) -> tuple[str, ...]:
    """The methods run for ``backbone`` (MACE's own Hessian only for MACE).

    Args:
        backbone: a key of :data:`BACKBONES`.
        batch: for the batch of small molecules (:data:`BATCH_METHODS`: no finite differences,
            no MACE Hessian).
    """
    methods = BATCH_METHODS if batch else METHODS
    return methods if backbone == "mace" else tuple(m for m in methods if m != "mace_hessian")


def ratios_for(backbone: str, batch: bool = False) -> dict[str, tuple[str, str]]:
    """The ratios reported for ``backbone`` (those of :func:`methods_for` only)."""
    methods = methods_for(backbone, batch)
    return {k: v for k, v in RATIOS.items() if v[0] in methods and v[1] in methods}


def build_backbone(settings: Settings) -> Any:
    """The random backbone of ``settings.backbone`` (see :data:`BACKBONES`), in eval mode.

    Args:
        settings: the run's settings (backbone, dtype, channels, layers, max_ell, seed).

    Returns:
        The model, on CPU, in ``settings.dtype``.

    Raises:
        ValueError: an unknown backbone.
    """
    import torch

    dtype = getattr(torch, settings.dtype)
    cutoff = BACKBONES[settings.backbone]["cutoff"] if settings.backbone in BACKBONES else None
    if settings.backbone == "mace":
        from hip_head.adapters.mace import make_random_mace

        return make_random_mace(
            channels=settings.channels,
            num_interactions=settings.num_interactions,
            max_ell=settings.max_ell,
            correlation=settings.correlation,
            dtype=dtype,
            seed=settings.seed,
        )
    if settings.backbone in ("schnet", "visnet"):
        from torch_geometric.nn import models

        torch.manual_seed(settings.seed)
        if settings.backbone == "schnet":
            model = models.SchNet(
                hidden_channels=settings.channels,
                num_filters=settings.channels,
                num_interactions=settings.num_interactions,
                num_gaussians=50,
                cutoff=cutoff,
                max_num_neighbors=128,  # hip-head's view keeps every pair; no truncation warning
            )
        else:
            model = models.ViSNet(
                lmax=settings.max_ell,
                num_heads=8,
                num_layers=settings.num_interactions,
                hidden_channels=settings.channels,
                num_rbf=32,
                cutoff=cutoff,
                max_num_neighbors=128,
            )
        return model.to(dtype).eval()
    if settings.backbone == "uma":
        from hip_head.adapters.uma import make_random_uma

        return make_random_uma(
            lmax=settings.max_ell,
            mmax=min(2, settings.max_ell),
            sphere_channels=settings.channels,
            hidden_channels=settings.channels,
            num_layers=settings.num_interactions,
            cutoff=cutoff,
            dtype=dtype,
            seed=settings.seed,
        )
    if settings.backbone == "eqv2":
        from hip_head.adapters.equiformer_v2 import make_random_equiformer_v2

        return make_random_equiformer_v2(
            lmax=settings.max_ell,
            mmax=min(2, settings.max_ell),
            sphere_channels=settings.channels,
            hidden_channels=settings.channels,
            num_layers=settings.num_interactions,
            num_heads=8,
            cutoff=cutoff,
            dtype=dtype,
            seed=settings.seed,
        )
    raise ValueError(f"unknown backbone {settings.backbone!r}; choose from {sorted(BACKBONES)}")


def backbone_config(settings: dict[str, Any]) -> str:
    """One line describing the run's random backbone, for the tables and the plot title."""
    name = settings.get("backbone", "mace")
    spec = BACKBONES[name]
    if name == "mace":
        return (
            f"random ScaleShiftMACE, {settings['channels']} channels, "
            f"{settings['num_interactions']} layers, max_ell {settings['max_ell']}, correlation "
            f"{settings['correlation']}"
        )
    text = f"{spec['description']}, {settings['channels']} channels, "
    text += f"{settings['num_interactions']} layers"
    if name != "schnet":
        text += f", lmax {settings['max_ell']}"
    return text + f", cutoff {spec['cutoff']:g} Å"
