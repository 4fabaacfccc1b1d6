"""The head's memory guard: chunked inference equals one pass, and requests that cannot fit
stop with HeadMemoryError before the head allocates anything per pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

import hip_head
import hip_head.memory as memory_module
from hip_head import AtomicGraph, HessianReadout, HIPError, build_pair_graph
from hip_head.errors import HeadMemoryError
from hip_head.memory import MAX_CHUNK_PAIRS, MIN_CHUNK_PAIRS
from tests.synthetic_features import IRREPS, synthetic_features

GIB = 2.0**30


def cluster(num_atoms: int, seed: int = 0) -> Atoms:
    """C/N/O atoms on a jittered 1.5 Å grid: every pair within the default 12 Å cutoff."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(num_atoms ** (1 / 3)))
    grid = np.stack(np.meshgrid(*(np.arange(side),) * 3, indexing="ij"), -1).reshape(-1, 3)
    positions = 1.5 * grid[:num_atoms] + rng.uniform(-0.2, 0.2, (num_atoms, 3))
    return Atoms(numbers=rng.choice([6, 7, 8], num_atoms), positions=positions)


def budget_for(head: HessianReadout, graph: AtomicGraph, chunk_pairs: int, **kw) -> float:
    """GiB that leaves room for chunks of ``chunk_pairs`` pairs."""
    pairs = build_pair_graph(graph, head.hessian_cutoff)
    estimate = head.estimate_memory(graph.num_atoms, pairs.num_pairs, **kw)
    return (estimate.resident_bytes + chunk_pairs * estimate.bytes_per_pair) / GIB


@pytest.fixture(scope="module")
def graph():
    return AtomicGraph.from_ase(cluster(30), dtype=torch.float64)  # 870 pairs


@pytest.mark.parametrize(
    "options", [{"channels": 6}, {"channels": 4, "num_interactions": 2, "diagonal": "sum_rule"}]
)
def test_chunked_inference_equals_one_pass(graph, options):
    head = HessianReadout(IRREPS, **options).double()
    feats = synthetic_features(graph)
    budget = budget_for(head, graph, 300)
    num_pairs = 30 * 29
    chunked_estimate = head.estimate_memory(30, num_pairs, memory_budget_gb=budget)
    assert chunked_estimate.chunk_pairs == 300 and chunked_estimate.num_chunks == 3
    with torch.no_grad():
        whole = head(feats, graph)
        chunked = head(feats, graph, memory_budget_gb=budget)
    assert head.estimate_memory(30, num_pairs).num_chunks == 1
    scale = float(whole.offdiagonal.abs().max())
    assert torch.allclose(chunked.offdiagonal, whole.offdiagonal, rtol=0, atol=1e-13 * scale)
    assert torch.allclose(chunked.diagonal, whole.diagonal, rtol=0, atol=1e-13 * scale)
    flat = chunked.offdiagonal  # still exactly symmetric: H_ba = H_abᵀ bit for bit
    assert torch.equal(flat[chunked.pairs.reverse], flat.transpose(-1, -2))


def test_a_budget_too_small_stops_before_the_head_allocates(graph, monkeypatch):
    head = HessianReadout(IRREPS, channels=6).double()

    def allocate(*args, **kwargs):
        raise AssertionError("the head evaluated pairs")

    monkeypatch.setattr(head, "_interaction", allocate)
    monkeypatch.setattr(head, "_pair_outputs", allocate)
    monkeypatch.setattr(head.node_linear, "forward", allocate)
    budget = budget_for(head, graph, MIN_CHUNK_PAIRS - 1)
    with torch.no_grad(), pytest.raises(HeadMemoryError) as info:
        head(synthetic_features(graph), graph, memory_budget_gb=budget)
    assert isinstance(info.value, HIPError) and isinstance(info.value, MemoryError)
    message = str(info.value)
    for hint in ("870 pairs of 30 atoms", "MiB", "budget", "hessian_cutoff", "float32", "blocks"):
        assert hint in message, hint


