"""Fine-tuning configuration: one YAML file, validated, with command-line overrides.

A configuration has five sections; every key has a default, so a file only names what it
changes::

    model:   {backbone: default, head: {channels: 16}}
    data:    {train: [default], batch_size: 8}
    optim:   {lr: 1.0e-3, warmup_steps: 50}
    loss:    {energy: 0, forces: 0, hessian: 10}
    train:   {mode: head, max_steps: 2000, out_dir: runs/hip}

Unknown keys and wrong types raise :class:`ConfigError` naming the key (``train.max_stepz``)
and what is allowed. Overrides use the same dotted names: ``train.max_steps=100``; values are
parsed as YAML (``true``, ``1e-3``, ``[a, b]``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from hip_head.finetune.config_schema import ConfigError, apply_overrides, build_section

__all__ = [
    "ConfigError",
    "DataConfig",
    "FinetuneConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
]


@dataclass
class ModelConfig:
    """What to fine-tune.

    Attributes:
        backbone: path of a backbone file: a safe one
            (:func:`hip_head.serialization.save_backbone`) or, with ``trust``, one saved with
            ``torch.save(model)`` (a MACE ``.model`` file, ...); or ``"default"``: the small
            pretrained ScaleShiftMACE shipped in ``hip_head/assets``.
        init: path of a saved HIP (:meth:`HIPModel.save`) to continue from instead of wrapping
            ``backbone`` with a new head.
        adapter: adapter name or ``"auto"`` (see :func:`hip_head.wrap`).
        adapter_options: keyword arguments of the adapter (e.g. ``{layers: [-2, -1]}``).
        head: keyword arguments of :class:`~hip_head.readout.HessianReadout` (``channels``,
            ``hessian_cutoff`` Å, ``num_interactions``, ``diagonal``, ``hidden_irreps``,
            ``block_scale`` ...); ``block_scale: auto`` takes the RMS of the training split's
            Hessian entries, eV/Å².
        dtype: ``"float32"`` or ``"float64"``: the model is cast to it.
        trust: open ``backbone`` / ``init`` files in the pickle format (``torch.save(model)``,
            HIP files of older hip-head versions). Unpickling can run code: only for files from
            a source you trust. Safe-format files never need it (see ``docs/safety.md``).
    """

    backbone: str | None = "default"
    init: str | None = None
    adapter: str = "auto"
    adapter_options: dict[str, Any] = field(default_factory=dict)
    head: dict[str, Any] = field(default_factory=dict)
    dtype: Literal["float32", "float64"] = "float32"
    trust: bool = False


@dataclass
class DataConfig:
    """Where the labelled structures come from and how they are batched.

    Attributes:
        train: training files (``.db`` ASE database, ``.lmdb`` HORM, ``.xyz``/``.extxyz``),
            ``"default"`` (the shipped xTB dataset) or ``"extra"`` (the shipped extra set:
            472 more molecules, train rows only). Files whose rows carry a ``split`` column
            (the shipped ones) contribute only their ``train`` rows here.
        val: validation files; empty: rows with ``split == "val"`` of the training files, or,
            when there are none, ``val_fraction`` of the training molecules (split by
            molecule, never by frame).
        test: test files; empty: rows with ``split == "test"`` of the training files.
        val_fraction: share of training frames held out for validation when no validation set
            is given.
        batch_size: structures per batch (per process under DDP).
        num_workers: DataLoader worker processes.
        energy_key: HORM LMDB energy target, ``"energy"`` or ``"ae"``.
        on_error: bad records: ``"raise"`` or ``"skip"``.
        max_train_frames: use at most this many training frames (the first molecules in
            shuffled order); None: all.
        max_val_frames: the same for validation.
        kind_repeats: oversampling of training frames by their ``kind`` tag (the shipped sets
            tag frames ``ts``, ``irc``, ``minimum`` or ``thermal``): a frame of kind ``K``
            appears ``kind_repeats[K]`` times per epoch (an integer >= 1); kinds not named,
            and frames without a kind, appear once. Validation and test are never repeated.
        seed: seed of the splits and of the per-epoch shuffling.
    """

    train: list[str] = field(default_factory=lambda: ["default"])
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    val_fraction: float = 0.1
    batch_size: int = 8
    num_workers: int = 0
    energy_key: Literal["energy", "ae"] = "energy"
    on_error: Literal["raise", "skip"] = "raise"
    max_train_frames: int | None = None
    max_val_frames: int | None = None
    kind_repeats: dict[str, int] = field(default_factory=dict)
    seed: int = 0


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay (per optimizer step).

    Attributes:
        lr: peak learning rate of the head (and of the backbone in ``full``/``last_k`` mode
            unless ``backbone_lr`` is set).
        backbone_lr: peak learning rate of the trainable backbone parameters; None: ``lr``.
        weight_decay: AdamW weight decay.
        warmup_steps: steps of linear warm-up from 0.
        min_lr_ratio: the cosine ends at ``lr * min_lr_ratio`` at ``train.max_steps``.
        grad_clip: gradient-norm clipping (0: off).
        ema_decay: decay of the exponential moving average of the weights used for validation
            and for the saved model (0: no EMA).
    """

    lr: float = 2.0e-3
    backbone_lr: float | None = 1.0e-4
    weight_decay: float = 0.0
    warmup_steps: int = 50
    min_lr_ratio: float = 0.02
    grad_clip: float = 10.0
    ema_decay: float = 0.99


