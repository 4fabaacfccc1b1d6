"""Training losses for fine-tuning a HIP: named loss terms in a registry (pure torch).

A loss is a weighted sum of **terms**. Each term is a :class:`LossTerm` subclass registered
under a name with :func:`register_loss`; :func:`total_loss` builds the terms a
:class:`~hip_head.finetune.config.LossConfig` selects (weight > 0) and adds them up. Built in:

========================  =============================================  ======================
name (weight field)       what it compares                               options (config fields)
========================  =============================================  ======================
``energy``                energies [B], eV                               ``energy_kind``,
                                                                         ``energy_per_atom``
``forces``                forces [N, 3], eV/Å                            ``forces_kind``
``hessian``               flat Hessians [Σ_g (3N_g)²], eV/Å²             ``hessian_kind``,
                                                                         ``hessian_normalization``
``subspace``              Ĥ in the span of the label's lowest            ``subspace_k``,
                          eigenvectors (:mod:`hip_head.finetune.eigen`)  ``subspace_basis``,
                                                                         ``subspace_dist``
``hessian_rows``          sampled Hessian rows ``"hessian_rows"`` (the   ``hessian_kind``
                          backbone's autograd baseline), eV/Å²
``mode_sign``             sign hinge on Ĥ's k lowest vibrational         ``k``, ``margin``,
                          eigenvalues vs the label's (dimensionless)     ``floor``
``eigenvalues``           MAE of Ĥ's k lowest vibrational eigenvalues,   ``k``
                          eV/Å²/amu (both through ``loss.terms``)
========================  =============================================  ======================

The first four take their weights from the config fields of the same name; any other
registered term is switched on through ``loss.terms`` (``{name: {weight: w, **options}}``), from
YAML or the command line (``loss.terms.NAME.weight=2``). A new term is one class::

    @register_loss("forces_rms")
    class ForcesRMS(LossTerm):
        keys = ("forces",)

        def __call__(self, batch: LossBatch) -> torch.Tensor:
            diff = batch.pred["forces"] - batch.target["forces"]
            return diff.square().mean().sqrt()

Hessians are in the flat batch layout of :mod:`hip_head.finetune.flat_layout`. Units:
energies eV, forces eV/Å, Hessians eV/Å²; a term carries the unit of its quantity (MAE) or its
square (MSE). Default total (upstream HIP): ``1·MAE_E + 25·MAE_F + 10·MAE_H``; the entrywise
Hessian loss averages over all entries of the batch, so big molecules weigh ∝ N².
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch

from hip_head.errors import HIPError, InvalidArgumentError
from hip_head.finetune.config import ConfigError, LossConfig
from hip_head.finetune.eigen import (
    EigenTargets,
    check_mode_sign_options,
    lowest_eigenpairs,
    mode_sign_loss,
    subspace_loss,
    vibrational_eigenpairs,
)
from hip_head.finetune.flat_layout import (
    CountsLike,
    _counts_tensor,
    _elementwise,
    _flat_segments,
)
from hip_head.finetune.metrics import hessian_metrics

__all__ = [
    "LOSS_TERMS",
    "EigenTargets",
    "LossBatch",
    "LossConfig",
    "LossTerm",
    "LossWeights",
    "MissingLabelError",
    "build_loss_terms",
    "energy_loss",
    "forces_loss",
    "hessian_loss",
    "hessian_metrics",
    "lowest_eigenpairs",
    "mode_sign_loss",
    "register_loss",
    "subspace_loss",
    "total_loss",
    "vibrational_eigenpairs",
]

#: The loss configuration is the one :class:`~hip_head.finetune.config.LossConfig` (weights
#: and options of every term); ``LossWeights`` is the same class under the name the loss
#: functions have always used.
LossWeights = LossConfig


class MissingLabelError(HIPError, ValueError):
    """A loss term has a positive weight but its label (or prediction) is missing."""


# ------------------------------------------------------------------------- entrywise losses
def hessian_loss(
    pred_flat: torch.Tensor,
    target_flat: torch.Tensor,
    atoms_per_graph: CountsLike,
    kind: str = "mae",
    normalization: str = "entry",
) -> torch.Tensor:
    """Entrywise Hessian loss on the flat batch layout.

    Args:
        pred_flat: [Σ_g (3N_g)²] predicted Hessian, eV/Å².
        target_flat: [Σ_g (3N_g)²] label Hessian, eV/Å².
        atoms_per_graph: [B] atom count N_g of each structure.
        kind: ``"mae"`` (mean |Δ|, eV/Å²) or ``"mse"`` (mean Δ², (eV/Å²)²).
        normalization: ``"entry"``: mean over all entries of the batch (upstream HIP; a
            structure weighs ∝ (3N_g)²). ``"molecule"``: mean over each structure's entries,
            then mean over structures (every structure weighs the same).

    Returns:
        Scalar loss, differentiable w.r.t. ``pred_flat``.

    Raises:
        ValueError: bad ``kind``/``normalization`` or a length that does not match.
    """
    pred_flat, target_flat = pred_flat.reshape(-1), target_flat.reshape(-1)
    if pred_flat.shape != target_flat.shape:
        raise InvalidArgumentError(
            f"pred {tuple(pred_flat.shape)} and target {tuple(target_flat.shape)}"
        )
    counts = _counts_tensor(atoms_per_graph, pred_flat.device)
    seg, sizes = _flat_segments(counts, pred_flat.numel())
    err = _elementwise(pred_flat - target_flat, kind)
    if normalization == "entry":
        return err.mean()
    if normalization == "molecule":
        per_mol = err.new_zeros(counts.numel()).index_add(0, seg, err)
        return (per_mol / sizes.to(err.dtype)).mean()
    raise InvalidArgumentError(
        f"normalization must be 'entry' or 'molecule', got {normalization!r}"
    )


def energy_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    kind: str = "mae",
    per_atom: bool = False,
    atoms_per_graph: CountsLike | None = None,
) -> torch.Tensor:
    """Energy loss.

    Args:
        pred: [B] predicted energies, eV.
        target: [B] label energies, eV.
        kind: ``"mae"`` or ``"mse"``.
        per_atom: compare E / N_g (eV/atom) instead of E.
        atoms_per_graph: [B] atom counts; required when ``per_atom``.

    Returns:
        Scalar mean over structures (eV for MAE, eV² for MSE; per atom when ``per_atom``).
    """
    pred, target = pred.reshape(-1), target.reshape(-1).to(pred.dtype)
    diff = pred - target
    if per_atom:
        if atoms_per_graph is None:
            raise InvalidArgumentError("per_atom=True needs atoms_per_graph")
        diff = diff / _counts_tensor(atoms_per_graph, pred.device).to(pred.dtype)
    return _elementwise(diff, kind).mean()


def forces_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mae") -> torch.Tensor:
    """Force loss: mean over all N×3 components (upstream L1 convention).

    Args:
        pred: [N, 3] predicted forces, eV/Å.
        target: [N, 3] label forces, eV/Å.
        kind: ``"mae"`` (eV/Å) or ``"mse"`` ((eV/Å)²).

    Returns:
        Scalar loss.
    """
    if pred.shape != target.shape:
        raise InvalidArgumentError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)}")
    return _elementwise(pred - target.to(pred.dtype), kind).mean()


# --------------------------------------------------------------------------------- registry
@dataclass
class LossBatch:
    """What a loss term sees for one batch.

    Attributes:
        pred: model outputs: ``"energy"`` [B] eV, ``"forces"`` [N, 3] eV/Å, ``"hessian"``
            [Σ_g (3N_g)²] eV/Å² (flat), ``"hessian_rows"`` [B, k, 3N_max]-like sampled rows.
        target: labels with the same keys and shapes.
        atoms_per_graph: [B] atom counts N_g.
        positions: [N, 3] positions, Å (None when the caller has none).
        atomic_numbers: [N] atomic numbers (likewise).
        eigen_targets: precomputed label eigenpairs for the ``subspace`` term, or None.
    """

    pred: Mapping[str, Any]
    target: Mapping[str, Any]
    atoms_per_graph: CountsLike
    positions: torch.Tensor | None = None
    atomic_numbers: torch.Tensor | None = None
    eigen_targets: EigenTargets | None = None


class LossTerm:
    """One named loss term: a scalar from a :class:`LossBatch`.

    Subclasses set ``keys`` (entries needed in both ``pred`` and ``target``; checked before the
    call, a missing one raises :class:`MissingLabelError`) and implement ``__call__``. Options
    are keyword arguments of the constructor: from ``loss.terms.NAME`` for registered terms,
    from the config fields named in ``config_fields`` for the built-in ones.

    Attributes:
        name: the registered name (set by :func:`register_loss`).
        keys: prediction/label keys the term reads.
        config_fields: :class:`LossConfig` fields passed to the constructor as options.
    """

    name: ClassVar[str] = ""
    keys: ClassVar[tuple[str, ...]] = ()
    config_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **options: Any) -> None:
        if options:
            raise TypeError(f"unknown option(s) {sorted(options)}")

    def __call__(self, batch: LossBatch) -> torch.Tensor:
        """The term's value, a scalar differentiable w.r.t. the predictions."""
        raise NotImplementedError


