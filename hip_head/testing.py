"""Property tests for Hessian models and backbone adapters: the hip-head test kit.

Anyone writing an adapter for a new backbone proves it with one call. :func:`check_adapter`
wraps the backbone with a randomly initialised :class:`~hip_head.HessianReadout` and checks, on
Hypothesis-generated molecules, in float32 and float64:

* **rotations**: H(Q r + t) = (I ⊗ Q) H(r) (I ⊗ Q)ᵀ, F(Q r + t) = F(r) Qᵀ, E(Q r + t) = E(r);
* **reflections** (det Q = -1), when the adapter declares ``parity = True`` (O(3) backbones);
* **translations** and **permutations** of the atoms: H(P r) = P H(r) Pᵀ (3x3 blocks moved);
* **exact symmetry**: H == Hᵀ bit for bit (the head is symmetric by construction);
* **batching**: a batch of molecules gives each molecule's own result;
* **unchanged backbone**: energy and forces equal the adapter's ``native_energy_forces``;
* **lone atoms** give a (3, 3) block, and the Hessian is not identically zero (a zero head
  would pass every other check vacuously).

A failure raises :class:`AssertionError` naming the property, the dtype and the molecule (as a
``ase.Atoms(...)`` expression that rebuilds it exactly). Copy this into your adapter's tests::

    import torch
    from hip_head.testing import check_adapter

    from my_package import MyBackbone
    import my_package.hip_adapter  # noqa: F401  (importing the adapter registers it)


    def test_my_adapter():
        # Small and random is enough (the checks are exact), built in float64 so that the
        # float64 check proves equivariance to 1e-10; float32 is checked on a cast copy.
        backbone = MyBackbone(channels=16, num_layers=2, dtype=torch.float64)
        report = check_adapter(backbone, max_examples=10, max_atoms=12)
        print(report)  # the worst relative error of every property, per dtype

The building blocks are public too: the Hypothesis strategies :func:`molecules`,
:func:`rotations`, :func:`orthogonal_matrices`, :func:`translations` and :func:`permutations`,
and the assertions :func:`assert_hessian_equivariant`,
:func:`assert_hessian_permutation_equivariant` and :func:`assert_hessian_symmetric`::

    from hypothesis import given, settings
    from hip_head.testing import assert_hessian_equivariant, molecules, orthogonal_matrices

    # Build the backbone in float64; a model in another dtype is copied and cast on each call.
    model = hip_head.wrap(backbone)

    @settings(max_examples=20, deadline=None)
    @given(atoms=molecules(max_atoms=8), transform=orthogonal_matrices())
    def test_equivariant(atoms, transform):
        assert_hessian_equivariant(model, atoms, transform, dtype=torch.float64)

Tolerances (:func:`default_tolerance`) are relative to the magnitude of the quantity compared,
so one setting fits every backbone and unit: 1e-10 in float64, 1e-4 in float32.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_numbers as _symbol_to_number
from ase.data import chemical_symbols
from torch import nn

try:
    from hypothesis import HealthCheck, Phase, example, given, settings
    from hypothesis import seed as _hypothesis_seed
    from hypothesis import strategies as st
except ImportError as _exc:  # pragma: no cover - hypothesis is a test dependency
    raise ImportError(
        "hip_head.testing needs Hypothesis: `pip install hypothesis` (or `pip install "
        "hip-head[dev]`)"
    ) from _exc

from hip_head.assemble import split_flat
from hip_head.graph import AtomicGraph

__all__ = [
    "DEFAULT_ELEMENTS",
    "CheckReport",
    "assert_hessian_equivariant",
    "assert_hessian_permutation_equivariant",
    "assert_hessian_symmetric",
    "check_adapter",
    "default_tolerance",
    "molecules",
    "orthogonal_matrices",
    "permutations",
    "permute_hessian",
    "random_orthogonal",
    "random_rotation",
    "rotate_hessian",
    "rotations",
    "transform_atoms",
    "translations",
]

#: Elements of the generated molecules when nothing else is asked for: H, C, N, O.
DEFAULT_ELEMENTS: tuple[int, ...] = (1, 6, 7, 8)

#: Relative tolerance per dtype, see :func:`default_tolerance`.
_RELATIVE_TOLERANCE: dict[torch.dtype, float] = {
    torch.float64: 1e-10,
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 1e-2,
}
#: Relative tolerance of "wrapping leaves the backbone's energy and forces unchanged".
_NATIVE_TOLERANCE: dict[torch.dtype, float] = {torch.float64: 1e-6, torch.float32: 1e-4}
#: Energies (eV) and forces (eV/Å) smaller than this are compared as if they had this magnitude,
#: so that exact zeros (a lone atom's forces) do not demand bitwise equality.
_ENERGY_FORCE_FLOOR = 1.0


# ================================================================================ tolerances
def default_tolerance(dtype: torch.dtype, scale: float = 1.0) -> float:
    """Absolute tolerance for comparing a quantity of magnitude ``scale`` computed in ``dtype``.

    The tolerance is relative: ``rtol(dtype) * scale``, with ``scale`` the largest magnitude of
    the reference (e.g. ``max |H|`` in eV/Å²), so it fits any unit and any backbone. The
    relative parts are

    * float64: 1e-10. Round-off in float64 is ~1e-16 per operation; even deep message-passing
      networks amplify it to 1e-14 .. 1e-12 relative, so 1e-10 leaves a margin of 100x while
      the bugs the kit exists to catch (a wrong l = 1 basis, a pseudo-scalar labelled as a
      scalar) give errors of 1e-3 .. 1 relative. float64 is where equivariance is *proved*.
    * float32: 1e-4, about 1000 ulps (float32 eps is 1.2e-7): room for the accumulated
      round-off of a few layers and of rounding rotated positions to float32.
    * float16 / bfloat16: 1e-2.

    Args:
        dtype: the floating dtype the model ran in.
        scale: magnitude of the compared quantity (same units as the tolerance returned).

    Returns:
        The absolute tolerance, in the units of ``scale``.
    """
    if dtype not in _RELATIVE_TOLERANCE:
        raise ValueError(f"no default tolerance for {dtype}; pass atol/rtol explicitly")
    return _RELATIVE_TOLERANCE[dtype] * float(scale)


# ================================================================================ pure helpers
def random_rotation(seed: int | None = None) -> np.ndarray:
    """A random proper rotation, uniform on SO(3) (Haar measure).

    Args:
        seed: seed of numpy's generator (None: fresh entropy).

    Returns:
        (3, 3) float64 orthogonal matrix with determinant +1.
    """
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))  # makes the distribution uniform
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_orthogonal(seed: int | None = None, improper: bool = True) -> np.ndarray:
    """A random orthogonal matrix: a rotation, or with ``improper`` a rotation times -1.

    Args:
        seed: seed of numpy's generator.
        improper: True gives determinant -1 (a rotoinversion; every improper orthogonal
            matrix is -R for some rotation R), False a proper rotation.

    Returns:
        (3, 3) float64 orthogonal matrix.
    """
    rotation = random_rotation(seed)
    return -rotation if improper else rotation


def transform_atoms(
    atoms: Atoms,
    transform: np.ndarray | None = None,
    translation: np.ndarray | None = None,
    permutation: Sequence[int] | np.ndarray | None = None,
) -> Atoms:
    """Apply r -> Q r + t to every atom, and optionally reorder the atoms.

    Args:
        atoms: the molecule (positions Å).
        transform: (3, 3) matrix Q (None: identity).
        translation: (3,) vector t, Å (None: zero).
        permutation: new atom i is old atom ``permutation[i]`` (None: keep the order).

    Returns:
        A new ``ase.Atoms``; ``atoms`` is not modified. Positions are computed in float64; a
        cell (if any) is transformed with the positions.
    """
    out = atoms.copy()
    positions = np.asarray(atoms.get_positions(), dtype=np.float64)
    if transform is not None:
        q = np.asarray(transform, dtype=np.float64)
        positions = positions @ q.T
        out.set_cell(np.asarray(atoms.cell.array) @ q.T)
    if translation is not None:
        positions = positions + np.asarray(translation, dtype=np.float64)
    out.set_positions(positions)
    if permutation is not None:
        out = out[np.asarray(permutation, dtype=np.int64)]
    return out


def rotate_hessian(hessian: torch.Tensor, transform: Any) -> torch.Tensor:
    """(I ⊗ Q) H (I ⊗ Q)ᵀ: how a Hessian must change when all atoms move r -> Q r.

    Args:
        hessian: (3N, 3N), index 3a + α, eV/Å².
        transform: (3, 3) orthogonal matrix Q (numpy or torch).

    Returns:
        (3N, 3N) tensor, dtype and device of ``hessian``.
    """
    q = torch.as_tensor(transform, dtype=hessian.dtype, device=hessian.device)
    n = hessian.shape[0] // 3
    blocks = hessian.reshape(n, 3, n, 3)
    return torch.einsum("ji,aibk,lk->ajbl", q, blocks, q).reshape(3 * n, 3 * n)


def permute_hessian(hessian: torch.Tensor, permutation: Sequence[int] | np.ndarray) -> torch.Tensor:
    """P H Pᵀ with whole 3x3 blocks moved: the Hessian of the reordered molecule.

    Args:
        hessian: (3N, 3N), index 3a + α.
        permutation: new atom i is old atom ``permutation[i]``.

    Returns:
        (3N, 3N) tensor with block (i, j) equal to the old block (perm[i], perm[j]).
    """
    n = hessian.shape[0] // 3
    perm = torch.as_tensor(np.asarray(permutation), dtype=torch.long, device=hessian.device)
    blocks = hessian.reshape(n, 3, n, 3)[perm][:, :, perm]
    return blocks.reshape(3 * n, 3 * n)


# ================================================================================ strategies
def _as_numbers(elements: Sequence[int | str]) -> tuple[int, ...]:
    numbers = tuple(_symbol_to_number[e] if isinstance(e, str) else int(e) for e in elements)
    if not numbers:
        raise ValueError("elements must not be empty")
    return numbers


@st.composite
def molecules(
    draw: st.DrawFn,
    elements: Sequence[int | str] = DEFAULT_ELEMENTS,
    min_atoms: int = 1,
    max_atoms: int = 30,
    min_distance: float = 0.9,
    max_bond: float = 1.6,
) -> Atoms:
    """Hypothesis strategy: random, compact, non-overlapping molecules.

    Molecules grow like a random tree: each new atom is placed at a distance in
    ``[min_distance, max_bond]`` from a randomly chosen earlier atom, in a random direction,
    and a placement closer than ``min_distance`` to any atom is redrawn (after 10 tries the atom
    goes just beyond the molecule along +x). Every atom therefore has a neighbour within
    ``max_bond``, so all atoms interact through any backbone cutoff >= ``max_bond``, and the
    molecules are about as compact as real ones (9 atoms, defaults: radius of gyration 1.5 Å
    and 5.6 neighbours within 2.5 Å on average; ethanol: 1.55 Å and 6). Positions are centred
    on the origin. Shrinking goes towards fewer atoms, the first element, shortest bonds and
    simple directions.

    Args:
        elements: atomic numbers or symbols to draw from.
        min_atoms: fewest atoms (>= 1).
        max_atoms: most atoms.
        min_distance: smallest interatomic distance, Å (guaranteed).
        max_bond: largest distance from a new atom to the atom it grows from, Å.

    Returns:
        A strategy of non-periodic ``ase.Atoms`` (positions float64, Å).
    """
    numbers_pool = _as_numbers(elements)
    if not 1 <= min_atoms <= max_atoms:
        raise ValueError(f"need 1 <= min_atoms <= max_atoms, got {min_atoms}, {max_atoms}")
    if not 0 < min_distance < max_bond:
        raise ValueError(f"need 0 < min_distance < max_bond, got {min_distance}, {max_bond}")
    n = draw(st.integers(min_atoms, max_atoms), label="number of atoms")
    numbers = [draw(st.sampled_from(numbers_pool)) for _ in range(n)]
    lower = min_distance * (1.0 + 1e-6)  # stays above min_distance after centring round-off
    positions = np.zeros((n, 3))
    for i in range(1, n):
        placed = False
        for _ in range(10):
            parent = draw(st.integers(0, i - 1))
            length = draw(st.floats(lower, max_bond))
            cos_theta = draw(st.floats(-1.0, 1.0))
            phi = draw(st.floats(0.0, 2.0 * np.pi, exclude_max=True))
            sin_theta = np.sqrt(max(0.0, 1.0 - cos_theta**2))
            direction = np.array([sin_theta * np.cos(phi), sin_theta * np.sin(phi), cos_theta])
            candidate = positions[parent] + length * direction
            if np.linalg.norm(positions[:i] - candidate, axis=1).min() >= lower:
                positions[i] = candidate
                placed = True
                break
        if not placed:
            far = int(np.argmax(positions[:i, 0]))
            positions[i] = positions[far] + np.array([lower, 0.0, 0.0])
    positions -= positions.mean(axis=0)
    return Atoms(numbers=numbers, positions=positions, pbc=False)


def rotations() -> st.SearchStrategy[np.ndarray]:
    """Hypothesis strategy: proper rotations (3x3 float64, det +1), from unit quaternions.

    Shrinks towards simple rotations (identity, half turns about the axes).
    """
    component = st.floats(-1.0, 1.0, allow_nan=False)
    return st.tuples(component, component, component, component).map(_quaternion_to_matrix)


def _quaternion_to_matrix(q: tuple[float, float, float, float]) -> np.ndarray:
    w, x, y, z = q
    norm = np.sqrt(w * w + x * x + y * y + z * z)
    if norm < 1e-3:  # too short to normalise reliably: the identity
        return np.eye(3)
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    matrix = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )
    # Re-orthonormalise to float64 precision (the formula is exact only for |q| = 1 exactly).
    u, _, vt = np.linalg.svd(matrix)
    return u @ vt


def orthogonal_matrices(improper: bool | None = None) -> st.SearchStrategy[np.ndarray]:
    """Hypothesis strategy: orthogonal 3x3 float64 matrices, proper and improper.

    Args:
        improper: None gives both kinds, True only det -1 (``-R``: reflections and
            rotoinversions), False only rotations.
    """
    kinds = st.booleans() if improper is None else st.just(bool(improper))
    return st.tuples(rotations(), kinds).map(lambda pair: -pair[0] if pair[1] else pair[0])


def translations(scale: float = 10.0) -> st.SearchStrategy[np.ndarray]:
    """Hypothesis strategy: translation vectors (3,) float64 with components in ±``scale`` Å."""
    component = st.floats(-scale, scale, allow_nan=False, allow_infinity=False)
    return st.tuples(component, component, component).map(lambda t: np.array(t, dtype=np.float64))


def permutations(n: int) -> st.SearchStrategy[np.ndarray]:
    """Hypothesis strategy: permutations of ``range(n)`` as int64 arrays (shrinks to identity)."""
    return st.permutations(list(range(n))).map(lambda p: np.array(p, dtype=np.int64))


# ================================================================================ evaluation
@dataclass
class _Result:
    """A model's output, split per molecule and converted to float64 on the CPU."""

    energy: list[torch.Tensor]  # B scalars, eV
    forces: list[torch.Tensor]  # B x (N_g, 3), eV/Å
    hessian: list[torch.Tensor]  # B x (3N_g, 3N_g), eV/Å² (still in the model's dtype)


