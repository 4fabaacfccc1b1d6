"""check_adapter: every property of a wrapped backbone, one at a time, in a fixed order."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import seed as hypothesis_seed
from torch import nn

from hip_head.errors import HIPError, InvalidArgumentError
from hip_head.graph import AtomicGraph

from ._assertions import assert_hessian_symmetric, compare_batch
from ._cases import Case, cases, lone_atom_case, probe_case
from ._compare import (
    AdapterCheckError,
    Property,
    Result,
    check_transformed,
    compare,
    eval_mode,
    evaluate,
    model_device,
    model_dtype,
)
from ._geometry import NATIVE_TOLERANCE, describe_atoms, dtype_name, format_matrix, transform_atoms
from ._report import CheckReport
from ._strategies import DEFAULT_ELEMENTS, as_numbers


def _default_elements(adapter: Any, elements: Sequence[int | str] | None) -> tuple[int, ...]:
    if elements is not None:
        return as_numbers(elements)
    supported = adapter.supported_atomic_numbers
    if supported is None:
        return DEFAULT_ELEMENTS
    common = tuple(z for z in DEFAULT_ELEMENTS if z in set(supported))
    return common or tuple(sorted(supported)[:4])


def _as_model(
    backbone_or_model: nn.Module,
    adapter: Any,
    seed: int,
    adapter_options: dict[str, Any] | None,
    head_options: dict[str, Any],
) -> nn.Module:
    """The HIP model to check: wrapped with a seeded random head when given a backbone."""
    from hip_head.adapters.base import BackboneAdapter

    if isinstance(getattr(backbone_or_model, "adapter", None), BackboneAdapter):
        if head_options or adapter_options:
            raise InvalidArgumentError(
                "head or adapter options were given but the model is already wrapped; pass "
                "the backbone to let check_adapter wrap it"
            )
        return backbone_or_model
    import hip_head

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = hip_head.wrap(
            backbone_or_model, adapter=adapter, adapter_options=adapter_options, **head_options
        )
        # A head initialised to zero (as some fine-tuning recipes do) would make every
        # Hessian check vacuous: give zero parameters random values.
        for parameter in model.readout.parameters():
            if parameter.is_floating_point() and not parameter.detach().any():
                with torch.no_grad():
                    parameter.normal_(
                        0.0, 1.0 / max(1, parameter.shape[-1] if parameter.dim() else 1) ** 0.5
                    )
    return model


def _check_differentiable(model: nn.Module, probe: Atoms, dtype: torch.dtype) -> None:
    """The adapter's energy has a non-zero, finite gradient w.r.t. ``graph.positions``."""
    head = f"{Property.DIFFERENTIABILITY} [{dtype_name(dtype)}]"
    context = f"  molecule: {describe_atoms(probe)}"
    graph = AtomicGraph.from_ase(probe, dtype=dtype, device=model_device(model))
    positions = graph.positions.detach().clone().requires_grad_(True)
    run = getattr(model, "run_backbone", None) or model.adapter
    grad = None
    with eval_mode(model), torch.enable_grad():
        try:
            energy = run(graph.with_positions(positions)).energy
        except (AssertionError, HIPError):
            raise
        except Exception as exc:
            raise AdapterCheckError(
                f"{head}: the adapter raised {type(exc).__name__} on the probe molecule, before "
                f"its energy could be differentiated: {exc}\n{context}",
                Property.DIFFERENTIABILITY,
            ) from exc
        if energy.requires_grad:
            (grad,) = torch.autograd.grad(energy.sum(), positions, allow_unused=True)
    advice = (
        "hip-head takes the forces as -dE/dr by autograd through the adapter. Build the "
        "backbone's input from graph.positions itself: never from a detached copy "
        "(.detach(), .numpy(), torch.tensor(...), .data), and never run the backbone under "
        "torch.no_grad() or torch.inference_mode()."
    )
    if grad is None:
        raise AdapterCheckError(
            f"{head}: the backbone is not differentiable with respect to the positions: "
            "autograd finds no path from the adapter's energy back to graph.positions. "
            f"{advice}\n{context}",
            Property.DIFFERENTIABILITY,
        )
    if not torch.isfinite(grad).all():
        raise AdapterCheckError(
            f"{head}: dE/dr w.r.t. graph.positions is not finite.\n{context}",
            Property.DIFFERENTIABILITY,
        )
    if not grad.any():
        raise AdapterCheckError(
            f"{head}: dE/dr w.r.t. graph.positions is exactly zero on a molecule of "
            f"{len(probe)} atoms: the forces would be zero. {advice}\n{context}",
            Property.DIFFERENTIABILITY,
        )


