"""HessianReadout: exact symmetry, O(3)/permutation equivariance, cutoff, sum rule, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from hip_head import AtomicGraph, HessianReadout, build_pair_graph
from hip_head._e3nn import o3
from hip_head.assemble import BlockSparseHessian, blocks_to_flat, split_flat
from hip_head.blocks import HessianBlocks
from hip_head.cartesian import irreps_to_cartesian
from tests.synthetic_features import IRREPS, synthetic_features


def hessians(head, atoms_list, dtype=torch.float64, transform=None, shift=None):
    graph = AtomicGraph.from_ase(atoms_list, dtype=dtype)
    if transform is not None:
        graph.positions = graph.positions @ transform.to(dtype).T + shift.to(dtype)
    blocks = head(synthetic_features(graph), graph)
    return split_flat(blocks_to_flat(blocks, graph), graph.atoms_per_graph)


@pytest.fixture(scope="module")
def head():
    return HessianReadout(IRREPS, channels=8).double()


def test_exactly_symmetric_and_nonzero(head, small_molecules):
    for h in hessians(head, small_molecules):
        assert torch.equal(h, h.T)
        assert h.abs().max() > 1e-3


@pytest.mark.parametrize("improper", [False, True])
def test_rotation_reflection_translation_equivariance(head, small_molecules, improper):
    rotation = o3().rand_matrix(dtype=torch.float64)
    q = -rotation if improper else rotation
    shift = torch.tensor([1.5, -2.0, 0.3], dtype=torch.float64)
    for h, h_t in zip(
        hessians(head, small_molecules), hessians(head, small_molecules, transform=q, shift=shift)
    ):
        big_q = torch.kron(torch.eye(h.shape[0] // 3, dtype=torch.float64), q)
        assert torch.allclose(h_t, big_q @ h @ big_q.T, rtol=0, atol=1e-12 * float(h.abs().max()))


def test_permutation_equivariance(head):
    atoms = molecule("CH3CH2OH")
    perm = torch.randperm(len(atoms))
    (h,) = hessians(head, [atoms])
    (h_p,) = hessians(head, [atoms[perm.numpy()]])
    idx = (3 * perm[:, None] + torch.arange(3)).reshape(-1)
    assert torch.allclose(h_p, h[idx][:, idx], atol=1e-12)


def test_batch_equals_single(head, small_molecules):
    batched = hessians(head, small_molecules)
    for atoms, h in zip(small_molecules, batched):
        (single,) = hessians(head, [atoms])
        assert torch.allclose(single, h, atol=1e-12)


@pytest.mark.parametrize("batched", [False, True])
def test_flat_assembly_places_every_block_and_passes_gradients(head, small_molecules, batched):
    """One structure is written through its (N, 3, N, 3) view, a batch through flat indices:
    both must put block (a, b) at H[3a:3a+3, 3b:3b+3] (the block-sparse Hessian's dense form)
    and route the gradient of each entry back to its block."""
    molecules = small_molecules if batched else small_molecules[:1]
    graph = AtomicGraph.from_ase(molecules, dtype=torch.float64)
    computed = head(synthetic_features(graph), graph)
    diagonal = computed.diagonal.detach().requires_grad_(True)
    offdiagonal = computed.offdiagonal.detach().requires_grad_(True)
    blocks = HessianBlocks(diagonal, offdiagonal, computed.pairs)
    flat = blocks_to_flat(blocks, graph)
    sparse = BlockSparseHessian.from_blocks(blocks, graph)
    for g, h in enumerate(split_flat(flat.detach(), graph.atoms_per_graph)):
        assert torch.equal(h, sparse.to_dense(g))
        assert h.abs().max() > 1e-3
    weights = torch.randn_like(flat)
    (flat * weights).sum().backward()
    a, b = computed.pairs.index
    expected_off = torch.empty_like(offdiagonal)
    expected_diag = torch.empty_like(diagonal)
    for g, w in enumerate(split_flat(weights, graph.atoms_per_graph)):
        start, n = int(graph.ptr[g]), int(graph.atoms_per_graph[g])
        w4 = w.view(n, 3, n, 3)
        local = torch.arange(n)
        expected_diag[start : start + n] = w4[local, :, local, :]
        mine = graph.batch[a] == g
        expected_off[mine] = w4[a[mine] - start, :, b[mine] - start, :]
    assert torch.equal(offdiagonal.grad, expected_off)
    assert torch.equal(diagonal.grad, expected_diag)


def test_blocks_beyond_cutoff_are_exactly_zero_and_vanish_smoothly():
    head = HessianReadout(IRREPS, channels=8, hessian_cutoff=3.0).double()
    atoms = Atoms("HHH", positions=[[0, 0, 0], [1.0, 0, 0], [4.5, 0, 0]])
    (h,) = hessians(head, [atoms])
    assert torch.equal(h[0:3, 6:9], torch.zeros(3, 3, dtype=torch.float64))
    near = Atoms("HH", positions=[[0, 0, 0], [2.999, 0, 0]])
    (h_near,) = hessians(head, [near])
    assert h_near[0:3, 3:6].abs().max() < 1e-9


def test_sum_rule_diagonal_makes_rows_sum_to_zero(small_molecules):
    head = HessianReadout(IRREPS, channels=8, diagonal="sum_rule").double()
    for h in hessians(head, small_molecules):
        n = h.shape[0] // 3
        row_sums = h.reshape(n, 3, n, 3).sum(dim=2)  # Σ_b H_ab, [n, 3, 3]
        # only the antisymmetric part of Σ_{b≠a} H_ab can survive the sum rule
        assert torch.allclose(row_sums, -row_sums.transpose(-1, -2), atol=1e-12)
        assert torch.equal(h, h.T)


def test_single_atom_gives_a_symmetric_3x3_block(head):
    (h,) = hessians(head, [Atoms("O")])
    assert h.shape == (3, 3)
    assert torch.equal(h, h.T)


def test_float32_runs_and_is_symmetric(small_molecules):
    head = HessianReadout(IRREPS, channels=8)
    for h in hessians(head, small_molecules, dtype=torch.float32):
        assert h.dtype == torch.float32
        assert torch.equal(h, h.T)


def test_rejects_features_without_scalars():
    with pytest.raises(ValueError, match="0e"):
        HessianReadout("4x1o")
    with pytest.raises(ValueError, match="diagonal"):
        HessianReadout(IRREPS, diagonal="mean")


def test_gradients_reach_every_parameter(head, small_molecules):
    loss = sum(h.square().sum() for h in hessians(head, small_molecules))
    loss.backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing, f"parameters without gradient: {missing}"


def test_float32_to_float64_round_trip_stays_exactly_equivariant(small_molecules):
    """e3nn keeps Wigner-3j buffers in the build dtype; the head must re-derive them exactly."""
    head = HessianReadout(IRREPS, channels=8).float().double()
    q = o3().rand_matrix(dtype=torch.float64)
    shift = torch.zeros(3, dtype=torch.float64)
    for h, h_t in zip(
        hessians(head, small_molecules), hessians(head, small_molecules, transform=q, shift=shift)
    ):
        big_q = torch.kron(torch.eye(h.shape[0] // 3, dtype=torch.float64), q)
        assert (h_t - big_q @ h @ big_q.T).abs().max() < 1e-12 * h.abs().max()


def test_full_hidden_irreps_add_missing_parities_and_stay_equivariant(small_molecules):
    # a MACE-like backbone gives only 0e + 1o; "full" adds 1e and 2e hidden features that the
    # head's interaction fills, and the head stays exactly O(3)-equivariant
    irreps = "4x0e+4x1o"
    full = HessianReadout(irreps, channels=4, num_interactions=1, hidden_irreps="full").double()
    plain = HessianReadout(irreps, channels=4, num_interactions=1).double()
    assert {str(ir) for _, ir in full.hidden_irreps} == {"0e", "1o", "1e", "2e"}
    assert {str(ir) for _, ir in plain.hidden_irreps} == {"0e", "1o"}

    def run(transform=None, shift=None):
        graph = AtomicGraph.from_ase(small_molecules, dtype=torch.float64)
        if transform is not None:
            graph.positions = graph.positions @ transform.T + shift
        feats = synthetic_features(graph)[:, :16]  # the 4x0e + 4x1o columns
        blocks = full(feats, graph)
        return split_flat(blocks_to_flat(blocks, graph), graph.atoms_per_graph)

    q = -o3().rand_matrix(dtype=torch.float64)
    shift = torch.tensor([0.3, 1.0, -0.7], dtype=torch.float64)
    for h, h_t in zip(run(), run(q, shift)):
        assert h.abs().max() > 1e-3
        big_q = torch.kron(torch.eye(h.shape[0] // 3, dtype=torch.float64), q)
        assert torch.allclose(h_t, big_q @ h @ big_q.T, rtol=0, atol=1e-12 * float(h.abs().max()))


def test_bad_hidden_irreps_is_named():
    with pytest.raises(ValueError, match="hidden_irreps"):
        HessianReadout(IRREPS, hidden_irreps="everything")


def test_block_scale_multiplies_every_block(small_molecules):
    torch.manual_seed(0)
    one = HessianReadout(IRREPS, channels=4).double()
    three = HessianReadout(IRREPS, channels=4, block_scale=3.0).double()
    three.load_state_dict(one.state_dict())
    graph = AtomicGraph.from_ase(small_molecules, dtype=torch.float64)
    feats = synthetic_features(graph)
    a, b = one(feats, graph), three(feats, graph)
    assert torch.allclose(b.diagonal, 3 * a.diagonal, rtol=1e-12, atol=0)
    assert torch.allclose(b.offdiagonal, 3 * a.offdiagonal, rtol=1e-12, atol=0)
    assert a.offdiagonal.abs().max() > 1e-3


def test_head_pickled_before_block_scale_existed_still_runs(small_molecules):
    # such a head has no block_scale in its __dict__: the class default (1.0) applies
    head = HessianReadout(IRREPS, channels=4).double()
    graph = AtomicGraph.from_ase(small_molecules, dtype=torch.float64)
    feats = synthetic_features(graph)
    before = head(feats, graph)
    del head.__dict__["block_scale"]
    after = head(feats, graph)
    assert torch.equal(after.diagonal, before.diagonal)
    assert torch.equal(after.offdiagonal, before.offdiagonal)


@pytest.mark.parametrize("diagonal", ["learned", "sum_rule"])
def test_periodic_images_add_up_like_in_a_supercell(diagonal):
    """A cell smaller than twice the cutoff (atoms pair with several images of each other and
    with their own images) gives the Γ-point Hessian: block H_ab of the cell is the sum, over
    the copies b' of b in a supercell, of the supercell's blocks H_ab'."""
    head = HessianReadout(IRREPS, channels=8, hessian_cutoff=4.0, diagonal=diagonal).double()
    cell = np.array([[2.6, 0.0, 0.0], [0.5, 2.8, 0.0], [0.3, -0.4, 3.0]])
    atoms = Atoms("CON", positions=[[0.1, 0.2, 0.3], [1.3, 1.1, 1.4], [2.0, 0.4, 2.2]])
    atoms.set_cell(cell)
    atoms.pbc = True
    repeats = 3
    supercell = atoms.repeat(repeats)  # copy r of atom a is atom r * len(atoms) + a
    n, copies = len(atoms), repeats**3
    features = torch.randn(n, o3().Irreps(IRREPS).dim, dtype=torch.float64)

    def dense(structure, feats):
        graph = AtomicGraph.from_ase(structure, dtype=torch.float64)
        blocks = head(feats, graph)
        (h,) = split_flat(blocks_to_flat(blocks, graph), graph.atoms_per_graph)
        return h.reshape(len(structure), 3, len(structure), 3), blocks

    with torch.no_grad():
        h_cell, blocks = dense(atoms, features)
        h_super, _ = dense(supercell, features.repeat(copies, 1))
    assert bool((blocks.pairs.index[0] == blocks.pairs.index[1]).any())  # self images
    folded = h_super[:n].reshape(n, 3, copies, n, 3).sum(dim=2)
    assert torch.allclose(h_cell, folded, rtol=1e-10, atol=1e-10 * float(h_cell.abs().max()))
    flat = h_cell.reshape(3 * n, 3 * n)
    assert torch.equal(flat, flat.T)
    assert h_cell[0, :, 1].abs().max() > 1e-3
    if diagonal == "sum_rule":
        row_sums = h_cell.sum(dim=2)
        assert torch.allclose(row_sums, -row_sums.transpose(-1, -2), atol=1e-12)
    # The block-sparse form stores each pair once, images summed, and matches the flat one.
    graph = AtomicGraph.from_ase(atoms, dtype=torch.float64)
    sparse = BlockSparseHessian.from_blocks(blocks, graph)
    keys = sparse.rows * n + sparse.cols
    assert torch.unique(keys).numel() == keys.numel()
    assert torch.equal(sparse.to_dense(0), flat)
    v = torch.randn(n, 3, dtype=torch.float64)
    assert torch.allclose(sparse.matvec(v).reshape(-1), flat @ v.reshape(-1), atol=1e-12)


def _composed_blocks(head: HessianReadout, feats: torch.Tensor, graph: AtomicGraph):
    """The head's formulas as the plain composition of its e3nn modules (every pair's x_ab
    formed, every path evaluated): the definition the optimised forward pass must equal."""
    pairs = build_pair_graph(graph, head.hessian_cutoff)
    a, b = pairs.index
    h = head.node_linear(feats)
    sh = head.spherical_harmonics(pairs.vectors)
    envelope = head.envelope(pairs.lengths)
    basis = head.radial_basis(pairs.lengths) * envelope.unsqueeze(-1)

    def pair_scalars(h):
        scalars = h[:, head.scalar_mask]
        return torch.cat([basis, scalars[a], scalars[b]], dim=-1)

    for block in head.interactions:
        messages = block.tp(h[b], sh, block.radial(pair_scalars(h), envelope))
        summed = messages.new_zeros(h.shape[0], messages.shape[1]).index_add(0, a, messages)
        h = h + block.linear(summed) / head.norm
    w = head.pair_radial(pair_scalars(h), envelope)
    n1, n2 = head.tp_sender.weight_numel, head.tp_receiver.weight_numel
    x = torch.cat(
        [
            head.tp_sender(h[b], sh, w[:, :n1]),
            head.tp_receiver(h[a], sh, w[:, n1 : n1 + n2]),
            head.tp_pair(h[a], h[b], w[:, n1 + n2 :]),
        ],
        dim=-1,
    )
    m = head.block_scale * irreps_to_cartesian(head.pair_out(x))
    offdiagonal = m + m[pairs.reverse].transpose(-1, -2)
    if head.diagonal_mode == "sum_rule":
        row_sum = torch.zeros_like(h[:, :9]).view(-1, 3, 3).index_add(0, a, offdiagonal)
        return -0.5 * (row_sum + row_sum.transpose(-1, -2)), offdiagonal
    summed = x.new_zeros(h.shape[0], x.shape[1]).index_add(0, a, x) / head.norm
    n = head.block_scale * irreps_to_cartesian(head.node_out(h) + head.node_pair_out(summed))
    return n + n.transpose(-1, -2), offdiagonal


@pytest.mark.parametrize(
    "irreps, options",
    [
        (IRREPS, {"channels": 6}),
        (IRREPS, {"channels": 4, "num_interactions": 2, "diagonal": "sum_rule"}),
        ("8x0e+8x1o", {"channels": 5, "hidden_irreps": "full", "block_scale": 3.0}),
        ("8x0e+8x1o+8x0e", {"channels": 4, "num_interactions": 0}),
    ],
)
def test_forward_equals_the_composition_of_its_modules(small_molecules, irreps, options):
    """The forward pass folds the output maps into the weight MLP and skips unread paths; it
    must give the modules' composition (values and parameter gradients) to rounding."""
    head = HessianReadout(irreps, **options).double()
    with torch.no_grad():
        for p in head.parameters():
            p.normal_()
    graph = AtomicGraph.from_ase(small_molecules, dtype=torch.float64)
    feats = torch.randn(graph.num_atoms, o3().Irreps(irreps).dim, dtype=torch.float64)
    blocks = head(feats, graph)
    diagonal, offdiagonal = _composed_blocks(head, feats, graph)
    scale = float(offdiagonal.abs().max())
    assert torch.allclose(blocks.offdiagonal, offdiagonal, rtol=0, atol=1e-12 * scale)
    assert torch.allclose(blocks.diagonal, diagonal, rtol=0, atol=1e-12 * scale)
    params = list(head.parameters())
    loss = blocks.offdiagonal.square().sum() + blocks.diagonal.sum()
    fast = torch.autograd.grad(loss, params, allow_unused=True)
    loss = offdiagonal.square().sum() + diagonal.sum()
    slow = torch.autograd.grad(loss, params, allow_unused=True)
    for (name, _), g_fast, g_slow in zip(head.named_parameters(), fast, slow):
        assert (g_fast is None) == (g_slow is None), name  # node maps unused with sum_rule
        if g_slow is None:
            continue
        tol = 1e-12 * max(float(g_slow.abs().max()), 1.0)
        assert torch.allclose(g_fast, g_slow, rtol=0, atol=tol), name