def _model_dtype(model: nn.Module) -> torch.dtype | None:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _model_in(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``model`` itself when it already runs in ``dtype``, else a cast deep copy."""
    if _model_dtype(model) in (None, dtype):
        return model
    return copy.deepcopy(model).to(dtype)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _evaluate(model: nn.Module, atoms: Sequence[Atoms], dtype: torch.dtype) -> _Result:
    """Run ``model`` on ``atoms`` as one batch in ``dtype``; results split per molecule."""
    graph = AtomicGraph.from_ase(list(atoms), dtype=dtype, device=_model_device(model))
    with _eval_mode(model), torch.no_grad():
        out = model(graph, compute_forces=True, compute_hessian=True, hessian_output="flat")
    counts = graph.atoms_per_graph
    flat = out["hessian"].detach().cpu()
    size = int(((3 * counts) ** 2).sum())
    if flat.dim() != 1 or flat.numel() != size:
        raise AssertionError(
            f"the flat Hessian has shape {tuple(flat.shape)}; expected ({size},) = Σ (3N_g)² for "
            f"molecules of {counts.tolist()} atoms"
        )
    hessians = split_flat(flat, counts)
    energy = out["energy"].detach().cpu().double()
    forces = out["forces"].detach().cpu().double()
    if energy.shape != (graph.num_graphs,) or forces.shape != (graph.num_atoms, 3):
        raise AssertionError(
            f"energy {tuple(energy.shape)} / forces {tuple(forces.shape)}: expected "
            f"({graph.num_graphs},) and ({graph.num_atoms}, 3)"
        )
    ptr = graph.ptr.tolist()
    return _Result(
        energy=list(energy),
        forces=[forces[ptr[g] : ptr[g + 1]] for g in range(graph.num_graphs)],
        hessian=hessians,
    )


def _describe(atoms: Atoms) -> str:
    """An ``ase.Atoms(...)`` expression that rebuilds the molecule exactly."""
    numbers = atoms.get_atomic_numbers().tolist()
    positions = np.asarray(atoms.get_positions(), dtype=np.float64).tolist()
    return (
        f"{atoms.get_chemical_formula()} ({len(atoms)} atoms): "
        f"ase.Atoms(numbers={numbers}, positions={positions})"
    )


def _matrix(m: Any) -> str:
    return np.array2string(np.asarray(m, dtype=np.float64), precision=17, separator=", ")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


_UNITS = {"energy": "eV", "forces": "eV/Å", "hessian": "eV/Å²"}


class _ToleranceError(AssertionError):
    """A comparison failed; ``relative`` is the error divided by the quantity's scale."""

    def __init__(self, message: str, relative: float) -> None:
        super().__init__(message)
        self.relative = relative


def _compare(
    quantity: str,
    actual: torch.Tensor,
    expected: torch.Tensor,
    dtype: torch.dtype,
    atol: float | None,
    rtol: float | None,
    what: str,
    context: str,
) -> float:
    """Assert |actual - expected| <= atol + rtol * scale elementwise; return max error / scale."""
    actual = actual.detach().cpu().double()
    expected = expected.detach().cpu().double()
    if actual.shape != expected.shape:
        raise AssertionError(
            f"{what}: {quantity} has shape {tuple(actual.shape)}, expected "
            f"{tuple(expected.shape)}\n{context}"
        )
    if not (torch.isfinite(actual).all() and torch.isfinite(expected).all()):
        raise AssertionError(f"{what}: {quantity} is not finite\n{context}")
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    if quantity != "hessian":
        scale = max(scale, _ENERGY_FORCE_FLOOR)
    rel = default_tolerance(dtype, 1.0) if rtol is None else float(rtol)
    tolerance = (0.0 if atol is None else float(atol)) + rel * scale
    diff = (actual - expected).abs()
    error = float(diff.max()) if diff.numel() else 0.0
    if error > tolerance:
        where = ""
        if quantity == "hessian":
            i, j = divmod(int(diff.argmax()), diff.shape[1])
            where = f" at entry ({i}, {j}) = atoms ({i // 3}, {j // 3}), xyz ({i % 3}, {j % 3})"
        elif quantity == "forces":
            a, k = divmod(int(diff.argmax()), 3)
            where = f" at atom {a}, component {'xyz'[k]}"
        unit = _UNITS[quantity]
        raise _ToleranceError(
            f"{what} [{_dtype_name(dtype)}]: max |Δ{quantity}| = {error:.3e} {unit}{where} "
            f"exceeds the tolerance {tolerance:.3e} {unit} (relative {rel:.0e} of the scale "
            f"{scale:.3e} {unit})\n{context}",
            relative=error / scale if scale > 0 else float("inf"),
        )
    return error / scale if scale > 0 else error


def _check_transformed(
    reference: _Result,
    actual: _Result,
    index: int,
    dtype: torch.dtype,
    *,
    what: str,
    context: str,
    transform: np.ndarray | None = None,
    permutation: np.ndarray | None = None,
    atol: float | None = None,
    rtol: float | None = None,
) -> dict[str, float]:
    """Compare molecule 0 of ``reference``, transformed, with molecule ``index`` of ``actual``."""
    energy = reference.energy[0]
    forces = reference.forces[0]
    hessian = reference.hessian[0].double()
    if transform is not None:
        q = torch.as_tensor(transform, dtype=torch.float64)
        forces = forces @ q.T
        hessian = rotate_hessian(hessian, q)
    if permutation is not None:
        forces = forces[torch.as_tensor(permutation, dtype=torch.long)]
        hessian = permute_hessian(hessian, permutation)
    return {
        "energy": _compare(
            "energy", actual.energy[index], energy, dtype, atol, rtol, what, context
        ),
        "forces": _compare(
            "forces", actual.forces[index], forces, dtype, atol, rtol, what, context
        ),
        "hessian": _compare(
            "hessian", actual.hessian[index], hessian, dtype, atol, rtol, what, context
        ),
    }


# ================================================================================ assertions
def assert_hessian_symmetric(
    hessian: torch.Tensor | np.ndarray | Sequence[torch.Tensor],
    exact: bool = True,
    atol: float | None = None,
) -> None:
    """Assert H = Hᵀ.

    Args:
        hessian: a (3N, 3N) matrix, a batch (B, M, M) or a list of matrices (numpy or torch).
        exact: demand bitwise equality (a head symmetric by construction, H_ab = M_ab + M_baᵀ,
            achieves it). False allows ``atol``.
        atol: allowed max |H - Hᵀ| when not exact; default
            ``default_tolerance(dtype, max |H|)``.

    Raises:
        AssertionError: naming max |H - Hᵀ|, where it occurs, and the matrix's scale.
    """
    if isinstance(hessian, (list, tuple)):
        for i, h in enumerate(hessian):
            try:
                assert_hessian_symmetric(h, exact=exact, atol=atol)
            except AssertionError as err:
                raise AssertionError(f"Hessian {i} of the list: {err}") from None
        return
    h = torch.as_tensor(hessian)
    if h.dim() < 2 or h.shape[-1] != h.shape[-2]:
        raise AssertionError(f"a Hessian must be square, got shape {tuple(h.shape)}")
    if not torch.isfinite(h).all():
        raise AssertionError(f"the Hessian holds non-finite entries (shape {tuple(h.shape)})")
    diff = (h - h.transpose(-1, -2)).abs()
    error = float(diff.max()) if diff.numel() else 0.0
    scale = float(h.abs().max()) if h.numel() else 0.0
    if exact:
        ok = bool(torch.equal(h, h.transpose(-1, -2)))
        rule = "exactly (bitwise)"
    else:
        tol = default_tolerance(h.dtype, scale) if atol is None else float(atol)
        ok = error <= tol
        rule = f"to {tol:.3e}"
    if not ok:
        flat_index = int(diff.reshape(-1).argmax())
        m = h.shape[-1]
        i, j = divmod(flat_index % (m * m), m)
        raise AssertionError(
            f"the Hessian is not symmetric {rule}: max |H - Hᵀ| = {error:.3e} at entry ({i}, {j}) "
            f"(atoms {i // 3}, {j // 3}; max |H| = {scale:.3e}, dtype {_dtype_name(h.dtype)})"
        )


def assert_hessian_equivariant(
    model: nn.Module,
    atoms: Atoms,
    transform: np.ndarray | torch.Tensor,
    translation: np.ndarray | torch.Tensor | None = None,
    dtype: torch.dtype = torch.float64,
    atol: float | None = None,
    rtol: float | None = None,
) -> dict[str, float]:
    """Assert H(Q r + t) = (I ⊗ Q) H(r) (I ⊗ Q)ᵀ, F(Q r + t) = F(r) Qᵀ and E(Q r + t) = E(r).

    Args:
        model: a :class:`~hip_head.HIPModel` (or any module with its ``forward`` signature).
            Run in ``dtype`` (a cast copy is used when its parameters have another dtype)
            and in eval mode.
        atoms: the molecule, positions Å.
        transform: (3, 3) orthogonal Q, proper (rotation) or improper (reflection).
        translation: (3,) t, Å (None: no translation).
        dtype: floating dtype of the evaluation.
        atol: absolute tolerance added to the relative one, in each quantity's units.
        rtol: tolerance relative to the largest magnitude of each reference quantity
            (default: ``default_tolerance(dtype, 1.0)``; energies and forces below 1 eV,
            1 eV/Å are compared as if they had that magnitude).

    Returns:
        The largest error of energy, forces and Hessian divided by their scales.

    Raises:
        AssertionError: naming the quantity, the worst entry, Q, t and the molecule.
    """
    q = np.asarray(torch.as_tensor(transform, dtype=torch.float64).cpu().numpy())
    if q.shape != (3, 3) or not np.allclose(q.T @ q, np.eye(3), atol=1e-8):
        raise ValueError(f"transform must be an orthogonal (3, 3) matrix, got {q.tolist()}")
    model = _model_in(model, dtype)
    t = None if translation is None else np.asarray(translation, dtype=np.float64)
    moved = transform_atoms(atoms, q, t)
    reference = _evaluate(model, [atoms], dtype)
    actual = _evaluate(model, [moved], dtype)
    kind = "rotation" if np.linalg.det(q) > 0 else "reflection"
    context = (
        f"  Q = {_matrix(q)} (det {np.linalg.det(q):+.0f})\n  t = "
        f"{_matrix(np.zeros(3) if t is None else t)} Å\n  molecule: {_describe(atoms)}"
    )
    for result in (reference, actual):
        assert_hessian_symmetric(result.hessian[0], exact=False)
    return _check_transformed(
        reference,
        actual,
        0,
        dtype,
        what=f"{kind} equivariance",
        context=context,
        transform=q,
        atol=atol,
        rtol=rtol,
    )


def assert_hessian_permutation_equivariant(
    model: nn.Module,
    atoms: Atoms,
    permutation: Sequence[int] | np.ndarray,
    dtype: torch.dtype = torch.float64,
    atol: float | None = None,
    rtol: float | None = None,
) -> dict[str, float]:
    """Assert H(P r) = P H(r) Pᵀ (3x3 blocks moved), F(P r) = P F(r), E(P r) = E(r).

    Args:
        model: a :class:`~hip_head.HIPModel`, run in ``dtype`` and eval mode.
        atoms: the molecule.
        permutation: new atom i is old atom ``permutation[i]``.
        dtype: floating dtype of the evaluation.
        atol: absolute tolerance added to the relative one (each quantity's units).
        rtol: relative tolerance (default ``default_tolerance(dtype, 1.0)``).

    Returns:
        The largest error of energy, forces and Hessian divided by their scales.

    Raises:
        AssertionError: naming the quantity, the worst entry, the permutation and the molecule.
    """
    model = _model_in(model, dtype)
    perm = np.asarray(permutation, dtype=np.int64)
    if sorted(perm.tolist()) != list(range(len(atoms))):
        raise ValueError(f"{perm.tolist()} is not a permutation of {len(atoms)} atoms")
    reference = _evaluate(model, [atoms], dtype)
    actual = _evaluate(model, [transform_atoms(atoms, permutation=perm)], dtype)
    context = f"  permutation = {perm.tolist()}\n  molecule: {_describe(atoms)}"
    return _check_transformed(
        reference,
        actual,
        0,
        dtype,
        what="permutation equivariance",
        context=context,
        permutation=perm,
        atol=atol,
        rtol=rtol,
    )


# ================================================================================ check_adapter
@dataclass
class CheckReport:
    """What :func:`check_adapter` checked, and the worst errors it saw.

    Attributes:
        adapter: the adapter's registry name.
        parity: the adapter's declared ``parity``.
        reflections_checked: whether improper transformations were checked.
        native_checked: whether energy and forces were compared with ``native_energy_forces``.
        elements: atomic numbers of the generated molecules.
        dtypes: names of the dtypes checked.
        examples: dtype name -> number of molecules checked (explicit and generated).
        worst: (dtype name, property) -> largest error seen, divided by the quantity's scale
            (compare with ``default_tolerance(dtype)``: the margin of each property).
    """

    adapter: str
    parity: bool
    reflections_checked: bool
    native_checked: bool = False
    elements: tuple[int, ...] = ()
    dtypes: tuple[str, ...] = ()
    examples: dict[str, int] = field(default_factory=dict)
    worst: dict[tuple[str, str], float] = field(default_factory=dict)

    def _record(self, dtype: torch.dtype, prop: str, errors: dict[str, float] | float) -> None:
        value = max(errors.values()) if isinstance(errors, dict) else float(errors)
        key = (_dtype_name(dtype), prop)
        self.worst[key] = max(self.worst.get(key, 0.0), value)

    def __str__(self) -> str:
        symbols = " ".join(chemical_symbols[z] for z in self.elements)
        lines = [
            f"check_adapter: adapter {self.adapter!r} (parity={self.parity}), elements {symbols}",
            f"  reflections checked: {self.reflections_checked}; "
            f"native energy/forces checked: {self.native_checked}",
        ]
        for dtype in self.dtypes:
            lines.append(
                f"  {dtype}: {self.examples.get(dtype, 0)} molecules, worst relative errors:"
            )
            for (name, prop), value in sorted(self.worst.items()):
                if name == dtype:
                    lines.append(f"    {prop:<12} {value:.2e}")
        return "\n".join(lines)


class _Case(NamedTuple):
    """One generated test case: a molecule and the transformations applied to it."""

    atoms: Atoms
    rotation: np.ndarray
    improper: np.ndarray
    translation: np.ndarray
    permutation: np.ndarray


@st.composite
def _cases(draw: st.DrawFn, elements: Sequence[int], max_atoms: int) -> _Case:
    atoms = draw(molecules(elements=elements, max_atoms=max_atoms))
    return _Case(
        atoms=atoms,
        rotation=draw(rotations()),
        improper=draw(orthogonal_matrices(improper=True)),
        translation=draw(translations()),
        permutation=draw(permutations(len(atoms))),
    )


def _probe_molecule(elements: Sequence[int]) -> Atoms:
    """A fixed chiral 5-atom molecule (distorted tetrahedron, bonds 1.0-1.3 Å)."""
    directions = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=np.float64)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    directions[0] += [0.15, -0.05, 0.0]
    bonds = np.array([1.0, 1.1, 1.2, 1.3])
    positions = np.vstack([np.zeros(3), bonds[:, None] * directions])
    numbers = [elements[i % len(elements)] for i in range(5)]
    return Atoms(numbers=numbers, positions=positions - positions.mean(axis=0), pbc=False)


