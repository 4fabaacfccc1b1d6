"""The fine-tuning loop: config, sampler, EMA, modes, faults (NaN, OOM, SIGKILL), DDP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")
pytest.importorskip("mace")

import hip_head  # noqa: E402
from hip_head import AtomicGraph  # noqa: E402
from hip_head.finetune.config import ConfigError, FinetuneConfig, load_config  # noqa: E402
from hip_head.finetune.data.sampler import EpochBatchSampler, _DataPosition  # noqa: E402
from hip_head.finetune.losses import LossBatch, LossTerm, register_loss  # noqa: E402
from hip_head.finetune.module import (  # noqa: E402
    BatchTooLargeError,
    ParameterEMA,
    TrainingDivergedError,
)
from tests.finetune.finetune_data import save_tiny_mace, write_morse_db  # noqa: E402

pytestmark = pytest.mark.mace
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    return {
        "db": write_morse_db(root / "morse.db"),
        "db_nosplit": write_morse_db(root / "morse_nosplit.db", with_split=False),
        "backbone": save_tiny_mace(root / "tiny.model"),
    }


def tiny_config(assets, out: Path, **sections) -> FinetuneConfig:
    raw = {
        "model": {
            "backbone": str(assets["backbone"]),
            "head": {"channels": 4, "hessian_cutoff": 6.0},
            "dtype": "float64",
        },
        "data": {"train": [str(assets["db"])], "batch_size": 4},
        "optim": {"lr": 5e-3, "warmup_steps": 2, "ema_decay": 0.9},
        "train": {
            "max_steps": 6,
            "val_every_n_steps": 3,
            "checkpoint_every_n_steps": 3,
            "log_every_n_steps": 1,
            "out_dir": str(out),
            "accelerator": "cpu",
            "devices": 1,
            "progress_bar": False,
        },
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return FinetuneConfig.from_dict(raw)


# ---------------------------------------------------------------------------------- config
def test_config_unknown_key_and_bad_values_are_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  max_stepz: 10\n")
    with pytest.raises(ConfigError, match=r"train\.max_stepz"):
        load_config(path)
    path.write_text("optim:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"optim\.lr = 'fast'"):
        load_config(path)
    path.write_text("trian: {}\n")
    with pytest.raises(ConfigError, match="trian"):
        load_config(path)
    with pytest.raises(ConfigError, match="autograd"):
        load_config(None, ["train.target=autograd", "train.mode=head"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["max_steps=3"])


def test_config_overrides_parse_yaml_and_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  train: a.db\n  batch_size: 2\n")
    config = load_config(path, ["optim.lr=1e-3", "train.mode=full", "data.val=[b.db, c.db]"])
    assert config.data.train == ["a.db"] and config.data.batch_size == 2
    assert config.optim.lr == pytest.approx(1e-3) and config.train.mode == "full"
    assert config.data.val == ["b.db", "c.db"]
    assert FinetuneConfig.from_dict(config.to_dict()) == config


# ---------------------------------------------------------------------------------- sampler, EMA
def test_sampler_is_deterministic_sharded_and_resumable(monkeypatch):
    sampler = EpochBatchSampler(23, 4, seed=3, epoch_fn=lambda: 1)
    first, second = list(sampler), list(sampler)
    assert first == second and len(first) == 5 == len(sampler)  # 23 // 4, last one dropped
    assert all(len(b) == 4 for b in first)
    assert list(EpochBatchSampler(23, 4, seed=3, epoch_fn=lambda: 2)) != first

    shards = []
    for rank in (0, 1):
        monkeypatch.setattr(EpochBatchSampler, "_rank_world", staticmethod(lambda r=rank: (r, 2)))
        shards.append(list(EpochBatchSampler(23, 4, seed=3, epoch_fn=lambda: 1)))
    assert len(shards[0]) == len(shards[1]) == 2
    flat = [i for shard in shards for batch in shard for i in batch]
    assert len(flat) == len(set(flat))  # ranks never see the same structure

    monkeypatch.setattr(EpochBatchSampler, "_rank_world", staticmethod(lambda: (0, 1)))
    position = _DataPosition()
    position.resume = (1, 3)
    resumed = list(EpochBatchSampler(23, 4, seed=3, epoch_fn=lambda: 1, position=position))
    assert resumed == first[3:]
    assert list(EpochBatchSampler(23, 4, seed=3, epoch_fn=lambda: 1, position=position)) == first


def test_ema_averages_and_swaps_back():
    model = torch.nn.Linear(2, 1)
    ema = ParameterEMA(model, decay=0.5)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # warm-up decay min(0.5, 1/10) = 0.1
    expected = 0.1 * start + 0.9 * (start + 1.0)
    assert torch.allclose(ema.shadow_0, expected)
    with ema.swapped_in(model):
        assert torch.allclose(model.weight, expected)
    assert torch.allclose(model.weight, start + 1.0)


# ---------------------------------------------------------------------------------- training
def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["head", "full", "last_k"])
def test_modes_train_what_they_say(assets, tmp_path, mode):
    from hip_head.finetune.train import build_model, run_finetune

    config = tiny_config(assets, tmp_path / mode, train={"mode": mode, "last_k": 1})
    before = _params(build_model(config))
    result = run_finetune(config)
    import hip_head

    after = _params(hip_head.load(result.model_path))
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    head = {n for n in before if n.startswith("readout.")}
    last = {n for n in before if ".interactions.1." in n or ".products.1." in n}
    assert head <= changed  # the head always trains
    if mode == "head":
        assert changed == head
    elif mode == "full":
        assert changed - head and any(".interactions.0." in n for n in changed)
    else:
        assert changed - head <= last | {n for n in before if ".readouts.1." in n}
        assert changed & last
    assert result.global_step == 6
    assert np.isfinite(result.metrics["val/hessian_mae"])
    csv = (tmp_path / mode / "logs" / "csv" / "metrics.csv").read_text()
    assert "val/hessian_mae" in csv and "train/hessian" in csv


@pytest.mark.slow
def test_head_training_lowers_hessian_error(assets, tmp_path):
    from hip_head.finetune.train import run_finetune

    config = tiny_config(
        assets,
        tmp_path / "learn",
        train={"max_steps": 60, "val_every_n_steps": 60, "checkpoint_every_n_steps": 60},
        optim={"lr": 1e-2, "warmup_steps": 5, "ema_decay": 0.0},
    )
    result = run_finetune(config)
    metrics = [
        line.split(",") for line in (tmp_path / "learn/logs/csv/metrics.csv").read_text().split()
    ]
    header = metrics[0]
    col = header.index("train/hessian")
    losses = [float(row[col]) for row in metrics[1:] if row[col]]
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5]), losses
    assert result.metrics["val/hessian_mae"] < 0.8 * losses[0]


def test_block_scale_auto_is_the_train_labels_rms(assets, tmp_path):
    from hip_head.finetune.data import hessian_rms
    from hip_head.finetune.datamodule import HessianDataModule
    from hip_head.finetune.train import build_model

    config = tiny_config(assets, tmp_path / "scale", model={"head": {"block_scale": "auto"}})
    data = HessianDataModule(config.data)
    data.setup("fit")
    rms = hessian_rms(data.splits["train"])
    assert rms > 1.0  # Morse Hessians: entries of several eV/Å²
    assert build_model(config).readout.block_scale == pytest.approx(rms, rel=1e-12)
    fixed = tiny_config(assets, tmp_path / "fixed", model={"head": {"block_scale": 2.5}})
    assert build_model(fixed).readout.block_scale == 2.5
    assert build_model(tiny_config(assets, tmp_path / "plain")).readout.block_scale == 1.0


@pytest.mark.parametrize("mode", ["head", "full"])
def test_bf16_mixed_precision_trains_with_the_backbone_at_full_precision(assets, tmp_path, mode):
    # MACE's symmetric contraction rejects mixed dtypes under autocast: the backbone must run
    # outside it (HIPModel.run_backbone) while the head runs in bf16
    from hip_head.finetune.train import run_finetune

    config = tiny_config(
        assets,
        tmp_path / f"bf16_{mode}",
        model={"dtype": "float32"},
        train={"mode": mode, "precision": "bf16-mixed"},
    )
    result = run_finetune(config)
    assert result.global_step == 6
    assert np.isfinite(result.metrics["train/total"])
    assert np.isfinite(result.metrics["val/hessian_mae"])


def test_autocast_leaves_the_backbone_exact_and_returns_model_dtype(assets):
    import ase

    from hip_head.finetune.train import load_backbone

    hip = hip_head.wrap(load_backbone(str(assets["backbone"])).float(), channels=4)
    hip = hip.float().eval()
    atoms = ase.Atoms("CH4", positions=np.random.default_rng(0).normal(0, 0.7, (5, 3)))
    graph = AtomicGraph.from_ase([atoms], dtype=torch.float32)
    plain = hip(graph)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = hip(graph)
    assert torch.equal(mixed["energy"], plain["energy"])  # the backbone ran in float32
    assert torch.equal(mixed["forces"], plain["forces"])
    assert mixed["hessian"].dtype == torch.float32
    scale = plain["hessian"].abs().max()
    assert torch.allclose(mixed["hessian"], plain["hessian"], atol=0.05 * float(scale))
    assert not torch.equal(mixed["hessian"], plain["hessian"])  # the head did run in bf16


@pytest.mark.slow
def test_autograd_baseline_trains_the_backbone_hessian(assets, tmp_path):
    from hip_head.finetune.train import build_model, run_finetune

    config = tiny_config(
        assets, tmp_path / "ag", train={"mode": "full", "target": "autograd", "max_steps": 3}
    )
    before = _params(build_model(config))
    result = run_finetune(config)
    import hip_head

    model = hip_head.load(result.model_path)
    assert model.hessian_method == "autograd"
    after = _params(model)
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("adapter."))
    assert all(torch.equal(before[n], after[n]) for n in before if n.startswith("readout."))


@register_loss("hessian_diagonal_test")
class HessianDiagonalMAE(LossTerm):
    """MAE of the Hessians' diagonals only, eV/Å² (registered by this test module alone)."""

    keys = ("hessian",)

    def __call__(self, batch: LossBatch) -> torch.Tensor:
        from hip_head.assemble import split_flat

        pred = split_flat(batch.pred["hessian"], batch.atoms_per_graph)
        target = split_flat(batch.target["hessian"], batch.atoms_per_graph)
        diffs = [(p.diagonal() - t.diagonal()).abs() for p, t in zip(pred, target)]
        return torch.cat(diffs).mean()


