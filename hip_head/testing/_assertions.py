"""Single assertions: symmetry, equivariance under one transformation, batch independence."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms
from torch import nn

from hip_head.errors import InvalidArgumentError

from ._compare import (
    AdapterCheckError,
    Property,
    Result,
    check_transformed,
    evaluate,
    model_in,
)
from ._geometry import (
    default_tolerance,
    describe_atoms,
    dtype_name,
    format_matrix,
    transform_atoms,
)


def assert_hessian_symmetric(
    hessian: torch.Tensor | np.ndarray | Sequence[torch.Tensor],
    exact: bool = True,
    atol: float | None = None,
) -> None:
    """Assert H = Hᵀ.

    Args:
        hessian: a (3N, 3N) matrix (eV/Å²), a batch (B, M, M) or a list of matrices (numpy or
            torch).
        exact: demand bitwise equality (a head symmetric by construction, H_ab = M_ab + M_baᵀ,
            achieves it). False allows ``atol``.
        atol: allowed max |H - Hᵀ| when not exact, eV/Å²; default
            ``default_tolerance(dtype, max |H|)``.

    Raises:
        AdapterCheckError: "exact symmetry", naming max |H - Hᵀ|, where it occurs, and the
            matrix's scale.
    """
    if isinstance(hessian, (list, tuple)):
        for i, h in enumerate(hessian):
            try:
                assert_hessian_symmetric(h, exact=exact, atol=atol)
            except AdapterCheckError as err:
                message = f"Hessian {i} of the list: {err}"
                raise AdapterCheckError(message, Property.SYMMETRY) from None
        return
    h = torch.as_tensor(hessian)
    if h.dim() < 2 or h.shape[-1] != h.shape[-2]:
        raise AdapterCheckError(
            f"{Property.SYMMETRY}: a Hessian must be square, got shape {tuple(h.shape)}",
            Property.SYMMETRY,
        )
    if not torch.isfinite(h).all():
        raise AdapterCheckError(
            f"{Property.SYMMETRY}: the Hessian holds non-finite entries (shape {tuple(h.shape)})",
            Property.SYMMETRY,
        )
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
        raise AdapterCheckError(
            f"{Property.SYMMETRY}: the Hessian is not symmetric {rule}: max |H - Hᵀ| = "
            f"{error:.3e} at entry ({i}, {j}) (atoms {i // 3}, {j // 3}; max |H| = "
            f"{scale:.3e}, dtype {dtype_name(h.dtype)})",
            Property.SYMMETRY,
        )


def assert_translation_invariant(
    model: nn.Module,
    atoms: Atoms,
    translation: np.ndarray | torch.Tensor | Sequence[float],
    dtype: torch.dtype = torch.float64,
    atol: float | None = None,
    rtol: float | None = None,
) -> dict[str, float]:
    """Assert H(r + t) = H(r), F(r + t) = F(r) and E(r + t) = E(r).

    Args:
        model: a :class:`~hip_head.HIPModel`, run in ``dtype`` (a cast copy when its
            parameters have another dtype) and in eval mode.
        atoms: the molecule, positions Å.
        translation: (3,) t, Å.
        dtype: floating dtype of the evaluation.
        atol: absolute tolerance added to the relative one, in each quantity's units.
        rtol: tolerance relative to the largest magnitude of each reference quantity (default
            ``default_tolerance(dtype, 1.0)``; energies and forces below 1 eV, 1 eV/Å are
            compared as if they had that magnitude).

    Returns:
        {"energy", "forces", "hessian"} -> largest error / scale.

    Raises:
        AdapterCheckError: "translation invariance", naming the quantity, t and the molecule.
    """
    model = model_in(model, dtype)
    t = np.asarray(torch.as_tensor(translation, dtype=torch.float64).cpu(), dtype=np.float64)
    reference = evaluate(model, [atoms], dtype, Property.TRANSLATION)
    actual = evaluate(model, [transform_atoms(atoms, translation=t)], dtype, Property.TRANSLATION)
    context = f"  t = {format_matrix(t)} Å\n  molecule: {describe_atoms(atoms)}"
    return check_transformed(
        reference,
        actual,
        0,
        dtype,
        prop=Property.TRANSLATION,
        context=context,
        atol=atol,
        rtol=rtol,
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

    Q acts about the origin; with ``translation`` the check also assumes translation
    invariance (prove that first with :func:`assert_translation_invariant`).

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
        {"energy", "forces", "hessian"} -> largest error / scale.

    Raises:
        AdapterCheckError: "rotation equivariance" or "reflection equivariance", naming the
            quantity, the worst entry, Q, t and the molecule.
        InvalidArgumentError: ``transform`` is not an orthogonal (3, 3) matrix.
    """
    q = np.asarray(torch.as_tensor(transform, dtype=torch.float64).cpu().numpy())
    if q.shape != (3, 3) or not np.allclose(q.T @ q, np.eye(3), atol=1e-8):
        raise InvalidArgumentError(
            f"transform must be an orthogonal (3, 3) matrix, got {q.tolist()}"
        )
    model = model_in(model, dtype)
    prop = Property.ROTATION if np.linalg.det(q) > 0 else Property.REFLECTION
    t = None if translation is None else np.asarray(translation, dtype=np.float64)
    reference = evaluate(model, [atoms], dtype, prop)
    actual = evaluate(model, [transform_atoms(atoms, q, t)], dtype, prop)
    context = (
        f"  Q = {format_matrix(q)} (det {np.linalg.det(q):+.0f}, about the origin)\n  t = "
        f"{format_matrix(np.zeros(3) if t is None else t)} Å\n  molecule: {describe_atoms(atoms)}"
    )
    for result in (reference, actual):
        assert_hessian_symmetric(result.hessian[0], exact=False)
    return check_transformed(
        reference, actual, 0, dtype, prop=prop, context=context, transform=q, atol=atol, rtol=rtol
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
        atoms: the molecule, positions Å.
        permutation: (N,) new atom i is old atom ``permutation[i]``.
        dtype: floating dtype of the evaluation.
        atol: absolute tolerance added to the relative one (each quantity's units).
        rtol: relative tolerance (default ``default_tolerance(dtype, 1.0)``).

    Returns:
        {"energy", "forces", "hessian"} -> largest error / scale.

    Raises:
        AdapterCheckError: "permutation equivariance", naming the quantity, the worst entry,
            the permutation and the molecule.
        InvalidArgumentError: ``permutation`` is not a permutation of the atoms.
    """
    model = model_in(model, dtype)
    perm = np.asarray(permutation, dtype=np.int64)
    if sorted(perm.tolist()) != list(range(len(atoms))):
        raise InvalidArgumentError(f"{perm.tolist()} is not a permutation of {len(atoms)} atoms")
    reference = evaluate(model, [atoms], dtype, Property.PERMUTATION)
    permuted = transform_atoms(atoms, permutation=perm)
    actual = evaluate(model, [permuted], dtype, Property.PERMUTATION)
    context = f"  permutation = {perm.tolist()}\n  molecule: {describe_atoms(atoms)}"
    return check_transformed(
        reference,
        actual,
        0,
        dtype,
        prop=Property.PERMUTATION,
        context=context,
        permutation=perm,
        atol=atol,
        rtol=rtol,
    )


def compare_batch(
    batch: Sequence[Atoms],
    together: Result,
    alone: Sequence[Result],
    dtype: torch.dtype,
    atol: float | None = None,
    rtol: float | None = None,
) -> dict[str, float]:
    """Compare each molecule's results inside the batch with its results alone.

    Returns:
        {"energy", "forces", "hessian"} -> largest error / scale over the molecules.

    Raises:
        AdapterCheckError: "batching", naming the molecule, its batch-mates and the output
            that moved.
    """
    worst = {"energy": 0.0, "forces": 0.0, "hessian": 0.0}
    for i, single in enumerate(alone):
        mates = [j for j in range(len(batch)) if j != i]
        context = (
            f"  molecule {i}: {describe_atoms(batch[i])}\n  its batch-mates (the batch is "
            f"molecules 0..{len(batch) - 1} in this order):\n"
            + "\n".join(f"    molecule {j}: {describe_atoms(batch[j])}" for j in mates)
        )
        label = f"molecule {i} of a batch of {len(batch)}: alone and batched differ"
        errors = check_transformed(
            single,
            together,
            i,
            dtype,
            prop=Property.BATCHING,
            context=context,
            label=label,
            atol=atol,
            rtol=rtol,
        )
        worst = {k: max(worst[k], errors[k]) for k in worst}
    return worst


def assert_batch_independent(
    model: nn.Module,
    molecules: Sequence[Atoms],
    dtype: torch.dtype = torch.float64,
    atol: float | None = None,
    rtol: float | None = None,
) -> dict[str, float]:
    """Assert each molecule's energy, forces and Hessian are the same alone and in one batch.

    Batch the molecules with *different* molecules (other sizes, elements, charges): a
    backbone that centres or standardises features with statistics over the batch passes when
    every molecule of the batch is a copy of one molecule.

    Args:
        model: a :class:`~hip_head.HIPModel`, run in ``dtype`` and eval mode.
        molecules: two or more molecules (positions Å; they may overlap in space: molecules of
            a batch never interact).
        dtype: floating dtype of the evaluation.
        atol: absolute tolerance added to the relative one (each quantity's units).
        rtol: relative tolerance (default ``default_tolerance(dtype, 1.0)``).

    Returns:
        {"energy", "forces", "hessian"} -> largest error / scale over the molecules.

    Raises:
        AdapterCheckError: "batching", naming the molecule, its batch-mates and the output
            that moved (energy, forces or Hessian).
    """
    model = model_in(model, dtype)
    batch = list(molecules)
    if len(batch) < 2:
        raise InvalidArgumentError(f"a batch needs two or more molecules, got {len(batch)}")
    alone = [evaluate(model, [atoms], dtype, Property.BATCHING) for atoms in batch]
    together = evaluate(model, batch, dtype, Property.BATCHING)
    return compare_batch(batch, together, alone, dtype, atol, rtol)