#: Registered loss terms by name.
LOSS_TERMS: dict[str, type[LossTerm]] = {}

#: Terms whose weights are :class:`LossConfig` fields of the same name.
WEIGHT_FIELDS: tuple[str, ...] = ("energy", "forces", "hessian", "subspace")

TermClass = TypeVar("TermClass", bound=type[LossTerm])


def register_loss(name: str) -> Callable[[TermClass], TermClass]:
    """Class decorator registering a :class:`LossTerm` subclass under ``name``.

    Raises:
        ValueError: ``name`` is taken by another class, or the class is not a LossTerm.
    """

    def decorate(cls: TermClass) -> TermClass:
        if not (isinstance(cls, type) and issubclass(cls, LossTerm)):
            raise InvalidArgumentError(
                f"register_loss({name!r}) needs a LossTerm subclass, got {cls!r}"
            )
        existing = LOSS_TERMS.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise InvalidArgumentError(f"loss term {name!r} is already registered ({existing!r})")
        cls.name = name
        LOSS_TERMS[name] = cls
        return cls

    return decorate


@register_loss("energy")
class EnergyTerm(LossTerm):
    """Energy MAE/MSE over structures (eV or eV/atom)."""

    keys = ("energy",)
    config_fields = ("energy_kind", "energy_per_atom")

    def __init__(self, energy_kind: str = "mae", energy_per_atom: bool = False) -> None:
        self.kind, self.per_atom = energy_kind, energy_per_atom

    def __call__(self, batch: LossBatch) -> torch.Tensor:
        return energy_loss(
            batch.pred["energy"],
            batch.target["energy"],
            self.kind,
            self.per_atom,
            batch.atoms_per_graph,
        )


