"""Run a fine-tuning job: ``hip finetune CONFIG`` or :func:`run_finetune`.

The run directory (``train.out_dir``) receives ``config.yaml`` (the validated configuration),
``checkpoints/last.ckpt`` (atomic, every ``train.checkpoint_every_n_steps`` steps and at the
end), ``logs/`` (CSV and TensorBoard) and ``hip_model.pt``: the fine-tuned HIP with the EMA
weights, loadable with :func:`hip_head.load` without the training extras.

Works on CPU, one GPU, and many GPUs or nodes with DDP: launch with ``torchrun`` or under SLURM
and set ``train.devices`` / ``train.num_nodes`` / ``train.strategy: ddp``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from hip_head.finetune.config import ConfigError, FinetuneConfig, load_config

__all__ = ["FinetuneResult", "build_model", "load_backbone", "main_finetune", "run_finetune"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class FinetuneResult:
    """What a run produced.

    Attributes:
        model_path: the saved HIP (``hip_model.pt``).
        checkpoint: the last checkpoint.
        global_step: optimizer steps done in total (including those before a resume).
        seconds: wall time of this run, s.
        metrics: last logged metrics (``val/hessian_mae`` eV/Å², ...).
        is_global_zero: this process is rank 0 (the one that saved ``model_path``).
        world_size: training processes (devices × nodes) the run used.
    """

    model_path: Path
    checkpoint: Path
    global_step: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    is_global_zero: bool = True
    world_size: int = 1


#: How a user of ``hip finetune`` opens a pickled file (named in the error).
_TRUST_HINT = "add --trust to `hip finetune` (or set model.trust: true)"


def load_backbone(path: str, trust: bool = False) -> torch.nn.Module:
    """Load a backbone file (``"default"``: the shipped MACE).

    A safe backbone file (written by :func:`hip_head.serialization.save_backbone`, as the
    shipped one) opens without running code. A ``torch.save(model)`` pickle (how MACE
    distributes its ``.model`` files) is unpickled, which can run code, so it opens only with
    ``trust`` (``hip finetune --trust`` / ``model.trust: true``).

    Args:
        path: the file, or ``"default"``.
        trust: allow unpickling: only for files from a source you trust.

    Returns:
        The backbone module.

    Raises:
        ConfigError: the file is missing, holds no model, or is a pickle and ``trust`` is False
            (nothing from it was run).
    """
    if path == "default":
        from hip_head.assets import asset_path

        path = os.fspath(asset_path("mace_pretrained.model"))
    if not os.path.isfile(path):
        raise ConfigError(f"model.backbone: no such file {path!r}")
    from hip_head import serialization

    try:
        return serialization.load_backbone(path, trust=trust, how=_TRUST_HINT)
    except (ValueError, serialization.NoSafeRecipeError) as exc:
        raise ConfigError(f"model.backbone: {exc}") from None


def _load_init(path: str, trust: bool = False) -> Any:
    """The HIP of ``model.init`` (pickled files only with ``trust``; see :func:`load_backbone`).

    Raises:
        ConfigError: the file is missing, not a HIP file, or pickled and ``trust`` is False.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"model.init: no such file {path!r}")
    from hip_head import serialization
    from hip_head.quiet import quiet_model_loading

    try:
        with quiet_model_loading():
            return serialization.load_model(path, trust=trust, how=_TRUST_HINT)
    except (ValueError, serialization.NoSafeRecipeError) as exc:
        raise ConfigError(f"model.init: {exc}") from None


def build_model(config: FinetuneConfig, datamodule: Any = None) -> Any:
    """The :class:`~hip_head.model.HIPModel` to train: ``model.init`` loaded, or
    ``model.backbone`` wrapped with a new head (seeded with ``train.seed``), in
    ``model.dtype``; its Hessian comes from the backbone's autograd when ``train.target`` is
    ``"autograd"`` (the baseline trains that Hessian), from the head otherwise.

    ``model.head.block_scale: auto`` sets the new head's output scale to the RMS of the
    training split's Hessian entries (:func:`~hip_head.finetune.data.hessian_rms`, eV/Å²),
    taken from ``datamodule`` (a :class:`~hip_head.finetune.datamodule.HessianDataModule`; one is
    built from ``config.data`` if None).
    """
    import hip_head
    from hip_head.model import HIPModel

    m = config.model
    dtype = _DTYPES[m.dtype]
    hessian = "autograd" if config.train.target == "autograd" else "head"
    if m.init is not None:
        loaded = _load_init(m.init, trust=m.trust)
        return HIPModel(loaded.adapter, loaded.readout, hessian=hessian).to(dtype)
    head = dict(m.head)
    if head.get("block_scale") == "auto":
        head["block_scale"] = _train_hessian_rms(config, datamodule)
    backbone = load_backbone(m.backbone, trust=m.trust).to(dtype)  # type: ignore[arg-type]
    torch.manual_seed(config.train.seed)
    wrapped = hip_head.wrap(
        backbone, m.adapter, adapter_options=dict(m.adapter_options), hessian=hessian, **head
    )
    return wrapped.to(dtype)


