"""Single-structure properties from a HIP: energy, forces, frequencies, normal modes.

Functions for animating normal modes (:func:`mode_trajectory`, :func:`normal_mode_trajectory`,
:func:`write_mode_trajectories`), drawing a stick spectrum (:func:`plot_spectrum`) and
reporting one structure (:func:`predict_properties`, :func:`frequency_table`); the ``hip
predict`` and ``hip vib`` commands built on them are in :mod:`hip_head.chem.analysis_commands`.
Frequencies are the Eckart-projected ones of :func:`hip_head.vibrations.vibrational_analysis`
(cm⁻¹, imaginary ones negative); modes are indexed from 0 in ascending order of frequency, so
imaginary modes come first.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from hip_head.errors import InvalidArgumentError
from hip_head.vibrations import VibrationalAnalysis, vibrational_analysis

__all__ = [
    "frequency_table",
    "mode_trajectory",
    "normal_mode_trajectory",
    "plot_spectrum",
    "predict_properties",
    "write_mode_trajectories",
]


# ----------------------------------------------------------------------------- normal modes
def mode_trajectory(
    atoms: Atoms, mode: np.ndarray, amplitude_A: float = 0.3, frames: int = 20
) -> list[Atoms]:
    """One period of oscillation of ``atoms`` along a Cartesian displacement.

    Frame ``k`` has positions ``R + amplitude_A · sin(2π k / frames) · d / max_a |d_a|``: the
    atom that moves most reaches ``amplitude_A`` from equilibrium.

    Args:
        atoms: the equilibrium structure, N atoms (positions Å); not modified.
        mode: (N, 3) Cartesian displacement vector (any scale; e.g. a row of
            :attr:`~hip_head.vibrations.VibrationalAnalysis.modes`).
        amplitude_A: largest atomic displacement, Å (> 0).
        frames: frames per period (≥ 2).

    Returns:
        ``frames`` copies of ``atoms`` (no calculator) along the oscillation.

    Raises:
        ValueError: ``mode`` is not (N, 3) or is zero, or bad amplitude / frame count.
    """
    mode = np.asarray(mode, dtype=np.float64)
    if mode.shape != (len(atoms), 3):
        raise InvalidArgumentError(f"mode must be ({len(atoms)}, 3), got {mode.shape}")
    if not amplitude_A > 0 or frames < 2:
        raise InvalidArgumentError(
            f"need amplitude_A > 0 and frames >= 2, got {amplitude_A}, {frames}"
        )
    largest = float(np.linalg.norm(mode, axis=1).max())
    if largest == 0.0:
        raise InvalidArgumentError("the mode is zero")
    step = mode * (amplitude_A / largest)
    images = []
    for k in range(frames):
        image = atoms.copy()
        image.calc = None
        image.positions = atoms.positions + np.sin(2.0 * np.pi * k / frames) * step
        images.append(image)
    return images


def normal_mode_trajectory(
    atoms: Atoms,
    hessian: np.ndarray,
    mode_index: int,
    amplitude_A: float = 0.3,
    frames: int = 20,
) -> list[Atoms]:
    """Animation of one normal mode of ``atoms`` from its Hessian (for ``ase gui``).

    Args:
        atoms: the structure, N atoms (positions Å, masses amu).
        hessian: (3N, 3N) Cartesian Hessian, eV/Å².
        mode_index: which of the M Eckart-projected modes, from 0, ascending frequency
            (imaginary modes first).
        amplitude_A: largest atomic displacement, Å.
        frames: frames per period.

    Returns:
        ``frames`` structures along the mode's Cartesian displacement (see
        :func:`mode_trajectory`).

    Raises:
        IndexError: ``mode_index`` is not in ``[0, M)``.
    """
    vib = vibrational_analysis(hessian, atoms)
    if not 0 <= mode_index < vib.n_modes:
        raise IndexError(f"mode_index {mode_index} out of range: {vib.n_modes} modes")
    return mode_trajectory(atoms, vib.modes[mode_index], amplitude_A, frames)


def write_mode_trajectories(
    atoms: Atoms,
    vib: VibrationalAnalysis,
    out_dir: str | Path,
    amplitude_A: float = 0.3,
    frames: int = 20,
) -> list[Path]:
    """Write every normal mode as an ASE trajectory ``out_dir/mode_XX.traj``.

    Args:
        atoms: the structure the analysis is of, N atoms.
        vib: its :func:`~hip_head.vibrations.vibrational_analysis` (M modes).
        out_dir: directory, created if missing.
        amplitude_A: largest atomic displacement, Å.
        frames: frames per period.

    Returns:
        The M paths written, ``mode_00.traj`` (lowest frequency) upwards.
    """
    from ase.io import write

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    width = max(2, len(str(vib.n_modes - 1)))
    paths = []
    for i in range(vib.n_modes):
        path = out_dir / f"mode_{i:0{width}d}.traj"
        write(path, mode_trajectory(atoms, vib.modes[i], amplitude_A, frames))
        paths.append(path)
    return paths


def plot_spectrum(
    frequencies_cm1: Sequence[float], path: str | Path, title: str | None = None
) -> Path:
    """Stick spectrum of harmonic frequencies as a PNG (matplotlib, Agg canvas).

    The model gives no dipoles, so intensities are unknown: every stick has height 1 (the
    title says so). Imaginary frequencies are drawn in red at negative wavenumbers.

    Args:
        frequencies_cm1: [M] frequencies, cm⁻¹, imaginary ones negative.
        path: the PNG file to write.
        title: first title line (default ``"harmonic frequencies"``).

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    freqs = np.asarray(frequencies_cm1, dtype=np.float64)
    fig = Figure(figsize=(7.0, 3.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    real, imag = freqs[freqs >= 0], freqs[freqs < 0]
    ax.vlines(real, 0.0, 1.0, color="tab:blue", label="real")
    if imag.size:
        ax.vlines(imag, 0.0, 1.0, color="tab:red", label="imaginary (plotted negative)")
        ax.legend(loc="upper right", fontsize=8)
    ax.axhline(0.0, color="black", linewidth=0.5)
    low = min(0.0, float(freqs.min())) if freqs.size else 0.0
    high = max(4000.0, float(freqs.max()) if freqs.size else 0.0)
    ax.set_xlim(low - 100.0, high + 100.0)
    ax.set_ylim(0.0, 1.15)
    ax.set_yticks([])
    ax.set_xlabel("wavenumber (cm$^{-1}$)")
    head = title or "harmonic frequencies"
    ax.set_title(f"{head}\nstick spectrum, unit heights: intensities not computed", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


# ----------------------------------------------------------------------------- predict
def predict_properties(atoms: Atoms, model: Any) -> dict[str, Any]:
    """Energy, forces and vibrational analysis of one structure with a HIP.

    Args:
        atoms: the structure, N atoms.
        model: a :class:`~hip_head.model.HIPModel`.

    Returns:
        JSON-ready dict: ``formula``, ``n_atoms``, ``energy_eV``, ``max_force_eV_per_A``
        (max |force component|), ``frequencies_cm1`` (list of M, imaginary negative),
        ``imaginary_cm1``, ``zpe_eV``, ``saddle_index``, ``is_linear``, ``wall_time_s`` (one
        energy + forces + Hessian evaluation, s).
    """
    start = time.perf_counter()
    out = model.predict(atoms)
    seconds = time.perf_counter() - start
    vib = vibrational_analysis(out["hessian"], atoms)
    freqs = vib.frequencies_cm1
    return {
        "formula": atoms.get_chemical_formula(),
        "n_atoms": len(atoms),
        "energy_eV": float(out["energy"]),
        "max_force_eV_per_A": float(np.abs(out["forces"]).max()),
        "frequencies_cm1": [float(f) for f in freqs],
        "imaginary_cm1": [float(f) for f in freqs[freqs < -vib.threshold_cm1]],
        "zpe_eV": vib.zero_point_energy,
        "saddle_index": vib.n_imaginary,
        "is_linear": vib.is_linear,
        "wall_time_s": seconds,
    }


def frequency_table(vib: VibrationalAnalysis) -> str:
    """Text table of the modes: index (from 0), frequency (cm⁻¹), imaginary marker."""
    lines = [f"{'mode':>4}  {'cm^-1':>10}"]
    for i, f in enumerate(vib.frequencies_cm1):
        mark = "  imaginary" if f < -vib.threshold_cm1 else ""
        lines.append(f"{i:4d}  {f:10.1f}{mark}")
    return "\n".join(lines)
