"""Train and ship hip-head's pretrained HIP (``hip_head/assets/hip_pretrained.model``).

Three resumable stages, each skipped when its output exists under ``--work``
(default ``build/train_hip``):

1. **backbone**: the small ScaleShiftMACE of ``scripts/pretrain_mace.py`` (same architecture
   and trainer), retrained on the energies and forces of every train split: the default
   dataset, the extra set, the reaction set and its extra training reactions (two files);
   validation on their val splits.
   ``--backbone shipped`` skips this and uses ``hip_head/assets/mace_pretrained.model``.
2. **head** (:data:`HEAD_STAGES`): a HIP head trained on the frozen backbone with every train
   Hessian (the same five sets), entrywise MAE plus the subspace loss on the lowest
   eigenpairs; then continued on the reaction train splits alone (entrywise MAE); then on
   them with the sign hinge on the lowest vibrational eigenvalues added. Each stage resumes
   from its last checkpoint.
3. **evaluate**: HIP against the backbone's own autograd Hessian, per kind of geometry, on
   the reaction test split, the default test split and the unseen larger molecules
   (``data/unseen_large_xtb.db``); written to ``hip_pretrained.json``.

``--ship`` copies the model and its json into ``hip_head/assets``. Seeds are fixed
(``train.seed`` 0, data seed 0); the wall time depends on the machine. Usage::

    python scripts/train_hip.py --ship                         # about 2 h on 2 CPU cores
    python scripts/train_hip.py --backbone shipped --head-steps 2000 300 300 --work /tmp/t  # quick
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from hip_head.finetune.demo import CONTINUATION_LOSS

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "hip_head" / "assets"
DATA = ROOT / "data"

#: The head (measured choices; see docs/pretrained.md).
HEAD: dict[str, Any] = {"channels": 64, "num_interactions": 2}


@dataclass(frozen=True)
class HeadStage:
    """One head-training stage on the frozen backbone (continues from the previous stage)."""

    name: str
    train: tuple[str, ...]
    steps: int
    lr: float
    warmup_steps: int
    loss: dict[str, Any]
    batch_size: int = 4
    ema_decay: float = 0.995
    kind_repeats: dict[str, int] = field(default_factory=dict)


#: Stage one learns the Hessian of every train split, transition states seen 4 times and IRC
#: frames twice per epoch; stage two continues on the reaction train splits alone at a tenth of
#: the learning rate, entrywise MAE only (measured against subspace variants in
#: docs/finetuning.md, "Continuing on reactions"); stage three adds the sign hinge on the four
#: lowest vibrational eigenvalues (``mode_sign``) and the subspace term, which set the saddle
#: index (docs/finetuning.md, "Training the saddle index").
HEAD_STAGES: tuple[HeadStage, ...] = (
    HeadStage(
        "head",
        ("default", "extra", "reactions", "reactions_extra", "reactions_extra2"),
        steps=32000,
        lr=1.5e-2,
        warmup_steps=200,
        loss={"hessian": 10.0, "subspace": 5.0, "subspace_k": 4},
        kind_repeats={"ts": 4, "irc": 2},
    ),
    HeadStage(
        "head_reactions",
        ("reactions", "reactions_extra", "reactions_extra2"),
        steps=1000,
        lr=1.5e-3,
        warmup_steps=10,
        loss={"hessian": 10.0},
        ema_decay=0.99,
    ),
    HeadStage(
        "head_modes",
        ("reactions", "reactions_extra", "reactions_extra2"),
        steps=2000,
        lr=1.5e-3,
        warmup_steps=10,
        loss=CONTINUATION_LOSS,
        ema_decay=0.99,
    ),
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def train_backbone(
    work: Path, minutes: float, epochs: int, init: Path | None = None, lr: float | None = None
) -> Path:
    """Stage 1: mace_run_train on E/F of every train split, from ``init``'s weights (or random
    ones); returns the model path."""
    out = work / "mace.model"
    if out.is_file():
        log(f"backbone: {out} exists, kept")
        return out
    sys.path.insert(0, str(ROOT / "scripts"))
    import pretrain_mace

    dbs = [
        DATA / "default_xtb.db",
        DATA / "extra_xtb.db",
        DATA / "reactions_xtb.db",
        DATA / "reactions_extra_xtb.db",
        DATA / "reactions_extra2_xtb.db",
    ]
    args = [
        "--db", *map(str, dbs), "--out", str(out), "--work", str(work / "mace"),
        "--epochs", str(epochs), "--stage-two-epochs", str(max(1, epochs // 4)),
        "--max-minutes", str(minutes), "--hessian-frames", "100",
        *(["--init", str(init)] if init else []), *(["--lr", str(lr)] if lr else []),
        "--description", "small ScaleShiftMACE trained on energies and forces of the train "
        "splits of the default, extra and reaction GFN2-xTB sets (the backbone of the shipped "
        "HIP); see docs/pretrained.md",
    ]  # fmt: skip
    log(f"backbone: mace_run_train on {', '.join(d.name for d in dbs)}, at most {minutes} min")
    if pretrain_mace.main(args) != 0:
        raise SystemExit("backbone training failed")
    return out


def backbone_description(model: Path | None, choice: str) -> str:
    """What the backbone of a run was trained on, for its summary json."""
    if model is not None:
        info = {}
        json_path = model.with_suffix(".json")
        if json_path.is_file():
            info = json.loads(json_path.read_text())
        about = info.get("description", "not retrained in this call")
        return f"the given backbone {model}: {about}"
    if choice == "retrain":
        return "retrained on E/F of all train splits"
    return "the shipped mace_pretrained.model (default train split only)"


def head_config(
    stage: HeadStage, backbone: Path, init: Path | None, run: Path, seed: int = 0
) -> dict[str, Any]:
    """The fine-tuning configuration of one head stage (a raw dict for FinetuneConfig)."""
    return {
        "model": {
            "backbone": None if init else str(backbone),
            "init": str(init) if init else None,
            "dtype": "float32",
            "head": {} if init else dict(HEAD),
        },
        "data": {
            "train": list(stage.train),
            "batch_size": stage.batch_size,
            "max_val_frames": 96,
            "kind_repeats": dict(stage.kind_repeats),
        },
        "optim": {"lr": stage.lr, "warmup_steps": stage.warmup_steps, "ema_decay": stage.ema_decay},
        "loss": dict(stage.loss),
        "train": {
            "mode": "head",
            "max_steps": stage.steps,
            "val_every_n_steps": max(1, stage.steps // 4),
            "checkpoint_every_n_steps": 250,
            "log_every_n_steps": 50,
            "out_dir": str(run),
            "accelerator": "auto",
            "devices": 1,
            "seed": seed,
            "progress_bar": False,
            "resume": (run / "checkpoints" / "last.ckpt").is_file(),
        },
    }


def train_head(
    stage: HeadStage, backbone: Path, init: Path | None, work: Path
) -> tuple[Path, float]:
    """One head stage; returns (model path, training seconds). Skipped when done, resumed
    from its last checkpoint when interrupted."""
    from hip_head.finetune.config import FinetuneConfig
    from hip_head.finetune.train import run_finetune

    run = work / stage.name
    model = run / "hip_model.pt"
    done = run / "done.json"
    if done.is_file():
        log(f"{stage.name}: {model} exists, kept")
        return model, float(json.loads(done.read_text())["seconds"])
    config = FinetuneConfig.from_dict(head_config(stage, backbone, init, run))
    log(f"{stage.name}: {stage.steps} steps on {', '.join(stage.train)}, "
        f"resume={config.train.resume}")  # fmt: skip
    result = run_finetune(config)
    done.write_text(json.dumps({"seconds": result.seconds, "steps": result.global_step}))
    return result.model_path, result.seconds


def evaluation_sets(per_kind: int, seed: int = 0) -> dict[str, list[Any]]:
    """The held-out sets: reaction test, default test, unseen larger molecules."""
    from hip_head.finetune.data import AseDbDataset
    from hip_head.finetune.evaluate import stratified_subset

    sets = {}
    for name, path in (
        ("reactions_test", DATA / "reactions_xtb.db"),
        ("default_test", DATA / "default_xtb.db"),
        ("unseen_large", DATA / "unseen_large_xtb.db"),
    ):
        db = AseDbDataset(path)
        rows = [i for i, s in enumerate(db.column("split")) if s == "test"]
        sets[name] = stratified_subset([db[i] for i in rows], per_kind, seed=seed)
    return sets


def evaluate(model_path: Path, backbone: Path, per_kind: int) -> dict[str, Any]:
    """Stage 3: HIP vs the backbone's autograd Hessian per set and kind."""
    import torch

    import hip_head
    from hip_head.finetune.evaluate import evaluate_hessians, format_kind_table, metrics_by_group
    from hip_head.finetune.train import load_backbone

    torch.set_num_threads(1)
    hip = hip_head.load(model_path)
    autograd = hip_head.wrap(load_backbone(str(backbone)).to(hip.dtype), hessian="autograd")
    results: dict[str, Any] = {}
    for name, samples in evaluation_sets(per_kind).items():
        kinds = [str(s.meta.get("kind")) for s in samples]
        evals = [
            evaluate_hessians(autograd, samples, "MACE autograd"),
            evaluate_hessians(hip, samples, "HIP"),
        ]
        log(f"{name}: {len(samples)} frames\n" + format_kind_table(evals, kinds))
        results[name] = {
            "frames": len(samples),
            "molecules": len({s.meta.get("molecule") for s in samples}),
            "autograd": metrics_by_group(evals[0], kinds),
            "hip": metrics_by_group(evals[1], kinds),
        }
    return results


