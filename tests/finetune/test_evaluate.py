"""Per-group error breakdown of an evaluation (what the demo prints under its table)."""

from __future__ import annotations

import numpy as np
import pytest

from hip_head.finetune.evaluate import Evaluation, format_breakdown, group_hessian_mae


def _evaluation(name: str, errors: list[float]) -> Evaluation:
    labels = [np.eye(3) * (k + 1) for k in range(len(errors))]
    predicted = [lab + e for lab, e in zip(labels, errors, strict=True)]  # every entry off by e
    per = {"hessian_mae": [float(np.abs(p - t).mean()) for p, t in zip(predicted, labels)]}
    return Evaluation(
        name, {"hessian_mae": float(np.mean(errors))}, predicted, labels, per_structure=per
    )


def test_group_means_and_shares():
    ev = _evaluation("m", [1.0, 3.0, 4.0, 0.0])
    table = group_hessian_mae(ev, ["a", "b", "a", "b"])
    assert table["a"][0] == 2 and table["a"][1] == pytest.approx(2.5)
    assert table["b"][1] == pytest.approx(1.5)
    assert table["a"][2] == pytest.approx(5 / 8) and table["b"][2] == pytest.approx(3 / 8)
    # shares times the overall mean give back each group's part of it
    parts = sum(n * mae for n, mae, _ in table.values()) / 4
    assert parts == pytest.approx(ev.metrics["hessian_mae"])


def test_breakdown_table_and_bad_labels():
    evs = [_evaluation("autograd", [2.0, 2.0]), _evaluation("HIP", [1.0, 3.0])]
    text = format_breakdown(evs, ["x", "y"])
    lines = text.splitlines()
    assert "autograd" in lines[0] and "HIP" in lines[0]
    assert lines[1].split()[:2] == ["x", "1"] and "1.000 (25 %)" in lines[1]
    assert "3.000 (75 %)" in lines[2] and "2.000 (50 %)" in lines[2]
    with pytest.raises(ValueError, match="3 group labels for 2"):
        group_hessian_mae(evs[0], ["x", "y", "z"])


def test_metrics_by_group_and_kind_table():
    from hip_head.finetune.evaluate import format_kind_table, metrics_by_group

    ev = _evaluation("HIP", [1.0, 3.0, 4.0])
    ev.per_structure["eckart_n_neg_agree"] = [1.0, 0.0, 1.0]
    ev.per_structure["seconds"] = [0.01, 0.02, 0.03]
    table = metrics_by_group(ev, ["ts", "minimum", "ts"])
    assert table["ts"]["count"] == 2 and table["ts"]["hessian_mae"] == pytest.approx(2.5)
    assert table["minimum"]["eckart_n_neg_agree"] == 0.0
    assert table["all"]["count"] == 3 and table["all"]["hessian_mae"] == pytest.approx(8 / 3)
    text = format_kind_table([ev], ["ts", "minimum", "ts"], order=("ts", "irc", "minimum"))
    lines = text.splitlines()
    assert lines[1].split()[:2] == ["ts", "2"] and "2.500" in lines[1]
    kinds_in_order = [line.split()[0] for line in lines[1:] if not line.startswith(" ")]
    assert kinds_in_order == ["ts", "minimum", "all"]  # irc: none, so no row
    assert "20.0" in text  # the ts rows' mean time, ms
    with pytest.raises(ValueError, match="2 group labels for 3"):
        metrics_by_group(ev, ["ts", "ts"])


def test_stratified_subset_keeps_rare_kinds():
    from hip_head.finetune.data import HessianSample
    from hip_head.finetune.evaluate import stratified_subset

    def sample(kind: str, i: int) -> HessianSample:
        return HessianSample(
            positions=np.zeros((1, 3)) + i, numbers=np.array([1]), meta={"kind": kind, "i": i}
        )

    samples = [sample("ts", i) for i in range(3)] + [sample("thermal", i) for i in range(3, 50)]
    picked = stratified_subset(samples, 5, seed=1)
    kinds = [s.meta["kind"] for s in picked]
    assert kinds.count("ts") == 3 and kinds.count("thermal") == 5
    assert [s.meta["i"] for s in picked] == sorted(s.meta["i"] for s in picked)
    assert [s.meta["i"] for s in stratified_subset(samples, 5, seed=1)] == [
        s.meta["i"] for s in picked
    ]