def _train_hessian_rms(config: FinetuneConfig, datamodule: Any) -> float:
    from hip_head.finetune.data import hessian_rms
    from hip_head.finetune.datamodule import HessianDataModule

    if datamodule is None:
        datamodule = HessianDataModule(config.data, dtype=_DTYPES[config.model.dtype])
    datamodule.setup("fit")
    return hessian_rms(datamodule.splits["train"], seed=config.train.seed)


def csv_log_version(out: Path, resume: bool) -> str:
    """The CSV log folder of a run attempt under ``out/logs``: ``csv`` for the first attempt,
    ``csv_resume1``, ``csv_resume2`` ... for each resume, so no attempt overwrites the metrics
    of an earlier one."""
    if not resume:
        return "csv"
    attempt = 1
    while (out / "logs" / f"csv_resume{attempt}").exists():
        attempt += 1
    return f"csv_resume{attempt}"


def _check_out_dir(out: Path) -> None:
    """``train.out_dir`` must be a writable directory (created if missing).

    Raises:
        ConfigError: it is a file, or it cannot be created or written.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"train.out_dir {os.fspath(out)!r} is a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write_test_{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"train.out_dir {os.fspath(out)!r} is not writable: {exc}") from exc


def _write_config(config: FinetuneConfig, path: Path) -> None:
    import yaml

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    os.replace(tmp, path)


def run_finetune(config: FinetuneConfig, callbacks: Sequence[Any] = ()) -> FinetuneResult:
    """Fine-tune as ``config`` says; resume from the last checkpoint if ``train.resume``.

    Args:
        config: the validated configuration.
        callbacks: extra Lightning callbacks.

    Returns:
        The result (paths, steps, time, last metrics).

    Raises:
        ConfigError: bad settings, or ``train.resume`` without a checkpoint.
        TrainingDivergedError: the loss became NaN/inf (the last checkpoint is kept).
        BatchTooLargeError: a batch ran out of memory (the message names a batch size).
    """
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from hip_head.finetune.datamodule import HessianDataModule
    from hip_head.finetune.module import AtomicCheckpointIO, HIPLightningModule
    from hip_head.finetune.progress import progress_callbacks
    from hip_head.quiet import quiet_lightning

    t0 = time.perf_counter()
    t = config.train
    out = Path(t.out_dir)
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    resume_from = None
    if t.resume:
        if not last.is_file():
            raise ConfigError(f"train.resume: no checkpoint to resume from at {last}")
        resume_from = os.fspath(last)
    elif last.is_file():
        raise ConfigError(
            f"{out} already holds a run ({last}); set train.resume=true to continue it or "
            "choose another train.out_dir"
        )
    _check_out_dir(out)  # before data and model are loaded
    pl.seed_everything(t.seed, workers=True, verbose=False)
    datamodule = HessianDataModule(config.data, dtype=_DTYPES[config.model.dtype])
    model = build_model(config, datamodule)
    module = HIPLightningModule(model, config)
    module.data_position = datamodule.position

    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir,
        save_top_k=0,
        save_last=True,
        every_n_train_steps=t.checkpoint_every_n_steps,
        save_on_train_epoch_end=False,
    )
    loggers = [
        CSVLogger(
            out,
            name="logs",
            version=csv_log_version(out, resume=t.resume),
            flush_logs_every_n_steps=t.log_every_n_steps,  # a kill loses at most one interval
        )
    ]
    try:
        import tensorboard  # noqa: F401

        loggers.append(TensorBoardLogger(out, name="logs", version="tensorboard"))
    except ImportError:  # pragma: no cover - the finetune extra installs it
        pass
    progress, bar = progress_callbacks(t.progress_bar)
    with quiet_lightning():
        trainer = pl.Trainer(
            accelerator=t.accelerator,
            devices=t.devices,
            num_nodes=t.num_nodes,
            strategy=t.strategy,
            precision=t.precision,  # type: ignore[arg-type]
            max_steps=t.max_steps,
            max_time=None if t.max_minutes is None else timedelta(minutes=t.max_minutes),
            max_epochs=-1,
            val_check_interval=t.val_every_n_steps,  # counted across epochs (next line)
            check_val_every_n_epoch=None,
            log_every_n_steps=t.log_every_n_steps,
            gradient_clip_val=config.optim.grad_clip or None,
            callbacks=[checkpoint, *progress, *callbacks],
            logger=loggers,
            plugins=[AtomicCheckpointIO()],
            enable_progress_bar=bar,
            enable_model_summary=False,
            inference_mode=False,  # validation needs autograd for forces
            use_distributed_sampler=False,  # EpochBatchSampler shards over ranks itself
            num_sanity_val_steps=0,
            default_root_dir=out,
        )
        if trainer.is_global_zero:
            out.mkdir(parents=True, exist_ok=True)
            _write_config(config, out / "config.yaml")
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
        trainer.save_checkpoint(last)  # the end state, whatever the interval
        model_path = out / "hip_model.pt"
        if trainer.is_global_zero:
            module.final_model().save(model_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    return FinetuneResult(
        model_path=model_path,
        checkpoint=last,
        global_step=int(trainer.global_step),
        seconds=time.perf_counter() - t0,
        metrics=metrics,
        is_global_zero=bool(trainer.is_global_zero),
        world_size=int(trainer.world_size),
    )


def main_finetune(argv: Sequence[str] | None = None) -> int:
    """``hip finetune [CONFIG] [--backbone PATH] [--data PATH ...] [--set key=value ...]``.

    Returns:
        Exit code: 0 on success, 2 on a configuration error, 1 when training failed.
    """
    parser = argparse.ArgumentParser(
        prog="hip finetune",
        description="Fine-tune a pretrained MLIP into a Hessian Interatomic Potential.",
    )
    parser.add_argument("config", nargs="?", help="YAML configuration (optional)")
    parser.add_argument(
        "--backbone", help="backbone file (safe, or torch.save'd with --trust) or 'default'"
    )
    parser.add_argument("--init", help="continue from a saved HIP (hip_model.pt)")
    parser.add_argument("--data", nargs="+", help="training data files (.db/.lmdb/.xyz)")
    parser.add_argument("--val", nargs="+", help="validation data files")
    parser.add_argument("--out", help="run directory (train.out_dir)")
    parser.add_argument("--mode", choices=["head", "full", "last_k"], help="what trains")
    parser.add_argument("--max-steps", type=int, help="optimizer steps (train.max_steps)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument(
        "--trust",
        action="store_true",
        help="open pickled --backbone/--init files (e.g. a MACE .model saved with torch.save); "
        "unpickling can run code: only for files from a source you trust (model.trust)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any config key (repeatable), e.g. --set optim.lr=1e-3",
    )
    args = parser.parse_args(argv)
    shortcuts = {
        "model.backbone": args.backbone,
        "model.init": args.init,
        "data.train": args.data,
        "data.val": args.val,
        "train.out_dir": args.out,
        "train.mode": args.mode,
        "train.max_steps": args.max_steps,
        "train.resume": True if args.resume else None,
        "model.trust": True if args.trust else None,
    }
    overrides = [f"{k}={_yaml(v)}" for k, v in shortcuts.items() if v is not None]
    try:
        config = load_config(args.config, [*overrides, *args.overrides])
        result = run_finetune(config)
    except ConfigError as exc:
        print(f"hip finetune: config error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - one clear line, not a Lightning traceback
        from hip_head.errors import HIPError

        if not isinstance(exc, HIPError):
            raise
        print(f"hip finetune: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if not result.is_global_zero:
        return 0
    print(
        f"done: {result.global_step} steps in {result.seconds:.0f} s"
        + (f" on {result.world_size} processes" if result.world_size > 1 else "")
        + f"; HIP saved to {result.model_path}; checkpoint {result.checkpoint}"
    )
    for key in sorted(result.metrics):
        if key.startswith("val/"):
            print(f"  {key} = {result.metrics[key]:.4g}")
    return 0


def _yaml(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