def _check_nontrivial(model: nn.Module, probe: Atoms, dtype: torch.dtype) -> None:
    result = evaluate(model, [probe], dtype, Property.OUTPUT_SHAPES)
    _assert_symmetric(result, dtype, "probe molecule", probe)
    hessian = result.hessian[0].double()
    n = len(probe)
    off_diagonal = hessian.reshape(n, 3, n, 3).clone()
    off_diagonal[torch.arange(n), :, torch.arange(n), :] = 0.0
    if not hessian.any() or not off_diagonal.any():
        part = "entirely zero" if not hessian.any() else "zero off the diagonal blocks"
        raise AdapterCheckError(
            f"{Property.NONTRIVIAL} [{dtype_name(dtype)}]: the Hessian is {part}; every "
            "equivariance check would pass vacuously. Pass the backbone (not a wrapped model "
            "with a zero head) so that check_adapter initialises the head randomly, and make "
            "sure the adapter's node features are not all zero.\n"
            f"  molecule: {describe_atoms(probe)}",
            Property.NONTRIVIAL,
        )


def _assert_symmetric(result: Result, dtype: torch.dtype, where: str, *atoms: Atoms) -> None:
    for h in result.hessian:
        try:
            assert_hessian_symmetric(h, exact=True)
        except AdapterCheckError as err:
            molecules_text = "\n".join(f"  molecule: {describe_atoms(a)}" for a in atoms)
            message = str(err).removeprefix(f"{Property.SYMMETRY}: ")
            raise AdapterCheckError(
                f"{Property.SYMMETRY} [{dtype_name(dtype)}] ({where}): {message}\n{molecules_text}",
                Property.SYMMETRY,
            ) from None