def _probe_case(elements: Sequence[int], seed: int) -> _Case:
    atoms = _probe_molecule(elements)
    return _Case(
        atoms=atoms,
        rotation=random_rotation(seed),
        improper=random_orthogonal(seed + 1, improper=True),
        translation=np.array([1.5, -2.0, 3.25]),
        permutation=np.random.default_rng(seed).permutation(len(atoms)),
    )


def _default_elements(adapter: Any, elements: Sequence[int | str] | None) -> tuple[int, ...]:
    if elements is not None:
        return _as_numbers(elements)
    supported = adapter.supported_atomic_numbers
    if supported is None:
        return DEFAULT_ELEMENTS
    common = tuple(z for z in DEFAULT_ELEMENTS if z in set(supported))
    return common or tuple(sorted(supported)[:4])


def _as_model(
    backbone_or_model: nn.Module, adapter: Any, seed: int, head_options: dict[str, Any]
) -> nn.Module:
    """The HIP model to check: wrapped with a seeded random head when given a backbone."""
    from hip_head.adapters.base import BackboneAdapter

    if isinstance(getattr(backbone_or_model, "adapter", None), BackboneAdapter):
        if head_options:
            raise ValueError(
                "head options were given but the model is already wrapped; pass the backbone "
                "to let check_adapter wrap it"
            )
        return backbone_or_model
    import hip_head

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = hip_head.wrap(backbone_or_model, adapter=adapter, **head_options)
        # A head initialised to zero (as some fine-tuning recipes do) would make every
        # Hessian check vacuous: give zero parameters random values.
        for parameter in model.readout.parameters():
            if parameter.is_floating_point() and not parameter.detach().any():
                with torch.no_grad():
                    parameter.normal_(
                        0.0, 1.0 / max(1, parameter.shape[-1] if parameter.dim() else 1) ** 0.5
                    )
    return model


