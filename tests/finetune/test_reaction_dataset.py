"""The reaction set (data/reactions_xtb.db) and the unseen-molecule set: what the data card says."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from hip_head.assets import asset_path, dataset_path
from hip_head.finetune.data import AseDbDataset
from hip_head.vibrations import vibrational_analysis

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _script(name: str):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(SCRIPTS))
        sys.modules[name] = module  # before running it: its dataclasses look themselves up
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


@pytest.fixture(scope="module")
def reactions():
    return AseDbDataset(dataset_path("reactions_xtb.db"))


@pytest.fixture(scope="module")
def report():
    return json.loads(dataset_path("reactions_xtb.db").with_suffix(".json").read_text())


def test_size_kinds_and_splits(reactions, report):
    kinds = Counter(reactions.column("kind"))
    assert set(kinds) == {"ts", "irc", "minimum", "thermal"}
    reaction_ids = set(reactions.column("reaction"))
    assert len(reaction_ids) == len(report["reactions"]) == kinds["ts"]
    assert len(reaction_ids) >= 300
    assert len({r["smiles"] for r in report["reactions"]}) >= 80
    assert len(reactions) >= 15_000
    assert set(reactions.column("split")) == {"train", "val", "test"}
    letters = set("".join(c for f in reactions.column("formula") for c in f if c.isalpha()))
    assert letters <= set("HCNO")
    # one split per reaction and per reactant molecule (moves to val recorded in the report)
    split_of: dict[str, set[str]] = {}
    for rid, split in zip(reactions.column("reaction"), reactions.column("split")):
        split_of.setdefault(rid, set()).add(split)
    assert all(len(v) == 1 for v in split_of.values())


@pytest.mark.chem
def test_test_molecules_appear_in_no_training_set(reactions, report):
    """Reactants and both ends of every test reaction: not in default/extra/pretraining data,
    not a reactant or end of any train reaction (connectivity keys)."""
    from hip_head.finetune.molgraph import graph_key_of_smiles

    outside = _script("make_reaction_dataset").training_keys()
    train_keys, test_keys = set(outside), set()
    for r in report["reactions"]:
        keys = {graph_key_of_smiles(r["smiles"]), *r["end_keys"]}
        if r["split"] == "train":
            train_keys |= keys
        elif r["split"] == "test":
            test_keys |= keys
    assert test_keys and test_keys.isdisjoint(train_keys)
    # the rows agree with the report
    test_rows = {m for m, s in zip(reactions.column("molecule"), reactions.column("split"))
                 if s == "test"}  # fmt: skip
    assert {graph_key_of_smiles(m) for m in test_rows} <= test_keys


@pytest.mark.chem
def test_new_molecules_are_new():
    from hip_head.finetune.molgraph import graph_key_of_smiles

    script = _script("make_reaction_dataset")
    outside = script.training_keys()
    assert len(script.NEW_MOLECULES) == len(set(script.NEW_MOLECULES))
    for smiles in script.NEW_MOLECULES:
        assert graph_key_of_smiles(smiles) not in outside, smiles


def test_transition_states_have_one_imaginary_mode(reactions):
    kinds = reactions.column("kind")
    ts_rows = [i for i, k in enumerate(kinds) if k == "ts"]
    rng = np.random.default_rng(0)
    for i in rng.choice(ts_rows, size=12, replace=False):
        sample = reactions[int(i)]
        vib = vibrational_analysis(sample.hessian_matrix(), sample.to_atoms())
        assert vib.n_imaginary == 1, (sample.meta, vib.frequencies_cm1[:3])
        assert np.abs(sample.forces).max() < 0.05
    minima = [i for i, k in enumerate(kinds) if k == "minimum"]
    for i in rng.choice(minima, size=12, replace=False):
        sample = reactions[int(i)]
        assert vibrational_analysis(sample.hessian_matrix(), sample.to_atoms()).n_imaginary == 0


def test_report_records_failures_and_paths(report):
    outcomes = Counter(a["outcome"] for m in report["molecules"] for a in m["attempts"])
    assert outcomes["reaction"] >= len(report["reactions"])
    assert sum(outcomes.values()) > outcomes["reaction"]  # the others are recorded with reasons
    paths = Counter(p for r in report["reactions"] for p in r["end_paths"])
    assert set(paths) <= {"sella_irc", "steepest_descent"}
    for r in report["reactions"]:
        assert r["imaginary_cm1"] < 0 and min(r["barriers_eV"]) > 0
        # bonds broken or formed: the labelled graphs differ (degenerate rearrangements, whose
        # two ends are the same molecule with atoms exchanged, count as reactions)
        assert r["reaction_type"].strip(), r
    assert all(d["reaction"] != d["same_as"] for d in report["duplicates"])


def test_stored_as_float32_triangles(reactions):
    """Compact storage: the upper triangle only, read back as a symmetric float64 matrix."""
    import ase.db

    with ase.db.connect(str(dataset_path("reactions_xtb.db")), use_lock_file=False) as db:
        row = db.get(id=1)
    n3 = 3 * row.natoms
    assert "hessian" not in row.data
    assert row.data["hessian_triu"].dtype == np.float32
    assert row.data["hessian_triu"].shape == (n3 * (n3 + 1) // 2,)
    sample = reactions[0]
    assert sample.hessian.dtype == np.float64
    h = sample.hessian_matrix()
    assert np.array_equal(h, h.T)


@pytest.mark.chem
def test_unseen_large_molecules_are_unseen_and_large():
    from rdkit import Chem

    from hip_head.finetune.molgraph import graph_key_of_smiles

    large = AseDbDataset(dataset_path("unseen_large_xtb.db"))
    assert set(large.column("split")) == {"test"}
    assert set(large.column("kind")) == {"minimum", "thermal"}
    molecules = set(large.column("molecule"))
    assert len(molecules) >= 15
    sizes = [Chem.AddHs(Chem.MolFromSmiles(m)).GetNumAtoms() for m in molecules]
    assert min(sizes) >= 15 and max(sizes) > 24  # some larger than any training molecule
    seen = _script("make_reaction_dataset").training_keys()
    report = json.loads(dataset_path("reactions_xtb.db").with_suffix(".json").read_text())
    for r in report["reactions"]:
        seen |= {graph_key_of_smiles(r["smiles"]), *r["end_keys"]}
    for m in molecules:
        assert graph_key_of_smiles(m) not in seen, m


def test_dataset_path_names_the_repository():
    with pytest.raises(FileNotFoundError, match="repository"):
        dataset_path("no_such_set.db")
    assert dataset_path("default_xtb.db").parent.name == "data"
    with pytest.raises(FileNotFoundError, match="make_reaction_dataset"):
        asset_path("reactions_xtb.db")
