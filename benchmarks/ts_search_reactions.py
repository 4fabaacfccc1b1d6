"""The held-out reactions of ``benchmarks/ts_search.py``: reading them, choosing them, and
their xTB reference barriers and rates.

Units: Å, eV (kcal/mol where named), K.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units

REPO = Path(__file__).resolve().parents[1]
DB = REPO / "data" / "reactions_xtb.db"

#: Temperature of the rates, K.
TEMPERATURE_K = 298.15

#: One kcal/mol in eV.
KCAL_MOL = units.kcal / units.mol


# ---------------------------------------------------------------------------------- data
@dataclass
class Reaction:
    """One held-out reaction: xTB minima, TS, energies and Hessians from the dataset.

    Attributes:
        id: the dataset's reaction id, ``"<molecule index>:<reaction index>"``.
        molecule: SMILES of the molecule the reaction was found from.
        reactant: the lower-energy xTB minimum (Å; ``info`` charge and spin).
        product: the other xTB minimum.
        ts: the xTB transition state.
        reactant_energy_eV: xTB energy of the reactant, eV.
        product_energy_eV: xTB energy of the product, eV.
        ts_energy_eV: xTB energy of the TS, eV.
        reactant_hessian: xTB Hessian at the reactant, (3N, 3N) eV/Å².
        ts_hessian: xTB Hessian at the TS, (3N, 3N) eV/Å².
        charge: total charge, e.
        spin: spin multiplicity 2S + 1.
    """

    id: str
    molecule: str
    reactant: Atoms
    product: Atoms
    ts: Atoms
    reactant_energy_eV: float
    product_energy_eV: float
    ts_energy_eV: float
    reactant_hessian: np.ndarray
    ts_hessian: np.ndarray
    charge: int
    spin: int

    @property
    def n_atoms(self) -> int:
        """Number of atoms."""
        return len(self.ts)


def _reaction_key(reaction_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in reaction_id.split(":"))


def _connect(db: Path) -> Any:
    import ase.db

    if not Path(db).is_file():
        raise FileNotFoundError(f"no reaction database at {db}")
    return ase.db.connect(str(db), type="db", use_lock_file=False)


def held_out_reaction_ids(db: Path = DB, split: str = "test") -> dict[str, int]:
    """Reaction ids of ``split`` (the ``split`` column) with their atom counts, sorted by id."""
    rows = _connect(db).select(kind="ts", split=split, include_data=False)
    sizes = {str(row.get("reaction")): int(row.natoms) for row in rows}
    return dict(sorted(sizes.items(), key=lambda item: _reaction_key(item[0])))


def pick_reactions(ids: Sequence[str], n: int, seed: int = 0) -> list[str]:
    """``n`` of ``ids``, reproducibly: the first ``n`` of a seeded permutation (so a smaller
    ``n`` picks a subset of a larger one), in the permutation's order."""
    order = np.random.default_rng(seed).permutation(len(ids))
    return [ids[i] for i in order[: max(0, n)]]


def _frame(row: Any) -> tuple[Atoms, float, np.ndarray, dict[str, Any]]:
    """(atoms with charge/spin info, energy eV, Hessian (3N, 3N) eV/Å², meta) of a db row
    (the layout :class:`hip_head.finetune.data.AseDbDataset` reads)."""
    from hip_head.finetune.data import unpack_triu

    data = row.data or {}
    n3 = 3 * len(row.numbers)
    if "hessian" in data:
        hessian = np.asarray(data["hessian"], dtype=np.float64).reshape(n3, n3)
    else:
        hessian = unpack_triu(data["hessian_triu"], n3)
    atoms = Atoms(numbers=row.numbers, positions=row.positions)
    atoms.info.update(charge=int(data.get("charge", 0)), spin=int(data.get("spin", 1)))
    return atoms, float(row.energy), hessian, dict(data.get("meta") or {})


def load_reactions(ids: Sequence[str], db: Path = DB) -> dict[str, Reaction]:
    """The reactions ``ids`` of the database: the TS and both minima (``kind`` ``"ts"`` and
    ``"minimum"`` rows of the same ``reaction``; ``meta["side"]`` 0 and 1 are the two ends of
    the TS's IRC), with xTB energies and Hessians. The reactant is the lower-energy minimum.

    Raises:
        KeyError: an id does not have one TS and two minima.
    """
    connection = _connect(db)
    out: dict[str, Reaction] = {}
    for rid in ids:
        ts_rows = list(connection.select(reaction=rid, kind="ts"))
        end_rows = list(connection.select(reaction=rid, kind="minimum"))
        if len(ts_rows) != 1 or len(end_rows) != 2:
            raise KeyError(f"reaction {rid}: {len(ts_rows)} TS and {len(end_rows)} minima in {db}")
        ts, e_ts, h_ts, meta = _frame(ts_rows[0])
        ends = sorted((_frame(r) for r in end_rows), key=lambda f: float(f[3].get("side", 0)))
        (reactant, e_r, h_r, _), (product, e_p, _, _) = sorted(ends, key=lambda f: f[1])
        out[rid] = Reaction(
            id=rid,
            molecule=str(meta.get("molecule", ts_rows[0].get("molecule", ""))),
            reactant=reactant,
            product=product,
            ts=ts,
            reactant_energy_eV=e_r,
            product_energy_eV=e_p,
            ts_energy_eV=e_ts,
            reactant_hessian=h_r,
            ts_hessian=h_ts,
            charge=int(ts.info["charge"]),
            spin=int(ts.info["spin"]),
        )
    return out


# ---------------------------------------------------------------------------------- rates
def log10_eyring(delta_g_eV: float, temperature_K: float = TEMPERATURE_K) -> float:
    """log10 of the Eyring rate constant (s⁻¹) for a barrier ΔG‡ (eV); computed in logs so
    that no barrier under- or overflows."""
    from hip_head.chem.thermo import eyring_rate

    kt = units.kB * temperature_K
    return math.log10(eyring_rate(0.0, temperature_K)) - delta_g_eV / (kt * math.log(10.0))


def reference_barrier(reaction: Reaction) -> dict[str, Any]:
    """xTB's ΔE‡ and ΔG‡ (kcal/mol) from the dataset's TS and reactant energies and Hessians."""
    from hip_head.chem.thermo import free_energy_barrier, thermo

    out: dict[str, Any] = {
        "dE_kcal": (reaction.ts_energy_eV - reaction.reactant_energy_eV) / KCAL_MOL,
        "dG_kcal": None,
        "note": "",
    }
    try:
        r = thermo(
            reaction.reactant,
            hessian=reaction.reactant_hessian,
            energy=reaction.reactant_energy_eV,
            temperature_K=TEMPERATURE_K,
        )
        t = thermo(
            reaction.ts,
            hessian=reaction.ts_hessian,
            energy=reaction.ts_energy_eV,
            temperature_K=TEMPERATURE_K,
            allow_saddle=True,
        )
        out["dG_kcal"] = free_energy_barrier(r, t, temperature_K=TEMPERATURE_K).delta_g_kcal_per_mol
        out["reactant_thermo"] = r
    except Exception as exc:  # noqa: BLE001 - a reference without ΔG‡ falls back to ΔE‡
        out["note"] = f"xTB ΔG‡ not available: {exc}"[:300]
    return out
