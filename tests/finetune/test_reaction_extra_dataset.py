"""The extra training reactions (data/reactions_extra_xtb.db, data/reactions_extra2_xtb.db):
train only, no test leak, no reaction of the reaction set or of an earlier part twice."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from hip_head.assets import dataset_path
from hip_head.finetune.data import AseDbDataset

from .test_reaction_dataset import _script

PART_FILES = {1: "reactions_extra_xtb.db", 2: "reactions_extra2_xtb.db"}


def _report(part: int) -> dict:
    return json.loads(dataset_path(PART_FILES[part]).with_suffix(".json").read_text())


@pytest.fixture(scope="module", params=sorted(PART_FILES))
def part(request):
    return request.param


@pytest.fixture(scope="module")
def extra(part):
    return AseDbDataset(dataset_path(PART_FILES[part]))


@pytest.fixture(scope="module")
def extra_report(part):
    return _report(part)


def test_parts_match_the_build_script():
    script = _script("make_reaction_extra_dataset")
    assert {n: p.out.name for n, p in script.PARTS.items()} == PART_FILES
    spans = [(p.start, p.stop) for _, p in sorted(script.PARTS.items())]
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


@pytest.fixture(scope="module")
def reaction_report():
    return json.loads(dataset_path("reactions_xtb.db").with_suffix(".json").read_text())


def _summary(rid: str, keys: tuple[str, str], energy: float, split: str = "train") -> dict:
    return {
        "id": rid,
        "smiles": "C",
        "end_keys": list(keys),
        "ts_energy_eV": energy,
        "split": split,
    }


@pytest.mark.chem  # connectivity keys of SMILES need RDKit
def test_select_reactions_drops_duplicates_and_test_ends():
    script = _script("make_reaction_extra_dataset")
    known = [_summary("0:0", ("a", "b"), -10.0), _summary("1:0", ("c", "d"), -20.0, split="test")]
    report = {"reactions": known}
    report["reactions"][1]["smiles"] = "O"  # a test reactant: its key is held out too
    new = [
        _summary("95:0", ("b", "a"), -10.005),  # the reaction set's 0:0, run backwards
        _summary("95:1", ("a", "b"), -11.0),  # same ends, another TS: kept
        _summary("96:0", ("e", "d"), -30.0),  # an end of a test reaction
        _summary("96:1", ("a", "b"), -11.002),  # duplicates 95:1
        _summary("97:0", ("e", "f"), -40.0),
    ]
    kept, drops = script.select_reactions(new, report)
    assert [s["id"] for s in kept] == ["95:1", "97:0"]
    assert all(s["split"] == "train" for s in kept)
    why = {d["reaction"]: d for d in drops}
    assert why["95:0"]["same_as"] == "0:0" and why["96:1"]["same_as"] == "95:1"
    assert why["96:0"]["why"] == "an end is a test molecule"
    assert len(drops) == 3
    # a later part also drops what an earlier part kept
    earlier = [_summary("90:0", ("e", "f"), -40.004)]
    kept, drops = script.select_reactions(new, report, earlier)
    assert [s["id"] for s in kept] == ["95:1"]
    assert {d["reaction"]: d.get("same_as") for d in drops}["97:0"] == "90:0"


def test_train_rows_one_ts_per_reaction(part, extra, extra_report, reaction_report):
    assert set(extra.column("split")) == {"train"}
    kinds = Counter(extra.column("kind"))
    assert set(kinds) == {"ts", "irc", "minimum", "thermal"}
    ids = extra.column("reaction")
    assert len(set(ids)) == len(extra_report["reactions"]) == kinds["ts"] >= 100
    assert len(extra) == extra_report["frames"]
    # reaction ids continue the reaction set's and the earlier parts', never reuse them
    assert set(ids).isdisjoint(r["id"] for r in reaction_report["reactions"])
    for earlier in range(1, part):
        assert set(ids).isdisjoint(r["id"] for r in _report(earlier)["reactions"])
    letters = set("".join(c for f in extra.column("formula") for c in f if c.isalpha()))
    assert letters <= set("HCNO")


@pytest.mark.chem
def test_no_test_molecule_and_reactants_from_the_extra_set(part, extra_report, reaction_report):
    from hip_head.finetune.molgraph import graph_key_of_smiles

    script = _script("make_reaction_dataset")
    held_out = script.split_keys(reaction_report["reactions"], "test")
    assert held_out
    extra_set = {
        graph_key_of_smiles(s) for s in _script("make_extra_dataset").enumerate_molecules()
    }
    used = {m["smiles"] for m in reaction_report["molecules"]}
    earlier = [r for n in range(1, part) for r in _report(n)["reactions"]]
    used |= {r["smiles"] for r in earlier}
    for r in extra_report["reactions"]:
        assert held_out.isdisjoint(r["end_keys"]), r["id"]
        assert graph_key_of_smiles(r["smiles"]) in extra_set and r["smiles"] not in used
    # no reaction of the reaction set or an earlier part again (same unordered ends, TS energy
    # within 0.01 eV)
    known = {}
    for r in reaction_report["reactions"] + earlier:
        known.setdefault(tuple(sorted(r["end_keys"])), []).append(r["ts_energy_eV"])
    for r in extra_report["reactions"]:
        energies = known.get(tuple(sorted(r["end_keys"])), [])
        assert all(abs(e - r["ts_energy_eV"]) >= 0.01 for e in energies), r["id"]


@pytest.mark.chem
def test_no_unseen_large_molecule(extra_report):
    """The larger evaluation molecules stay unseen: no reactant or end of these reactions."""
    from hip_head.finetune.molgraph import graph_key_of_smiles

    large = AseDbDataset(dataset_path("unseen_large_xtb.db"))
    large_keys = {graph_key_of_smiles(m) for m in set(large.column("molecule"))}
    for r in extra_report["reactions"]:
        assert large_keys.isdisjoint({graph_key_of_smiles(r["smiles"]), *r["end_keys"]}), r["id"]
