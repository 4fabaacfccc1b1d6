"""Numbers and plots of the reaction set's data card (docs/data.md), from the db and its report.

Prints markdown tables (sizes, elements, kinds and splits, reaction types, barriers, imaginary
frequencies, how the ends were reached, what became of every saddle-search start, build time)
and writes ``docs/data_reactions.png`` (barrier, imaginary-frequency and size histograms).
Usage::

    python scripts/reaction_data_card.py [--db data/reactions_xtb.db]
    python scripts/reaction_data_card.py --db data/reactions_extra_xtb.db \
        --plot docs/data_reactions_extra.png
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EV_TO_KCAL = 23.060548


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=ROOT / "data" / "reactions_xtb.db")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "data_reactions.png")
    args = parser.parse_args(argv)

    from hip_head.finetune.data import AseDbDataset

    db = AseDbDataset(args.db)
    report = json.loads(args.db.with_suffix(".json").read_text())
    reactions = report["reactions"]
    kinds, splits = db.column("kind"), db.column("split")
    natoms = np.asarray(db.column("natoms"))
    letters = Counter(c for f in db.column("formula") for c in f if c.isalpha())
    print(f"- file: {args.db.name}, {args.db.stat().st_size / 1e6:.1f} MB, {len(db)} frames, "
          f"{len(reactions)} reactions from {len({r['smiles'] for r in reactions})} reactant "
          f"molecules ({len(report['molecules'])} tried)")  # fmt: skip
    print(f"- atoms per frame: {natoms.min()}-{natoms.max()} (median {np.median(natoms):.0f}); "
          f"elements {sorted(letters)}")  # fmt: skip
    print(f"- build: {report['build_cpu_seconds'] / 3600:.1f} CPU hours\n")
    print("| split | reactions | reactant molecules | frames | ts | irc | minimum | thermal |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for split in ("train", "val", "test"):
        rs = [r for r in reactions if r["split"] == split]
        counts = Counter(k for k, s in zip(kinds, splits) if s == split)
        print(f"| {split} | {len(rs)} | {len({r['smiles'] for r in rs})} | "
              f"{sum(counts.values())} | {counts['ts']} | {counts['irc']} | "
              f"{counts['minimum']} | {counts['thermal']} |")  # fmt: skip
    print("\n| reaction type (bonds broken -, formed +) | reactions |\n|---|---:|")
    types = Counter(r["reaction_type"] for r in reactions)
    for name, count in types.most_common(15):
        print(f"| `{name}` | {count} |")
    shown = sum(c for _, c in types.most_common(15))
    print(f"| ({len(types) - 15} other types) | {sum(types.values()) - shown} |")
    barriers = np.asarray([min(r["barriers_eV"]) for r in reactions]) * EV_TO_KCAL
    forward = np.asarray([max(r["barriers_eV"]) for r in reactions]) * EV_TO_KCAL
    freqs = -np.asarray([r["imaginary_cm1"] for r in reactions])
    print(f"\n- lower barrier of each reaction: median {np.median(barriers):.1f} kcal/mol "
          f"(10-90 %: {np.percentile(barriers, 10):.1f}-{np.percentile(barriers, 90):.1f}); "
          f"higher: median {np.median(forward):.1f}")  # fmt: skip
    low, high = np.percentile(freqs, [10, 90])
    print(f"- imaginary frequency: median {np.median(freqs):.0f}i cm⁻¹ "
          f"(10-90 %: {low:.0f}i-{high:.0f}i)")  # fmt: skip
    paths = Counter(p for r in reactions for p in r["end_paths"])
    print(f"- ends reached by: {dict(paths)}")
    outcomes = Counter(a["outcome"] for m in report["molecules"] for a in m["attempts"])
    print(f"- saddle-search starts: {sum(outcomes.values())}: {dict(outcomes.most_common())}")
    if "dropped" in report:  # the extra training reactions
        print(f"- dropped: {dict(Counter(d['why'] for d in report['dropped']))}")
    else:
        duplicates, moves = len(report["duplicates"]), len(report["split_moves"])
        print(f"- duplicates across molecules dropped: {duplicates}; "
              f"moved to val to keep test molecules unseen: {moves}")  # fmt: skip
    failures = [m for m in report["molecules"] if m["failure"]]
    print(f"- molecules that failed outright: {len(failures)}"
          + "".join(f"\n  - {m['smiles']}: {m['failure']}" for m in failures))  # fmt: skip

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].hist([barriers, forward], bins=30, label=["lower", "higher"], stacked=False)
    axes[0].set_xlabel("barrier [kcal/mol] (TS minus each end)")
    axes[0].legend()
    axes[1].hist(freqs, bins=30)
    axes[1].set_xlabel("imaginary frequency [i cm⁻¹]")
    axes[2].hist(natoms, bins=np.arange(natoms.min(), natoms.max() + 2) - 0.5)
    axes[2].set_xlabel("atoms per frame")
    for ax in axes:
        ax.set_ylabel("count")
    fig.tight_layout()
    fig.savefig(args.plot, dpi=100)
    print(f"\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
