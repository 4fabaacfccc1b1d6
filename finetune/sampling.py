"""Training geometries for hip-head: minima, off-equilibrium frames and first-order saddles.

hip-head learns molecular Hessians, so its training set needs more than relaxed minima:

- :func:`conformers_from_smiles`: RDKit 3D conformers (explicit hydrogens, ETKDG, MMFF).
- :func:`read_geometries`: every frame of xyz/extxyz files.
- :func:`relax_xtb`: a GFN2-xTB (tblite) minimum by ASE's BFGS.
- :func:`normal_mode_samples`: classical harmonic Boltzmann displacements along the Eckart
  normal modes of a minimum (off-equilibrium frames at given temperatures).
- :func:`find_saddle`: a first-order saddle (transition state) by Sella ``order=1`` with the
  xTB Hessian, started from the minimum displaced along its softest modes; accepted only when
  its xTB Hessian has exactly one imaginary frequency.
- :func:`sample_geometries`: all of the above for many molecules; each frame carries
  ``info["kind"]`` (``"minimum"``, ``"off_equilibrium"`` or ``"saddle"``) and
  ``info["molecule"]`` (a group key for :func:`~hip_head.finetune.data.split_by_molecule`).
- :func:`main_sample`: the command line (``hip data sample``), writing extxyz that
  ``hip data label`` reads.

Units: positions Å, energies eV, forces eV/Å, Hessians (3N, 3N) eV/Å², masses amu,
temperatures K.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

import numpy as np
from ase import Atoms, units

from hip_head.errors import InvalidArgumentError
from hip_head.finetune.engines import charge_and_spin, label_xtb, xtb_calculator, xtb_hessian
from hip_head.vibrations import vibrational_analysis

__all__ = [
    "KINDS",
    "MIN_DISTANCE",
    "conformers_from_smiles",
    "find_saddle",
    "main_sample",
    "normal_mode_samples",
    "read_geometries",
    "relax_xtb",
    "sample_geometries",
]

#: Values of ``info["kind"]`` on sampled frames.
KINDS = ("minimum", "off_equilibrium", "saddle")

#: Frames with two atoms closer than this (Å) are rejected as unphysical.
MIN_DISTANCE = 0.7

#: Modes softer than this (cm⁻¹), and imaginary ones, get no thermal displacement: their
#: classical amplitude sqrt(kT / ω²) diverges and they are (near-)free rotations/translations.
SOFT_MODE_CM1 = 50.0


def _bare(atoms: Atoms) -> Atoms:
    """A calculator-free copy keeping numbers, positions, charge/spin and our info keys."""
    out = Atoms(numbers=atoms.get_atomic_numbers(), positions=atoms.get_positions())
    for key in ("charge", "spin", "molecule", "kind"):
        if key in atoms.info:
            out.info[key] = atoms.info[key]
    return out


def _min_distance(positions: np.ndarray) -> float:
    """Smallest interatomic distance of positions (N, 3) Å; inf for one atom."""
    if len(positions) < 2:
        return float("inf")
    d = np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1)
    return float(d[np.triu_indices(len(positions), k=1)].min())


def _xtb_copy(
    atoms: Atoms, method: str, accuracy: float, positions: np.ndarray | None = None
) -> Atoms:
    """A :func:`_bare` copy of ``atoms`` (moved to ``positions`` (N, 3) Å when given) with a
    tblite calculator for its charge and spin (``info``; defaults 0 and 1)."""
    work = _bare(atoms)
    if positions is not None:
        work.set_positions(positions)
    work.calc = xtb_calculator(method, *charge_and_spin(atoms), accuracy=accuracy)
    return work


def _saddle_optimizer(
    template: Atoms, positions: np.ndarray, method: str, accuracy: float
) -> tuple[Atoms, Any]:
    """A copy of ``template`` at ``positions`` (N, 3) Å with a tblite calculator, and a Sella
    ``order=1`` optimiser on it (internal coordinates, the exact xTB Hessian every step)."""
    from sella import Sella

    work = _xtb_copy(template, method, accuracy, positions)
    opt = Sella(
        work,
        order=1,
        internal=True,
        hessian_function=partial(xtb_hessian, method=method, accuracy=accuracy),
        diag_every_n=1,
        logfile=None,
        trajectory=None,
    )
    return work, opt


# ---------------------------------------------------------------------------------- inputs
def conformers_from_smiles(smiles: str, n: int = 1, seed: int = 0) -> list[Atoms]:
    """3D conformers of a molecule from SMILES (RDKit: AddHs, ETKDGv3, MMFF94 optimisation).

    Args:
        smiles: the SMILES string.
        n: number of conformers to embed (fewer may come back if embedding fails).
        seed: ETKDG ``randomSeed``; the same seed gives the same coordinates.

    Returns:
        Up to ``n`` structures (positions Å) with explicit hydrogens and
        ``info["charge"]`` (formal charge, e), ``info["spin"]`` (multiplicity, 1 + number of
        radical electrons) and ``info["molecule"]`` (the canonical SMILES).

    Raises:
        ValueError: RDKit cannot parse the SMILES or embed any conformer.
    """
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise InvalidArgumentError(f"RDKit cannot parse SMILES {smiles!r}")
    canonical = Chem.MolToSmiles(mol)
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    conf_ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=int(n), params=params))
    if not conf_ids:
        raise InvalidArgumentError(f"RDKit could not embed a 3D conformer of {smiles!r}")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=2000)
    else:  # e.g. unusual elements: fall back to UFF
        AllChem.UFFOptimizeMoleculeConfs(mol, maxIters=2000)
    numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
    charge = Chem.GetFormalCharge(mol)
    spin = 1 + sum(a.GetNumRadicalElectrons() for a in mol.GetAtoms())
    out = []
    for cid in conf_ids:
        atoms = Atoms(numbers=numbers, positions=mol.GetConformer(cid).GetPositions())
        atoms.info.update(charge=int(charge), spin=int(spin), molecule=canonical)
        out.append(atoms)
    return out


def read_geometries(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Atoms]:
    """Every frame of xyz/extxyz files.

    Args:
        paths: one path or many (format from the extension, ``.xyz`` read as extxyz, which also
            reads plain xyz).

    Returns:
        The frames in file order (calculator-free; ``info`` as in the file). Frames without
        ``info["molecule"]`` get ``"<file stem>"`` for single-frame files and
        ``"<file stem>:<index>"`` otherwise.
    """
    import ase.io

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Atoms] = []
    for path in paths:
        path = os.fspath(path)
        frames = ase.io.read(path, index=":")
        stem = os.path.splitext(os.path.basename(path))[0]
        for i, frame in enumerate(frames):
            atoms = Atoms(numbers=frame.get_atomic_numbers(), positions=frame.get_positions())
            atoms.info.update({k: v for k, v in frame.info.items() if k not in ("hessian", "meta")})
            atoms.info.setdefault("molecule", stem if len(frames) == 1 else f"{stem}:{i}")
            out.append(atoms)
    return out


# ---------------------------------------------------------------------------------- minima
def relax_xtb(
    atoms: Atoms,
    fmax: float = 0.01,
    steps: int = 200,
    method: str = "GFN2-xTB",
    accuracy: float = 0.01,
    optimizer: str = "BFGS",
) -> Atoms:
    """Relax a structure to a GFN-xTB minimum (tblite, ASE optimiser).

    Args:
        atoms: start structure (N atoms, Å); not modified. ``info["charge"]``/``["spin"]``
            (multiplicity) are used when present.
        fmax: convergence threshold on the largest atomic force, eV/Å.
        steps: maximum optimiser steps.
        method: tblite method (``"GFN2-xTB"``, ``"GFN1-xTB"``).
        accuracy: tblite accuracy (0.01, as :func:`~hip_head.finetune.engines.label_xtb`).
        optimizer: ``"BFGS"`` or ``"FIRE"``.

    Returns:
        A calculator-free copy at the final positions, with ``info["converged"]`` (bool),
        ``info["fmax"]`` (final max force, eV/Å) and ``info["energy"]`` (eV); other info keys
        (charge, spin, molecule) copied.
    """
    from ase.optimize import BFGS, FIRE

    work = _xtb_copy(atoms, method, accuracy)
    opt_cls = {"BFGS": BFGS, "FIRE": FIRE}[optimizer.upper()]
    opt = opt_cls(work, logfile=None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    forces = work.get_forces()
    energy = float(work.get_potential_energy())
    out = _bare(work)
    out.info.update(
        converged=converged,
        fmax=float(np.linalg.norm(forces, axis=1).max()),
        energy=energy,
    )
    return out


# ---------------------------------------------------------------------------------- thermal frames
def normal_mode_samples(
    atoms: Atoms,
    hessian: np.ndarray,
    temperatures_K: Sequence[float] = (300.0, 1000.0),
    n_per_temperature: int = 5,
    seed: int = 0,
    min_distance: float = MIN_DISTANCE,
    soft_mode_cm1: float = SOFT_MODE_CM1,
    max_tries: int = 20,
    reaction_amplitude: float = 0.0,
) -> list[Atoms]:
    """Classical harmonic Boltzmann samples around a minimum along its Eckart normal modes.

    With the Eckart-projected mass-weighted Hessian's eigenpairs (λ_k = ω_k², eV/Å²/amu;
    orthonormal e_k ∈ R^{3N}), each frame is ``x = x0 + M^-1/2 Σ_k Q_k e_k`` with independent
    ``Q_k ~ N(0, kT / λ_k)`` (amu^½ Å): the classical canonical distribution of the harmonic
    potential. Imaginary modes and modes below ``soft_mode_cm1`` are not displaced thermally.
    Around a saddle, ``reaction_amplitude > 0`` adds a displacement along each imaginary mode
    (the reaction coordinate) of Cartesian norm drawn uniformly from
    ``[-reaction_amplitude, reaction_amplitude]``: near-transition-state frames on both sides
    of the barrier. Frames with two atoms closer than ``min_distance`` are redrawn (up to
    ``max_tries`` times each).

    Args:
        atoms: the minimum (N atoms, positions Å, masses from ``get_masses()``).
        hessian: its Cartesian Hessian, eV/Å²: (3N, 3N) or any layout accepted by
            :func:`~hip_head.vibrations.vibrational_analysis`.
        temperatures_K: temperatures, K.
        n_per_temperature: frames per temperature.
        seed: seed of ``numpy.random.default_rng``; same inputs and seed give identical frames.
        min_distance: rejection threshold on interatomic distances, Å.
        soft_mode_cm1: modes below this wavenumber (cm⁻¹) are skipped.
        max_tries: draws per frame before giving up on that frame.
        reaction_amplitude: largest displacement along imaginary modes, Å (0: none).

    Returns:
        Up to ``len(temperatures_K) * n_per_temperature`` frames (temperature-major order),
        each with ``info["kind"] = "off_equilibrium"``, ``info["temperature_K"]`` and the
        minimum's charge/spin/molecule info.
    """
    vib = vibrational_analysis(hessian, atoms)
    keep = vib.frequencies_cm1 > soft_mode_cm1
    lam = vib.eigenvalues[keep]  # eV/Å²/amu
    vecs = vib.mass_weighted_modes[keep]  # [K, 3N]
    imaginary = vib.modes[vib.frequencies_cm1 < 0] if reaction_amplitude > 0 else vib.modes[:0]
    inv_sqrt_m = 1.0 / np.sqrt(np.repeat(atoms.get_masses(), 3))
    x0 = atoms.get_positions()
    rng = np.random.default_rng(seed)
    out: list[Atoms] = []
    for temperature in temperatures_K:
        sigma = np.sqrt(units.kB * float(temperature) / lam)  # amu^½ Å
        for _ in range(n_per_temperature):
            for _ in range(max_tries):
                q = rng.normal(size=lam.shape) * sigma
                dx = (q @ vecs) * inv_sqrt_m
                for mode in imaginary:  # [N, 3], unit Cartesian norm
                    dx = dx + rng.uniform(-reaction_amplitude, reaction_amplitude) * mode.ravel()
                pos = x0 + dx.reshape(-1, 3)
                if _min_distance(pos) >= min_distance:
                    frame = _bare(atoms)
                    frame.set_positions(pos)
                    frame.info.update(kind="off_equilibrium", temperature_K=float(temperature))
                    out.append(frame)
                    break
    return out


# ---------------------------------------------------------------------------------- saddles
def find_saddle(
    atoms: Atoms,
    hessian: np.ndarray | None = None,
    displacement: float = 0.3,
    fmax: float = 0.01,
    steps: int = 200,
    n_modes: int = 2,
    force_factor: float = 3.0,
    method: str = "GFN2-xTB",
    accuracy: float = 0.01,
    modes: Sequence[int] | None = None,
) -> Atoms | None:
    """A first-order saddle near a minimum: Sella ``order=1`` with the xTB Hessian.

    The minimum is displaced by ``displacement`` (Euclidean norm over all atoms, Å) along
    each of its ``n_modes`` softest Eckart normal modes, both signs, and Sella
    (``internal=True``, ``hessian_function`` = :func:`~hip_head.finetune.engines.xtb_hessian`,
    ``diag_every_n=1``) climbs from there. The first end point whose xTB Hessian has exactly
    one imaginary frequency (``vibrational_analysis(...).n_imaginary == 1``) and largest force
    below ``force_factor * fmax`` is returned.

    Args:
        atoms: the minimum (or any start geometry; N ≥ 2 atoms, Å); not modified.
        hessian: its xTB Hessian (3N, 3N) eV/Å²; None: computed with ``label_xtb``.
        displacement: start displacement along each soft mode, Å.
        fmax: Sella convergence threshold, eV/Å.
        steps: Sella steps per try.
        n_modes: softest modes tried (each with + and − sign).
        force_factor: acceptance bound on the final largest force, in units of ``fmax``.
        method: tblite method.
        accuracy: tblite accuracy.
        modes: indices (0 = softest) of the Eckart modes to start from, instead of the
            ``n_modes`` softest; e.g. stiffer bends for bond-making/breaking saddles.

    Returns:
        The saddle (calculator-free) with ``info["kind"] = "saddle"``,
        ``info["imaginary_cm1"]`` (the imaginary wavenumber as a negative number, cm⁻¹),
        ``info["energy"]`` (eV) and ``info["fmax"]`` (eV/Å); or None when no try qualifies.
    """
    start = _bare(atoms)
    if hessian is None:
        hessian = xtb_hessian(start, method=method, accuracy=accuracy)
    vib = vibrational_analysis(hessian, start)
    x0 = start.get_positions()
    tries = range(min(n_modes, vib.n_modes)) if modes is None else modes
    for k in tries:
        if not 0 <= k < vib.n_modes:
            continue
        mode = vib.modes[k]  # [N, 3], unit norm
        for sign in (1.0, -1.0):
            try:
                work, opt = _saddle_optimizer(
                    start, x0 + sign * displacement * mode, method, accuracy
                )
                opt.run(fmax=fmax, steps=steps)
                forces = work.get_forces()
                energy = float(work.get_potential_energy())
                sample = label_xtb(work, method=method, accuracy=accuracy)
            except Exception:  # noqa: BLE001 - Sella/tblite failures: try the next start
                continue
            ts_vib = vibrational_analysis(sample.hessian, work)
            f_max = float(np.linalg.norm(forces, axis=1).max())
            if ts_vib.n_imaginary == 1 and f_max < force_factor * fmax:
                out = _bare(work)
                out.info.update(
                    kind="saddle",
                    imaginary_cm1=float(ts_vib.frequencies_cm1[0]),
                    energy=energy,
                    fmax=f_max,
                )
                return out
    return None


# ---------------------------------------------------------------------------------- pipeline
def sample_geometries(
    molecules: Sequence[str | Atoms],
    temperatures: Sequence[float] = (300.0, 1000.0),
    n_frames: int = 10,
    n_saddle_tries: int = 2,
    seed: int = 0,
    fmax: float = 0.01,
    method: str = "GFN2-xTB",
    verbose: bool = False,
) -> list[Atoms]:
    """Minima, thermal off-equilibrium frames and saddles for many molecules.

    For each molecule: RDKit conformer (SMILES) or the given structure, xTB relaxation, xTB
    Hessian, ``n_frames`` normal-mode frames per temperature, and a saddle search over the
    ``n_saddle_tries`` softest modes.

    Args:
        molecules: SMILES strings or ``ase.Atoms`` (``info["molecule"]`` used as key when set,
            else the chemical formula with the list index).
        temperatures: sampling temperatures, K.
        n_frames: off-equilibrium frames per temperature.
        n_saddle_tries: softest modes tried for a saddle (0: no saddle search).
        seed: seed of the conformer embedding and of the thermal sampling (offset per molecule).
        fmax: relaxation / saddle force threshold, eV/Å.
        method: tblite method.
        verbose: print progress to stdout.

    Returns:
        Calculator-free frames with ``info["kind"]`` in ``{"minimum", "off_equilibrium",
        "saddle"}`` and ``info["molecule"]``; per molecule the minimum first, then its thermal
        frames, then the saddle if one was found. Molecules whose xTB calculations fail are
        skipped with a message on stderr.
    """
    out: list[Atoms] = []
    for i, mol in enumerate(molecules):
        t0 = time.perf_counter()
        try:
            if isinstance(mol, str):
                start = conformers_from_smiles(mol, n=1, seed=seed)[0]
            else:
                start = _bare(mol)
                start.info.setdefault("molecule", f"{mol.get_chemical_formula()}:{i}")
            key = str(start.info["molecule"])
            minimum = relax_xtb(start, fmax=fmax, method=method)
            minimum.info["molecule"] = key
            hessian = xtb_hessian(minimum, method=method)
        except Exception as exc:  # noqa: BLE001 - RDKit/tblite failures: skip the molecule
            print(f"skipped {mol if isinstance(mol, str) else i}: {exc}", file=sys.stderr)
            continue
        minimum.info["kind"] = "minimum"
        frames = [minimum]
        frames += normal_mode_samples(
            minimum, hessian, temperatures, n_frames, seed=seed + 1000 * i + 1
        )
        saddle = None
        if n_saddle_tries > 0 and len(minimum) > 1:
            saddle = find_saddle(minimum, hessian, fmax=fmax, n_modes=n_saddle_tries, method=method)
            if saddle is not None:
                saddle.info["molecule"] = key
                frames.append(saddle)
        for frame in frames:
            frame.info["molecule"] = key
        out += frames
        if verbose:
            found = "found" if saddle is not None else "none"
            print(
                f"{key}: {len(frames)} frames (saddle {found}), {time.perf_counter() - t0:.1f} s",
                flush=True,
            )
    return out


def _portable(frame: Atoms) -> Atoms:
    """Frame with only extxyz-safe scalar info (str/int/float/bool)."""
    out = Atoms(numbers=frame.get_atomic_numbers(), positions=frame.get_positions())
    for key, value in frame.info.items():
        if isinstance(value, (str, bool, int, float, np.integer, np.floating)):
            out.info[key] = value
    return out


def main_sample(argv: Sequence[str] | None = None) -> int:
    """``hip data sample``: sample minima, thermal frames and saddles into an extxyz file.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        Exit status: 0 when frames were written, 1 when nothing could be sampled.
    """
    import ase.io

    parser = argparse.ArgumentParser(
        prog="hip data sample",
        description="Sample training geometries (xTB minima, normal-mode frames, saddles) "
        "into extxyz for `hip data label`.",
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--smiles", nargs="+", help="SMILES strings")
    src.add_argument("--xyz", nargs="+", help="xyz/extxyz files (all frames are read)")
    parser.add_argument("--out", required=True, help="output extxyz file (overwritten)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 1000.0])
    parser.add_argument("--frames", type=int, default=10, help="frames per temperature")
    parser.add_argument("--saddles", type=int, default=2, help="soft modes tried for a saddle")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fmax", type=float, default=0.01, help="eV/Å")
    parser.add_argument("--method", default="GFN2-xTB")
    args = parser.parse_args(argv)

    molecules: list[str | Atoms] = list(args.smiles) if args.smiles else read_geometries(args.xyz)
    t0 = time.perf_counter()
    frames = sample_geometries(
        molecules,
        temperatures=args.temperatures,
        n_frames=args.frames,
        n_saddle_tries=args.saddles,
        seed=args.seed,
        fmax=args.fmax,
        method=args.method,
        verbose=True,
    )
    if not frames:
        print("nothing sampled", file=sys.stderr)
        return 1
    ase.io.write(args.out, [_portable(f) for f in frames], format="extxyz")
    kinds = {k: sum(f.info["kind"] == k for f in frames) for k in KINDS}
    print(
        f"wrote {len(frames)} frames to {args.out} ({kinds['minimum']} minima, "
        f"{kinds['off_equilibrium']} off-equilibrium, {kinds['saddle']} saddles), "
        f"{time.perf_counter() - t0:.1f} s"
    )
    return 0