@register_loss("forces")
class ForcesTerm(LossTerm):
    """Force MAE/MSE over all N×3 components (eV/Å)."""

    keys = ("forces",)
    config_fields = ("forces_kind",)

    def __init__(self, forces_kind: str = "mae") -> None:
        self.kind = forces_kind

    def __call__(self, batch: LossBatch) -> torch.Tensor:
        return forces_loss(batch.pred["forces"], batch.target["forces"], self.kind)


@register_loss("hessian")
class HessianTerm(LossTerm):
    """Entrywise Hessian MAE/MSE on the flat batch (eV/Å²)."""

    keys = ("hessian",)
    config_fields = ("hessian_kind", "hessian_normalization")

    def __init__(self, hessian_kind: str = "mae", hessian_normalization: str = "entry") -> None:
        self.kind, self.normalization = hessian_kind, hessian_normalization

    def __call__(self, batch: LossBatch) -> torch.Tensor:
        return hessian_loss(
            batch.pred["hessian"],
            batch.target["hessian"],
            batch.atoms_per_graph,
            self.kind,
            self.normalization,
        )


@register_loss("subspace")
class SubspaceTerm(LossTerm):
    """The subspace (eigen) loss against the label's lowest eigenpairs."""

    keys = ("hessian",)
    config_fields = ("subspace_k", "subspace_basis", "subspace_dist")

    def __init__(
        self, subspace_k: int | None = 8, subspace_basis: str = "cartesian", subspace_dist="mae"
    ) -> None:
        if subspace_basis not in ("cartesian", "vibrational"):
            raise InvalidArgumentError(
                f"subspace_basis must be 'cartesian' or 'vibrational', got {subspace_basis!r}"
            )
        self.k, self.basis, self.dist = subspace_k, subspace_basis, subspace_dist

    def __call__(self, batch: LossBatch) -> torch.Tensor:
        targets = batch.eigen_targets
        if targets is None:
            label = batch.target["hessian"]
            if self.basis == "vibrational":
                if batch.positions is None or batch.atomic_numbers is None:
                    raise InvalidArgumentError(
                        "the vibrational subspace basis needs positions and atomic_numbers"
                    )
                targets = vibrational_eigenpairs(
                    label, batch.atoms_per_graph, batch.positions, batch.atomic_numbers, self.k
                )
            else:
                targets = lowest_eigenpairs(label, batch.atoms_per_graph, self.k)
        return subspace_loss(batch.pred["hessian"], batch.atoms_per_graph, targets, self.dist)


