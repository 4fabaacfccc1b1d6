"""Hessian dataset readers: HORM LMDB, ASE db, extxyz; validation, collation, splitting."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings

import lmdb
import numpy as np
import pytest
import torch

from hip_head.assemble import split_flat
from hip_head.finetune import data as D
from hip_head.finetune.data import (
    AseDbDataset,
    HessianDataError,
    HessianDataset,
    HessianSample,
    HormLMDBDataset,
    collate_hessian,
    read_extxyz,
    split_by_molecule,
    validate_sample,
    write_ase_db,
    write_extxyz,
    write_horm_lmdb,
)


def _sample(rng: np.random.Generator, n: int, name: str, scale: float = 1.0) -> HessianSample:
    """Values exact in float32 (HORM) and in extxyz's 8-decimal columns (multiples of 1/256)."""
    h = rng.normal(size=(3 * n, 3 * n)) * scale
    h = ((h + h.T) / 2).astype(np.float32).astype(np.float64)
    return HessianSample(
        positions=rng.integers(-1024, 1024, (n, 3)) / 256,
        numbers=rng.choice([1, 6, 7, 8], n),
        energy=float(rng.integers(-100000, 0)) / 8,
        forces=rng.integers(-512, 512, (n, 3)) / 256,
        hessian=h.reshape(-1),
        meta={"rxn": f"rxn{n}", "molecule": name},
    )


@pytest.fixture
def samples() -> list[HessianSample]:
    rng = np.random.default_rng(1)
    return [_sample(rng, 3, "a"), _sample(rng, 5, "b"), _sample(rng, 8, "c")]


def _assert_same(a: HessianSample, b: HessianSample, meta_keys=("rxn", "molecule")) -> None:
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.numbers, b.numbers)
    assert a.energy == b.energy
    np.testing.assert_array_equal(a.forces, b.forces)
    np.testing.assert_array_equal(a.hessian, b.hessian)
    assert (a.charge, a.spin) == (b.charge, b.spin)
    for k in meta_keys:
        assert a.meta.get(k) == b.meta.get(k)
    assert a.positions.dtype == np.float64 and a.hessian.dtype == np.float64


def _write_all(samples, tmp_path):
    write_horm_lmdb(samples, tmp_path / "x.lmdb")
    write_ase_db(samples, tmp_path / "x.db")
    write_extxyz(samples, tmp_path / "x.xyz")
    return (
        list(HormLMDBDataset(tmp_path / "x.lmdb")),
        list(AseDbDataset(tmp_path / "x.db")),
        read_extxyz(tmp_path / "x.xyz"),
    )


def test_all_readers_give_identical_samples(samples, tmp_path):
    for read in _write_all(samples, tmp_path):
        assert len(read) == 3
        for i, (got, want) in enumerate(zip(read, samples)):
            _assert_same(got, want)
            assert got.meta["index"] == i and got.meta["source"].startswith(str(tmp_path))


@pytest.mark.pyg  # writes real torch_geometric Data records
def test_horm_records_are_pyg_data_and_read_without_torch_geometric(samples, tmp_path, monkeypatch):
    path = tmp_path / "x.lmdb"
    write_horm_lmdb(samples, path)
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        raw = txn.get(b"0")
        assert pickle.loads(txn.get(b"length")) == 3
    env.close()
    assert b"torch_geometric.data.data" in raw
    record = pickle.loads(raw)
    assert type(record).__name__ == "Data" and record.hessian.dtype == torch.float32
    assert torch.equal(
        record.one_hot.argmax(1), torch.tensor([[1, 6, 7, 8].index(z) for z in samples[0].numbers])
    )
    for name in [m for m in sys.modules if m.split(".")[0] == "torch_geometric"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError):
        import torch_geometric  # noqa: F401
    for got, want in zip(HormLMDBDataset(path), samples):
        _assert_same(got, want)


@pytest.mark.pyg  # writes real torch_geometric Data records
def test_horm_numbers_from_one_hot_when_charges_absent(samples, tmp_path):
    path = tmp_path / "x.lmdb"
    write_horm_lmdb(samples, path)
    env = lmdb.open(str(path), subdir=False, lock=False)
    with env.begin(write=True) as txn:
        record = pickle.loads(txn.get(b"1"))
        del record.charges
        txn.put(b"1", pickle.dumps(record))
    env.close()
    np.testing.assert_array_equal(HormLMDBDataset(path)[1].numbers, samples[1].numbers)