def test_a_registered_loss_term_trains_from_a_yaml_config(assets, tmp_path):
    import yaml

    from hip_head.finetune.train import run_finetune

    raw = tiny_config(assets, tmp_path / "run").to_dict()
    raw["loss"].update(hessian=0.0, terms={"hessian_diagonal_test": {"weight": 3.0}})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = run_finetune(load_config(path, ["train.max_steps=3"]))
    assert result.global_step == 3
    csv = (tmp_path / "run" / "logs" / "csv" / "metrics.csv").read_text()
    header = csv.splitlines()[0].split(",")
    assert "train/hessian_diagonal_test" in header and "train/hessian" not in header


def test_without_val_split_molecules_are_held_out(assets, tmp_path):
    from hip_head.finetune.datamodule import HessianDataModule

    config = tiny_config(assets, tmp_path / "x", data={"train": [str(assets["db_nosplit"])]})
    dm = HessianDataModule(config.data)
    dm.setup("fit")
    train = {dm.splits["train"][i].meta["molecule"] for i in range(len(dm.splits["train"]))}
    val = {dm.splits["val"][i].meta["molecule"] for i in range(len(dm.splits["val"]))}
    assert train and val and not train & val
    config = tiny_config(assets, tmp_path / "y")
    dm = HessianDataModule(config.data)
    dm.setup("fit")
    assert {s.meta["split"] for s in dm.splits["train"]} == {"train"}
    assert {s.meta["split"] for s in dm.splits["val"]} == {"val"}
    assert {s.meta["split"] for s in dm.splits["test"]} == {"test"}


