#!/usr/bin/env python
"""Speed benchmark: HIP's one-pass Hessian against the backbone's E+F and exact Hessians.

For each molecule size the same backbone (by default a random ``ScaleShiftMACE`` from
:func:`hip_head.adapters.mace.make_random_mace`; ``--backbone`` picks another, see
:data:`BACKBONES`) is timed, on the same machine in one run, as

* ``ef``: energy + forces through hip-head's adapter, ``hip(graph, compute_hessian=False)``;
* ``ef_native``: energy + forces of the bare backbone, ``adapter.native_energy_forces(graph)``;
* ``hip``: energy + forces + Hessian with the HIP head, ``hip(graph)`` (flat Hessian);
* ``autograd``: energy + forces + exact Hessian by batched (vmap) VJPs,
  ``hip_head.wrap(backbone, hessian="autograd")(graph)``;
* ``fd``: Hessian by central differences of the bare model's forces (6N E+F calls),
  :func:`hip_head.autograd.finite_difference_hessian`;
* ``mace_hessian`` (MACE only): MACE's own ``model(data, compute_force=True,
  compute_hessian=True)`` on the adapter's ``input_dict`` (torch's default dtype set to the
  model's, as MACE's calculator does).

Other backbones (``--backbone schnet | visnet | uma | eqv2``) are random models of a realistic
size (:data:`BACKBONES`, overridable with ``--channels``, ``--num-interactions``, ``--max-ell``)
built with the shipped builders (torch-geometric's constructors, ``make_random_uma``,
``make_random_equiformer_v2``); they run every method but ``mace_hessian`` and write
``speed_cpu_<backbone>.{json,png}``. UMA needs fairchem-core 2.x (``.venv-fairchem``),
EquiformerV2 fairchem-core 1.x (``.venv-eqv2``).

Every call includes building the neighbour list / input dictionary, as a user pays for it.
Each method is first called untimed at the same size, up to ``--warmup`` times (default 3: e3nn
and MACE run TorchScript, whose profiling executor profiles on the first call and optimises on
the second, so the third call is the first steady one) but no more once those calls have taken
``--warmup-budget`` seconds; ``fd`` warms up with the bare E+F it consists of. Warming up on a
smaller molecule instead would be cheaper but is not steady: TorchScript specialises on shapes
(in one test an autograd Hessian warmed up at 3 atoms stayed ~40 % slower at 10). Then it is timed
``--repeats`` times, fewer once the timed calls have taken ``--repeat-budget`` seconds (at least
once), and the median is reported.

Peak memory (``*_peak_mb``, MiB) is the growth of the process's resident set during the timed
calls, above the resident set right before them (model, molecule and warm-up already in
memory). On CPU each measurement runs in a fresh child process: a helper process imports torch
and builds the models once with one thread (so OpenMP has no thread pool yet), then forks one
child per (size, method); the child sets the thread count, warms up, releases freed heap
(``malloc_trim``), resets the kernel's high-water mark (``/proc/self/clear_refs``), reads
``VmRSS``, runs the timed calls and reads ``VmHWM``. Without ``clear_refs`` the child's
high-water mark since the fork is used and the warm-up is counted. On CUDA the measurements run
in this process and peak memory is ``torch.cuda.max_memory_allocated`` above the allocation
before the timed calls.

Molecules are saturated, acyclic H/C/N/O molecules made by a deterministic generator (no
network, no RDKit): heavy atoms grow on a diamond lattice (1.54 Å bonds, tetrahedral angles,
staggered dihedrals), each time on the free site nearest the centroid (seeded jitter breaks
ties), so the molecule is a compact globule with the atom density of a liquid alkane (about 45
neighbours within 5 Å at 200 atoms): the worst case for the head's pair graph (12 Å), whose
pair count grows as N² up to about 100 atoms. About one heavy atom in eight is O and one in
eight is N; one or two extra N/O make the atom count exact (3 atoms: H2O, 5: CH4, 9: C2H6O,
20: C6H14). No two heavy atoms share an empty lattice site, so no two hydrogens point at the
same site: bonds are 0.96 to 1.54 Å, non-bonded H···H 1.89 Å or more (checked for 30 to 200
atoms); every molecule is checked for atoms closer than 0.9 Å.

Run ``python benchmarks/speed.py --help``; the JSON, plot and markdown tables go to
``docs/benchmarks/``, where ``docs/benchmarks.md`` quotes them.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import math
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]

#: Methods in the order they run at each size (``mace_hessian`` for MACE only).
METHODS: tuple[str, ...] = ("ef", "ef_native", "hip", "autograd", "fd", "mace_hessian")
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
    "autograd": "autograd H (vmap)",
    "fd": "finite differences",
    "mace_hessian": "MACE compute_hessian",
}
#: Ratios reported per row: name -> (numerator method, denominator method).
RATIOS = {
    "hip_over_ef": ("hip", "ef"),
    "hip_over_ef_native": ("hip", "ef_native"),
    "autograd_over_hip": ("autograd", "hip"),
    "fd_over_hip": ("fd", "hip"),
    "mace_hessian_over_hip": ("mace_hessian", "hip"),
}
COLUMNS = {
    "atoms": "number of atoms N of the molecule",
    "formula": "its formula (see 'molecules')",
    "mace_edges": "directed edges within the backbone's r_max (backbone_edges for other backbones)",
    "head_pairs": "ordered atom pairs within the head's hessian_cutoff",
    "ef_ms": "energy + forces through the adapter, hip(graph, compute_hessian=False), ms",
    "ef_native_ms": "energy + forces of the bare backbone, adapter.native_energy_forces(graph), ms",
    "hip_ms": "energy + forces + Hessian with the HIP head, hip(graph), ms",
    "autograd_ms": "energy + forces + exact Hessian by batched VJPs "
    "(wrap(backbone, hessian='autograd')), ms",
    "fd_ms": "Hessian by central differences of the bare backbone's forces (6N E+F calls, "
    "step --fd-step), ms",
    "mace_hessian_ms": "MACE's own model(data, compute_force=True, compute_hessian=True), ms "
    "(MACE only)",
    "*_peak_mb": "peak resident-set growth during the timed calls over the RSS right before "
    "them (CPU, fresh child process) or torch.cuda.max_memory_allocated growth (CUDA), MiB",
    "hip_over_ef": "hip_ms / ef_ms (target: <= 2)",
    "hip_over_ef_native": "hip_ms / ef_native_ms",
    "autograd_over_hip": "autograd_ms / hip_ms",
    "fd_over_hip": "fd_ms / hip_ms",
    "mace_hessian_over_hip": "mace_hessian_ms / hip_ms (target: >= 100 at 30 atoms; MACE only)",
    "skipped": "method -> why its columns are null",
    "raw": "method -> every timed call (ms), baseline RSS (MiB), repeats, memory method",
}
MIB = 2.0**20


def methods_for(backbone: str) -> tuple[str, ...]:
    """The methods run for ``backbone`` (MACE's own Hessian only for MACE)."""
    return METHODS if backbone == "mace" else tuple(m for m in METHODS if m != "mace_hessian")


def ratios_for(backbone: str) -> dict[str, tuple[str, str]]:
    """The ratios reported for ``backbone`` (those of :func:`methods_for` only)."""
    methods = methods_for(backbone)
    return {k: v for k, v in RATIOS.items() if v[0] in methods and v[1] in methods}


# ======================================================================================
# molecules
# ======================================================================================
_BOND = 1.54  # Å, heavy-heavy bond of the diamond lattice
_XH_BOND = {6: 1.09, 7: 1.01, 8: 0.96}  # Å
_VALENCE = {6: 4, 7: 3, 8: 2}
_TETRAHEDRAL = np.array([(1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)])

Site = tuple[int, int, int]


def _lattice_neighbours(site: Site) -> list[Site]:
    """The 4 diamond-lattice neighbours of ``site`` (integer units of 1.54 Å / √3)."""
    sign = 1 if sum(site) % 4 == 0 else -1
    return [
        (site[0] + sign * a, site[1] + sign * b, site[2] + sign * c) for a, b, c in _TETRAHEDRAL
    ]


def composition(num_atoms: int) -> tuple[int, int, int]:
    """Heavy-atom count and numbers of O and N of the generated molecule with ``num_atoms`` atoms.

    A saturated acyclic molecule with h heavy atoms, ``n_o`` oxygens and ``n_n`` nitrogens has
    ``3h + 2 - 2 n_o - n_n`` atoms. About one heavy atom in eight is O and one in eight N; the
    smallest h that reaches ``num_atoms`` is taken and the surplus (0 to 2) is removed with one
    more O or N.

    Args:
        num_atoms: the atom count N, at least 3.

    Returns:
        (heavy atoms, oxygens, nitrogens).

    Raises:
        ValueError: ``num_atoms`` < 3.
    """
    if num_atoms < 3:
        raise ValueError(f"molecules need at least 3 atoms; got {num_atoms}")
    heavy = 1
    while True:
        n_o = n_n = heavy // 8
        total = 3 * heavy + 2 - 2 * n_o - n_n
        if total >= num_atoms:
            surplus = total - num_atoms
            return heavy, n_o + surplus // 2, n_n + surplus % 2
        heavy += 1


def organic_molecule(num_atoms: int, seed: int = 0):
    """A deterministic, compact, saturated H/C/N/O molecule with exactly ``num_atoms`` atoms.

    See the module docstring for the construction.

    Args:
        num_atoms: atom count, at least 3.
        seed: seeds the tie-breaking jitter and the heteroatom and hydrogen placement.

    Returns:
        ``ase.Atoms`` (non-periodic, centred at the centre of mass).

    Raises:
        ValueError: ``num_atoms`` < 3.
    """
    from ase import Atoms

    heavy, n_o, n_n = composition(num_atoms)
    rng = np.random.default_rng([seed, num_atoms])
    sites: list[Site] = [(0, 0, 0)]
    index: dict[Site, int] = {(0, 0, 0): 0}
    bonds: list[tuple[int, int]] = []

    def free_site(site: Site, parent: Site) -> bool:
        # empty, closes no ring, and shares no empty neighbour site with another heavy atom
        if site in index:
            return False
        for other in _lattice_neighbours(site):
            if other == parent:
                continue
            if other in index or any(u != site and u in index for u in _lattice_neighbours(other)):
                return False
        return True

    while len(sites) < heavy:
        centroid = np.mean(sites, axis=0)
        best: tuple[float, int, Site] | None = None
        for i, site in enumerate(sites):
            for candidate in _lattice_neighbours(site):
                if free_site(candidate, site):
                    score = float(np.sum((np.array(candidate) - centroid) ** 2)) + 2 * rng.random()
                    if best is None or score < best[0]:
                        best = (score, i, candidate)
        if best is None:  # cannot happen on an infinite lattice; kept as a guard
            raise RuntimeError(f"molecule generator got stuck at {len(sites)} heavy atoms")
        _, parent, site = best
        index[site] = len(sites)
        sites.append(site)
        bonds.append((parent, index[site]))

    neighbours: list[list[int]] = [[] for _ in range(heavy)]
    for a, b in bonds:
        neighbours[a].append(b)
        neighbours[b].append(a)
    numbers = np.full(heavy, 6)
    for element, count in ((8, n_o), (7, n_n)):
        order = sorted(
            rng.permutation(heavy).tolist(),
            key=lambda i: any(numbers[j] != 6 for j in neighbours[i]),
        )
        eligible = [i for i in order if numbers[i] == 6 and len(neighbours[i]) <= _VALENCE[element]]
        if len(eligible) < count:
            raise RuntimeError(f"no room for {count} atoms of Z={element} in {num_atoms} atoms")
        numbers[eligible[:count]] = element

    scale = _BOND / math.sqrt(3.0)
    positions = [np.array(site, dtype=float) * scale for site in sites]
    symbols = numbers.tolist()
    for i, site in enumerate(sites):
        empty = [s for s in _lattice_neighbours(site) if s not in index]
        num_h = _VALENCE[int(numbers[i])] - len(neighbours[i])
        for k in rng.permutation(len(empty))[:num_h]:
            direction = (np.array(empty[k]) - np.array(site)) / math.sqrt(3.0)
            positions.append(positions[i] + _XH_BOND[int(numbers[i])] * direction)
            symbols.append(1)
    atoms = Atoms(numbers=symbols, positions=np.array(positions))
    atoms.positions -= atoms.get_center_of_mass()
    if len(atoms) != num_atoms:  # guard the bookkeeping above
        raise RuntimeError(f"generated {len(atoms)} atoms instead of {num_atoms}")
    if num_atoms > 1 and atoms.get_all_distances()[np.triu_indices(num_atoms, 1)].min() < 0.9:
        raise RuntimeError("generated molecule has atoms closer than 0.9 Å")
    return atoms


# ======================================================================================
# settings
# ======================================================================================
@dataclass
class Settings:
    """Everything one benchmark run depends on (stored in the JSON as ``settings``)."""

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
    fd_step: float = 1e-3
    threads: int | None = None
    isolation: str = "process"
    timeout: float = 1800.0
    seed: int = 0


def _skip_reason(
    method: str,
    atoms: int,
    settings: Settings,
    last: dict[str, tuple[int, float, float | None]] | None = None,
) -> str | None:
    """Why ``method`` is not run at ``atoms`` atoms, or None.

    Args:
        method: one of :data:`METHODS`.
        atoms: the molecule size.
        settings: the run's settings (the ``max_*_atoms`` limits).
        last: method -> (atoms, ms, peak MiB) of its largest measurement so far, quoted.
    """
    from hip_head.autograd import DEFAULT_SEED_ATOM_BUDGET

    limits = {
        "autograd": (
            "--max-autograd-atoms",
            settings.max_autograd_atoms,
            ": 3N double-backward VJPs, batched by vmap in chunks of "
            f"{DEFAULT_SEED_ATOM_BUDGET} seed-atoms",
        ),
        "fd": (
            "--max-fd-atoms",
            settings.max_fd_atoms,
            f": finite differences need 6N = {6 * atoms} E+F calls",
        ),
        "mace_hessian": (
            "--max-mace-hessian-atoms",
            settings.max_mace_hessian_atoms,
            ": MACE's compute_hessian takes 3N VJPs in chunks of 1 to 16",
        ),
    }
    if method in limits:
        flag, limit, why = limits[method]
        if limit is not None and atoms > limit:
            reason = f"N = {atoms} > {flag} {limit}{why}"
            if last and method in last:
                done, ms, peak = last[method]
                reason += f" (at {done} atoms one call took {ms / 1e3:.3g} s"
                reason += f" and {_fmt(peak)} MiB)" if peak is not None else ")"
            return reason
    return None


# ======================================================================================
# memory and timing helpers (run where the models live)
# ======================================================================================
def _proc_status_mib(key: str) -> float | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MiB, or None."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024 / MIB
    except OSError:
        return None
    return None


def _maxrss_mib() -> float:
    """``ru_maxrss`` of this process in MiB (kB on Linux, bytes on macOS)."""
    import resource

    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / MIB if sys.platform == "darwin" else value * 1024 / MIB


def _malloc_trim() -> None:
    """Hand freed heap memory back to the OS (glibc only; a no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_high_water_mark() -> bool:
    """Reset the kernel's peak RSS (``VmHWM``) to the current RSS; False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class _MemoryProbe:
    """Peak memory growth over a stretch of code: RSS on CPU, the CUDA allocator on CUDA.

    Args:
        device: the torch device the models run on.
        fresh_process: the process is a fresh child (so, without a resettable high-water mark,
            the high-water mark since the child started is still meaningful).
    """

    def __init__(self, device: Any, fresh_process: bool) -> None:
        self.device = device
        self.fresh_process = fresh_process
        self.method = "unavailable"
        self.baseline_mib: float | None = None

    def can_reset(self) -> bool:
        """Whether the peak can be reset, so :meth:`start` may come after the warm-up."""
        if self.device.type == "cuda":
            return True
        return _proc_status_mib("VmRSS") is not None and _reset_high_water_mark()

    def start(self) -> None:
        """Record the baseline; call right before the code to measure."""
        import torch

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_mib = torch.cuda.memory_allocated(self.device) / MIB
            self.method = "torch.cuda.max_memory_allocated - memory_allocated before"
            return
        _malloc_trim()
        rss = _proc_status_mib("VmRSS")
        if rss is not None and _reset_high_water_mark():
            self.baseline_mib = rss
            self.method = "VmHWM - VmRSS after warm-up, malloc_trim and clear_refs reset"
        elif self.fresh_process:
            self.baseline_mib = rss if rss is not None else _maxrss_mib()
            self.method = "peak RSS of the child since fork - RSS before warm-up"

    def stop(self) -> float | None:
        """Peak growth since :meth:`start` in MiB (None if it cannot be measured here)."""
        import torch

        if self.baseline_mib is None:
            return None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / MIB - self.baseline_mib
        peak = _proc_status_mib("VmHWM")
        peak = _maxrss_mib() if peak is None else peak
        return max(peak - self.baseline_mib, 0.0)


def _sync(device: Any) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


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


class _Models:
    """The backbone, its two wrappings and the molecules of one run (built once per process).

    Args:
        settings: the run's settings.
    """

    def __init__(self, settings: Settings) -> None:
        import torch

        import hip_head

        self.settings = settings
        self.dtype = getattr(torch, settings.dtype)
        self.device = torch.device(settings.device)
        self.backbone = build_backbone(settings).to(self.device)
        self.hip = hip_head.wrap(self.backbone)
        self.hip_autograd = hip_head.wrap(self.backbone, hessian="autograd")
        self.adapter = self.hip.adapter
        self._graphs: dict[int, Any] = {}

    def info(self) -> dict[str, Any]:
        """Versions, threads and model sizes, as seen by the measuring process."""
        import torch

        info: dict[str, Any] = {
            "torch_threads": torch.get_num_threads(),
            "backbone": type(self.backbone).__name__,
            "adapter": type(self.adapter).__name__,
            "backbone_parameters": sum(p.numel() for p in self.backbone.parameters()),
            "head_parameters": sum(p.numel() for p in self.hip.readout.parameters()),
            "head": self.hip.readout.extra_repr(),
            "node_irreps": str(self.adapter.node_irreps),
            "r_max": self.adapter.cutoff,
            "hessian_cutoff": self.hip.readout.hessian_cutoff,
        }
        if self.device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(self.device)
        return info

    def graph(self, atoms: int) -> Any:
        """The molecule with ``atoms`` atoms as an ``AtomicGraph`` (cached)."""
        from hip_head import AtomicGraph

        if atoms not in self._graphs:
            molecule = organic_molecule(atoms, seed=self.settings.seed)
            self._graphs[atoms] = AtomicGraph.from_ase(molecule, dtype=self.dtype).to(self.device)
        return self._graphs[atoms]

    def describe(self, atoms: int) -> dict[str, Any]:
        """Formula, edge and pair counts and size of the molecule with ``atoms`` atoms."""
        from hip_head import build_pair_graph
        from hip_head.adapters.mace import radius_edges

        molecule = organic_molecule(atoms, seed=self.settings.seed)
        graph = self.graph(atoms)
        edges, _ = radius_edges(graph, self.adapter.cutoff)
        pairs = build_pair_graph(graph, self.hip.readout.hessian_cutoff)
        distances = molecule.get_all_distances()[np.triu_indices(atoms, 1)]
        edges_key = "mace_edges" if self.settings.backbone == "mace" else "backbone_edges"
        return {
            "formula": molecule.get_chemical_formula(),
            edges_key: int(edges.shape[1]),
            "head_pairs": int(pairs.index.shape[1]),
            "radius_of_gyration_A": round(float(np.sqrt((molecule.positions**2).sum(1).mean())), 3),
            "min_distance_A": round(float(distances.min()), 3),
        }

    def method(self, name: str, graph: Any) -> Callable[[], Any]:
        """A zero-argument callable running method ``name`` on ``graph``."""
        import torch

        from hip_head.autograd import finite_difference_hessian

        hip, adapter, backbone, dtype = self.hip, self.adapter, self.backbone, self.dtype

        def mace_hessian() -> torch.Tensor:
            previous = torch.get_default_dtype()
            torch.set_default_dtype(dtype)  # MACE builds its VJP seeds in the default dtype
            try:
                with torch.enable_grad():
                    data = adapter.input_dict(graph, graph.positions.detach().clone())
                    out = backbone(data, training=False, compute_force=True, compute_hessian=True)
            finally:
                torch.set_default_dtype(previous)
            return out["hessian"].detach()

        def forces(positions: torch.Tensor) -> torch.Tensor:
            return adapter.native_energy_forces(graph.with_positions(positions))[1]

        methods: dict[str, Callable[[], Any]] = {
            "ef": lambda: hip(graph, compute_hessian=False),
            "ef_native": lambda: adapter.native_energy_forces(graph),
            "hip": lambda: hip(graph),
            "autograd": lambda: self.hip_autograd(graph),
            "fd": lambda: finite_difference_hessian(
                forces, graph.positions, step=self.settings.fd_step
            ),
            "mace_hessian": mace_hessian,
        }
        return methods[name]

    def measure(self, atoms: int, name: str, fresh_process: bool) -> dict[str, Any]:
        """Time method ``name`` at ``atoms`` atoms and measure its peak memory.

        Args:
            atoms: molecule size.
            name: one of :data:`METHODS`.
            fresh_process: this process exists only for this measurement.

        Returns:
            ``{"ms": median, "min_ms", "times_ms", "peak_mb", "baseline_mb", "repeats",
            "warmup_calls", "warmup_s", "memory_method"}``.
        """
        import torch

        graph = self.graph(atoms)
        run = self.method(name, graph)
        # FD is 6N calls of the bare E+F at this size: warming that up warms FD exactly
        warm_up = self.method("ef_native", graph) if name == "fd" else run
        settings = self.settings
        probe = _MemoryProbe(self.device, fresh_process)
        with torch.no_grad():
            early = not probe.can_reset()  # no resettable peak: count the warm-up too
            if early:
                probe.start()
            warmup_calls, warmup_s = 0, 0.0
            while warmup_calls < settings.warmup and warmup_s < settings.warmup_budget:
                start = time.perf_counter()
                warm_up()
                _sync(self.device)
                warmup_s += time.perf_counter() - start
                warmup_calls += 1
            if not early:
                probe.start()
            times: list[float] = []
            while not times or (
                len(times) < settings.repeats and sum(times) < 1e3 * settings.repeat_budget
            ):
                _sync(self.device)
                start = time.perf_counter()
                run()
                _sync(self.device)
                times.append((time.perf_counter() - start) * 1e3)
            peak = probe.stop()
        return {
            "ms": statistics.median(times),
            "min_ms": min(times),
            "times_ms": times,
            "peak_mb": peak,
            "baseline_mb": probe.baseline_mib,
            "repeats": len(times),
            "warmup_calls": warmup_calls,
            "warmup_s": warmup_s,
            "memory_method": probe.method,
        }


# ======================================================================================
# runners: where the measurements happen
# ======================================================================================
class _InProcessRunner:
    """Measures in this process (CUDA, or ``--isolation none``: CPU peaks are then approximate).

    Args:
        settings: the run's settings.
    """

    def __init__(self, settings: Settings) -> None:
        import torch

        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.models = _Models(settings)
        self.info = self.models.info()

    def describe(self, atoms: int) -> dict[str, Any]:
        """See :meth:`_Models.describe`."""
        return self.models.describe(atoms)

    def measure(self, atoms: int, method: str) -> dict[str, Any]:
        """See :meth:`_Models.measure`; errors come back as ``{"ok": False, "error"}``."""
        try:
            return {"ok": True, **self.models.measure(atoms, method, fresh_process=False)}
        except Exception as err:  # reported in the JSON; the run goes on
            return {"ok": False, "error": f"{type(err).__name__}: {err}"}

    def close(self) -> None:
        """Nothing to release."""


class _ProcessRunner:
    """Measures each (size, method) in a fresh child forked from a helper process.

    The helper (``speed.py --zygote``) imports torch and builds the models once, with one
    thread, then forks a child per measurement; requests and replies are JSON lines on its
    stdin / stdout.

    Args:
        settings: the run's settings.
    """

    def __init__(self, settings: Settings) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.info = self._request(asdict(settings))["info"]

    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(
                f"the benchmark helper process exited (status {self.proc.wait()}); "
                "see its messages above"
            )
        reply = json.loads(line)
        if "fatal" in reply:
            raise RuntimeError(f"the benchmark helper failed: {reply['fatal']}")
        return reply

    def describe(self, atoms: int) -> dict[str, Any]:
        """See :meth:`_Models.describe`."""
        return self._request({"cmd": "describe", "atoms": atoms})

    def measure(self, atoms: int, method: str) -> dict[str, Any]:
        """See :meth:`_Models.measure`, run in a fresh child process."""
        return self._request({"cmd": "measure", "atoms": atoms, "method": method})

    def close(self) -> None:
        """Stop the helper process."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def _run_in_fork(
    task: Callable[[], dict[str, Any]], threads: int, timeout: float
) -> dict[str, Any]:
    """Run ``task`` in a forked child with ``threads`` torch threads; its result or an error."""
    import torch

    read_end, write_end = os.pipe()
    gc.freeze()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_end)
        try:
            torch.set_num_threads(threads)
            result = {"ok": True, **task()}
        except BaseException as err:  # reported to the parent
            result = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        with os.fdopen(write_end, "wb") as handle:
            handle.write(json.dumps(result).encode())
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    os.close(write_end)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    timed_out = False
    with os.fdopen(read_end, "rb", buffering=0) as handle:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                os.kill(pid, signal.SIGKILL)
                break
            ready, _, _ = select.select([handle], [], [], remaining)
            if ready:
                chunk = handle.read(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if timed_out:
        return {"ok": False, "error": f"timeout: still running after --timeout {timeout:g} s"}
    if not chunks:
        if os.WIFSIGNALED(status):
            how = f"killed by signal {os.WTERMSIG(status)} (out of memory?)"
        else:
            how = f"exit status {os.WEXITSTATUS(status)}"
        return {"ok": False, "error": f"measuring process died: {how}"}
    return json.loads(b"".join(chunks))


def _zygote_main() -> int:
    """The helper process of :class:`_ProcessRunner` (``speed.py --zygote``)."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed goes to stderr, stdout carries the replies only
    settings = Settings(**json.loads(sys.stdin.readline()))
    try:
        import torch

        threads = settings.threads or torch.get_num_threads()
        torch.set_num_threads(1)  # no OpenMP pool before fork(): children would hang on it
        models = _Models(settings)
        info = {**models.info(), "torch_threads": threads}
        gc.collect()
        gc.freeze()  # the children's gc.collect() then neither walks nor copies these objects
    except Exception as err:  # reported to the parent, which stops
        protocol.write(json.dumps({"fatal": f"{type(err).__name__}: {err}"}) + "\n")
        return 1
    protocol.write(json.dumps({"ready": True, "info": info}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        if request["cmd"] == "quit":
            break
        atoms = int(request["atoms"])
        try:
            if request["cmd"] == "describe":
                reply = models.describe(atoms)
            else:
                models.graph(atoms)  # built here once, inherited by the children

                def task(atoms: int = atoms, method: str = request["method"]) -> dict[str, Any]:
                    return models.measure(atoms, method, fresh_process=True)

                reply = _run_in_fork(task, threads, settings.timeout)
        except Exception as err:  # reported to the parent, which stops
            reply = {"fatal": f"{type(err).__name__}: {err}"}
        protocol.write(json.dumps(reply) + "\n")
    return 0


# ======================================================================================
# the run
# ======================================================================================
def machine_info(settings: Settings) -> dict[str, Any]:
    """Platform, CPU model, core count, package versions, dtype, device and date."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    packages = ["torch", "e3nn", "mace-torch", "hip-head", "numpy"]
    if settings.backbone != "mace":
        packages.append(BACKBONES[settings.backbone]["package"])
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "versions": versions,
        "dtype": settings.dtype,
        "device": settings.device,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    tmp.replace(path)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_benchmark(settings: Settings, out: Path | None = None) -> dict[str, Any]:
    """Run every method at every size; the JSON at ``out`` is rewritten after each size.

    Args:
        settings: what to run.
        out: JSON path (None: do not write).

    Returns:
        The results (``machine``, ``settings``, ``molecules``, ``columns``, ``rows``).
    """
    results: dict[str, Any] = {
        "benchmark": "hip-head speed: backbone E+F vs HIP E+F+H vs exact Hessians",
        "machine": machine_info(settings),
        "settings": asdict(settings),
        "methods": list(methods_for(settings.backbone)),
        "molecules": "saturated acyclic H/C/N/O molecules from organic_molecule() in "
        "benchmarks/speed.py: diamond-lattice heavy atoms grown compactly (liquid-like "
        "density), ~1/8 O and ~1/8 N, deterministic (seed settings.seed)",
        "columns": COLUMNS,
        "rows": [],
    }
    runner_cls = _InProcessRunner if settings.isolation == "none" else _ProcessRunner
    runner = runner_cls(settings)
    try:
        results["machine"].update(runner.info)
        _log(
            f"speed benchmark ({settings.backbone}): {results['machine']['cpu']}, "
            f"{settings.device}, {settings.dtype}, "
            f"{runner.info['torch_threads']} threads, isolation {settings.isolation}"
        )
        last: dict[str, tuple[int, float, float | None]] = {}
        for atoms in sorted(set(settings.sizes)):
            row: dict[str, Any] = {"atoms": atoms, **runner.describe(atoms)}
            skipped: dict[str, str] = {}
            raw: dict[str, Any] = {}
            for method in methods_for(settings.backbone):
                reason = _skip_reason(method, atoms, settings, last)
                result = None if reason else runner.measure(atoms, method)
                if result is not None and not result["ok"]:
                    reason = result["error"]
                if reason:
                    row[f"{method}_ms"] = row[f"{method}_peak_mb"] = None
                    skipped[method] = reason
                    _log(f"[{atoms:4d} atoms] {method:13s} skipped: {reason}")
                    continue
                row[f"{method}_ms"] = result["ms"]
                row[f"{method}_peak_mb"] = result["peak_mb"]
                last[method] = (atoms, result["ms"], result["peak_mb"])
                if result["peak_mb"] is None:
                    skipped[f"{method}_peak_mb"] = "peak memory not measurable here"
                raw[method] = {k: v for k, v in result.items() if k not in ("ok", "ms")}
                _log(
                    f"[{atoms:4d} atoms] {method:13s} {result['ms']:11.2f} ms   "
                    f"peak {_fmt(result['peak_mb'])} MiB"
                )
            for name, (num, den) in ratios_for(settings.backbone).items():
                a, b = row[f"{num}_ms"], row[f"{den}_ms"]
                row[name] = a / b if a is not None and b else None
            row["skipped"] = skipped
            row["raw"] = raw
            results["rows"].append(row)
            if out is not None:
                _write_json(out, results)
    finally:
        runner.close()
    return results


# ======================================================================================
# output: markdown and plot
# ======================================================================================
def _fmt(value: float | None, ratio: bool = False) -> str:
    """Compact number for tables: 3 significant figures, no exponent below 1e6."""
    if value is None:
        return "—"
    if ratio:
        return f"{value:.2f}" if value < 10 else f"{value:.0f}"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def markdown(results: dict[str, Any]) -> str:
    """Markdown tables (times, ratios, peak memory) for ``docs/benchmarks.md``."""
    machine, settings = results["machine"], results["settings"]
    mace = settings.get("backbone", "mace") == "mace"
    methods = results.get("methods", METHODS)
    versions = machine["versions"]
    if mace:
        packages = f"mace-torch {versions['mace-torch']}"
    else:
        package = BACKBONES[settings["backbone"]]["package"]
        packages = f"{package} {versions.get(package)}"
    ratio_keys = ["hip_over_ef", "autograd_over_hip"] + (["mace_hessian_over_hip"] if mace else [])
    lines = [
        f"Machine: {machine['cpu']} ({machine.get('gpu', 'CPU')}), {machine['cpus_usable']} "
        f"usable cores, {machine['torch_threads']} torch threads; torch "
        f"{versions['torch']}, e3nn {versions['e3nn']}, {packages}; {machine['date']}.",
        f"Backbone: {backbone_config(settings)}, {settings['dtype']} on {settings['device']}; "
        f"HIP head defaults ({machine['head']}). Median of {settings['repeats']} calls after "
        f"{settings['warmup']} warm-up calls (fewer where calls take over "
        f"{settings['repeat_budget']:g} s / {settings['warmup_budget']:g} s in all).",
        "",
        "| atoms | formula | E+F (ms) | bare E+F (ms) | HIP E+F+H (ms) | autograd H (ms) "
        "| FD H (ms) | "
        + ("MACE H (ms) | " if mace else "")
        + "HIP / E+F | autograd / HIP |"
        + (" MACE H / HIP |" if mace else ""),
        "|---:|:---|" + "---:|" * (len(methods) + len(ratio_keys)),
    ]
    for row in results["rows"]:
        times = " | ".join(_fmt(row[f"{m}_ms"]) for m in methods)
        ratios = " | ".join(_fmt(row[k], ratio=True) for k in ratio_keys)
        lines.append(f"| {row['atoms']} | {row['formula']} | {times} | {ratios} |")
    lines += [
        "",
        "Peak memory above the loaded model (MiB):",
        "",
        "| atoms | E+F | bare E+F | HIP E+F+H | autograd H | FD H |"
        + (" MACE H |" if mace else ""),
        "|---:|" + "---:|" * len(methods),
    ]
    for row in results["rows"]:
        peaks = " | ".join(_fmt(row[f"{m}_peak_mb"]) for m in methods)
        lines.append(f"| {row['atoms']} | {peaks} |")
    notes = sorted({f"{m}: {why}" for row in results["rows"] for m, why in row["skipped"].items()})
    if notes:
        lines += ["", "Skipped (—):", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Log-log wall time and peak memory against atom count, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    machine, settings = results["machine"], results["settings"]
    sizes = [row["atoms"] for row in results["rows"]]
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(12, 4.8))
    markers = dict(zip(METHODS, "os^vDx"))
    for method in results.get("methods", METHODS):
        for ax, suffix in ((ax_time, "ms"), (ax_mem, "peak_mb")):
            points = [
                (row["atoms"], row[f"{method}_{suffix}"])
                for row in results["rows"]
                if row[f"{method}_{suffix}"] is not None and row[f"{method}_{suffix}"] > 0
            ]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker=markers[method], label=LABELS[method])
    target = [(row["atoms"], 2 * row["ef_ms"]) for row in results["rows"] if row["ef_ms"]]
    if target:
        xs, ys = zip(*target)
        ax_time.plot(xs, ys, "k:", linewidth=1, label="2 × E+F (target for HIP)")
    for ax, ylabel in (
        (ax_time, "wall time per call (ms)"),
        (ax_mem, "peak memory above loaded model (MiB)"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes)
        ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("atoms")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_time.legend(fontsize=8)
    where = machine.get("gpu") or machine["cpu"]
    name = settings.get("backbone", "mace")
    model = "MACE" if name == "mace" else {"eqv2": "EquiformerV2"}.get(name, name)
    model = {"schnet": "SchNet", "visnet": "ViSNet", "uma": "UMA"}.get(model, model)
    fig.suptitle(
        f"hip-head speed: {where}, {settings['device']}, {settings['dtype']}, "
        f"{machine['torch_threads']} threads; {model} {settings['channels']} ch × "
        f"{settings['num_interactions']} layers",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)


# ======================================================================================
# command line
# ======================================================================================
def _limit(text: str) -> int | None:
    """``--max-*-atoms`` value: an int, or ``none`` for no limit."""
    return None if text.lower() in ("none", "inf") else int(text)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see ``--help``)."""
    parser = argparse.ArgumentParser(
        description="Time HIP's E+F+Hessian against the backbone's E+F, the autograd Hessian, "
        "finite differences and MACE's compute_hessian; write JSON, a plot and markdown.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[5, 10, 20, 30, 60, 100, 200], help="atom counts"
    )
    parser.add_argument(
        "--dtype", choices=("float32", "float64"), default="float32", help="model dtype"
    )
    parser.add_argument(
        "--backbone",
        choices=tuple(BACKBONES),
        default="mace",
        help="random backbone to wrap (uma: fairchem-core 2.x, eqv2: fairchem-core 1.x)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument(
        "--channels",
        type=int,
        default=None,
        help="backbone channels (default per backbone: "
        + ", ".join(f"{k} {v['channels']}" for k, v in BACKBONES.items())
        + ")",
    )
    parser.add_argument(
        "--num-interactions",
        type=int,
        default=None,
        help="backbone layers (default: "
        + ", ".join(f"{k} {v['num_interactions']}" for k, v in BACKBONES.items())
        + ")",
    )
    parser.add_argument(
        "--max-ell",
        type=int,
        default=None,
        help="spherical-harmonic l max of the backbone "
        "(MACE edges; ViSNet, UMA, EquiformerV2 node features; default: "
        + ", ".join(f"{k} {v['max_ell']}" for k, v in BACKBONES.items() if k != "schnet")
        + ")",
    )
    parser.add_argument("--correlation", type=int, default=3, help="MACE body order")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls (median reported)")
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed calls before timing (TorchScript warm-up)"
    )
    parser.add_argument(
        "--warmup-budget",
        type=float,
        default=10.0,
        help="stop warming up once warm-up calls took this many seconds",
    )
    parser.add_argument(
        "--repeat-budget",
        type=float,
        default=60.0,
        help="stop repeating once timed calls took this many seconds (at least one call)",
    )
    parser.add_argument(
        "--max-autograd-atoms",
        type=_limit,
        default=30,
        help="skip (c) above this ('none': never); ~5 GB and 25 s at 30 atoms, 64 channels",
    )
    parser.add_argument("--max-fd-atoms", type=_limit, default=60, help="skip (d) above this")
    parser.add_argument(
        "--max-mace-hessian-atoms", type=_limit, default=60, help="skip (e) above this"
    )
    parser.add_argument("--fd-step", type=float, default=1e-3, help="FD displacement, Å")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: leave)")
    parser.add_argument(
        "--isolation",
        choices=("auto", "process", "none"),
        default="auto",
        help="process: each measurement in a fresh child (CPU default); none: in this process "
        "(CUDA default; CPU peak memory is then approximate)",
    )
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds per measurement (process mode)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the model and molecules")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON (default docs/benchmarks/speed_{cpu,cuda}.json for MACE, "
        "speed_{cpu,cuda}_<backbone>.json for the others)",
    )
    parser.add_argument(
        "--plot", type=Path, default=None, help="PNG (default: the JSON's name, .png)"
    )
    parser.add_argument("--zygote", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.zygote:
        if min(args.sizes) < 3:
            parser.error("--sizes must be at least 3 atoms")
        if args.repeats < 1 or args.warmup < 0:
            parser.error("--repeats must be at least 1 and --warmup at least 0")
        cuda = args.device.startswith("cuda")
        if args.isolation == "auto":
            args.isolation = "none" if cuda else "process"
        if cuda:
            import torch

            if not torch.cuda.is_available():
                parser.error(f"--device {args.device}: this torch build sees no CUDA device")
        if cuda and args.isolation == "process":
            parser.error("--isolation process cannot fork after CUDA starts; use none on CUDA")
        if args.isolation == "process" and not hasattr(os, "fork"):
            args.isolation = "none"
        kind = "cuda" if cuda else "cpu"
        if args.backbone != "mace":
            kind += f"_{args.backbone}"
        args.out = args.out or REPO / "docs" / "benchmarks" / f"speed_{kind}.json"
        args.plot = args.plot or REPO / "docs" / "benchmarks" / f"speed_{kind}.png"
        defaults = BACKBONES[args.backbone]
        for key in ("channels", "num_interactions", "max_ell"):
            if getattr(args, key) is None:
                setattr(args, key, defaults[key])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the markdown tables. Returns an exit code."""
    args = parse_args(argv)
    if args.zygote:
        return _zygote_main()
    settings = Settings(
        sizes=list(args.sizes),
        backbone=args.backbone,
        dtype=args.dtype,
        device=args.device,
        channels=args.channels,
        num_interactions=args.num_interactions,
        max_ell=args.max_ell,
        correlation=args.correlation,
        repeats=args.repeats,
        warmup=args.warmup,
        warmup_budget=args.warmup_budget,
        repeat_budget=args.repeat_budget,
        max_autograd_atoms=args.max_autograd_atoms,
        max_fd_atoms=args.max_fd_atoms,
        max_mace_hessian_atoms=args.max_mace_hessian_atoms,
        fd_step=args.fd_step,
        threads=args.threads,
        isolation=args.isolation,
        timeout=args.timeout,
        seed=args.seed,
    )
    results = run_benchmark(settings, out=args.out)
    plot(results, args.plot)
    print(markdown(results))
    _log(f"wrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
