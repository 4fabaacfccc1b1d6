"""Timing and peak memory of one method on one structure, where the models live.

:class:`Models` holds the backbone, its two wrappings and the structures of one run;
:meth:`Models.measure` warms a method up, times it and measures its peak memory with a
:class:`MemoryProbe` (resident set on CPU, the CUDA allocator on CUDA).
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from speed_molecules import min_distance, organic_molecule, small_molecule_batch
from speed_setup import BATCH, Settings, Structure, build_backbone

__all__ = ["MIB", "MemoryProbe", "Models", "proc_status_mib"]

MIB = 2.0**20


def proc_status_mib(key: str, pid: int | str = "self") -> float | None:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``) in MiB, or None."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024 / MIB
    except (OSError, ValueError, IndexError):
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


class MemoryProbe:
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
        return proc_status_mib("VmRSS") is not None and _reset_high_water_mark()

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
        rss = proc_status_mib("VmRSS")
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
        peak = proc_status_mib("VmHWM")
        peak = _maxrss_mib() if peak is None else peak
        return max(peak - self.baseline_mib, 0.0)


def _sync(device: Any) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


class Models:
    """The backbone, its two wrappings and the structures of one run (built once per process).

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
        self._molecules: dict[Structure, list[Any]] = {}
        self._graphs: dict[Structure, Any] = {}

    def info(self) -> dict[str, Any]:
        """Threads and model sizes, as seen by the measuring process."""
        import torch

        return {
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

    def molecules(self, structure: Structure) -> list[Any]:
        """The ``ase.Atoms`` of ``structure``: one generated molecule, or the batch (cached)."""
        if structure not in self._molecules:
            settings = self.settings
            if structure == BATCH:
                low, high = settings.batch_atoms
                self._molecules[structure] = small_molecule_batch(
                    settings.batch_molecules, low, high, seed=settings.seed
                )
            else:
                self._molecules[structure] = [organic_molecule(int(structure), seed=settings.seed)]
        return self._molecules[structure]

    def graph(self, structure: Structure) -> Any:
        """``structure`` as an ``AtomicGraph`` (one structure per molecule; cached)."""
        from hip_head import AtomicGraph

        if structure not in self._graphs:
            molecules = self.molecules(structure)
            source = molecules if structure == BATCH else molecules[0]
            graph = AtomicGraph.from_ase(source, dtype=self.dtype)
            self._graphs[structure] = graph.to(self.device)
        return self._graphs[structure]

    def describe(self, structure: Structure, counts: bool = True) -> dict[str, Any]:
        """Formula, edge and pair counts and size of ``structure``.

        Args:
            structure: an atom count, or :data:`BATCH`.
            counts: also count the backbone's edges and the head's pairs (builds both graphs).

        Returns:
            ``{"formula", "mace_edges" | "backbone_edges", "head_pairs",
            "radius_of_gyration_A", "min_distance_A"}`` (Å); for the batch also
            ``"molecules"`` and ``"atoms_per_molecule"`` [smallest, largest] and the largest
            radius of gyration; ``"atoms"`` counts all its atoms. Without ``counts`` the two
            counts are None.
        """
        from hip_head import build_pair_graph
        from hip_head.neighbors import radius_graph

        molecules = self.molecules(structure)
        edges_key = "mace_edges" if self.settings.backbone == "mace" else "backbone_edges"
        num_edges = num_pairs = None
        if counts:
            graph = self.graph(structure)
            edges, _ = radius_graph(
                graph.positions, self.adapter.cutoff, graph.batch, graph.cell, graph.pbc
            )
            num_edges = int(edges.shape[1])
            pairs = build_pair_graph(graph, self.hip.readout.hessian_cutoff)
            num_pairs = int(pairs.index.shape[1])
        gyration = [float(np.sqrt((m.positions**2).sum(1).mean())) for m in molecules]
        described: dict[str, Any] = {}
        if structure == BATCH:
            sizes = [len(m) for m in molecules]
            described = {
                "atoms": sum(sizes),
                "molecules": len(molecules),
                "atoms_per_molecule": [min(sizes), max(sizes)],
                "formula": f"{len(molecules)} molecules, {sum(sizes)} atoms",
            }
        else:
            described["formula"] = molecules[0].get_chemical_formula()
        return {
            **described,
            edges_key: num_edges,
            "head_pairs": num_pairs,
            "radius_of_gyration_A": round(max(gyration), 3),
            "min_distance_A": round(min(min_distance(m.positions) for m in molecules), 3),
        }

    def method(self, name: str, graph: Any) -> Callable[[], Any]:
        """A zero-argument callable running method ``name`` (see :data:`METHODS`) on ``graph``."""
        import torch

        from hip_head.autograd import finite_difference_hessian
        from hip_head.torch_state import default_dtype

        hip, adapter, backbone, dtype = self.hip, self.adapter, self.backbone, self.dtype

        def mace_hessian() -> torch.Tensor:
            # MACE builds its VJP seeds in the default dtype
            with default_dtype(dtype), torch.enable_grad():
                data = adapter.input_dict(graph, graph.positions.detach().clone())
                out = backbone(data, training=False, compute_force=True, compute_hessian=True)
            return out["hessian"].detach()

        def forces(positions: torch.Tensor) -> torch.Tensor:
            return adapter.native_energy_forces(graph.with_positions(positions))[1]

        methods: dict[str, Callable[[], Any]] = {
            "ef": lambda: hip(graph, compute_hessian=False),
            "ef_native": lambda: adapter.native_energy_forces(graph),
            "hip": lambda: hip(graph),
            "hip_blocks": lambda: hip(graph, hessian_output="blocks"),
            "autograd": lambda: self.hip_autograd(graph),
            "fd": lambda: finite_difference_hessian(
                forces, graph.positions, step=self.settings.fd_step
            ),
            "mace_hessian": mace_hessian,
        }
        return methods[name]

    def measure(self, structure: Structure, name: str, fresh_process: bool) -> dict[str, Any]:
        """Time method ``name`` on ``structure`` and measure its peak memory.

        Args:
            structure: an atom count, or :data:`BATCH`.
            name: one of :data:`METHODS`.
            fresh_process: this process exists only for this measurement.

        Returns:
            ``{"ms": median, "min_ms", "times_ms", "peak_mb", "baseline_mb", "repeats",
            "warmup_calls", "warmup_s", "memory_method"}`` (ms, MiB, s).
        """
        import torch

        graph = self.graph(structure)
        run = self.method(name, graph)
        # FD is 6N calls of the bare E+F at this size: warming that up warms FD exactly
        warm_up = self.method("ef_native", graph) if name == "fd" else run
        settings = self.settings
        probe = MemoryProbe(self.device, fresh_process)
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