def _check_case(
    model: nn.Module, case: Case, dtype: torch.dtype, reflections: bool, report: CheckReport
) -> None:
    """Every property on one molecule, in order; raises AdapterCheckError naming the first."""
    atoms, n = case.atoms, len(case.atoms)
    label = case.label
    molecule = f"  molecule: {describe_atoms(atoms)}"
    reference = evaluate(model, [atoms], dtype, Property.OUTPUT_SHAPES)
    _assert_symmetric(reference, dtype, label or "the molecule", atoms)
    if n >= 2 and not reference.hessian[0].any():  # a lone atom's exact Hessian may be zero
        raise AdapterCheckError(
            f"{Property.NONTRIVIAL} [{dtype_name(dtype)}]: the Hessian is all zero\n{molecule}",
            Property.NONTRIVIAL,
        )

    centroid = np.asarray(atoms.get_positions(), dtype=np.float64).mean(axis=0)
    steps: list[tuple[str, np.ndarray | None, np.ndarray | None, np.ndarray | None]] = [
        (Property.TRANSLATION, None, case.translation, None),
        (Property.ROTATION, case.rotation, None, None),
    ]
    if reflections:
        steps.append((Property.REFLECTION, case.improper, None, None))
    if n >= 2:
        steps.append((Property.PERMUTATION, None, None, case.permutation))
    for prop, q, t, perm in steps:
        moved = transform_atoms(atoms, q, t, perm, center=centroid)
        result = evaluate(model, [moved], dtype, prop)
        _assert_symmetric(result, dtype, f"after the {prop} transformation", moved)
        detail = []
        if q is not None:
            detail.append(
                f"  Q = {format_matrix(q)} (det {np.linalg.det(q):+.0f})\n  applied about the "
                f"centroid c = {format_matrix(centroid)} Å: r -> Q (r - c) + c"
            )
        if t is not None:
            detail.append(f"  t = {format_matrix(t)} Å: r -> r + t")
        if perm is not None:
            detail.append(f"  permutation = {perm.tolist()} (new atom i is old atom perm[i])")
        if prop == Property.REFLECTION and model.adapter.parity:
            detail.append(
                "  (reflections are checked because the adapter declares parity = True; an "
                "SO(3)-only backbone must declare parity = False)"
            )
        errors = check_transformed(
            reference,
            result,
            0,
            dtype,
            prop=prop,
            context="\n".join([*detail, molecule]),
            label=label,
            transform=q,
            permutation=perm,
        )
        report._record(dtype, prop, errors)

    if case.mates:  # the molecule between two different molecules
        batch = [case.mates[0], atoms, *case.mates[1:]]
        alone = [evaluate(model, [mate], dtype, Property.BATCHING) for mate in case.mates]
        alone.insert(1, reference)
        together = evaluate(model, batch, dtype, Property.BATCHING)
        _assert_symmetric(together, dtype, "batched", *batch)
        report._record(dtype, Property.BATCHING, compare_batch(batch, together, alone, dtype))

    graph = AtomicGraph.from_ase(atoms, dtype=dtype, device=model_device(model))
    with eval_mode(model):
        native = model.adapter.native_energy_forces(graph)
    if native is not None:
        report.native_checked = True
        energy, forces = native
        rel = NATIVE_TOLERANCE.get(dtype, 1e-2)
        context = (
            "  expected: the bare backbone's own energy and forces "
            f"(adapter.native_energy_forces); got: the wrapped model's\n{molecule}"
        )
        got = {"energy": reference.energy[0], "forces": reference.forces[0]}
        expected = {"energy": energy.reshape(-1)[0], "forces": forces}
        errors = {
            q: compare(q, got[q], expected[q], dtype, 0, rel, Property.NATIVE, context, label)
            for q in ("energy", "forces")
        }
        report._record(dtype, Property.NATIVE, errors)


def _check_dtype(
    model: nn.Module,
    dtype: torch.dtype,
    numbers: tuple[int, ...],
    charges: tuple[int, ...],
    reflections: bool,
    max_atoms: int,
    max_examples: int,
    seed: int,
    shrink: bool,
    report: CheckReport,
) -> None:
    """Every property in one dtype: the probe's gradient and Hessian, lone atoms, molecules."""
    probe = probe_case(numbers, charges, seed)
    _check_differentiable(model, probe.atoms, dtype)
    _check_nontrivial(model, probe.atoms, dtype)
    for z in numbers:
        _check_case(model, lone_atom_case(z, charges, seed), dtype, reflections, report)
    name = dtype_name(dtype)

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
    @hypothesis_seed(seed)
    @example(case=probe)
    @given(case=cases(numbers, max_atoms, charges))
    def run(case: Case) -> None:
        _check_case(model, case, dtype, reflections, report)
        report.examples[name] = report.examples.get(name, 0) + 1

    run()