# ---------------------------------------------------------------------------------- faults
def test_nan_loss_stops_with_message_and_keeps_last_checkpoint(assets, tmp_path, monkeypatch):
    from hip_head.finetune import module as module_mod
    from hip_head.finetune.train import run_finetune

    real_loss = module_mod.HIPLightningModule._loss

    def poisoned(self, graph, labels):
        loss, parts = real_loss(self, graph, labels)
        return (loss * float("nan"), parts) if self.global_step >= 4 else (loss, parts)

    monkeypatch.setattr(module_mod.HIPLightningModule, "_loss", poisoned)
    config = tiny_config(assets, tmp_path / "nan", train={"max_steps": 10})
    with pytest.raises(TrainingDivergedError, match="step 4.*last good checkpoint"):
        run_finetune(config)
    ckpt = torch.load(tmp_path / "nan/checkpoints/last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 3
    assert all(
        torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()
    )
    assert not list((tmp_path / "nan/checkpoints").glob("*.tmp"))


def test_out_of_memory_names_a_batch_size(assets, tmp_path, monkeypatch):
    from hip_head.finetune import module as module_mod
    from hip_head.finetune.train import run_finetune

    def oom(self, graph, labels):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20 GiB")

    monkeypatch.setattr(module_mod.HIPLightningModule, "_loss", oom)
    with pytest.raises(BatchTooLargeError, match=r"batch of 4 structures.*data\.batch_size=2"):
        run_finetune(tiny_config(assets, tmp_path / "oom"))


def test_refuses_to_overwrite_a_run_and_resume_needs_a_checkpoint(assets, tmp_path):
    from hip_head.finetune.train import run_finetune

    with pytest.raises(ConfigError, match="no checkpoint to resume"):
        run_finetune(tiny_config(assets, tmp_path / "r", train={"resume": True}))
    (tmp_path / "r/checkpoints").mkdir(parents=True)
    (tmp_path / "r/checkpoints/last.ckpt").write_bytes(b"x")
    with pytest.raises(ConfigError, match="already holds a run"):
        run_finetune(tiny_config(assets, tmp_path / "r"))


def _cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.Popen(
        [sys.executable, "-m", "hip_head.cli", "finetune", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def _cli_args(assets, out: Path, steps: int) -> list[str]:
    return [
        "--backbone", str(assets["backbone"]),
        "--data", str(assets["db"]),
        "--out", str(out),
        "--max-steps", str(steps),
        "--set", "model.head={channels: 4, hessian_cutoff: 6.0}",
        "--set", "model.dtype=float64",
        "--set", "data.batch_size=4",
        "--set", "train.checkpoint_every_n_steps=4",
        "--set", "train.val_every_n_steps=100",
        "--set", "train.progress_bar=false",
        "--set", "train.accelerator=cpu",
        "--set", "train.devices=1",
    ]  # fmt: skip


def _logged_steps(path: Path) -> list[int]:
    """Steps of the training rows of a Lightning metrics.csv."""
    rows = [line.split(",") for line in path.read_text().splitlines()]
    header = rows[0]
    step, loss = header.index("step"), header.index("train/total")
    return [int(row[step]) for row in rows[1:] if len(row) > loss and row[loss]]


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(assets, tmp_path):
    """A run killed with SIGKILL and resumed ends with the same weights as one never killed:
    the resumed run loses only the steps since the last checkpoint, and restores optimizer,
    scheduler, EMA and data position (40 steps cross 3 epochs of 10 batches)."""
    import hip_head

    steps = 26
    full = _cli(_cli_args(assets, tmp_path / "full", steps))
    out_full = full.communicate(timeout=600)[0]
    assert full.returncode == 0, out_full

    killed = _cli(_cli_args(assets, tmp_path / "killed", steps))
    ckpt = tmp_path / "killed/checkpoints/last.ckpt"
    saved = tmp_path / "killed/hip_model.pt"
    deadline = time.time() + 300
    step_at_kill, seen = None, None
    while time.time() < deadline and killed.poll() is None:
        mtime = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        if mtime is not None and mtime != seen:
            # freeze the run while its checkpoint is read, so it cannot finish meanwhile
            killed.send_signal(signal.SIGSTOP)
            seen = ckpt.stat().st_mtime_ns
            step = torch.load(ckpt, weights_only=False)["global_step"]  # written atomically
            if 12 <= step < steps and not saved.exists():
                killed.send_signal(signal.SIGKILL)
                step_at_kill = step
                break
            killed.send_signal(signal.SIGCONT)
        time.sleep(0.02)
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.communicate()[0]
    assert step_at_kill is not None and step_at_kill < steps
    assert not saved.exists()

    resumed = _cli([*_cli_args(assets, tmp_path / "killed", steps), "--resume"])
    out_resumed = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out_resumed
    assert f"done: {steps} steps" in out_resumed

    # every attempt keeps its own metrics: the killed one's rows up to its last log interval
    logs = tmp_path / "killed/logs"
    first = _logged_steps(logs / "csv/metrics.csv")
    second = _logged_steps(logs / "csv_resume1/metrics.csv")
    assert first and max(first) >= step_at_kill - 10, (first, step_at_kill)
    assert second and max(second) >= steps - 10 and min(second) >= step_at_kill - 1

    a = hip_head.load(tmp_path / "full/hip_model.pt")
    b = hip_head.load(tmp_path / "killed/hip_model.pt")
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.allclose(pa, pb, rtol=1e-9, atol=1e-12), name


@pytest.mark.slow
def test_ddp_two_cpu_processes_gloo(assets, tmp_path):
    """DDP through torchrun: 2 CPU processes on gloo train a few steps and save one HIP."""
    args = _cli_args(assets, tmp_path / "ddp", 4)
    args += ["--set", "train.strategy=ddp", "--set", "train.devices=2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "hip_head.cli", "finetune", *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out = proc.communicate(timeout=600)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun's workers too: nothing left running
        pytest.fail(f"DDP run timed out: {proc.communicate()[0][-4000:]}")
    assert proc.returncode == 0, out[-4000:]
    assert "done: 4 steps in" in out and "on 2 processes" in out, out[-4000:]
    import hip_head

    model = hip_head.load(tmp_path / "ddp/hip_model.pt")
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.slow
def test_saved_hip_loads_without_training_extras(assets, tmp_path):
    from hip_head.finetune.train import run_finetune

    result = run_finetune(tiny_config(assets, tmp_path / "plain", train={"max_steps": 2}))
    code = (
        "import sys\n"
        "for name in ('lightning', 'lightning.pytorch', 'tensorboard', 'yaml'):\n"
        "    sys.modules[name] = None\n"
        "import hip_head\n"
        "from ase.build import molecule\n"
        f"m = hip_head.load({str(result.model_path)!r})\n"
        "out = m.predict(molecule('CH3OH'))\n"
        "assert out['hessian'].shape == (18, 18)\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


@pytest.mark.slow
def test_demo_runs_end_to_end(assets, tmp_path, capsys):
    """`make demo`'s pipeline on the shipped data, shortened: a tiny saved HIP stands in for
    the shipped one (3 steps, 1 frame per kind)."""
    import hip_head
    from hip_head.finetune.demo import run_demo
    from hip_head.finetune.train import run_finetune

    start = run_finetune(tiny_config(assets, tmp_path / "start", train={"max_steps": 2}))
    code = run_demo(tmp_path / "demo", max_steps=3, per_kind=1, large_per_kind=1,
                    model=str(start.model_path))  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "held-out reactions" in out and "unseen molecules" in out
    for label in ("Hessian MAE [eV/Å²]", "lowest eigenvalue MAE", "|cos| lowest eigenvector",
                  "n_neg agreement", "MACE autograd", "HIP shipped", "HIP +3 steps"):  # fmt: skip
        assert label in out, label
    for kind in ("ts", "irc", "minimum", "thermal", "all"):
        assert any(line.split()[:1] == [kind] for line in out.splitlines()), kind
    assert 'hip_head.load("pretrained")' in out
    (run,) = [p for p in (tmp_path / "demo").iterdir() if p.is_dir()]
    assert (run / "parity.png").stat().st_size > 10_000
    assert (run / "hip_model.pt").is_file()
    # it continued the given HIP (same head), it did not wrap a new one
    tuned, given = hip_head.load(run / "hip_model.pt"), hip_head.load(start.model_path)
    assert str(tuned.readout.hidden_irreps) == str(given.readout.hidden_irreps)


def test_demo_continuation_keeps_the_saddle_index_terms(tmp_path):
    """A continuation from a trained HIP trains with the sign hinge and the subspace term; a
    head trained from scratch with the default loss."""
    from hip_head.finetune.config import FinetuneConfig
    from hip_head.finetune.demo import demo_settings
    from hip_head.finetune.losses import build_loss_terms

    cont = FinetuneConfig.from_dict(demo_settings(tmp_path, 300, init="hip.pt"))
    names = [name for name, _, _ in build_loss_terms(cont.loss)]
    assert {"hessian", "subspace", "mode_sign"} <= set(names)
    fresh = FinetuneConfig.from_dict(demo_settings(tmp_path, 300))
    assert "mode_sign" not in [name for name, _, _ in build_loss_terms(fresh.loss)]


def test_max_minutes_stops_training(assets, tmp_path):
    """train.max_minutes ends a run before max_steps and still saves the model."""
    from hip_head.finetune.train import run_finetune

    config = tiny_config(
        assets, tmp_path / "timed", train={"max_steps": 100_000, "max_minutes": 0.05}
    )
    result = run_finetune(config)
    assert 0 < result.global_step < 100_000
    assert result.seconds < 60 and result.model_path.is_file()
    with pytest.raises(ConfigError, match="max_minutes"):
        tiny_config(assets, tmp_path / "bad", train={"max_minutes": 0})
