"""Tests of hip_head.finetune.losses: entrywise/subspace losses, total loss, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule

from hip_head.finetune.losses import (
    EigenTargets,
    LossWeights,
    MissingLabelError,
    energy_loss,
    forces_loss,
    hessian_loss,
    hessian_metrics,
    lowest_eigenpairs,
    mode_sign_loss,
    subspace_loss,
    total_loss,
    vibrational_eigenpairs,
)
from hip_head.vibrations import eckart_projector

COUNTS = [2, 1]  # blocks of 6x6 (36 entries) and 3x3 (9 entries)


def _sym(n3: int, gen: torch.Generator) -> torch.Tensor:
    a = torch.randn(n3, n3, generator=gen, dtype=torch.float64)
    return a + a.T


def _batch(counts=COUNTS, seed=0):
    gen = torch.Generator().manual_seed(seed)
    target = [_sym(3 * n, gen) for n in counts]
    pred = [_sym(3 * n, gen) for n in counts]
    flat = lambda ms: torch.cat([m.reshape(-1) for m in ms])  # noqa: E731
    return flat(pred), flat(target), pred, target


def test_hessian_loss_hand_computed():
    # molecule 0: 36 entries all off by 1; molecule 1: 9 entries off by 2 (and -2)
    target = torch.zeros(45, dtype=torch.float64)
    pred = torch.cat([torch.ones(36), torch.full((9,), 2.0) * torch.tensor([1, -1] * 4 + [1])])
    pred = pred.to(torch.float64)
    assert hessian_loss(pred, target, COUNTS, "mae", "entry").item() == pytest.approx(
        (36 * 1 + 9 * 2) / 45
    )
    assert hessian_loss(pred, target, COUNTS, "mse", "entry").item() == pytest.approx(
        (36 * 1 + 9 * 4) / 45
    )
    assert hessian_loss(pred, target, COUNTS, "mae", "molecule").item() == pytest.approx(1.5)
    assert hessian_loss(pred, target, COUNTS, "mse", "molecule").item() == pytest.approx(2.5)
    # tensor counts work too
    counts_t = torch.tensor(COUNTS)
    assert hessian_loss(pred, target, counts_t, "mae").item() == pytest.approx(54 / 45)


def test_normalizations_relation_random():
    pred, target, pm, tm = _batch()
    per = [(p - t).abs().mean() for p, t in zip(pm, tm)]
    sizes = torch.tensor([36.0, 9.0], dtype=torch.float64)
    entry = hessian_loss(pred, target, COUNTS, "mae", "entry")
    mol = hessian_loss(pred, target, COUNTS, "mae", "molecule")
    assert mol.item() == pytest.approx(torch.stack(per).mean().item())
    assert entry.item() == pytest.approx((torch.stack(per) * sizes).sum().item() / 45)
    assert entry.item() != pytest.approx(mol.item())
    # single molecule: both normalizations agree
    one = hessian_loss(pm[0].reshape(-1), tm[0].reshape(-1), [2], "mse", "molecule")
    assert one.item() == pytest.approx(hessian_loss(pm[0], tm[0], [2], "mse").item())


def test_hessian_loss_errors():
    with pytest.raises(ValueError, match="sum"):
        hessian_loss(torch.zeros(44), torch.zeros(44), COUNTS)
    with pytest.raises(ValueError, match="kind"):
        hessian_loss(torch.zeros(45), torch.zeros(45), COUNTS, kind="huber")
    with pytest.raises(ValueError, match="normalization"):
        hessian_loss(torch.zeros(45), torch.zeros(45), COUNTS, normalization="atom")


def test_lowest_eigenpairs_shapes_and_values():
    _, target, _, tm = _batch([2, 1, 2])
    et = lowest_eigenpairs(target, [2, 1, 2], k=4)
    assert et.values.shape == (3, 4) and et.vectors.shape == (3, 6, 4)
    assert et.k_per_graph.tolist() == [4, 3, 4]
    assert et.flat_values().shape == (11,)
    assert et.flat_vectors().shape == (6 * 4 + 3 * 3 + 6 * 4,)
    for (vals, vecs), h in zip(et.per_structure_pairs(), tm):
        ref = torch.linalg.eigvalsh(h)[: vals.shape[0]]
        torch.testing.assert_close(vals, ref)
        torch.testing.assert_close(h @ vecs, vecs * vals)
    assert not et.values.requires_grad
    # cache round trip
    again = EigenTargets.collate(et.per_structure())
    torch.testing.assert_close(again.values, et.values)
    torch.testing.assert_close(again.vectors, et.vectors)


@pytest.mark.parametrize("dist", ["mae", "mse", "frosq"])
def test_subspace_zero_for_exact_prediction(dist):
    _, target, _, _ = _batch()
    et = lowest_eigenpairs(target, COUNTS, k=4)
    assert subspace_loss(target, COUNTS, et, dist).item() == pytest.approx(0.0, abs=1e-10)


def test_subspace_full_frosq_is_frobenius():
    pred, target, pm, tm = _batch()
    et = lowest_eigenpairs(target, COUNTS, k=None)
    expected = torch.stack([((p - t) ** 2).sum() for p, t in zip(pm, tm)]).mean()
    got = subspace_loss(pred, COUNTS, et, "frosq")
    assert got.item() == pytest.approx(expected.item(), rel=1e-9)
    # per molecule as well
    for g, n in enumerate(COUNTS):
        single = lowest_eigenpairs(tm[g].reshape(-1), [n], k=None)
        val = subspace_loss(pm[g].reshape(-1), [n], single, "frosq")
        assert val.item() == pytest.approx(((pm[g] - tm[g]) ** 2).sum().item(), rel=1e-9)


def test_subspace_mae_matches_loop():
    pred, target, pm, tm = _batch([2, 1, 3], seed=3)
    counts = [2, 1, 3]
    et = lowest_eigenpairs(target, counts, k=5)
    per = []
    for p, t in zip(pm, tm):
        lam, v = torch.linalg.eigh(t)
        k = min(5, t.shape[0])
        d = v[:, :k].T @ p @ v[:, :k] - torch.diag(lam[:k])
        per.append(d.abs().mean())
    got = subspace_loss(pred, counts, et, "mae")
    assert got.item() == pytest.approx(torch.stack(per).mean().item(), rel=1e-9)


def test_gradients_flow_to_pred_not_targets():
    pred, target, _, _ = _batch()
    pred = pred.clone().requires_grad_(True)
    target = target.clone().requires_grad_(True)
    et = lowest_eigenpairs(target, COUNTS, k=4)
    assert not et.values.requires_grad and not et.vectors.requires_grad
    loss = subspace_loss(pred, COUNTS, et, "mse") + hessian_loss(pred, target.detach(), COUNTS)
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert target.grad is None


def test_energy_forces_losses():
    e_p, e_t = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])
    assert energy_loss(e_p, e_t).item() == pytest.approx(1.5)
    assert energy_loss(e_p, e_t, "mse").item() == pytest.approx(2.5)
    assert energy_loss(e_p, e_t, per_atom=True, atoms_per_graph=[2, 1]).item() == pytest.approx(
        (0.5 + 2.0) / 2
    )
    with pytest.raises(ValueError, match="atoms_per_graph"):
        energy_loss(e_p, e_t, per_atom=True)
    f_p, f_t = torch.ones(3, 3), torch.zeros(3, 3)
    assert forces_loss(f_p, f_t).item() == pytest.approx(1.0)
    assert forces_loss(2 * f_p, f_t, "mse").item() == pytest.approx(4.0)


def _dicts():
    pred_h, target_h, _, _ = _batch()
    pred = {
        "energy": torch.tensor([1.0, 2.0], dtype=torch.float64),
        "forces": torch.ones(3, 3, dtype=torch.float64),
        "hessian": pred_h,
    }
    target = {
        "energy": torch.tensor([0.0, 4.0], dtype=torch.float64),
        "forces": torch.zeros(3, 3, dtype=torch.float64),
        "hessian": target_h,
    }
    return pred, target


def test_total_loss_combines_weights():
    pred, target = _dicts()
    w = LossWeights(energy=2.0, forces=3.0, hessian=0.5, subspace=0.25, subspace_k=4)
    total, comp = total_loss(pred, target, COUNTS, w)
    e = energy_loss(pred["energy"], target["energy"])
    f = forces_loss(pred["forces"], target["forces"])
    h = hessian_loss(pred["hessian"], target["hessian"], COUNTS)
    s = subspace_loss(pred["hessian"], COUNTS, lowest_eigenpairs(target["hessian"], COUNTS, 4))
    assert total.item() == pytest.approx((2 * e + 3 * f + 0.5 * h + 0.25 * s).item())
    assert set(comp) == {"energy", "forces", "hessian", "subspace", "total"}
    assert comp["hessian"].item() == pytest.approx(h.item())
    assert all(not v.requires_grad for v in comp.values())
    # precomputed eigen targets give the same result
    et = lowest_eigenpairs(target["hessian"], COUNTS, 4)
    total2, _ = total_loss(pred, target, COUNTS, w, eigen_targets=et)
    assert total2.item() == pytest.approx(total.item())
    # defaults: E 1, F 25, H 10
    d = LossWeights()
    assert (d.energy, d.forces, d.hessian, d.subspace) == (1.0, 25.0, 10.0, 0.0)
    total3, comp3 = total_loss(pred, target, COUNTS)
    assert total3.item() == pytest.approx((e + 25 * f + 10 * h).item())
    assert "subspace" not in comp3


def test_total_loss_missing_label():
    pred, target = _dicts()
    del target["hessian"]
    with pytest.raises(MissingLabelError, match="'hessian'"):
        total_loss(pred, target, COUNTS, LossWeights())
    # weight 0: skipped without error
    total, comp = total_loss(pred, target, COUNTS, LossWeights(hessian=0.0))
    assert "hessian" not in comp and torch.isfinite(total)
    pred2, target2 = _dicts()
    del target2["forces"]
    with pytest.raises(MissingLabelError, match="forces"):
        total_loss(pred2, target2, COUNTS, LossWeights())


def _real_batch():
    """H2O + CH4 with Hessians that are positive definite on the Eckart vibrational subspace.

    Built in mass-weighted coordinates as ``B diag(λ) Bᵀ`` (B: orthonormal vibrational basis
    from ``eckart_projector``), then un-mass-weighted, so the Eckart eigenvalues are exactly λ
    and the rigid-body modes are exact zeros.
    """
    mols = [molecule("H2O"), molecule("CH4")]
    counts = [len(m) for m in mols]
    pos = torch.tensor(np.concatenate([m.get_positions() for m in mols]))
    z = torch.tensor(np.concatenate([m.numbers for m in mols]))
    ptr = torch.tensor([0, counts[0], sum(counts)])
    rng = np.random.default_rng(1)
    hs, vib = [], []
    for m in mols:
        proj = eckart_projector(m.get_positions(), m.get_masses())
        w, q = np.linalg.eigh(proj)
        basis = q[:, w > 0.5]
        lam = np.sort(rng.uniform(0.5, 3.0, basis.shape[1]))
        sqrt_m = np.sqrt(np.repeat(m.get_masses(), 3))
        hs.append(torch.tensor(sqrt_m[:, None] * sqrt_m[None, :] * ((basis * lam) @ basis.T)))
        vib.append((basis, lam, sqrt_m))
    return hs, counts, pos, z, ptr, vib


def test_metrics_perfect_prediction():
    hs, counts, pos, z, ptr, _ = _real_batch()
    flat = torch.cat([h.reshape(-1) for h in hs])
    m = hessian_metrics(flat, flat, counts, pos, z, ptr)
    for key in ("hessian_mae", "eigval_mae", "eigval1_mae", "eckart_eigval_mae"):
        assert m[key] == pytest.approx(0.0, abs=1e-10), key
    for key in ("eigvec1_cos", "n_neg_agree", "eckart_eigvec1_cos", "eckart_n_neg_agree"):
        assert m[key] == pytest.approx(1.0), key
    assert m["eckart_is_ts_agree"] == pytest.approx(1.0)
    assert m["num_structures"] == 2
    # ptr defaults to the cumulative counts
    assert hessian_metrics(flat, flat, counts, pos, z)["eckart_n_neg_agree"] == 1.0


def test_metrics_detect_sign_flip_raw():
    hs, counts, pos, z, ptr, _ = _real_batch()
    target = torch.cat([h.reshape(-1) for h in hs])
    lam, v = torch.linalg.eigh(hs[1])  # CH4: flip the lowest raw eigenvalue
    lam_f = lam.clone()
    lam_f[0] = -1.0
    pred = torch.cat([hs[0].reshape(-1), (v @ torch.diag(lam_f) @ v.T).reshape(-1)])
    m = hessian_metrics(pred, target, counts, pos, z, ptr)
    assert m["n_neg_agree"] == pytest.approx(0.5)
    assert m["eigval1_mae"] == pytest.approx(abs(-1.0 - lam[0].item()) / 2)
    assert m["eigval_mae"] == pytest.approx(abs(-1.0 - lam[0].item()) / 15 / 2)
    assert m["hessian_mae"] > 0


def test_metrics_detect_sign_flip_eckart():
    hs, counts, pos, z, ptr, vib = _real_batch()
    target = torch.cat([h.reshape(-1) for h in hs])
    basis, lam, sqrt_m = vib[0]  # H2O: make its lowest vibration imaginary (a TS)
    lam_f = lam.copy()
    lam_f[0] = -lam[0]
    flipped = torch.tensor(sqrt_m[:, None] * sqrt_m[None, :] * ((basis * lam_f) @ basis.T))
    pred = torch.cat([flipped.reshape(-1), hs[1].reshape(-1)])
    m = hessian_metrics(pred, target, counts, pos, z, ptr)
    assert m["eckart_n_neg_agree"] == pytest.approx(0.5)
    assert m["eckart_is_ts_agree"] == pytest.approx(0.5)
    assert m["eckart_eigval1_mae"] == pytest.approx(2 * lam[0] / 2)
    assert m["eckart_eigvec1_cos"] == pytest.approx(1.0)
    # congruence keeps the inertia: the raw count sees the flip too
    assert m["n_neg_agree"] == pytest.approx(0.5)


def test_vibrational_eigenpairs_are_the_eckart_spectrum():
    hs, counts, pos, z, _, vib = _real_batch()
    flat = torch.cat([h.reshape(-1) for h in hs])
    et = vibrational_eigenpairs(flat, counts, pos, z, k=None)
    assert et.k_per_graph.tolist() == [3, 9]  # 3N - 6 modes each
    for (values, vectors), (_, lam, sqrt_m), h in zip(et.per_structure_pairs(), vib, hs):
        np.testing.assert_allclose(values.numpy(), lam, atol=1e-10)
        # u_i = M^-1/2 q_i: M-orthonormal, and uᵀ H u = diag(λ)
        m = torch.tensor(sqrt_m**2)
        torch.testing.assert_close(vectors.T @ (m[:, None] * vectors), torch.eye(len(lam)).double())
        torch.testing.assert_close(vectors.T @ h @ vectors, torch.diag(values))
    # the exact label gives zero loss; the lowest-mode sign flip (a spurious TS) does not
    assert subspace_loss(flat, counts, et).item() == pytest.approx(0.0, abs=1e-10)
    basis, lam, sqrt_m = vib[0]
    lam_f = lam.copy()
    lam_f[0] = -lam[0]
    flipped = torch.tensor(sqrt_m[:, None] * sqrt_m[None, :] * ((basis * lam_f) @ basis.T))
    pred = torch.cat([flipped.reshape(-1), hs[1].reshape(-1)])
    et2 = vibrational_eigenpairs(flat, counts, pos, z, k=2)
    expected = (2 * lam[0]) / 4 / 2  # one of 2x2 entries off by 2λ₀ in H2O, CH4 exact
    assert subspace_loss(pred, counts, et2).item() == pytest.approx(expected)


def test_total_loss_vibrational_basis_needs_positions():
    hs, counts, pos, z, _, _ = _real_batch()
    flat = torch.cat([h.reshape(-1) for h in hs])
    pred = {"hessian": flat * 1.1}
    target = {"hessian": flat}
    w = LossWeights(0.0, 0.0, 0.0, 1.0, 3, subspace_basis="vibrational")
    with pytest.raises(ValueError, match="positions"):
        total_loss(pred, target, counts, w)
    total, parts = total_loss(pred, target, counts, w, positions=pos, atomic_numbers=z)
    et = vibrational_eigenpairs(flat, counts, pos, z, k=3)
    assert total.item() == pytest.approx(subspace_loss(flat * 1.1, counts, et).item())
    assert total.item() > 0
    with pytest.raises(ValueError, match="subspace_basis"):
        total_loss(pred, target, counts, LossWeights(0, 0, 0, 1, subspace_basis="x"))


def _with_lowest(vib_entry, new_lowest: float) -> torch.Tensor:
    basis, lam, sqrt_m = vib_entry
    lam_f = lam.copy()
    lam_f[0] = new_lowest
    return torch.tensor(sqrt_m[:, None] * sqrt_m[None, :] * ((basis * lam_f) @ basis.T))


def test_mode_sign_loss_hinge_values():
    hs, counts, pos, z, _, vib = _real_batch()
    lam0 = vib[0][1][0]
    # label: H2O is a saddle (lowest mode -lam0), CH4 a minimum
    ts = _with_lowest(vib[0], -lam0)
    target = torch.cat([ts.reshape(-1), hs[1].reshape(-1)])
    et = vibrational_eigenpairs(target, counts, pos, z, k=None)
    assert mode_sign_loss(target, counts, et, k=2).item() == pytest.approx(0.0, abs=1e-12)
    # the saddle's mode made real (+lam0): (0.5·lam0 + lam0) / max(lam0, floor) on 1 of 2 pairs
    pred = torch.cat([hs[0].reshape(-1), hs[1].reshape(-1)])
    floor = 0.1
    expected = (1.5 * lam0 / max(lam0, floor)) / 2 / 2  # one of 2 pairs, one of 2 structures
    assert mode_sign_loss(pred, counts, et, 2, 0.5, floor).item() == pytest.approx(expected)
    # on the right side but short of the margin: (0.5·lam0 - 0.2·lam0) / lam0
    weak = torch.cat([_with_lowest(vib[0], -0.2 * lam0).reshape(-1), hs[1].reshape(-1)])
    assert mode_sign_loss(weak, counts, et, 2, 0.5, floor).item() == pytest.approx(0.3 / 4)
    assert mode_sign_loss(weak, counts, et, 2, 0.1, floor).item() == pytest.approx(0.0, abs=1e-12)
    # gap: at least that far from zero on the label's side, whatever the margin asks
    gap = 0.5 * lam0
    expected = (gap - 0.2 * lam0) / max(lam0, floor) / 4
    assert mode_sign_loss(weak, counts, et, 2, 0.1, floor, gap=gap).item() == pytest.approx(
        expected
    )
    small_gap = 0.1 * lam0
    assert mode_sign_loss(weak, counts, et, 2, 0.1, floor, gap=small_gap).item() == pytest.approx(
        0.0, abs=1e-12
    )
    # a gap beyond a label mode asks more than the label itself: every pair short of it costs
    big_gap = vib[1][1][0] + 0.05  # CH4's lowest (triply degenerate) mode + 0.05
    label_pairs = [[-lam0, vib[0][1][1]], list(vib[1][1][:2])]  # exact prediction: μ = λ
    expected = np.mean(
        [np.mean([max(big_gap - abs(v), 0) / max(abs(v), floor) for v in p]) for p in label_pairs]
    )
    assert expected > 0
    assert mode_sign_loss(target, counts, et, 2, 0.0, floor, gap=big_gap).item() == pytest.approx(
        expected
    )
    with pytest.raises(ValueError, match="gap"):
        mode_sign_loss(pred, counts, et, 2, gap=-0.1)
    # a spurious negative mode at the minimum costs, and so does a second one at the saddle
    spurious = torch.cat([ts.reshape(-1), _with_lowest(vib[1], -vib[1][1][0]).reshape(-1)])
    assert mode_sign_loss(spurious, counts, et, 2).item() > 0
    basis, lam, sqrt_m = vib[0]
    two = lam.copy()
    two[:2] = [-lam[0], -lam[1]]
    second = torch.tensor(sqrt_m[:, None] * sqrt_m[None, :] * ((basis * two) @ basis.T))
    extra = torch.cat([second.reshape(-1), hs[1].reshape(-1)])
    # sorted: μ = (−λ₁, −λ₀, …) against (−λ₀, λ₁, …): the second pair has the wrong sign
    expected = (0.5 * lam[1] + lam[0]) / max(lam[1], floor) / 2 / 2
    assert mode_sign_loss(extra, counts, et, 2, 0.5, floor).item() == pytest.approx(expected)
    # kind="mae": |μ_i − λ_i| of the sorted lowest eigenvalues, eV/Å²/amu:
    # (λ₁ − λ₀) + (λ₀ + λ₁) over 2 pairs and 2 structures
    assert mode_sign_loss(extra, counts, et, 2, kind="mae").item() == pytest.approx(
        2 * lam[1] / 2 / 2
    )
    with pytest.raises(ValueError, match="floor"):
        mode_sign_loss(pred, counts, et, 2, 0.5, 0.0)
    with pytest.raises(ValueError, match="kind"):
        mode_sign_loss(pred, counts, et, 2, kind="l2")


def test_mode_sign_term_through_total_loss():
    hs, counts, pos, z, _, vib = _real_batch()
    ts = _with_lowest(vib[0], -vib[0][1][0])
    target = torch.cat([ts.reshape(-1), hs[1].reshape(-1)])
    flat = torch.cat([h.reshape(-1) for h in hs]).requires_grad_()
    w = LossWeights(0.0, 0.0, 0.0, terms={"mode_sign": {"weight": 2.0, "k": 3, "margin": 0.5}})
    with pytest.raises(ValueError, match="positions"):
        total_loss({"hessian": flat}, {"hessian": target}, counts, w)
    total, parts = total_loss(
        {"hessian": flat}, {"hessian": target}, counts, w, positions=pos, atomic_numbers=z
    )
    et = vibrational_eigenpairs(target, counts, pos, z, k=None)
    assert parts["mode_sign"].item() == pytest.approx(mode_sign_loss(flat, counts, et, 3).item())
    assert parts["mode_sign"].item() > 0
    assert total.item() == pytest.approx(2.0 * parts["mode_sign"].item())
    total.backward()
    # the gradient pushes the prediction's lowest eigenvalue (the H2O mode made real) down
    basis, _, sqrt_m = vib[0]
    u = torch.tensor(basis[:, 0] / sqrt_m)
    grad_h2o = flat.grad[:81].reshape(9, 9)
    assert (u @ grad_h2o @ u).item() > 0
    assert flat.grad[81:].abs().max().item() == pytest.approx(0.0, abs=1e-12)
    # the eigenvalues term is the same pairing, as an MAE in eV/Å²/amu
    w2 = LossWeights(0.0, 0.0, 0.0, terms={"eigenvalues": {"weight": 1.0, "k": 3}})
    _, parts2 = total_loss(
        {"hessian": flat.detach()}, {"hessian": target}, counts, w2, positions=pos, atomic_numbers=z
    )
    expected = mode_sign_loss(flat.detach(), counts, et, 3, kind="mae").item()
    assert parts2["eigenvalues"].item() == pytest.approx(expected) and expected > 0
    for bad in ({"weight": 1.0, "k": 0}, {"weight": 1.0, "floor": -1.0}, {"weight": 1, "kind": 0}):
        with pytest.raises(ValueError):
            total_loss(
                {"hessian": flat},
                {"hessian": target},
                counts,
                LossWeights(0.0, 0.0, 0.0, terms={"mode_sign": bad}),
                positions=pos,
                atomic_numbers=z,
            )


def test_mode_sign_loss_without_vibrational_modes():
    """Single atoms have no vibrational mode: they add nothing, alone or in a batch."""
    from ase import Atoms

    mols = [Atoms("O", positions=[[0.0, 0.0, 0.0]]), molecule("H2O")]
    counts = [len(m) for m in mols]
    pos = torch.tensor(np.concatenate([m.positions for m in mols]))
    z = torch.tensor(np.concatenate([m.numbers for m in mols]))
    gen = torch.Generator().manual_seed(0)
    flat = torch.cat([_sym(3 * n, gen).reshape(-1) for n in counts])
    alone = vibrational_eigenpairs(flat[:9], counts[:1], pos[:1], z[:1], None)
    pred = (flat[:9] + 1.0).requires_grad_()
    loss = mode_sign_loss(pred, counts[:1], alone, 4)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))
    both = vibrational_eigenpairs(flat, counts, pos, z, None)
    assert both.k_per_graph.tolist() == [0, 3]
    assert mode_sign_loss(flat, counts, both, 4).item() == pytest.approx(0.0, abs=1e-12)
    assert mode_sign_loss(-flat, counts, both, 4).item() > 0
