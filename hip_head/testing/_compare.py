"""Running a model on molecules, comparing results, and the kit's failure: AdapterCheckError."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch
from ase import Atoms
from torch import nn

from hip_head.assemble import split_flat
from hip_head.errors import AdapterCheckError, HIPError
from hip_head.graph import AtomicGraph

from ._geometry import (
    ENERGY_FORCE_FLOOR,
    default_tolerance,
    describe_atoms,
    dtype_name,
    permute_hessian,
    rotate_hessian,
)


class Property(StrEnum):
    """The properties check_adapter checks; each failure's message starts with one of these
    names (a ``str``: compares equal to, and formats as, its name)."""

    DIFFERENTIABILITY = "differentiability"
    OUTPUT_SHAPES = "output shapes"
    SYMMETRY = "exact symmetry"
    NONTRIVIAL = "non-trivial Hessian"
    TRANSLATION = "translation invariance"
    ROTATION = "rotation equivariance"
    REFLECTION = "reflection equivariance"
    PERMUTATION = "permutation equivariance"
    BATCHING = "batching"
    NATIVE = "native energy/forces"


#: The properties :func:`check_adapter` checks, in the order it checks them. Each assumes only
#: what the earlier ones proved (rotations are about the centroid, after translations passed).
PROPERTIES: tuple[str, ...] = tuple(prop.value for prop in Property)


@dataclass
class Result:
    """A model's output, split per molecule and converted to float64 on the CPU."""

    energy: list[torch.Tensor]  # B scalars, eV
    forces: list[torch.Tensor]  # B x (N_g, 3), eV/Å
    hessian: list[torch.Tensor]  # B x (3N_g, 3N_g), eV/Å² (still in the model's dtype)


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """dtype of the first floating parameter of ``model`` (None when it has none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def model_device(model: nn.Module) -> torch.device:
    """Device of ``model``'s first parameter (the CPU when it has none)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def model_in(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``model`` itself when it already runs in ``dtype``, else a cast deep copy."""
    if model_dtype(model) in (None, dtype):
        return model
    return copy.deepcopy(model).to(dtype)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode inside the block, its previous mode restored on exit."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def describe_batch(atoms: Sequence[Atoms], indent: str = "  ") -> str:
    """One line per molecule of a batch: ``molecule i: <formula>: ase.Atoms(...)``."""
    return "\n".join(f"{indent}molecule {i}: {describe_atoms(a)}" for i, a in enumerate(atoms))


def evaluate(
    model: nn.Module, atoms: Sequence[Atoms], dtype: torch.dtype, prop: str = Property.OUTPUT_SHAPES
) -> Result:
    """Run ``model`` on ``atoms`` as one batch in ``dtype``; results split per molecule.

    Raises:
        AdapterCheckError: the model raised (named ``prop``, with the molecules), or an output
            has the wrong shape.
    """
    name = dtype_name(dtype)
    graph = AtomicGraph.from_ase(list(atoms), dtype=dtype, device=model_device(model))
    try:
        with eval_mode(model), torch.no_grad():
            out = model(graph, compute_forces=True, compute_hessian=True, hessian_output="flat")
    except (AssertionError, HIPError):
        raise
    except Exception as exc:
        raise AdapterCheckError(
            f"{prop} [{name}]: the model raised {type(exc).__name__}: {exc}\n"
            f"  on a batch of {len(atoms)}:\n{describe_batch(atoms, '    ')}",
            prop,
        ) from exc
    counts = graph.atoms_per_graph
    flat = out["hessian"].detach().cpu()
    size = int(((3 * counts) ** 2).sum())
    energy = out["energy"].detach().cpu().double()
    forces = out["forces"].detach().cpu().double()
    problems = []
    if flat.dim() != 1 or flat.numel() != size:
        problems.append(
            f"the flat Hessian has shape {tuple(flat.shape)}, expected ({size},) = Σ (3N_g)²"
        )
    if energy.shape != (graph.num_graphs,):
        problems.append(
            f"the energy has shape {tuple(energy.shape)}, expected ({graph.num_graphs},)"
        )
    if forces.shape != (graph.num_atoms, 3):
        problems.append(
            f"the forces have shape {tuple(forces.shape)}, expected ({graph.num_atoms}, 3)"
        )
    if problems:
        raise AdapterCheckError(
            f"{prop} [{name}]: {'; '.join(problems)} for a batch of {len(atoms)} molecule(s) of "
            f"{counts.tolist()} atoms (one energy per molecule of the batch is expected)\n"
            f"{describe_batch(atoms)}",
            prop,
        )
    ptr = graph.ptr.tolist()
    return Result(
        energy=list(energy),
        forces=[forces[ptr[g] : ptr[g + 1]] for g in range(graph.num_graphs)],
        hessian=split_flat(flat, counts),
    )