def _check_nontrivial(model: nn.Module, probe: Atoms, dtype: torch.dtype) -> None:
    result = _evaluate(model, [probe], dtype)
    hessian = result.hessian[0].double()
    n = len(probe)
    off_diagonal = hessian.reshape(n, 3, n, 3).clone()
    off_diagonal[torch.arange(n), :, torch.arange(n), :] = 0.0
    if not hessian.any() or not off_diagonal.any():
        part = "entirely zero" if not hessian.any() else "zero off the diagonal blocks"
        raise AssertionError(
            f"non-trivial Hessian [{_dtype_name(dtype)}]: the Hessian is {part} on "
            f"{_describe(probe)}; every equivariance check would pass vacuously. Pass the "
            "backbone (not a wrapped model with a zero head) so that check_adapter initialises "
            "the head randomly, and make sure the adapter's node features are not all zero."
        )


def _check_case(
    model: nn.Module,
    case: _Case,
    dtype: torch.dtype,
    reflections: bool,
    report: CheckReport,
) -> None:
    """All properties on one molecule; raises AssertionError naming the failed property."""
    atoms = case.atoms
    name = _dtype_name(dtype)
    context = f"  molecule: {_describe(atoms)}"
    reference = _evaluate(model, [atoms], dtype)
    n = len(atoms)

    def symmetric(result: _Result, label: str) -> None:
        for h in result.hessian:
            try:
                assert_hessian_symmetric(h, exact=True)
            except AssertionError as err:
                raise AssertionError(
                    f"exact symmetry [{name}] ({label}): {err}\n{context}"
                ) from None

    symmetric(reference, "original molecule")
    if reference.hessian[0].shape != (3 * n, 3 * n):
        raise AssertionError(
            f"Hessian shape [{name}]: got {tuple(reference.hessian[0].shape)}, expected "
            f"({3 * n}, {3 * n})\n{context}"
        )
    if n >= 2 and not reference.hessian[0].any():  # a lone atom's exact Hessian is zero
        raise AssertionError(f"non-trivial Hessian [{name}]: the Hessian is all zero\n{context}")

    transforms = [
        ("rotation", case.rotation, case.translation, None),
        ("translation", None, case.translation, None),
        ("permutation", None, None, case.permutation),
    ]
    if reflections:
        transforms.insert(1, ("reflection", case.improper, case.translation, None))
    moved_atoms, moved_results = [], []
    for prop, q, t, perm in transforms:
        moved = transform_atoms(atoms, q, t, perm)
        result = _evaluate(model, [moved], dtype)
        symmetric(result, f"after the {prop}")
        detail = []
        if q is not None:
            detail.append(f"  Q = {_matrix(q)} (det {np.linalg.det(q):+.0f})")
        if t is not None:
            detail.append(f"  t = {_matrix(t)} Å")
        if perm is not None:
            detail.append(f"  permutation = {perm.tolist()}")
        if prop == "reflection" and model.adapter.parity:
            detail.append(
                "  (reflections are checked because the adapter declares parity = True; "
                "an SO(3)-only backbone must declare parity = False)"
            )
        errors = _check_transformed(
            reference,
            result,
            0,
            dtype,
            what=f"{prop} equivariance",
            context="\n".join(detail + [context]),
            transform=q,
            permutation=perm,
        )
        report._record(dtype, prop, errors)
        moved_atoms.append(moved)
        moved_results.append(result)

    # Batching: the molecule and its transformed copies in one batch.
    batch = _evaluate(model, [atoms, *moved_atoms], dtype)
    symmetric(batch, "batched")
    for index, single in enumerate([reference, *moved_results]):
        errors = _check_transformed(
            single,
            batch,
            index,
            dtype,
            what="batching (a batched result differs from the molecule's own result)",
            context=f"  molecule {index} of the batch\n{context}",
        )
        report._record(dtype, "batching", errors)

    # Wrapping leaves the backbone's own energy and forces unchanged.
    graph = AtomicGraph.from_ase(atoms, dtype=dtype, device=_model_device(model))
    with _eval_mode(model):
        native = model.adapter.native_energy_forces(graph)
    if native is not None:
        report.native_checked = True
        energy, forces = native
        rel = _NATIVE_TOLERANCE.get(dtype, 1e-2)
        what = "native energy/forces (the wrapped model changes the backbone's)"
        errors = [
            _compare(
                "energy", reference.energy[0], energy.reshape(-1)[0], dtype, 0, rel, what, context
            ),
            _compare("forces", reference.forces[0], forces, dtype, 0, rel, what, context),
        ]
        report._record(dtype, "native", max(errors))