@register_loss("hessian_rows")
class HessianRowsTerm(LossTerm):
    """MAE/MSE of sampled Hessian rows (``"hessian_rows"``, eV/Å²): the autograd baseline."""

    keys = ("hessian_rows",)
    config_fields = ("hessian_kind",)

    def __init__(self, hessian_kind: str = "mae") -> None:
        self.kind = hessian_kind

    def __call__(self, batch: LossBatch) -> torch.Tensor:
        diff = batch.pred["hessian_rows"] - batch.target["hessian_rows"]
        return _elementwise(diff, self.kind).mean()


class _LowestEigenvaluesTerm(LossTerm):
    """Shared part of the terms on the prediction's k lowest vibrational eigenvalues
    (:func:`hip_head.finetune.eigen.mode_sign_loss` on every mass-weighted, Eckart-projected
    mode of the label). Needs positions and atomic numbers."""

    keys = ("hessian",)
    kind: ClassVar[str] = "hinge"

    def __init__(
        self, k: int = 4, margin: float = 0.5, floor: float = 0.1, gap: float = 0.0
    ) -> None:
        try:
            check_mode_sign_options(k, margin, floor, self.kind, gap)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"{self.name}: {exc}") from None
        self.k, self.margin, self.floor, self.gap = k, float(margin), float(floor), float(gap)

    def __call__(self, batch: LossBatch) -> torch.Tensor:
        if batch.positions is None or batch.atomic_numbers is None:
            raise InvalidArgumentError(f"the {self.name} loss needs positions and atomic_numbers")
        targets = vibrational_eigenpairs(
            batch.target["hessian"],
            batch.atoms_per_graph,
            batch.positions,
            batch.atomic_numbers,
            None,
        )
        return mode_sign_loss(
            batch.pred["hessian"],
            batch.atoms_per_graph,
            targets,
            self.k,
            self.margin,
            self.floor,
            self.kind,
            self.gap,
        )


@register_loss("mode_sign")
class ModeSignTerm(_LowestEigenvaluesTerm):
    """Sign hinge on the prediction's k lowest vibrational eigenvalues (dimensionless).

    The saddle index is the number of negative vibrational eigenvalues: the hinge is zero once
    the k lowest predicted eigenvalues have the label's signs, each by at least ``margin`` of
    the label's size, so it charges both a missing and a spurious imaginary mode, a soft one as
    much as a stiff one. Options ``k`` (4), ``margin`` (0.5), ``floor`` (0.1 eV/Å²/amu),
    ``gap`` (0 eV/Å²/amu: the smallest required distance from zero).
    """

    kind = "hinge"


@register_loss("eigenvalues")
class EigenvaluesTerm(_LowestEigenvaluesTerm):
    """MAE of the prediction's k lowest vibrational eigenvalues against the label's, paired in
    ascending order (eV/Å²/amu): the lowest-eigenvalue error itself. Option ``k`` (4)."""

    kind = "mae"

    def __init__(self, k: int = 4) -> None:
        super().__init__(k=k)


