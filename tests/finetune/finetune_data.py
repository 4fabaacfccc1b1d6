"""Small labelled datasets and backbones for the fine-tuning tests (no quantum chemistry).

Labels come from a Morse pair potential evaluated with autograd: exact energies (eV), forces
(eV/Å) and Hessians (eV/Å²) in milliseconds, so the training loop can be exercised on CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase.build import molecule

from hip_head.finetune.data import HessianSample, write_ase_db

MOLECULES = ["H2O", "NH3", "CH4", "CH3OH", "C2H4", "HCN", "H2CO", "C2H6", "CH3CN", "HCOOH"]


def morse_energy(positions: torch.Tensor) -> torch.Tensor:
    """Sum over all pairs of a Morse potential (D 4 eV, a 1.8 / Å, r0 1.2 Å); eV."""
    i, j = torch.triu_indices(positions.shape[0], positions.shape[0], 1)
    r = (positions[i] - positions[j]).norm(dim=-1)
    return (4.0 * (1.0 - torch.exp(-1.8 * (r - 1.2))) ** 2).sum()


def morse_sample(atoms, name: str, split: str | None) -> HessianSample:
    """E, F, H of the Morse model for ``atoms`` (float64)."""
    x = torch.tensor(atoms.get_positions(), dtype=torch.float64, requires_grad=True)
    energy = morse_energy(x)
    (grad,) = torch.autograd.grad(energy, x)
    hessian = torch.autograd.functional.hessian(morse_energy, x.detach())
    n3 = 3 * len(atoms)
    meta = {"molecule": name}
    if split is not None:
        meta["split"] = split
    return HessianSample(
        positions=atoms.get_positions(),
        numbers=atoms.get_atomic_numbers(),
        energy=float(energy.detach()),
        forces=-grad.numpy(),
        hessian=hessian.reshape(n3, n3).numpy(),
        meta=meta,
    )


def write_morse_db(
    path: Path, frames_per_molecule: int = 6, with_split: bool = True, seed: int = 0
) -> Path:
    """A db of rattled small molecules with Morse labels (and a ``split`` column)."""
    rng = np.random.default_rng(seed)
    splits = ["train"] * 7 + ["val"] * 2 + ["test"]
    samples = []
    for k, name in enumerate(MOLECULES):
        for _ in range(frames_per_molecule):
            atoms = molecule(name)
            atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
            samples.append(morse_sample(atoms, name, splits[k] if with_split else None))

    def kvp(sample: HessianSample) -> dict:
        out = {"molecule": sample.meta["molecule"]}
        if "split" in sample.meta:
            out["split"] = sample.meta["split"]
        return out

    write_ase_db(samples, path, key_value_pairs=kvp)
    return path


def save_tiny_mace(path: Path, dtype: torch.dtype = torch.float64) -> Path:
    """A small random ScaleShiftMACE in hip-head's safe backbone format (opens without trust;
    ``torch.save(model)`` pickles, as MACE distributes them, need ``model.trust``)."""
    from hip_head.adapters.mace import make_random_mace
    from hip_head.serialization import save_backbone

    save_backbone(make_random_mace(channels=8, max_ell=2, correlation=2, dtype=dtype), path)
    return path
