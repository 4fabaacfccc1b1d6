"""Reaction discovery (hip_head.finetune.reactions): graphs, saddles, ends, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from hip_head.finetune.data import (
    AseDbDataset,
    HessianSample,
    compact_database,
    pack_triu,
    unpack_triu,
    write_ase_db,
)

pytestmark = pytest.mark.chem


def _quick(**changes):
    from hip_head.finetune.reactions import ReactionSettings

    settings = ReactionSettings(
        n_random=2, n_hydrogen_moves=0, n_soft_modes=0, n_hydrogen_modes=0, n_ts_thermal=2,
        n_minimum_thermal=2, n_irc_frames=2, saddle_seconds=600.0,
    )  # fmt: skip
    for key, value in changes.items():
        setattr(settings, key, value)
    return settings


# ---------------------------------------------------------------------------------- graphs
def test_graph_key_matches_smiles_and_geometry():
    from hip_head.finetune.molgraph import bond_graph, graph_key, graph_key_of_smiles

    methanol = molecule("CH3OH")
    key = graph_key(methanol.numbers, bond_graph(methanol))
    assert key == graph_key_of_smiles("CO") == graph_key_of_smiles("OC")
    assert key != graph_key_of_smiles("C=O")  # different hydrogen count
    # isomers with the same formula differ by connectivity
    assert graph_key_of_smiles("CCO") != graph_key_of_smiles("COC")
    with pytest.raises(ValueError, match="cannot parse"):
        graph_key_of_smiles("C((")


def test_xtb_length_h2_is_bonded():
    """GFN2-xTB's H₂ (0.80 Å) is a molecule, not two atoms: CO + H₂ has two fragments."""
    from hip_head.finetune.molgraph import bond_graph, fragment_sizes

    ends = Atoms("COHH", positions=[[0, 0, 0], [1.13, 0, 0], [0, 3, 0], [0, 3.8, 0]])
    assert fragment_sizes(4, bond_graph(ends)) == [2, 2]
    apart = Atoms("COHH", positions=[[0, 0, 0], [1.13, 0, 0], [0, 3, 0], [0, 5, 0]])
    assert fragment_sizes(4, bond_graph(apart)) == [2, 1, 1]


def test_smiles_of_perceives_bond_orders():
    from hip_head.finetune.molgraph import smiles_of

    assert smiles_of(molecule("H2CO")) == "C=O"
    assert smiles_of(molecule("CH3CH2OH")) == "CCO"


def test_deduplicate_keeps_first_of_each_group():
    from hip_head.finetune.reactions import deduplicate

    keys = [("a", "b"), ("b", "a"), ("a", "b"), ("a", "c")]
    kept, dropped = deduplicate(keys, [-10.0, -10.004, -9.5, -10.0], energy_tol=0.01)
    assert kept == [0, 2, 3]
    assert dropped == [(1, 0)]


