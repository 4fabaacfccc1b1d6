"""The structures the speed benchmark times: generated organic molecules and batches of them.

Molecules are saturated, acyclic H/C/N/O molecules made by a deterministic generator (no
network, no RDKit): heavy atoms grow on a diamond lattice (1.54 Å bonds, tetrahedral angles,
staggered dihedrals), each time on the free site nearest the centroid (seeded jitter breaks
ties), so the molecule is a compact globule with the atom density of a liquid alkane. See
``benchmarks/speed.py`` for the details and the checks made on them.
"""

from __future__ import annotations

import math

import numpy as np
from ase import Atoms

__all__ = ["composition", "min_distance", "organic_molecule", "small_molecule_batch"]

_BOND = 1.54  # Å, heavy-heavy bond of the diamond lattice
_XH_BOND = {6: 1.09, 7: 1.01, 8: 0.96}  # Å
_VALENCE = {6: 4, 7: 3, 8: 2}
_TETRAHEDRAL = np.array([(1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)])
#: Rows of the distance matrix computed at once by :func:`min_distance` (bounds its memory).
_DISTANCE_CHUNK = 512

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


def min_distance(positions: np.ndarray) -> float:
    """The smallest distance between two of ``positions`` [N, 3] (Å), in O(N) memory per row.

    Equal to the minimum of ``ase.Atoms.get_all_distances()`` over distinct atoms without
    building the N x N matrix at once (5000 atoms: 200 MB).

    Args:
        positions: [N, 3] Cartesian positions, Å, N ≥ 2.

    Returns:
        The minimum over pairs a < b of ``|r_b - r_a|``, Å.
    """
    positions = np.asarray(positions, dtype=float)
    best = math.inf
    for start in range(0, len(positions) - 1, _DISTANCE_CHUNK):
        rows = positions[start : start + _DISTANCE_CHUNK]
        after = positions[start + 1 :]
        distances = np.linalg.norm(rows[:, None, :] - after[None, :, :], axis=-1)
        # row i of the chunk is atom start + i; keep atoms b > start + i only
        upper = np.arange(len(after))[None, :] >= np.arange(len(rows))[:, None]
        if upper.any():
            best = min(best, float(distances[upper].min()))
    return best


def _grow_heavy_sites(heavy: int, rng: np.random.Generator) -> tuple[list[Site], list]:
    """Heavy-atom lattice sites and their bonds, grown compactly (see the module docstring).

    Each step takes the free candidate nearest the centroid (plus jitter from ``rng``, drawn
    once per free candidate, in site order). A candidate that is not free never becomes free
    again (sites are only added), so candidates found occupied or crowded are dropped for good:
    the choices and the random draws are those of a scan over every site, at a fraction of its
    cost for thousands of atoms.

    Returns:
        (sites in the order they were added, bonds as (parent index, child index)).
    """
    sites: list[Site] = [(0, 0, 0)]
    index: dict[Site, int] = {(0, 0, 0): 0}
    bonds: list[tuple[int, int]] = []
    open_candidates: list[list[Site]] = [_lattice_neighbours((0, 0, 0))]
    live: list[int] = [0]  # sites that may still have free candidates, ascending

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
        still_live: list[int] = []
        for i in live:
            kept = []
            for candidate in open_candidates[i]:
                if free_site(candidate, sites[i]):
                    kept.append(candidate)
                    score = float(np.sum((np.array(candidate) - centroid) ** 2)) + 2 * rng.random()
                    if best is None or score < best[0]:
                        best = (score, i, candidate)
            open_candidates[i] = kept
            if kept:
                still_live.append(i)
        live = still_live
        if best is None:  # cannot happen on an infinite lattice; kept as a guard
            raise RuntimeError(f"molecule generator got stuck at {len(sites)} heavy atoms")
        _, parent, site = best
        index[site] = len(sites)
        sites.append(site)
        bonds.append((parent, index[site]))
        open_candidates.append(_lattice_neighbours(site))
        live.append(index[site])
    return sites, bonds


def organic_molecule(num_atoms: int, seed: int = 0) -> Atoms:
    """A deterministic, compact, saturated H/C/N/O molecule with exactly ``num_atoms`` atoms.

    See the module docstring of ``benchmarks/speed.py`` for the construction.

    Args:
        num_atoms: atom count, at least 3.
        seed: seeds the tie-breaking jitter and the heteroatom and hydrogen placement.

    Returns:
        ``ase.Atoms`` (non-periodic, centred at the centre of mass), positions in Å.

    Raises:
        ValueError: ``num_atoms`` < 3.
    """
    heavy, n_o, n_n = composition(num_atoms)
    rng = np.random.default_rng([seed, num_atoms])
    sites, bonds = _grow_heavy_sites(heavy, rng)
    index = {site: i for i, site in enumerate(sites)}

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
    if min_distance(atoms.positions) < 0.9:
        raise RuntimeError("generated molecule has atoms closer than 0.9 Å")
    return atoms


def small_molecule_batch(
    count: int = 64, min_atoms: int = 10, max_atoms: int = 30, seed: int = 0
) -> list[Atoms]:
    """``count`` generated molecules of ``min_atoms`` to ``max_atoms`` atoms, deterministic.

    Sizes are drawn uniformly (both ends included) from a generator seeded with ``seed`` and
    the arguments; molecule ``i`` is ``organic_molecule(size_i, seed=seed + i)``, so molecules
    of the same size differ.

    Args:
        count: number of molecules B, at least 1.
        min_atoms: smallest atom count, at least 3.
        max_atoms: largest atom count, at least ``min_atoms``.
        seed: seeds the sizes and the molecules.

    Returns:
        B ``ase.Atoms`` (each non-periodic, centred at its centre of mass).

    Raises:
        ValueError: ``count`` < 1, ``min_atoms`` < 3 or ``max_atoms`` < ``min_atoms``.
    """
    if count < 1 or min_atoms < 3 or max_atoms < min_atoms:
        raise ValueError(
            f"need count >= 1 and 3 <= min_atoms <= max_atoms; got {count}, {min_atoms}, "
            f"{max_atoms}"
        )
    rng = np.random.default_rng([seed, count, min_atoms, max_atoms])
    sizes = rng.integers(min_atoms, max_atoms + 1, size=count)
    return [organic_molecule(int(n), seed=seed + i) for i, n in enumerate(sizes)]