@dataclass
class LossConfig:
    """The loss: weights and options of every term (:mod:`hip_head.finetune.losses`).

    The one loss configuration: YAML section ``loss``, ``--set loss.KEY=VALUE`` on the command
    line, and the ``weights`` argument of :func:`~hip_head.finetune.losses.total_loss` (also
    exported there as ``LossWeights``). In ``head`` mode the backbone is frozen, so energy and
    force terms cannot change and are left out of the loss (they are still reported in
    validation). With ``train.target: autograd`` the ``hessian`` weight applies to the sampled
    autograd Hessian rows (term ``hessian_rows``) and the subspace term is off.

    Attributes:
        energy: weight of the energy term (upstream 1).
        forces: weight of the force term (upstream 25).
        hessian: weight of the entrywise Hessian term (upstream 10).
        subspace: weight of the lowest-eigenpair subspace term (0: off).
        subspace_k: eigenpairs in the subspace term (None: all 3N).
        hessian_kind: ``"mae"`` or ``"mse"`` (Hessian and Hessian-row terms).
        hessian_normalization: ``"entry"`` (mean over all entries of the batch, upstream) or
            ``"molecule"`` (mean per structure first).
        subspace_dist: ``"mae"``, ``"mse"`` or ``"frosq"`` (squared Frobenius norm).
        subspace_basis: ``"cartesian"`` (lowest eigenpairs of the raw label Hessian, eV/Å²) or
            ``"vibrational"`` (of the mass-weighted, Eckart-projected one, eV/Å²/amu: the modes
            that set the saddle index).
        energy_kind: ``"mae"`` or ``"mse"`` for energies.
        forces_kind: ``"mae"`` or ``"mse"`` for forces.
        energy_per_atom: compare energies per atom (eV/atom).
        autograd_rows: Hessian rows per structure with ``train.target: autograd`` (HORM style,
            random rows through VJPs each step).
        terms: further registered loss terms, ``{name: {"weight": w, **options}}``
            (:func:`~hip_head.finetune.losses.register_loss`).
    """

    energy: float = 1.0
    forces: float = 25.0
    hessian: float = 10.0
    subspace: float = 0.0
    subspace_k: int | None = 8
    hessian_kind: Literal["mae", "mse"] = "mae"
    hessian_normalization: Literal["entry", "molecule"] = "entry"
    subspace_dist: Literal["mae", "mse", "frosq"] = "mae"
    subspace_basis: Literal["cartesian", "vibrational"] = "cartesian"
    energy_kind: Literal["mae", "mse"] = "mae"
    forces_kind: Literal["mae", "mse"] = "mae"
    energy_per_atom: bool = False
    autograd_rows: int = 4
    terms: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """The run: what trains, for how long, on what hardware, where it writes.

    Attributes:
        mode: ``"head"`` (frozen backbone, the HIP paper's setting), ``"full"`` (backbone
            too, at ``optim.backbone_lr``) or ``"last_k"`` (the last ``last_k`` backbone
            layers, as the adapter groups them).
        last_k: layers trained in ``last_k`` mode.
        target: ``"head"`` (train the HIP head's Hessian) or ``"autograd"`` (baseline: train
            the backbone's own autograd Hessian on ``loss.autograd_rows`` random rows per
            structure; needs ``mode`` full or last_k).
        max_steps: optimizer steps (the learning-rate schedule spans them).
        max_minutes: stop after this much training wall time even before ``max_steps``
            (Lightning's ``max_time``; None: no limit); the model and a checkpoint are saved
            as at the end of a run.
        val_every_n_steps: validation interval, steps.
        checkpoint_every_n_steps: checkpoint interval, steps (plus one at the end).
        log_every_n_steps: logging interval, steps.
        out_dir: run directory: ``checkpoints/``, ``logs/`` (CSV and TensorBoard),
            ``hip_model.pt`` (the fine-tuned HIP), ``config.yaml``.
        resume: continue from ``out_dir/checkpoints/last.ckpt`` (optimizer, scheduler, EMA
            and data position included).
        accelerator: Lightning accelerator: ``"auto"``, ``"cpu"``, ``"gpu"``.
        devices: devices per node (``"auto"``, a count, or a list).
        num_nodes: nodes (SLURM / torchrun).
        strategy: Lightning strategy (``"auto"``, ``"ddp"``, ...).
        precision: Lightning precision (``"32-true"``, ``"bf16-mixed"``, ``"16-mixed"``,
            ``"64-true"``).
        tf32: allow TF32 matmuls on NVIDIA GPUs (False for full float32 accuracy).
        seed: global seed (weights of the new head, shuffling).
        progress_bar: show Lightning's progress bar.
    """

    mode: Literal["head", "full", "last_k"] = "head"
    last_k: int = 1
    target: Literal["head", "autograd"] = "head"
    max_steps: int = 1000
    max_minutes: float | None = None
    val_every_n_steps: int = 200
    checkpoint_every_n_steps: int = 100
    log_every_n_steps: int = 10
    out_dir: str = "runs/hip"
    resume: bool = False
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    tf32: bool = True
    seed: int = 0
    progress_bar: bool = True