# ---------------------------------------------------------------------------------- storage
def test_triangle_storage_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    atoms = molecule("CH3CH2OH")
    n3 = 3 * len(atoms)
    a = rng.normal(size=(n3, n3)) * 5
    hessian = a + a.T
    sample = HessianSample(
        positions=atoms.positions, numbers=atoms.numbers, energy=-1.0,
        forces=np.zeros((len(atoms), 3)), hessian=hessian.reshape(-1),
    )  # fmt: skip
    assert pack_triu(hessian).shape == (n3 * (n3 + 1) // 2,)
    np.testing.assert_array_equal(unpack_triu(pack_triu(hessian), n3).reshape(n3, n3), hessian)
    path = tmp_path / "t.db"
    write_ase_db([sample], path, hessian_dtype=np.float32, hessian_layout="triu")
    back = AseDbDataset(path)[0]
    assert back.hessian.dtype == np.float64 and back.hessian.shape == (n3 * n3,)
    rel = np.abs(back.hessian_matrix() - hessian).max() / np.abs(hessian).max()
    assert rel < 1e-6
    assert np.array_equal(back.hessian_matrix(), back.hessian_matrix().T)
    packed, full = tmp_path / "packed.db", tmp_path / "full.db"
    write_ase_db([sample] * 20, packed, hessian_dtype=np.float32, hessian_layout="triu")
    write_ase_db([sample] * 20, full, hessian_dtype=np.float32)
    assert compact_database(packed) < 0.5 * full.stat().st_size
    assert len(AseDbDataset(packed)) == 20
    np.testing.assert_array_equal(AseDbDataset(packed)[19].hessian, back.hessian)


def test_triangle_of_the_wrong_length_is_a_named_error():
    from hip_head.finetune.data import HessianDataError

    with pytest.raises(HessianDataError, match="expected 6"):
        unpack_triu(np.zeros(5), 3)


# ---------------------------------------------------------------------------------- discovery
def test_discovery_on_formaldehyde_finds_real_reactions():
    """Two seeded random starts on H₂CO: at least one reaction, each a real one."""
    from hip_head.finetune.molgraph import graph_key_of_smiles
    from hip_head.finetune.reactions import discover_reactions
    from hip_head.vibrations import vibrational_analysis

    minimum, reactions, attempts = discover_reactions("C=O", _quick(), seed=0)
    assert len(attempts) == 2
    assert {a.outcome for a in attempts} <= {
        "reaction", "duplicate", "conformer_change", "no_saddle", "higher_order",
        "end_not_minimum", "dissociated", "xtb_failed", "time_limit",
    }  # fmt: skip
    assert reactions, [(a.start, a.outcome, a.reason) for a in attempts]
    for r in reactions:
        assert r.end_keys[0] != r.end_keys[1]
        assert r.imaginary_cm1 < -100
        assert min(r.barriers_eV) > 0
        assert graph_key_of_smiles("C=O") in r.end_keys or r.molecule == "C=O"
        vib = vibrational_analysis(r.ts_hessian, r.ts)
        assert vib.n_imaginary == 1
        for path in r.paths:
            assert path.how in ("sella_irc", "steepest_descent")
            assert path.minimum.info["converged"]
            # energies fall along the descent from the TS
            assert path.energies[-1] < r.ts_energy
            assert np.all(np.diff(path.energies) <= 1e-8)


def test_torsion_saddle_is_a_conformer_change_not_a_reaction():
    """H₂O₂'s softest mode is its torsion: the saddle there connects two copies of H₂O₂."""
    from hip_head.finetune.reactions import discover_reactions

    _, reactions, attempts = discover_reactions("OO", _quick(n_random=0, n_soft_modes=1), seed=0)
    assert not reactions
    assert "conformer_change" in {a.outcome for a in attempts}, attempts


def test_build_reactions_labels_every_kind():
    from hip_head.finetune.reaction_data import build_reactions
    from hip_head.finetune.reactions import REACTION_KINDS

    result = build_reactions(0, "C=O", _quick())
    assert result["failure"] is None and result["reactions"]
    kinds = {s.meta["kind"] for s in result["samples"]}
    assert kinds == set(REACTION_KINDS)
    for s in result["samples"]:
        assert s.hessian is not None and s.forces is not None
        assert s.meta["reaction"] in {r["index"] for r in result["reactions"]}
    near = {s.meta.get("near") for s in result["samples"] if s.meta["kind"] == "thermal"}
    assert near == {"ts", "minimum"}


# ---------------------------------------------------------------------------------- bad input
def test_unparsable_molecule_is_recorded_not_raised():
    from hip_head.finetune.reaction_data import build_reactions

    result = build_reactions(0, "C1CC", _quick())
    assert result["failure"] and "cannot parse SMILES 'C1CC'" in result["failure"]
    assert result["samples"] == [] and result["reactions"] == []


def test_xtb_failure_is_recorded_not_raised(monkeypatch):
    from hip_head.finetune import reaction_data, reactions
    from hip_head.finetune.labels import LabelError

    def broken(*args, **kwargs):
        raise LabelError("tblite GFN2-xTB failed: SCF not converged in 250 cycles")

    monkeypatch.setattr(reactions, "xtb_hessian", broken)
    result = reaction_data.build_reactions(0, "C=O", _quick())
    assert result["failure"] and "SCF not converged" in result["failure"]


def test_saddle_whose_ends_do_not_relax_is_skipped_with_a_reason(monkeypatch):
    from hip_head.finetune import reaction_ends, reactions

    real_descend = reaction_ends.descend

    def stuck(ts, mode, sign, settings=None):
        path = real_descend(ts, mode, sign, settings)
        path.minimum.info["converged"] = False
        return path

    monkeypatch.setattr(reaction_ends, "descend", stuck)
    _, found, attempts = reactions.discover_reactions("C=O", _quick(), seed=0)
    assert not found
    reasons = {a.outcome for a in attempts}
    assert reasons & {"end_not_minimum", "dissociated", "conformer_change"}, attempts


def test_duplicate_start_is_recorded():
    """The same saddle found twice from one molecule is kept once."""
    from hip_head.finetune.reactions import discover_reactions

    _, reactions, attempts = discover_reactions("C=O", _quick(n_random=6), seed=0)
    assert len({(tuple(sorted(r.end_keys)), round(r.ts_energy, 2)) for r in reactions}) == len(
        reactions
    )
    assert "duplicate" in {a.outcome for a in attempts}


def test_hip_data_reactions_command(tmp_path, capsys):
    """`hip data reactions` end to end on one tiny molecule plus one bad SMILES."""
    import json

    from hip_head.cli import main

    out = tmp_path / "r.db"
    code = main(["data", "reactions", "C=O", "C1CC", "--out", str(out), "--max-starts", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "reactions" in printed and str(out) in printed
    report = json.loads(out.with_suffix(".json").read_text())
    assert [m["smiles"] for m in report] == ["C=O", "C1CC"]
    assert report[1]["failure"] and not report[1]["reactions"]
    data = AseDbDataset(out)
    assert len(data) > 0 and set(data.column("kind")) <= {"ts", "irc", "minimum", "thermal"}
    assert all(r.startswith("0:") for r in data.column("reaction"))
    # resumable: a second run reuses the cached molecules and writes the same rows again
    assert main(["data", "reactions", "C=O", "C1CC", "--out", str(tmp_path / "again.db"),
                 "--work", str(out.with_suffix(".work")), "--max-starts", "2"]) == 0  # fmt: skip
    assert "2 molecules cached, 0 to build" in capsys.readouterr().out
    assert len(AseDbDataset(tmp_path / "again.db")) == len(data)
    assert main(["data", "reactions", "C=O", "--out", str(out), "--max-starts", "2"]) == 0
    assert len(AseDbDataset(out)) == len(data)  # replaced, not appended to