_UNITS = {"energy": "eV", "forces": "eV/Å", "hessian": "eV/Å²"}
#: What each property demands of each quantity, as printed in a failure.
_RULES = {
    Property.TRANSLATION: {
        "energy": "E(r + t) = E(r)",
        "forces": "F(r + t) = F(r)",
        "hessian": "H(r + t) = H(r)",
    },
    Property.ROTATION: {
        "energy": "E(Q r) = E(r)",
        "forces": "F(Q r) = F(r) Qᵀ",
        "hessian": "H(Q r) = (I⊗Q) H(r) (I⊗Q)ᵀ",
    },
    Property.PERMUTATION: {
        "energy": "E(P r) = E(r)",
        "forces": "F(P r) = P F(r)",
        "hessian": "H(P r) = P H(r) Pᵀ",
    },
}
_RULES[Property.REFLECTION] = _RULES[Property.ROTATION]


def _failure(prop: str, quantity: str) -> str:
    """How a failed comparison of ``quantity`` is phrased for ``prop``."""
    plural = quantity == "forces"
    if prop in _RULES:
        return f"the {quantity} {'break' if plural else 'breaks'} {_RULES[prop][quantity]}"
    if prop == Property.BATCHING:
        return f"the {quantity} moved"
    differ = "differ" if plural else "differs"
    if prop == Property.NATIVE:
        return f"the wrapped model's {quantity} {differ} from the backbone's own"
    return f"the {quantity} {differ}"


def compare(
    quantity: str,
    actual: torch.Tensor,
    expected: torch.Tensor,
    dtype: torch.dtype,
    atol: float | None,
    rtol: float | None,
    prop: str,
    context: str,
    label: str = "",
) -> float:
    """Assert |actual - expected| <= atol + rtol * scale elementwise; return max error / scale.

    ``scale`` is max |expected| (at least 1 eV or 1 eV/Å for energies and forces).

    Raises:
        AdapterCheckError: named ``prop`` (and ``label``), with the worst entry and ``context``.
    """
    actual = actual.detach().cpu().double()
    expected = expected.detach().cpu().double()
    head = f"{prop} [{dtype_name(dtype)}]{f' ({label})' if label else ''}"
    if actual.shape != expected.shape:
        raise AdapterCheckError(
            f"{head}: the {quantity} has shape {tuple(actual.shape)}, expected "
            f"{tuple(expected.shape)}\n{context}",
            prop,
        )
    if not (torch.isfinite(actual).all() and torch.isfinite(expected).all()):
        raise AdapterCheckError(f"{head}: the {quantity} is not finite\n{context}", prop)
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    if quantity != "hessian":
        scale = max(scale, ENERGY_FORCE_FLOOR)
    rel = default_tolerance(dtype, 1.0) if rtol is None else float(rtol)
    tolerance = (0.0 if atol is None else float(atol)) + rel * scale
    diff = (actual - expected).abs()
    error = float(diff.max()) if diff.numel() else 0.0
    relative = error / scale if scale > 0 else (float("inf") if error else 0.0)
    if error > tolerance:
        where = ""
        if quantity == "hessian":
            i, j = divmod(int(diff.argmax()), diff.shape[1])
            where = f" at entry ({i}, {j}) = atoms ({i // 3}, {j // 3}), xyz ({i % 3}, {j % 3})"
        elif quantity == "forces":
            a, k = divmod(int(diff.argmax()), 3)
            where = f" at atom {a}, component {'xyz'[k]}"
        unit = _UNITS[quantity]
        raise AdapterCheckError(
            f"{head}: {_failure(prop, quantity)}: max |Δ{quantity}| = {error:.3e} {unit}{where} "
            f"exceeds the tolerance {tolerance:.3e} {unit} (relative {rel:.0e} of the scale "
            f"{scale:.3e} {unit})\n{context}",
            prop,
            relative=relative,
        )
    return relative


def check_transformed(
    reference: Result,
    actual: Result,
    index: int,
    dtype: torch.dtype,
    *,
    prop: str,
    context: str,
    label: str = "",
    transform: np.ndarray | None = None,
    permutation: np.ndarray | None = None,
    atol: float | None = None,
    rtol: float | None = None,
) -> dict[str, float]:
    """Compare molecule 0 of ``reference``, transformed, with molecule ``index`` of ``actual``.

    Energy is invariant, forces F -> P F Qᵀ and the Hessian H -> P (I⊗Q) H (I⊗Q)ᵀ Pᵀ.

    Returns:
        {"energy", "forces", "hessian"} -> largest error / scale.
    """
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
    expected = {"energy": energy, "forces": forces, "hessian": hessian}
    got = {"energy": actual.energy[index], "forces": actual.forces[index]}
    got["hessian"] = actual.hessian[index]
    return {
        quantity: compare(
            quantity, got[quantity], expected[quantity], dtype, atol, rtol, prop, context, label
        )
        for quantity in ("energy", "forces", "hessian")
    }