def test_energy_key(samples, tmp_path):
    path = tmp_path / "x.lmdb"
    write_horm_lmdb(samples, path, ae=[-1.5, -2.5, -3.5])
    assert [s.energy for s in HormLMDBDataset(path, energy_key="ae")] == [-1.5, -2.5, -3.5]
    assert [s.energy for s in HormLMDBDataset(path)] == [s.energy for s in samples]
    with pytest.raises(ValueError, match="energy_key"):
        HormLMDBDataset(path, energy_key="E")


def test_extxyz_hessian_round_trip_is_exact_float64(tmp_path):
    rng = np.random.default_rng(2)
    s = _sample(rng, 4, "d")
    a = rng.normal(size=(12, 12)) * 123.456789
    s.hessian = (a + a.T).reshape(-1)
    s.energy = float(rng.normal()) * 1e3
    write_extxyz([s], tmp_path / "x.xyz")
    (got,) = read_extxyz(tmp_path / "x.xyz")
    np.testing.assert_array_equal(got.hessian, s.hessian)
    assert got.energy == s.energy


def test_ase_db_accepts_square_hessian(samples, tmp_path):
    import ase.db

    with ase.db.connect(str(tmp_path / "x.db")) as db:
        db.write(samples[1].to_atoms(), data={"hessian": samples[1].hessian_matrix()})
    got = AseDbDataset(tmp_path / "x.db")[0]
    _assert_same(got, samples[1], meta_keys=())