def _check_lone_atoms(
    model: nn.Module,
    elements: Sequence[int],
    dtype: torch.dtype,
    reflections: bool,
    seed: int,
    report: CheckReport,
) -> None:
    """Each element alone gives a symmetric (3, 3) block, equivariant (hence isotropic)."""
    name = _dtype_name(dtype)
    for z in elements:
        atoms = Atoms(numbers=[z], positions=[[0.0, 0.0, 0.0]], pbc=False)
        context = f"  molecule: {_describe(atoms)}"
        result = _evaluate(model, [atoms], dtype)
        shape = tuple(result.hessian[0].shape)
        if shape != (3, 3):
            raise AssertionError(
                f"lone atom [{name}]: a single {chemical_symbols[z]} atom gives a Hessian of "
                f"shape {shape}, expected (3, 3)"
            )
        try:
            assert_hessian_symmetric(result.hessian[0], exact=True)
        except AssertionError as err:
            raise AssertionError(f"exact symmetry [{name}] (lone atom): {err}\n{context}") from None
        transforms = [("rotation", random_rotation(seed))]
        if reflections:
            transforms.append(("reflection", random_orthogonal(seed, improper=True)))
        for prop, q in transforms:
            moved = _evaluate(model, [transform_atoms(atoms, q, np.array([0.5, -1.0, 2.0]))], dtype)
            what = f"lone-atom {prop} equivariance"
            errors = _check_transformed(
                result, moved, 0, dtype, what=what, context=context, transform=q
            )
            report._record(dtype, prop, errors)


