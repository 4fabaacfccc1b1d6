"""Build hip-head's extra training reactions with GFN2-xTB, in two parts
(``data/reactions_extra_xtb.db`` and ``data/reactions_extra2_xtb.db``).

More reactions for training only, kept in files of their own beside the reaction dataset
(``data/reactions_xtb.db``, which holds the val and test splits). Reactant molecules: the extra
set's molecules with at most ``MAX_HEAVY_EXTRA`` (5) heavy atoms that
the reaction dataset did not use, in that set's shuffled order; part 1 holds the reactions of
the first 113 of them, part 2 those of the rest (:data:`PARTS`). These molecules are trained on
already (the extra set), so they add no new test leak; a reaction of theirs is still dropped
when one of its ends is a molecule of the reaction test split (the reactant or an end of a test
reaction), and when it duplicates a reaction of the reaction dataset (same end graphs, TS
energy within 0.01 eV), of an earlier part (from that part's report) or an earlier one of its
own part. Every drop is recorded in ``<out>.json``.

Discovery uses the reaction dataset's settings for its later molecules, with fewer thermal
frames per reaction (:data:`SETTINGS`): 16 around the TS and 4 around each minimum. Each
molecule's result is cached under ``--work``, so an interrupted build resumes; ``--cached-only``
assembles the molecules cached so far. Rows: split ``train``, Hessians as float32 upper
triangles, the reaction dataset's columns (``molecule``, ``kind``, ``reaction``).

Usage::

    python scripts/make_reaction_extra_dataset.py --workers 2              # part 1, about 1 h
    python scripts/make_reaction_extra_dataset.py --part 2 --workers 2     # part 2, about 1 h
    python scripts/make_reaction_extra_dataset.py --cached-only              # assemble so far
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_default_dataset import SEED  # noqa: E402
from make_reaction_dataset import (  # noqa: E402
    DEFAULT_LIMIT,
    DEFAULT_OUT,
    LATE_SETTINGS,
    build_molecules,
    molecule_report,
    parse_build_arguments,
    small_extra_molecules,
    split_keys,
    write_reaction_db,
)

#: Discovery and framing settings (keyword arguments of ``ReactionSettings``).
SETTINGS = LATE_SETTINGS | {"n_ts_thermal": 16, "n_minimum_thermal": 4}
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Part:
    """One file of extra reactions: the reactants at positions ``[start, stop)`` of the pool
    (:func:`extra_pool`)."""

    out: Path
    start: int
    stop: int


#: The parts, by number: each a file of its own, so that adding reactions leaves the earlier
#: files as they are.
PARTS = {
    1: Part(ROOT / "data" / "reactions_extra_xtb.db", 0, 113),
    2: Part(ROOT / "data" / "reactions_extra2_xtb.db", 113, 240),
}


def extra_pool(reaction_report: dict[str, Any]) -> list[str]:
    """The extra set's small molecules (≤ ``MAX_HEAVY_EXTRA`` heavy atoms) that the reaction
    dataset did not use as reactants, in the extra set's order."""
    used = {m["smiles"] for m in reaction_report["molecules"]}
    return [s for s in small_extra_molecules() if s not in used]


def select_reactions(
    summaries: list[dict[str, Any]],
    reaction_report: dict[str, Any],
    earlier: Sequence[dict[str, Any]] = (),
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The reactions to keep, and one ``{"reaction", "why", ...}`` per reaction dropped.

    Args:
        summaries: this build's reaction summaries (``"id"``, ``"end_keys"``,
            ``"ts_energy_eV"``), in build order.
        reaction_report: the reaction dataset's report (its reactions come first in the
            duplicate check; its test split's molecules are held out).
        earlier: the reactions kept in earlier parts (checked for duplicates after the
            reaction dataset's).
    """
    from hip_head.finetune.reactions import deduplicate

    known = reaction_report["reactions"] + list(earlier)
    everything = known + summaries
    kept, dropped = deduplicate(
        [s["end_keys"] for s in everything], [s["ts_energy_eV"] for s in everything]
    )
    drops = [
        {"reaction": everything[i]["id"], "why": "duplicate", "same_as": everything[j]["id"]}
        for i, j in dropped
        if i >= len(known)
    ]
    held_out = split_keys(known, "test")
    selected = []
    for i in kept:
        if i < len(known):
            continue
        summary = everything[i]
        if set(summary["end_keys"]) & held_out:
            drops.append({"reaction": summary["id"], "why": "an end is a test molecule"})
        else:
            selected.append(summary | {"split": "train"})
    return selected, drops


def earlier_reactions(part: int) -> list[dict[str, Any]]:
    """The reactions kept in the parts before ``part`` (from their reports)."""
    reactions: list[dict[str, Any]] = []
    for number in range(1, part):
        report = PARTS[number].out.with_suffix(".json")
        if not report.is_file():
            raise SystemExit(f"{report} is missing: build part {number} first")
        reactions += json.loads(report.read_text())["reactions"]
    return reactions


def main(argv: list[str] | None = None) -> int:
    chooser = argparse.ArgumentParser(add_help=False)
    chooser.add_argument("--part", type=int, choices=sorted(PARTS), default=1)
    choice, rest = chooser.parse_known_args(argv)
    part = PARTS[choice.part]
    args = parse_build_arguments(
        rest,
        __doc__.splitlines()[0] + " Choose the file with --part {1,2} (default 1).",
        part.out,
        Path("build/reaction_extra_dataset"),
        part.stop - part.start,
    )
    from hip_head.finetune.reactions import REACTION_KINDS, ReactionSettings

    t0 = time.perf_counter()
    reaction_report = json.loads(DEFAULT_OUT.with_suffix(".json").read_text())
    earlier = earlier_reactions(choice.part)
    pool = extra_pool(reaction_report)
    # Job indices continue the reaction dataset's (its ids are "<index>:<reaction>").
    index_of = {smiles: DEFAULT_LIMIT + k for k, smiles in enumerate(pool)}
    stop = min(part.stop, part.start + args.limit)
    jobs = {index_of[s]: (s, ReactionSettings(**SETTINGS), SEED) for s in pool[part.start : stop]}
    results = build_molecules(jobs, args)
    summaries = [
        summary
        | {"smiles": result["smiles"], "id": f"{index_of[result['smiles']]}:{summary['index']}"}
        for result in results
        for summary in result["reactions"]
    ]
    selected, drops = select_reactions(summaries, reaction_report, earlier)
    kept_ids = {s["id"] for s in selected}
    samples = []
    for result in results:
        for sample in result["samples"]:
            rid = f"{index_of[result['smiles']]}:{sample.meta['reaction']}"
            if rid in kept_ids:
                sample.meta.update(reaction=rid, split="train")
                samples.append(sample)
    write_reaction_db(samples, args.out)
    report = {
        "frames": len(samples),
        "reactions": selected,
        "dropped": drops,
        "molecules": [molecule_report(r) for r in results],
        "bytes": args.out.stat().st_size,
        "build_cpu_seconds": sum(r["seconds"] for r in results),
        "assemble_seconds": time.perf_counter() - t0,
    }
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    kinds = {k: sum(s.meta["kind"] == k for s in samples) for k in REACTION_KINDS}
    print(
        f"wrote {args.out}: {len(selected)} reactions ({len(drops)} dropped) from "
        f"{len(results)} molecules, {len(samples)} frames {kinds}, "
        f"{report['bytes'] / 1e6:.1f} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
