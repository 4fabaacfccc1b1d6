"""Bad input, tried as a careless or adversarial user would: each gets a clear error or warning.

Related probes live beside their features: malicious pickles in ``tests/test_safe_loading.py``,
periodic cells in ``tests/test_periodic_hessian.py``, metrics kept across a resume in
``tests/finetune/test_finetune.py``, the head's memory guard in ``tests/test_memory_guard.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from hip_head.errors import CloseContactWarning, InvalidStructureError
from hip_head.finetune.config import ConfigError, FinetuneConfig
from hip_head.finetune.data import (
    AseDbDataset,
    HessianDataError,
    HessianSample,
    read_extxyz,
    validate_sample,
    write_ase_db,
)
from hip_head.graph import AtomicGraph
from hip_head.vibrations import vibrational_analysis


def _water_sample(**changes) -> HessianSample:
    water = molecule("H2O")
    rng = np.random.default_rng(0)
    a = rng.normal(size=(9, 9))
    values = dict(
        positions=water.positions,
        numbers=water.numbers,
        energy=-14.2,
        forces=np.zeros((3, 3)),
        hessian=(a + a.T).reshape(-1),
    )
    values.update(changes)
    return HessianSample(**values)


# --------------------------------------------------------------------------- vibrations
def test_symmetrize_false_refuses_an_asymmetric_hessian_and_uses_a_symmetric_one_as_given():
    water = molecule("H2O")
    rng = np.random.default_rng(1)
    a = rng.normal(size=(9, 9))
    with pytest.raises(ValueError, match="not symmetric"):
        vibrational_analysis(a, water, symmetrize=False)
    sym = a + a.T
    ours = vibrational_analysis(sym, water, symmetrize=False).frequencies_cm1
    np.testing.assert_allclose(ours, vibrational_analysis(sym, water).frequencies_cm1)


def test_all_coincident_atoms_are_an_error_not_six_modes():
    atoms = Atoms("H2O", positions=np.zeros((3, 3)))
    with pytest.raises(InvalidStructureError, match="coincident"):
        vibrational_analysis(np.eye(9), atoms)


# --------------------------------------------------------------------------- structures
def test_atoms_closer_than_any_bond_warn_and_coincident_ones_fail():
    close = Atoms("H2", positions=[[0, 0, 0], [0.3, 0, 0]])
    with pytest.warns(CloseContactWarning, match=r"atoms 0 \(H\) and 1 \(H\) are 0\.3 Å"):
        AtomicGraph.from_ase(close).validate()
    coincident = Atoms("H2", positions=[[0, 0, 0], [0.05, 0, 0]])
    with pytest.raises(InvalidStructureError, match="coincident"):
        AtomicGraph.from_ase(coincident).validate()


def test_a_normal_molecule_validates_without_warnings(recwarn):
    AtomicGraph.from_ase(molecule("CH3CH2OH")).validate()
    assert not [w for w in recwarn if issubclass(w.category, CloseContactWarning)]


# --------------------------------------------------------------------------- data
def test_a_hessian_label_as_asymmetric_as_it_is_large_is_rejected():
    rng = np.random.default_rng(2)
    sample = _water_sample(hessian=rng.normal(size=81))
    assert any("not symmetric" in p for p in validate_sample(sample))
    slightly = _water_sample()
    slightly.hessian = slightly.hessian + 1e-4 * rng.normal(size=81)  # finite-difference noise
    assert validate_sample(slightly) == []


def test_a_nan_energy_is_refused_when_written_not_stored_as_missing(tmp_path):
    path = tmp_path / "nan.db"
    with pytest.raises(HessianDataError, match="energy is nan"):
        write_ase_db([_water_sample(energy=float("nan"))], path)
    write_ase_db([_water_sample()], tmp_path / "ok.db")
    assert AseDbDataset(tmp_path / "ok.db")[0].energy == pytest.approx(-14.2)


def test_a_zero_byte_database_is_an_error_and_stays_untouched(tmp_path):
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    with pytest.raises(HessianDataError, match="empty"):
        AseDbDataset(path)
    assert path.stat().st_size == 0


def test_extxyz_with_a_non_numeric_hessian_names_file_and_record(tmp_path):
    path = tmp_path / "bad.extxyz"
    good = molecule("H2O")
    good.calc = SinglePointCalculator(good, energy=-1.0, forces=np.zeros((3, 3)))
    good.info["hessian"] = np.eye(9).reshape(-1)
    import ase.io

    ase.io.write(path, [good], format="extxyz")
    text = path.read_text().splitlines()
    text[1] = text[1].replace("hessian=", 'hessian="not numbers" old=', 1)
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(HessianDataError) as info:
        read_extxyz(path)
    assert "bad.extxyz" in str(info.value) and "0" in str(info.value)


# --------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    ("section", "values", "match"),
    [
        ("optim", {"grad_clip": -1.0}, "optim.grad_clip"),
        ("optim", {"warmup_steps": -10}, "optim.warmup_steps"),
        ("optim", {"lr": float("nan")}, "optim.lr"),
        ("data", {"max_train_frames": 0}, "data.max_train_frames"),
        ("data", {"num_workers": -1}, "data.num_workers"),
        ("model", {"head": {"chanels": 4}}, "model.head.chanels"),
    ],
)
def test_bad_training_settings_are_named(section, values, match):
    with pytest.raises(ConfigError, match=match):
        FinetuneConfig.from_dict({section: values})


def test_an_output_directory_that_is_a_file_fails_before_any_loading(tmp_path):
    pytest.importorskip("lightning")
    from hip_head.finetune.train import run_finetune

    blocker = tmp_path / "taken"
    blocker.write_text("")
    for out in (blocker, blocker / "run"):
        config = FinetuneConfig.from_dict(
            {"data": {"train": [str(tmp_path / "missing.db")]}, "train": {"out_dir": str(out)}}
        )
        with pytest.raises(ConfigError, match="train.out_dir"):
            run_finetune(config)  # the missing data file would fail later, not first


def test_a_horm_lmdb_record_that_asks_for_os_system_is_refused_before_it_runs(tmp_path):
    pytest.importorskip("lmdb")
    import os
    import pickle

    import lmdb

    from hip_head.finetune.data import HormLMDBDataset

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.lmdb"
    env = lmdb.open(str(path), subdir=False, map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"length", pickle.dumps(1))
        txn.put(b"0", pickle.dumps({"pos": Payload()}))
    env.close()
    dataset = HormLMDBDataset(path)
    with pytest.raises(HessianDataError, match="os.system|posix.system"):
        dataset[0]
    assert not marker.exists()


# --------------------------------------------------------------------------- the head and model
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("hessian_cutoff", float("nan")),
        ("hessian_cutoff", 0.0),
        ("hessian_cutoff", -1.0),
        ("block_scale", float("nan")),
        ("block_scale", 0.0),
        ("channels", 0),
        ("num_interactions", -1),
        ("avg_num_pairs", float("inf")),
    ],
)
def test_head_settings_out_of_range_are_named(option, value):
    from hip_head import InvalidArgumentError, o3
    from hip_head.readout import HessianReadout

    with pytest.raises(InvalidArgumentError, match=option):
        HessianReadout(o3.Irreps("4x0e + 2x1o"), **{option: value})


def test_a_graph_in_another_dtype_than_the_model_is_a_clear_error():
    import torch

    from hip_head import HIPModel, InvalidArgumentError
    from hip_head.readout import HessianReadout
    from tests.toy_backbone import ToyAdapter, make_toy

    adapter = ToyAdapter(make_toy().double())
    model = HIPModel(adapter, HessianReadout(adapter.node_irreps, channels=4)).double()
    graph = AtomicGraph.from_ase(molecule("H2O"), dtype=torch.float32)
    with pytest.raises(InvalidArgumentError, match="float32 but the model is torch.float64"):
        model(graph)
    out = model.predict(molecule("H2O"))  # predict builds the graph in the model's dtype
    assert np.isfinite(out["hessian"]).all()
