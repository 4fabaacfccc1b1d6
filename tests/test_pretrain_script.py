"""``scripts/pretrain_mace.py`` and its training half ``scripts/pretrain_mace_train.py``.

The script is imported the way ``scripts/train_hip.py`` imports it (``scripts`` on
``sys.path``); nothing here runs ``mace_run_train``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def pretrain():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import pretrain_mace

        yield pretrain_mace
    finally:
        sys.path.remove(str(SCRIPTS))


def test_help_runs_as_a_script() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "pretrain_mace.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for option in ("--db", "--out", "--max-minutes", "--skip-training", "--hessian-frames"):
        assert option in done.stdout


def test_parse_args(pretrain, tmp_path: Path) -> None:
    quick = pretrain.parse_args(["--quick", "--out", str(tmp_path / "m.model")])
    assert (quick.epochs, quick.stage_two_epochs) == (3, 1)
    assert quick.out == tmp_path / "m.model"
    with pytest.raises(SystemExit):
        pretrain.parse_args(["--epochs", "4", "--stage-two-epochs", "4"])
    assert callable(pretrain.main)


def test_mace_arguments(pretrain, tmp_path: Path) -> None:
    import pretrain_mace_train as training

    args = training.mace_arguments(tmp_path, 12, "float32", [1, 6, 8], {"start_swa": 9})
    assert f"--train_file={tmp_path / 'train.xyz'}" in args
    assert "--max_num_epochs=12" in args
    assert "--default_dtype=float32" in args
    assert "--atomic_numbers=[1, 6, 8]" in args
    assert "--start_swa=9" in args
    assert "--swa" in args and "--ema" in args  # True options are bare flags
    assert "--plot=False" in args  # the one False option that is passed
    assert f"--r_max={training.ARCHITECTURE['r_max']}" in args
    # the extra options override the defaults
    assert "--lr=0.5" in training.mace_arguments(tmp_path, 2, "float64", [1], {"lr": 0.5})
    assert "--lr=0.01" not in training.mace_arguments(tmp_path, 2, "float64", [1], {"lr": 0.5})


def test_checkpoints_and_epochs(pretrain, tmp_path: Path) -> None:
    import pretrain_mace_train as training

    (tmp_path / "checkpoints").mkdir()
    for name in ("run-0_epoch-3.pt", "run-0_epoch-11.pt", "run-0_epoch-20_swa.pt", "other.pt"):
        (tmp_path / "checkpoints" / f"{training.NAME}_{name}").write_bytes(b"")
    assert training.checkpoint_epochs(tmp_path) == {False: [3, 11], True: [20]}
    log = tmp_path / "train.log"
    log.write_text("Epoch 0: loss 1\nEpoch 1: loss 0.5\nsomething else\nEpoch 4: loss 0.1\n")
    assert training.epochs_trained(log) == 5
    log.write_text("no epochs yet\n")
    assert training.epochs_trained(log) == 0


@pytest.mark.mace
def test_foundation_model_file_rebuilds_a_safe_backbone(pretrain, tmp_path: Path) -> None:
    """The shipped safe backbone becomes a module file MACE's trainer can read; a pickle is
    passed on untouched."""
    import pretrain_mace_train as training
    import torch

    from hip_head.assets import asset_path

    shipped = asset_path("mace_pretrained.model")
    out = training.foundation_model_file(shipped, tmp_path / "work")
    assert out == (tmp_path / "work" / "foundation.model").resolve()
    module = torch.load(out, weights_only=False)  # what mace_run_train does
    assert float(module.r_max) > 0 and len(module.atomic_numbers) > 0
    pickle = tmp_path / "pickled.model"
    torch.save(module, pickle)
    assert training.foundation_model_file(pickle, tmp_path / "other") == pickle.resolve()