def markdown_tables(results: dict[str, Any]) -> str:
    """The evaluation as markdown tables (one per set; kinds x metrics, autograd vs HIP)."""
    rows = (
        ("hessian_mae", "Hessian MAE [eV/Å²]", "{:.3f}"),
        ("eckart_eigval_mae", "Eckart eigenvalue MAE [eV/Å²/amu]", "{:.3f}"),
        ("eckart_eigval1_mae", "lowest eigenvalue MAE [eV/Å²/amu]", "{:.3f}"),
        ("eckart_eigvec1_cos", "lowest eigenvector \\|cos\\|", "{:.3f}"),
        ("eckart_n_neg_agree", "n_neg agreement", "{:.2f}"),
        ("seconds", "time per molecule [ms]", "ms"),
    )
    out = []
    for name, result in results.items():
        kinds = [k for k in ("ts", "irc", "minimum", "thermal") if k in result["hip"]] + ["all"]
        out.append(f"{name} ({result['frames']} frames, {result['molecules']} molecules)\n")
        out.append("| kind | n | metric | autograd | HIP |\n|---|---:|---|---:|---:|")
        for kind in kinds:
            for key, label, fmt in rows:
                cells = []
                for model in ("autograd", "hip"):
                    value = result[model][kind].get(key, float("nan"))
                    cells.append(f"{value * 1e3:.1f}" if fmt == "ms" else fmt.format(value))
                n = int(result["hip"][kind]["count"])
                out.append(f"| {kind} | {n} | {label} | {cells[0]} | {cells[1]} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "train_hip")
    parser.add_argument("--backbone", choices=("retrain", "shipped"), default="retrain")
    parser.add_argument(
        "--backbone-model",
        type=Path,
        help="use this backbone file (hip_head.serialization.save_backbone) instead of "
        "--backbone, e.g. the backbone of an earlier shipped HIP",
    )
    parser.add_argument("--backbone-minutes", type=float, default=55.0)
    parser.add_argument("--backbone-epochs", type=int, default=3)
    parser.add_argument(
        "--backbone-init",
        default=str(ASSETS / "mace_pretrained.model"),
        help="weights the retrained backbone starts from ('none': random)",
    )
    parser.add_argument("--backbone-lr", type=float, default=3e-3)
    parser.add_argument(
        "--head-steps",
        type=int,
        nargs="+",
        default=[stage.steps for stage in HEAD_STAGES],
        help="steps of each head stage (" + ", ".join(s.name for s in HEAD_STAGES) + ")",
    )
    parser.add_argument("--eval-per-kind", type=int, default=120, help="frames per kind")
    parser.add_argument("--ship", action="store_true", help="copy into hip_head/assets")
    args = parser.parse_args(argv)
    t0 = time.time()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.backbone_model is not None:
        backbone = args.backbone_model
    elif args.backbone == "shipped":
        backbone = ASSETS / "mace_pretrained.model"
    else:
        init = None if args.backbone_init == "none" else Path(args.backbone_init)
        backbone = train_backbone(
            args.work, args.backbone_minutes, args.backbone_epochs, init, args.backbone_lr
        )
    if len(args.head_steps) != len(HEAD_STAGES):
        parser.error(f"--head-steps takes {len(HEAD_STAGES)} numbers, one per stage")
    stages = [replace(st, steps=n) for st, n in zip(HEAD_STAGES, args.head_steps) if n > 0]
    model: Path | None = None
    head_seconds = []
    for stage in stages:
        model, seconds = train_head(stage, backbone, model, args.work)
        head_seconds.append(seconds)
    if model is None:
        parser.error("--head-steps: at least one stage needs steps")
    results = evaluate(model, backbone, args.eval_per_kind)
    from hip_head.provenance import machine_description

    summary = {
        "description": "the shipped HIP: a small ScaleShiftMACE with a HIP head trained on "
        "GFN2-xTB Hessians of H/C/N/O molecules (default, extra and reaction sets); see "
        "docs/pretrained.md",
        "backbone": backbone_description(args.backbone_model, args.backbone),
        "head": HEAD,
        "head_training": [
            asdict(st) | {"seconds": round(sec, 1)} for st, sec in zip(stages, head_seconds)
        ],
        "evaluation": results,
        "evaluation_note": "means over frames; Hessian MAE eV/Å², Eckart eigenvalues eV/Å²/amu, "
        "seconds per molecule (E+F+H, one at a time, CPU); autograd = the backbone's exact "
        "Hessian; at most --eval-per-kind frames of each kind per set",
        "machine": machine_description(device="cpu"),
        "script": "scripts/train_hip.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "total_wall_seconds_this_call": round(time.time() - t0, 1),
    }
    json_path = args.work / "hip_pretrained.json"
    json_path.write_text(json.dumps(summary, indent=1) + "\n")
    log(f"wrote {json_path}")
    print(markdown_tables(results), flush=True)
    if args.ship:
        shutil.copyfile(model, ASSETS / "hip_pretrained.model")
        shutil.copyfile(json_path, ASSETS / "hip_pretrained.json")
        log(f"shipped {ASSETS / 'hip_pretrained.model'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