def test_recording_autograd_needs_every_pair_at_once(graph):
    head = HessianReadout(IRREPS, channels=6).double()
    feats = synthetic_features(graph)
    budget = budget_for(head, graph, 400)  # room for chunks, not for 870 pairs with autograd
    with pytest.raises(HeadMemoryError, match=r"torch\.no_grad\(\)"):
        head(feats, graph, memory_budget_gb=budget)
    with torch.no_grad():
        assert head(feats, graph, memory_budget_gb=budget).offdiagonal.shape == (870, 3, 3)
    roomy = budget_for(head, graph, 870, requires_grad=True)
    blocks = head(feats, graph, memory_budget_gb=roomy)
    assert blocks.offdiagonal.requires_grad


def test_the_available_memory_is_checked_without_a_budget(graph, monkeypatch):
    head = HessianReadout(IRREPS, channels=6).double()
    monkeypatch.setattr(memory_module, "available_memory_bytes", lambda device: 100_000)
    with torch.no_grad(), pytest.raises(HeadMemoryError, match="available on cpu"):
        head(synthetic_features(graph), graph)


def test_the_estimate_scales_with_pairs_and_dtype():
    head = HessianReadout(IRREPS, channels=8)
    small = head.estimate_memory(100, 10_000, dtype=torch.float32, memory_budget_gb=1.0)
    large = head.estimate_memory(100, 10_000_000, dtype=torch.float32, memory_budget_gb=8.0)
    double = head.estimate_memory(100, 10_000, dtype=torch.float64, memory_budget_gb=1.0)
    assert small.chunk_pairs == MAX_CHUNK_PAIRS and large.chunk_pairs == MAX_CHUNK_PAIRS
    assert large.num_chunks == -(-10_000_000 // MAX_CHUNK_PAIRS)
    assert double.bytes_per_pair == 2 * small.bytes_per_pair
    per_pair = (
        4 * memory_module.RESIDENT_FLOATS_PER_PAIR + memory_module.RESIDENT_INDEX_BYTES_PER_PAIR
    )
    assert large.resident_bytes - small.resident_bytes == (10_000_000 - 10_000) * per_pair
    grad = head.estimate_memory(100, 10_000, dtype=torch.float32, requires_grad=True)
    assert grad.chunk_pairs == 10_000 and grad.bytes_per_pair >= small.bytes_per_pair
    with pytest.raises(ValueError, match="positive"):
        head.estimate_memory(100, 10_000, memory_budget_gb=0.0)
    assert "10000 pairs of 100 atoms" in small.describe()


@pytest.mark.mace
def test_model_forward_and_predict_take_the_budget(tiny_mace):
    hip = hip_head.wrap(tiny_mace, channels=6)
    atoms = cluster(30, seed=1)
    graph = AtomicGraph.from_ase(atoms, dtype=torch.float64)
    budget = budget_for(hip.readout, graph, 300)
    whole = hip.predict(atoms)["hessian"]
    chunked = hip.predict(atoms, memory_budget_gb=budget)["hessian"]
    assert np.allclose(chunked, whole, rtol=0, atol=1e-12 * np.abs(whole).max())


@pytest.mark.mace
@pytest.mark.parametrize("frozen_backbone", [False, True])
def test_the_model_refuses_before_its_backbone_runs(tiny_mace, monkeypatch, frozen_backbone):
    hip = hip_head.wrap(tiny_mace, channels=6)

    def backbone(*args, **kwargs):
        raise AssertionError("the backbone ran")

    monkeypatch.setattr(hip, "run_backbone", backbone)
    graph = AtomicGraph.from_ase(cluster(30, seed=2), dtype=torch.float64)
    options = {"compute_forces": False, "frozen_backbone": True} if frozen_backbone else {}
    with pytest.raises(HeadMemoryError, match="870 pairs of 30 atoms"):
        hip(graph, hessian_output="blocks", memory_budget_gb=1e-6, **options)