@dataclass
class FinetuneConfig:
    """The whole configuration (see the module docs)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> FinetuneConfig:
        """Build and validate a configuration from a nested mapping.

        Raises:
            ConfigError: unknown section/key, wrong type, or inconsistent settings.
        """
        raw = dict(raw or {})
        sections = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(sections))
        if unknown:
            raise ConfigError(f"unknown config section(s) {unknown}; allowed: {sorted(sections)}")
        parts = {}
        for name, f in sections.items():
            section_cls = f.default_factory  # type: ignore[misc]
            parts[name] = build_section(name, section_cls, raw.get(name))  # type: ignore[arg-type]
        config = cls(**parts)
        config.check()
        return config

    def check(self) -> None:
        """Cross-field checks.

        Raises:
            ConfigError: the settings contradict each other or are out of range.
        """
        t, d, o, lo = self.train, self.data, self.optim, self.loss
        positive = {
            "train.max_steps": t.max_steps,
            "train.val_every_n_steps": t.val_every_n_steps,
            "train.checkpoint_every_n_steps": t.checkpoint_every_n_steps,
            "train.log_every_n_steps": t.log_every_n_steps,
            "train.last_k": t.last_k,
            "data.batch_size": d.batch_size,
            "loss.autograd_rows": lo.autograd_rows,
            "loss.subspace_k": 1 if lo.subspace_k is None else lo.subspace_k,
            "train.num_nodes": t.num_nodes,
        }
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        non_negative = {
            "optim.grad_clip": o.grad_clip,
            "optim.warmup_steps": o.warmup_steps,
            "optim.weight_decay": o.weight_decay,
            "optim.min_lr_ratio": o.min_lr_ratio,
            "data.num_workers": d.num_workers,
        }
        for key, value in non_negative.items():
            if not value >= 0:  # NaN fails too
                raise ConfigError(f"{key} must be >= 0, got {value}")
        for key, limit in (
            ("data.max_train_frames", d.max_train_frames),
            ("data.max_val_frames", d.max_val_frames),
        ):
            if limit is not None and limit < 1:
                raise ConfigError(f"{key} must be >= 1 or null (all frames), got {limit}")
        for kind, repeats in d.kind_repeats.items():
            if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
                raise ConfigError(
                    f"data.kind_repeats.{kind} must be an integer >= 1, got {repeats!r}"
                )
        if o.backbone_lr is not None and not o.backbone_lr > 0:
            raise ConfigError(f"optim.backbone_lr must be > 0 or null, got {o.backbone_lr}")
        _check_head_options(self.model.head)
        if t.max_minutes is not None and not t.max_minutes > 0:
            raise ConfigError(f"train.max_minutes must be > 0 or null, got {t.max_minutes}")
        if not o.lr > 0:
            raise ConfigError(f"optim.lr must be > 0, got {o.lr}")
        if not 0.0 <= o.ema_decay < 1.0:
            raise ConfigError(f"optim.ema_decay must be in [0, 1), got {o.ema_decay}")
        if not 0.0 < d.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
        if not d.train:
            raise ConfigError("data.train is empty: give at least one file or 'default'")
        if t.target == "autograd" and t.mode == "head":
            raise ConfigError(
                "train.target 'autograd' trains the backbone's own Hessian: set train.mode to "
                "'full' or 'last_k' (a frozen backbone has nothing to train)"
            )
        if min(lo.energy, lo.forces, lo.hessian, lo.subspace) < 0:
            raise ConfigError("loss weights must be >= 0")
        if lo.terms:
            from hip_head.finetune.losses import build_loss_terms  # the registry needs torch

            build_loss_terms(lo)  # unknown names, bad weights or options: ConfigError
        extra_weights = [
            spec.get("weight", 0) for spec in lo.terms.values() if isinstance(spec, Mapping)
        ]
        if t.mode == "head" and lo.hessian == 0 and lo.subspace == 0 and not any(extra_weights):
            raise ConfigError(
                "train.mode 'head' trains only the Hessian head: loss.hessian, loss.subspace "
                "or a term in loss.terms must have a weight > 0"
            )
        if self.model.backbone is None and self.model.init is None:
            raise ConfigError("set model.backbone (a file or 'default') or model.init")


def _check_head_options(head: Mapping[str, Any]) -> None:
    """``model.head`` keys must be arguments of :class:`~hip_head.readout.HessianReadout`.

    Raises:
        ConfigError: naming the dotted key and the accepted ones.
    """
    if not head:
        return
    import inspect

    from hip_head.readout import HessianReadout

    accepted = [
        name
        for name, p in inspect.signature(HessianReadout.__init__).parameters.items()
        if name not in ("self", "node_irreps")
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    for key in head:
        if key not in accepted:
            raise ConfigError(
                f"unknown config key 'model.head.{key}'; allowed in 'model.head': {accepted}"
            )


def load_config(
    path: str | os.PathLike | None = None, overrides: Sequence[str] = ()
) -> FinetuneConfig:
    """Read a YAML config (or start from the defaults) and apply dotted overrides.

    Args:
        path: YAML file; None: all defaults.
        overrides: ``"section.key=value"`` strings (value parsed as YAML).

    Returns:
        The validated configuration.

    Raises:
        ConfigError: unreadable file, bad YAML, unknown key, bad value.
    """
    import yaml

    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path) as handle:
                raw = yaml.safe_load(handle) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config {os.fspath(path)!r}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{os.fspath(path)} is not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{os.fspath(path)} must hold a mapping of sections")
    return FinetuneConfig.from_dict(apply_overrides(raw, overrides))
