"""Where a measurement was taken: one description of the machine for benchmark and script output.

Every JSON file a benchmark or a training script writes names the machine the same way, so
numbers from different runs can be compared (or told apart) by reading one ``"machine"`` entry.
The description holds no hostname, user name or path.
"""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Iterable
from importlib import metadata
from typing import Any

__all__ = ["BASE_PACKAGES", "cpu_model", "machine_description", "package_versions"]

#: Packages whose versions every description lists (more can be asked for).
BASE_PACKAGES: tuple[str, ...] = ("torch", "e3nn", "numpy", "hip-head")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows.

    Returns:
        e.g. ``"AMD EPYC"``; ``platform.processor()`` or ``platform.machine()`` (``"x86_64"``)
        where ``/proc/cpuinfo`` is missing or names no model; ``"unknown"`` if all are empty.
    """
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def package_versions(packages: Iterable[str] = ()) -> dict[str, str | None]:
    """Installed versions of :data:`BASE_PACKAGES` and ``packages``.

    Args:
        packages: extra distribution names (``"mace-torch"``, ``"fairchem-core"``, ...).

    Returns:
        Distribution name -> version string, or None where it is not installed; the base
        packages first, then the extras in the order given, each once.
    """
    versions: dict[str, str | None] = {}
    for package in dict.fromkeys((*BASE_PACKAGES, *packages)):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _usable_cores() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count()


def _gpu_name(device: str | None) -> str | None:
    """Name of the CUDA device ``device`` (None: the current one if CUDA is available)."""
    if device is not None and not str(device).startswith("cuda"):
        return None
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(None if device is None else torch.device(device))


def machine_description(
    packages: Iterable[str] = (), *, device: str | None = None
) -> dict[str, Any]:
    """Platform, CPU model, core counts, package versions, GPU and date of this machine.

    Args:
        packages: distribution names whose versions are listed besides :data:`BASE_PACKAGES`.
        device: the torch device the measurement runs on (``"cpu"``, ``"cuda:0"``). A CUDA
            device is named under ``"gpu"``; with ``"cpu"`` no GPU is named even if one is
            present; None names the current CUDA device when CUDA is available.

    Returns:
        ``{"platform": str, "python": str, "cpu": str, "cpu_count": int, "cpus_usable": int,
        "torch": str | None, "versions": {package: version | None}, "date": ISO 8601 UTC,
        ["gpu": str]}``; ``cpu_count`` counts the machine's logical cores, ``cpus_usable`` those
        this process may run on. Callers add what they set themselves (threads, dtype, device).

    Example:
        >>> info = machine_description(["ase"], device="cpu")
        >>> sorted(info)[:4]
        ['cpu', 'cpu_count', 'cpus_usable', 'date']
        >>> "gpu" in info
        False
    """
    versions = package_versions(packages)
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": _usable_cores(),
        "torch": versions["torch"],
        "versions": versions,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    gpu = _gpu_name(device)
    if gpu is not None:
        info["gpu"] = gpu
    return info