def check_adapter(
    backbone_or_model: nn.Module,
    *,
    adapter: str | type = "auto",
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64),
    elements: Sequence[int | str] | None = None,
    charges: Sequence[int] | None = None,
    max_atoms: int = 12,
    max_examples: int = 10,
    check_reflections: bool | None = None,
    seed: int = 0,
    shrink: bool = False,
    adapter_options: dict[str, Any] | None = None,
    **head_options: Any,
) -> CheckReport:
    """Property-test a backbone adapter (or a wrapped model) on generated molecules.

    Two call forms: ``check_adapter(backbone)`` wraps a raw backbone with
    :func:`hip_head.wrap` (the adapter found in the registry, or given as ``adapter=`` class
    or registered name) and a random, seeded head; ``check_adapter(hip_model)`` checks an
    already wrapped :class:`~hip_head.HIPModel` as it is.

    For each dtype the model is cast (a deep copy; the argument is never modified), put in
    eval mode and checked property by property, each failure named after the property (see
    :data:`PROPERTIES` for the order): the energy's gradient w.r.t. the positions, output
    shapes, exact symmetry and a non-zero Hessian on a fixed chiral probe molecule; then on
    every element alone, on the probe and on ``max_examples`` Hypothesis-generated molecules:
    translation invariance, rotation equivariance (about the centroid), reflection equivariance
    (when checked), permutation equivariance, batching (the molecule batched between two
    different, generated molecules of other sizes, each compared alone and batched) and the
    backbone's own energy and forces (``native_energy_forces``).

    Build the backbone in float64 (under :func:`float64_default`): casting down to float32 is
    harmless, but a float32 backbone cast up keeps the float32 precision of constants it
    computed at construction (MACE's symmetric-contraction matrices, the Wigner-3j buffers of
    some e3nn modules), and then cannot show float64 equivariance to 1e-10.

    Args:
        backbone_or_model: a raw backbone, or an already wrapped :class:`~hip_head.HIPModel`.
        adapter: adapter for a raw backbone: ``"auto"``, a registered name or a class (a class
            needs no registration).
        dtypes: dtypes to check in, in order.
        elements: atomic numbers or symbols of the molecules. None: the adapter's
            ``supported_atomic_numbers`` within H, C, N, O (or its first four elements).
        charges: total charges (e) to give the molecules, ``atoms.info["charge"]`` ->
            ``AtomicGraph.charge``, for backbones that read the charge; batch-mates draw theirs
            independently. None: no charge is set.
        max_atoms: largest generated molecule (and batch-mate).
        max_examples: generated molecules per dtype (the probe and lone atoms come on top).
        check_reflections: check improper transformations; None follows the adapter's
            ``parity`` (True for O(3) backbones, False for SO(3)-only ones).
        seed: seeds the head's initialisation and Hypothesis: the run is reproducible.
        shrink: let Hypothesis shrink a failure to a smaller molecule (more evaluations).
        adapter_options: keyword arguments of the adapter's constructor (as for ``wrap``).
        **head_options: keyword arguments of :class:`~hip_head.HessianReadout` when wrapping.

    Returns:
        A :class:`CheckReport` (print it to see the margin of every property).

    Raises:
        AdapterCheckError: the first failed property (an ``AssertionError``), naming it, the
            dtype, the transformation and the molecule(s) as ``ase.Atoms(...)`` expressions.
    """
    model = _as_model(backbone_or_model, adapter, seed, adapter_options, head_options)
    wrapped_adapter = model.adapter
    reflections = bool(wrapped_adapter.parity if check_reflections is None else check_reflections)
    numbers = _default_elements(wrapped_adapter, elements)
    charge_values = tuple(int(c) for c in charges) if charges else ()
    report = CheckReport(
        adapter=wrapped_adapter.name or type(wrapped_adapter).__name__,
        parity=bool(wrapped_adapter.parity),
        reflections_checked=reflections,
        elements=numbers,
        charges=charge_values,
        dtypes=tuple(dtype_name(d) for d in dtypes),
    )
    source = model_dtype(model)
    for dtype in dtypes:
        typed = copy.deepcopy(model).to(dtype)
        typed.eval()
        try:
            _check_dtype(
                typed,
                dtype,
                numbers,
                charge_values,
                reflections,
                max_atoms,
                max_examples,
                seed,
                shrink,
                report,
            )
        except AdapterCheckError as err:
            upcast = source is not None and torch.finfo(dtype).eps < torch.finfo(source).eps
            # A small error may be the cast's fault rather than a bug: say so.
            if upcast and err.relative is not None and err.relative < 1e-4:
                note = (
                    f"note: the model was built in {dtype_name(source)} and cast to "
                    f"{dtype_name(dtype)}; constants computed at construction keep "
                    f"{dtype_name(source)} precision. Build the backbone in "
                    f"{dtype_name(dtype)} (inside hip_head.testing.float64_default()) to check "
                    f"{dtype_name(dtype)} equivariance."
                )
                err.args = (f"{err.args[0] if err.args else ''}\n{note}", *err.args[1:])
            raise
    return report