def test_truncated_lmdb_names_file(samples, tmp_path):
    path = tmp_path / "x.lmdb"
    write_horm_lmdb(samples, path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(HessianDataError, match="x.lmdb.*truncated"):
        HormLMDBDataset(path)
    with pytest.raises(HessianDataError, match="missing.lmdb"):
        HormLMDBDataset(tmp_path / "missing.lmdb")
    (tmp_path / "junk.lmdb").write_bytes(b"not an lmdb" * 1000)
    with pytest.raises(HessianDataError, match="junk.lmdb"):
        HormLMDBDataset(tmp_path / "junk.lmdb")


def test_corrupt_record_names_file_and_key(samples, tmp_path):
    path = tmp_path / "x.lmdb"
    write_horm_lmdb(samples, path)
    env = lmdb.open(str(path), subdir=False, lock=False)
    with env.begin(write=True) as txn:
        txn.put(b"1", b"\x80\x04garbage")
    env.close()
    ds = HormLMDBDataset(path)
    _assert_same(ds[0], samples[0])
    with pytest.raises(HessianDataError, match=r"x\.lmdb: record 1: cannot unpickle") as err:
        ds[1]
    assert err.value.index == 1 and err.value.source == str(path)
    skipping = HormLMDBDataset(path, on_error="skip")
    with pytest.warns(UserWarning, match="record 1"):
        assert skipping[1] is None
    assert len(list(skipping)) == 2


def test_corrupt_db_file_names_file(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"SQLite format 3\x00" + b"\x07" * 5000)
    with pytest.raises(HessianDataError, match="bad.db"):
        AseDbDataset(bad)
    with pytest.raises(HessianDataError, match="nothing.db.*no such file"):
        AseDbDataset(tmp_path / "nothing.db")


def _bad_samples(samples):
    wrong_shape = HessianSample(**{**samples[0].__dict__, "hessian": np.zeros(10)})
    nan = HessianSample(**{**samples[1].__dict__, "hessian": samples[1].hessian.copy()})
    nan.hessian[3] = np.nan
    hartree = HessianSample(**{**samples[2].__dict__, "hessian": samples[2].hessian * 1e5})
    return [samples[0], wrong_shape, samples[1], nan, hartree, samples[2]]


@pytest.mark.parametrize("fmt", ["lmdb", "db", "xyz"])
def test_bad_records_raise_or_skip(samples, tmp_path, fmt):
    mixed = _bad_samples(samples)
    path = tmp_path / f"m.{fmt}"
    if fmt == "lmdb":
        write_horm_lmdb(mixed, path, dtype=torch.float64)
        open_ = lambda **kw: HormLMDBDataset(path, **kw)  # noqa: E731
    elif fmt == "db":
        write_ase_db(mixed, path, validate=False)
        open_ = lambda **kw: AseDbDataset(path, **kw)  # noqa: E731
    else:
        write_extxyz(mixed, path)
        open_ = lambda **kw: read_extxyz(path, **kw)  # noqa: E731
    if fmt == "xyz":
        with pytest.raises(HessianDataError, match=r"m\.xyz: record 1: Hessian has 10 entries"):
            open_()
    else:
        ds = open_()
        with pytest.raises(HessianDataError, match=rf"m\.{fmt}: record 1: Hessian has 10"):
            ds[1]
        with pytest.raises(HessianDataError, match="record 3: Hessian contains NaN"):
            ds[3]
        with pytest.raises(HessianDataError, match="record 4: .*wrong units"):
            ds[4]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        good = list(open_(on_error="skip"))
        if fmt != "xyz":
            ds = open_(on_error="skip")
            assert ds[1] is None and ds[1] is None  # warns once per record
    assert [s.meta["index"] for s in good] == [0, 2, 5]
    for got, want in zip(good, samples):
        _assert_same(got, want)
    messages = [str(w.message) for w in caught]
    assert sum("record 4" in m and "wrong units" in m for m in messages) == 1
    assert sum("record 1" in m for m in messages) == (1 if fmt == "xyz" else 2)


def test_validate_sample_problems(samples):
    s = samples[1]
    assert validate_sample(s, 0, "f") == []
    bad = HessianSample(**{**s.__dict__, "forces": np.zeros((4, 3))})
    assert any("forces have shape" in p for p in validate_sample(bad, 0, "f"))
    bad = HessianSample(**{**s.__dict__, "energy": float("inf")})
    assert any("energy" in p for p in validate_sample(bad, 0, "f"))


class _CountingLMDB(HormLMDBDataset):
    reads = 0

    def _read_raw(self, index):
        type(self).reads += 1
        return super()._read_raw(index)


class _CountingDb(AseDbDataset):
    reads = 0

    def _read_row(self, index):
        type(self).reads += 1
        return super()._read_row(index)


def test_readers_are_lazy(samples, tmp_path):
    write_horm_lmdb(samples, tmp_path / "x.lmdb")
    write_ase_db(samples, tmp_path / "x.db")
    for cls, path in [(_CountingLMDB, "x.lmdb"), (_CountingDb, "x.db")]:
        ds = cls(tmp_path / path)
        assert len(ds) == 3 and cls.reads == 0
        _assert_same(ds[2], samples[2])
        assert cls.reads == 1
        clone = pickle.loads(pickle.dumps(ds))  # what DataLoader workers receive (spawn)
        _assert_same(clone[-1], samples[2])


def test_collate_shapes_and_flat_layout(samples, tmp_path):
    write_horm_lmdb(samples[:2], tmp_path / "x.lmdb")
    ds = HessianDataset([HormLMDBDataset(tmp_path / "x.lmdb"), samples[2]])
    assert len(ds) == 3
    graph, labels = collate_hessian([ds[0], None, ds[1], ds[2]], dtype=torch.float64)
    counts = [3, 5, 8]
    assert graph.num_graphs == 3 and graph.num_atoms == 16
    assert graph.ptr.tolist() == [0, 3, 8, 16] and graph.atoms_per_graph.tolist() == counts
    assert graph.batch.tolist() == [0] * 3 + [1] * 5 + [2] * 8
    assert graph.positions.dtype == torch.float64 and graph.atomic_numbers.dtype == torch.long
    assert labels["energy"].shape == (3,) and labels["forces"].shape == (16, 3)
    assert labels["hessian"].shape == (sum((3 * n) ** 2 for n in counts),)
    for block, s in zip(split_flat(labels["hessian"], counts), samples):
        np.testing.assert_array_equal(block.numpy(), s.hessian_matrix())
    np.testing.assert_array_equal(labels["forces"][3:8].numpy(), samples[1].forces)
    graph.validate()
    g32, l32 = collate_hessian(samples[:1], dtype=torch.float32)
    assert g32.positions.dtype == l32["hessian"].dtype == torch.float32
    with pytest.raises(ValueError, match="empty batch"):
        collate_hessian([None])


def test_dataloader_with_workers(samples, tmp_path):
    write_horm_lmdb(samples, tmp_path / "x.lmdb")
    loader = torch.utils.data.DataLoader(
        HessianDataset([HormLMDBDataset(tmp_path / "x.lmdb")]),
        batch_size=2,
        num_workers=2,
        collate_fn=collate_hessian,
    )
    sizes = [graph.num_graphs for graph, _ in loader]
    assert sizes == [2, 1]


def test_split_by_molecule_has_no_leakage():
    rng = np.random.default_rng(3)
    keys = [f"mol{int(k)}" for k in rng.integers(0, 40, 500)]
    splits = split_by_molecule(keys, fractions=(0.8, 0.1, 0.1), seed=0)
    assert sorted(sum(splits, [])) == list(range(500))
    groups = [{keys[i] for i in s} for s in splits]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert all(s for s in splits) and abs(len(splits[0]) / 500 - 0.8) < 0.1
    assert split_by_molecule(keys, seed=0) == splits
    assert split_by_molecule(keys, seed=1) != splits


def test_split_samples_default_key_formula():
    rng = np.random.default_rng(4)
    frames = []
    for numbers in ([8, 1, 1], [6, 1, 1, 1, 1], [7, 1, 1, 1], [6, 6, 1, 1]):
        for _ in range(5):
            frames.append(
                HessianSample(positions=rng.normal(size=(len(numbers), 3)), numbers=numbers)
            )
    frames[0].meta["molecule"] = "named"
    assert D.molecule_key(frames[1]) == "H2O" and D.molecule_key(frames[5]) == "CH4"
    assert D.molecule_key(frames[0]) == "named"
    splits = split_by_molecule(frames, fractions=(0.5, 0.5), seed=0)
    owner = {}
    for s, idx in enumerate(splits):
        for i in idx:
            assert owner.setdefault(D.molecule_key(frames[i]), s) == s


def test_hessian_rms_is_the_root_mean_square_of_the_drawn_labels():
    from hip_head.finetune.data import HessianDataError, HessianSample, hessian_rms

    rng = np.random.default_rng(0)
    frames = [
        HessianSample(
            positions=rng.normal(size=(n, 3)),
            numbers=np.ones(n, dtype=int),
            hessian=rng.normal(scale=s, size=(3 * n) ** 2),
        )
        for n, s in [(2, 1.0), (3, 4.0), (4, 2.0)]
    ]
    every = np.concatenate([f.hessian for f in frames])
    assert hessian_rms(frames) == pytest.approx(np.sqrt(np.mean(every**2)), rel=1e-12)
    one = hessian_rms(frames, max_frames=1, seed=3)
    assert any(one == pytest.approx(np.sqrt(np.mean(f.hessian**2))) for f in frames)
    with pytest.raises(HessianDataError):
        hessian_rms([HessianSample(positions=np.zeros((1, 3)), numbers=[1])])


def test_importing_the_data_package_imports_neither_lightning_nor_torch_geometric():
    code = """
import importlib, pkgutil, sys
import hip_head.finetune.data as pkg
names = [m.name for m in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + ".")]
for name in names:
    importlib.import_module(name)
heavy = {"lightning", "pytorch_lightning", "torch_geometric"}
print(len(names), sorted(m for m in sys.modules if m.split(".")[0] in heavy))
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    count, heavy = result.stdout.strip().split(" ", 1)
    assert int(count) >= 8  # sample, three formats, collate, splits, sources, sampler
    assert heavy == "[]", f"hip_head.finetune.data imported {heavy}"


def test_kind_repeats_oversample_training_frames_only(samples, tmp_path):
    from hip_head.finetune.config import ConfigError, DataConfig, FinetuneConfig
    from hip_head.finetune.datamodule import HessianDataModule

    kinds = ["ts", "minimum", "thermal"]
    tagged = []
    for i, (s, kind) in enumerate(zip(samples * 2, kinds * 2, strict=True)):
        meta = dict(s.meta, kind=kind, molecule=f"m{i}")
        tagged.append(
            HessianSample(s.positions, s.numbers, s.energy, s.forces, s.hessian, meta=meta)
        )
    splits = ["train", "train", "train", "val", "val", "val"]
    write_ase_db(
        tagged,
        tmp_path / "k.db",
        key_value_pairs=lambda s: {"kind": s.meta["kind"], "molecule": s.meta["molecule"]},
    )
    # the split column: rows 1-3 train, 4-6 val
    import ase.db

    with ase.db.connect(tmp_path / "k.db") as db:
        for row, split in zip(db.select(), splits, strict=True):
            db.update(row.id, split=split)

    def sizes(repeats):
        dm = HessianDataModule(DataConfig(train=[str(tmp_path / "k.db")], kind_repeats=repeats))
        dm.setup("fit")
        train = [dm.splits["train"][i].meta["kind"] for i in range(len(dm.splits["train"]))]
        return train, len(dm.splits["val"])

    plain, val_plain = sizes({})
    assert sorted(plain) == ["minimum", "thermal", "ts"]
    repeated, val_repeated = sizes({"ts": 3, "thermal": 2, "irc": 5})
    assert sorted(repeated) == ["minimum", "thermal", "thermal", "ts", "ts", "ts"]
    assert val_repeated == val_plain == 3
    with pytest.raises(ConfigError, match="data.kind_repeats.ts"):
        FinetuneConfig.from_dict({"data": {"kind_repeats": {"ts": 0}}})