def build_loss_terms(config: LossConfig) -> list[tuple[str, float, LossTerm]]:
    """The terms ``config`` switches on, as ``(name, weight, term)`` in a fixed order.

    The built-in weights (``energy``, ``forces``, ``hessian``, ``subspace``) come first, then
    ``config.terms`` in its order; terms of weight 0 are left out.

    Raises:
        ConfigError: an unknown term name, a bad weight, or options its class rejects.
    """
    entries: list[tuple[str, float, dict[str, Any]]] = []
    for name in WEIGHT_FIELDS:
        entries.append((name, float(getattr(config, name)), {}))
    for name, spec in (config.terms or {}).items():
        if name in WEIGHT_FIELDS:
            raise ConfigError(f"loss.terms.{name}: set its weight as loss.{name} instead")
        if not isinstance(spec, Mapping) or "weight" not in spec:
            raise ConfigError(f"loss.terms.{name} must be a mapping with a 'weight', got {spec!r}")
        options = {k: v for k, v in spec.items() if k != "weight"}
        entries.append((name, spec["weight"], options))
    terms = []
    for name, weight, options in entries:
        cls = LOSS_TERMS.get(name)
        if cls is None:
            raise ConfigError(
                f"unknown loss term {name!r}; registered: {sorted(LOSS_TERMS)} (register a "
                "LossTerm subclass with hip_head.finetune.losses.register_loss)"
            )
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ConfigError(f"loss weight of {name!r} must be a number >= 0, got {weight!r}")
        if weight == 0:
            continue
        for key in cls.config_fields:
            options.setdefault(key, getattr(config, key))
        try:
            term = cls(**options)
        except TypeError as exc:
            raise ConfigError(f"loss term {name!r}: {exc}") from exc
        terms.append((name, float(weight), term))
    return terms


def _require(batch: LossBatch, key: str, name: str, weight: float) -> None:
    for side, values in (("target", batch.target), ("pred", batch.pred)):
        if values.get(key) is None:
            setting = f"loss.{name}=0" if name in WEIGHT_FIELDS else f"loss.terms.{name}.weight=0"
            raise MissingLabelError(
                f"the {name} loss has weight {weight} > 0 but {side}[{key!r}] is missing; "
                f"provide {key!r} or set {setting}"
            )


def total_loss(
    pred: Mapping[str, Any],
    target: Mapping[str, Any],
    atoms_per_graph: CountsLike,
    weights: LossConfig | None = None,
    eigen_targets: EigenTargets | None = None,
    positions: torch.Tensor | None = None,
    atomic_numbers: torch.Tensor | None = None,
    terms: Sequence[tuple[str, float, LossTerm]] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the loss terms that ``weights`` switches on.

    Args:
        pred: model outputs: ``"energy"`` [B] eV, ``"forces"`` [N, 3] eV/Å, ``"hessian"``
            [Σ_g (3N_g)²] eV/Å² (flat), and whatever further terms read.
        target: labels with the same keys and shapes.
        atoms_per_graph: [B] atom counts N_g.
        weights: the loss configuration (default: E 1, F 25, H 10, subspace 0).
        eigen_targets: precomputed label eigenpairs for the subspace term; computed from
            ``target["hessian"]`` (k = ``subspace_k``, in ``subspace_basis``) when None.
        positions: [N, 3] positions, Å (needed by the ``"vibrational"`` subspace basis).
        atomic_numbers: [N] atomic numbers (likewise).
        terms: the terms of ``weights`` already built by :func:`build_loss_terms` (a training
            loop builds them once, not per batch); None builds them here.

    Returns:
        (total scalar with grad, dict of the detached unweighted value of every term computed,
        by name, and ``"total"``).

    Raises:
        MissingLabelError: a term has weight > 0 but its label (or prediction) is missing.
        ValueError: every weight is 0.
        ConfigError: an unknown term or bad options (see :func:`build_loss_terms`).
    """
    config = weights if weights is not None else LossConfig()
    batch = LossBatch(pred, target, atoms_per_graph, positions, atomic_numbers, eigen_targets)
    if terms is None:
        terms = build_loss_terms(config)
    if not terms:
        raise InvalidArgumentError("every loss weight is 0: nothing to train")
    values: dict[str, tuple[float, torch.Tensor]] = {}
    for name, weight, term in terms:
        for key in term.keys:
            if key == "hessian" and name == "subspace" and eigen_targets is not None:
                if pred.get("hessian") is None:
                    _require(batch, key, name, weight)
                continue
            _require(batch, key, name, weight)
        values[name] = (weight, term(batch))
    total = sum(weight * value for weight, value in values.values())
    components = {name: value.detach() for name, (_, value) in values.items()}
    components["total"] = total.detach()
    return total, components