def _check_dtype(
    model: nn.Module,
    dtype: torch.dtype,
    numbers: tuple[int, ...],
    reflections: bool,
    max_atoms: int,
    max_examples: int,
    seed: int,
    shrink: bool,
    report: CheckReport,
) -> None:
    """Every property in one dtype: probe molecule, lone atoms, then Hypothesis examples."""
    _check_nontrivial(model, _probe_molecule(numbers), dtype)
    _check_lone_atoms(model, numbers, dtype, reflections, seed, report)
    name = _dtype_name(dtype)

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else []),
        report_multiple_bugs=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )
    @_hypothesis_seed(seed)
    @example(case=_probe_case(numbers, seed))
    @given(case=_cases(numbers, max_atoms))
    def run(case: _Case) -> None:
        _check_case(model, case, dtype, reflections, report)
        report.examples[name] = report.examples.get(name, 0) + 1

    run()


def check_adapter(
    backbone_or_model: nn.Module,
    *,
    adapter: str | type = "auto",
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64),
    elements: Sequence[int | str] | None = None,
    max_atoms: int = 12,
    max_examples: int = 10,
    check_reflections: bool | None = None,
    seed: int = 0,
    shrink: bool = False,
    **head_options: Any,
) -> CheckReport:
    """Property-test a backbone adapter (or a wrapped model) on generated molecules.

    For each dtype the model is cast (a deep copy; the argument is never modified), put in
    eval mode and checked on a fixed chiral probe molecule, on every element alone and on
    ``max_examples`` Hypothesis-generated molecules, each with a random rotation, reflection,
    translation and permutation (see the module docstring for the list of properties).

    Build the backbone in float64 (e.g. under ``torch.set_default_dtype(torch.float64)``):
    casting down to float32 is harmless, but a float32 backbone cast up keeps the float32
    precision of constants it computed at construction (MACE's symmetric-contraction
    matrices, for instance), and then cannot show float64 equivariance to 1e-10.

    Args:
        backbone_or_model: a raw backbone (wrapped with :func:`hip_head.wrap` and a random,
            seeded head) or an already wrapped :class:`~hip_head.HIPModel`.
        adapter: adapter for a raw backbone: ``"auto"``, a registered name or a class.
        dtypes: dtypes to check in.
        elements: atomic numbers or symbols of the molecules. None: the adapter's
            ``supported_atomic_numbers`` within H, C, N, O (or its first four elements).
        max_atoms: largest generated molecule.
        max_examples: generated molecules per dtype (the probe and lone atoms come on top).
        check_reflections: check improper transformations; None follows the adapter's
            ``parity`` (True for O(3) backbones, False for SO(3)-only ones).
        seed: seeds the head's initialisation and Hypothesis: the run is reproducible.
        shrink: let Hypothesis shrink a failure to a smaller molecule (more evaluations).
        **head_options: keyword arguments of :class:`~hip_head.HessianReadout` when wrapping.

    Returns:
        A :class:`CheckReport` (print it to see the margin of every property).

    Raises:
        AssertionError: the first failed property, naming it, the dtype and the molecule.
    """
    model = _as_model(backbone_or_model, adapter, seed, head_options)
    wrapped_adapter = model.adapter
    reflections = bool(wrapped_adapter.parity if check_reflections is None else check_reflections)
    numbers = _default_elements(wrapped_adapter, elements)
    report = CheckReport(
        adapter=wrapped_adapter.name or type(wrapped_adapter).__name__,
        parity=bool(wrapped_adapter.parity),
        reflections_checked=reflections,
        elements=numbers,
        dtypes=tuple(_dtype_name(d) for d in dtypes),
    )
    source = _model_dtype(model)
    for dtype in dtypes:
        typed = copy.deepcopy(model).to(dtype)
        typed.eval()
        try:
            _check_dtype(
                typed, dtype, numbers, reflections, max_atoms, max_examples, seed, shrink, report
            )
        except AssertionError as err:
            upcast = source is not None and torch.finfo(dtype).eps < torch.finfo(source).eps
            # A small error may be the cast's fault rather than a bug: say so.
            if upcast and isinstance(err, _ToleranceError) and err.relative < 1e-4:
                note = (
                    f"note: the model was built in {_dtype_name(source)} and cast to "
                    f"{_dtype_name(dtype)}; constants computed at construction keep "
                    f"{_dtype_name(source)} precision. Build the backbone in "
                    f"{_dtype_name(dtype)} to check {_dtype_name(dtype)} equivariance."
                )
                err.args = (f"{err.args[0] if err.args else ''}\n{note}", *err.args[1:])
            raise
    return report
