"""Tests of the MACE adapter (``hip_head.adapters.mace``) on tiny random MACE models.

The reference everywhere is MACE itself: either the bare model called with
``compute_force=True`` on the adapter's input dict (``native_energy_forces``), or MACE's own data
pipeline (``AtomicData.from_config`` + its DataLoader), which also checks the adapter's neighbour
list, shifts and one-hot encoding.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from hip_head._e3nn import o3
from hip_head.adapters import find_adapter, registered_adapters
from hip_head.errors import MissingBackboneError, UnsupportedElementError
from hip_head.graph import AtomicGraph

pytest.importorskip("mace")

from hip_head.adapters.mace import MACEAdapter, make_random_mace  # noqa: E402

pytestmark = pytest.mark.mace

F64 = torch.float64
MOLECULES = ("H2O", "CH4", "CH3CH2OH")
TINY = dict(channels=8, max_ell=2, correlation=2)


# ---------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """ScaleShiftMACE, hidden irreps 8x0e+8x1o, two layers."""
    return make_random_mace(hidden_lmax=1, seed=0, **TINY)


@pytest.fixture(scope="module")
def model_l2() -> torch.nn.Module:
    """ScaleShiftMACE, hidden irreps 8x0e+8x1o+8x2e."""
    return make_random_mace(hidden_lmax=2, seed=1, **TINY)


@pytest.fixture(scope="module")
def plain_model() -> torch.nn.Module:
    """Plain MACE (no scale/shift)."""
    return make_random_mace(hidden_lmax=1, seed=2, scale_shift=False, **TINY)


@pytest.fixture(scope="module")
def molecules() -> list[Atoms]:
    return [molecule(name) for name in MOLECULES]


@pytest.fixture(scope="module")
def periodic() -> list[Atoms]:
    """A water molecule in a 3.6 Å box (smaller than r_max: images and self-images are
    neighbours) and a methane slab periodic in x, y only, with a skewed cell."""
    water = molecule("H2O")
    water.set_cell([3.6, 3.8, 4.1])
    water.pbc = True
    water.positions += 0.3
    slab = molecule("CH4")
    slab.set_cell([[4.0, 0.0, 0.0], [1.0, 4.2, 0.0], [0.5, 0.3, 3.9]])
    slab.pbc = [True, True, False]
    return [water, slab]


def graph_of(atoms: Atoms | list[Atoms]) -> AtomicGraph:
    return AtomicGraph.from_ase(atoms, dtype=F64)


def adapter_energy_forces(
    adapter: MACEAdapter, graph: AtomicGraph
) -> tuple[torch.Tensor, torch.Tensor]:
    """Energy [B] from the adapter and forces [N, 3] by autograd of it, as hip-head does."""
    positions = graph.positions.clone().requires_grad_(True)
    energy = adapter(graph.with_positions(positions)).energy
    (grad,) = torch.autograd.grad(energy.sum(), positions)
    return energy.detach(), -grad


def mace_pipeline(
    model: torch.nn.Module, atoms: list[Atoms], head: str = "Default"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Energy [B] and forces [N, 3] through MACE's own data pipeline (as its calculator does)."""
    from mace import data as mace_data
    from mace.tools import AtomicNumberTable, torch_geometric, torch_tools

    table = AtomicNumberTable(model.atomic_numbers.tolist())
    with torch_tools.default_dtype(F64):
        dataset = [
            mace_data.AtomicData.from_config(
                mace_data.config_from_atoms(a, head_name=head),
                z_table=table,
                cutoff=float(model.r_max),
                heads=model.heads,
            )
            for a in atoms
        ]
    loader = torch_geometric.dataloader.DataLoader(dataset, batch_size=len(dataset), shuffle=False)
    out = model(next(iter(loader)).to_dict(), compute_force=True)
    return out["energy"].detach(), out["forces"].detach()


def random_rotation(seed: int) -> torch.Tensor:
    """[3, 3] proper rotation (det +1), float64."""
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=F64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


# ---------------------------------------------------------------------- matching, imports
def test_matches_mace_classes_only(model, plain_model):
    from mace.modules.models import ScaleShiftMACE

    class MyMACE(ScaleShiftMACE):
        pass

    assert MACEAdapter.matches(model)  # ScaleShiftMACE
    assert MACEAdapter.matches(plain_model)  # MACE
    assert MACEAdapter.matches(MyMACE.__new__(MyMACE))  # subclasses too
    assert not MACEAdapter.matches(torch.nn.Linear(3, 3))
    assert registered_adapters()["mace"] is MACEAdapter
    assert find_adapter(model) is MACEAdapter
    assert MACEAdapter.name == "mace" and MACEAdapter.extra == "mace" and MACEAdapter.parity


def test_importing_adapter_does_not_import_mace():
    code = (
        "import sys, hip_head, hip_head.adapters.mace\n"
        "from hip_head.adapters import registered_adapters\n"
        "assert 'mace' in registered_adapters()\n"
        "loaded = [m for m in sys.modules if m == 'mace' or m.startswith('mace.')]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_missing_mace_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "mace" or m.startswith("mace.")]:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import mace...` fail
    with pytest.raises(MissingBackboneError, match=r"pip install hip-head\[mace\]"):
        make_random_mace(**TINY)


def test_properties(model):
    adapter = MACEAdapter(model)
    assert adapter.supported_atomic_numbers == [1, 6, 7, 8]
    assert adapter.cutoff == pytest.approx(5.0)
    assert adapter.head == "Default"
    assert adapter.dtype == F64


# ---------------------------------------------------------------------- energy and forces
@pytest.mark.parametrize("which", ["model", "plain_model"])
def test_energy_and_forces_match_native(which, molecules, request):
    backbone = request.getfixturevalue(which)
    adapter = MACEAdapter(backbone)
    graph = graph_of(molecules)
    energy, forces = adapter_energy_forces(adapter, graph)
    native_energy, native_forces = adapter.native_energy_forces(graph)
    assert energy.shape == (len(molecules),)
    torch.testing.assert_close(energy, native_energy, atol=1e-6, rtol=0)
    torch.testing.assert_close(forces, native_forces, atol=1e-6, rtol=0)
    # and the same numbers come out of MACE's own data pipeline (neighbour list, one-hot, ...)
    ref_energy, ref_forces = mace_pipeline(backbone, molecules)
    torch.testing.assert_close(energy, ref_energy, atol=1e-10, rtol=0)
    torch.testing.assert_close(forces, ref_forces, atol=1e-10, rtol=0)


def test_periodic_cells_match_native_and_mace(model, periodic):
    adapter = MACEAdapter(model)
    graph = graph_of(periodic)
    energy, forces = adapter_energy_forces(adapter, graph)
    native_energy, native_forces = adapter.native_energy_forces(graph)
    torch.testing.assert_close(energy, native_energy, atol=1e-6, rtol=0)
    torch.testing.assert_close(forces, native_forces, atol=1e-6, rtol=0)
    ref_energy, ref_forces = mace_pipeline(model, periodic)
    torch.testing.assert_close(energy, ref_energy, atol=1e-10, rtol=0)
    torch.testing.assert_close(forces, ref_forces, atol=1e-10, rtol=0)
    # self-images are neighbours in the 3.6 Å box
    edges = adapter.input_dict(graph)["edge_index"]
    assert bool((edges[0] == edges[1]).any())


def test_mixed_periodic_and_molecular_batch(model, periodic):
    # built by hand: AtomicGraph.from_ase's validation cannot mix them yet
    structures = [molecule("CH3CH2OH"), *periodic]
    parts = [graph_of(a) for a in structures]
    counts = [p.num_atoms for p in parts]
    cell = torch.stack([torch.tensor(a.cell.array, dtype=F64) for a in structures])
    graph = AtomicGraph(
        positions=torch.cat([p.positions for p in parts]),
        atomic_numbers=torch.cat([p.atomic_numbers for p in parts]),
        batch=torch.repeat_interleave(torch.arange(len(parts)), torch.tensor(counts)),
        ptr=torch.tensor([0, *np.cumsum(counts)]),
        cell=cell,
        pbc=torch.tensor(np.stack([a.pbc for a in structures])),
    )
    energy, forces = adapter_energy_forces(MACEAdapter(model), graph)
    ref_energy, ref_forces = mace_pipeline(model, structures)
    torch.testing.assert_close(energy, ref_energy, atol=1e-10, rtol=0)
    torch.testing.assert_close(forces, ref_forces, atol=1e-10, rtol=0)


@pytest.mark.parametrize("which", ["molecules", "periodic"])
def test_edges_are_mace_s_own_neighbourhood(model, which, request):
    """Same directed edges and unit shifts as mace.data.neighborhood.get_neighborhood."""
    from mace.data.neighborhood import get_neighborhood

    structures = request.getfixturevalue(which)
    data = MACEAdapter(model).input_dict(graph_of(structures))
    edges = set(zip(*data["edge_index"].tolist(), map(tuple, data["unit_shifts"].long().tolist())))
    expected, offset = set(), 0
    for atoms in structures:
        cell = np.array(atoms.cell.array) if atoms.pbc.any() else None
        index, _, unit, _ = get_neighborhood(
            atoms.positions, float(model.r_max), pbc=tuple(atoms.pbc), cell=cell
        )
        expected |= {(int(i) + offset, int(j) + offset, tuple(s)) for i, j, s in zip(*index, unit)}
        offset += len(atoms)
    assert edges == expected
    assert data["edge_index"].shape[1] == len(expected)  # and no edge twice


def test_saved_foundation_model_round_trip(model, molecules, tmp_path):
    path = tmp_path / "foundation.model"
    torch.save(model, path)  # how MACE saves its foundation models
    loaded = torch.load(path, weights_only=False)
    assert find_adapter(loaded) is MACEAdapter
    graph = graph_of(molecules)
    out, out_loaded = MACEAdapter(model)(graph), MACEAdapter(loaded)(graph)
    torch.testing.assert_close(out_loaded.energy, out.energy, atol=0, rtol=0)
    torch.testing.assert_close(out_loaded.node_feats, out.node_feats, atol=0, rtol=0)
    forces = adapter_energy_forces(MACEAdapter(loaded), graph)[1]
    torch.testing.assert_close(forces, adapter_energy_forces(MACEAdapter(model), graph)[1])


def test_caller_positions_untouched_and_dtype_cast(model, molecules):
    adapter = MACEAdapter(model)
    graph = graph_of(molecules)
    out = adapter(graph)
    assert not graph.positions.requires_grad  # MACE's requires_grad_ hit an alias, not ours
    with torch.no_grad():
        assert not adapter(graph).energy.requires_grad
    out32 = adapter(graph.to(dtype=torch.float32))  # cast to the backbone's float64
    assert out32.energy.dtype == F64
    torch.testing.assert_close(out32.energy, out.energy.detach(), atol=1e-4, rtol=0)


# ---------------------------------------------------------------------- node features
@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
def test_node_feats_equivariant(model_l2, reflect):
    adapter = MACEAdapter(model_l2)
    assert adapter.node_irreps == o3().Irreps("8x0e+8x1o+8x2e+8x0e")
    atoms = [molecule("CH3CH2OH"), molecule("H2O")]
    graph = graph_of(atoms)
    R = random_rotation(seed=7)
    if reflect:
        R = -R  # improper: det -1
    center = graph.positions.mean(dim=0)
    moved = graph.with_positions((graph.positions - center) @ R.T + torch.tensor([0.4, -1.0, 2.0]))
    out, out_moved = adapter(graph), adapter(moved)
    D = adapter.node_irreps.D_from_matrix(R)
    torch.testing.assert_close(out_moved.node_feats, out.node_feats @ D.T, atol=1e-10, rtol=0)
    torch.testing.assert_close(out_moved.energy, out.energy, atol=1e-10, rtol=0)


def test_layer_selection_irreps(model, model_l2, molecules):
    graph = graph_of(molecules)
    full = MACEAdapter(model)
    assert full.node_irreps == o3().Irreps("8x0e+8x1o+8x0e")
    last = MACEAdapter(model, layers=[-1])
    assert last.node_irreps == o3().Irreps("8x0e")  # MACE's last layer is scalars only
    first = MACEAdapter(model, layers=[0])
    assert first.node_irreps == o3().Irreps("8x0e+8x1o")
    out_full, out_last, out_first = full(graph), last(graph), first(graph)
    assert out_full.node_feats.shape == (graph.num_atoms, full.node_irreps.dim)
    assert out_last.node_feats.shape == (graph.num_atoms, 8)
    torch.testing.assert_close(out_first.node_feats, out_full.node_feats[:, :32])
    torch.testing.assert_close(out_last.node_feats, out_full.node_feats[:, 32:])
    torch.testing.assert_close(out_last.energy, out_full.energy)
    # the features are exactly MACE's own node_feats output
    data = full.input_dict(graph)
    native = model(data, compute_force=False)["node_feats"]
    torch.testing.assert_close(out_full.node_feats, native, atol=0, rtol=0)
    # hidden_lmax=2 exposes l = 2
    assert "2e" in str(MACEAdapter(model_l2).node_irreps)
    assert MACEAdapter(model_l2, layers=[0]).node_irreps == o3().Irreps("8x0e+8x1o+8x2e")
    with pytest.raises(ValueError, match="out of range"):
        MACEAdapter(model, layers=[2])
    with pytest.raises(ValueError, match="empty"):
        MACEAdapter(model, layers=[])


def test_irreps_above_l2_are_dropped():
    backbone = make_random_mace(channels=4, max_ell=2, hidden_lmax=3, correlation=2, seed=3)
    assert "3o" in str(backbone.products[0].linear.irreps_out)
    adapter = MACEAdapter(backbone)
    assert adapter.node_irreps == o3().Irreps("4x0e+4x1o+4x2e+4x0e")
    graph = graph_of(molecule("CH3CH2OH"))
    out = adapter(graph)
    native = backbone(adapter.input_dict(graph), compute_force=False)["node_feats"]
    kept = torch.cat([native[:, :36], native[:, 64:]], dim=1)  # 4x(1+3+5) kept, 4x7 dropped
    torch.testing.assert_close(out.node_feats, kept, atol=0, rtol=0)
    D = adapter.node_irreps.D_from_matrix(random_rotation(seed=3))
    rotated = adapter(graph.with_positions(graph.positions @ random_rotation(seed=3).T))
    torch.testing.assert_close(rotated.node_feats, out.node_feats @ D.T, atol=1e-10, rtol=0)


# ---------------------------------------------------------------------- heads, errors
def test_multi_head_selection(molecules):
    backbone = make_random_mace(hidden_lmax=1, seed=4, heads=["pbe", "Default"], **TINY)
    default = MACEAdapter(backbone)
    assert default.head == "Default" and default.head_index == 1
    pbe = MACEAdapter(backbone, head="pbe")
    assert MACEAdapter(backbone, head=0).head == "pbe"
    assert MACEAdapter(backbone, head=-1).head == "Default"
    graph = graph_of(molecules)
    for adapter in (default, pbe):
        energy, forces = adapter_energy_forces(adapter, graph)
        ref_energy, ref_forces = mace_pipeline(backbone, molecules, head=adapter.head)
        torch.testing.assert_close(energy, ref_energy, atol=1e-10, rtol=0)
        torch.testing.assert_close(forces, ref_forces, atol=1e-10, rtol=0)
    assert not torch.allclose(default(graph).energy, pbe(graph).energy)
    with pytest.raises(ValueError, match="unknown head 'r2scan'"):
        MACEAdapter(backbone, head="r2scan")


def test_unknown_element_is_named(model):
    adapter = MACEAdapter(model)
    atoms = Atoms("FeH2O", positions=np.array([[0, 0, 0], [1.6, 0, 0], [0, 1.6, 0], [0, 0, 2]]))
    with pytest.raises(UnsupportedElementError, match=r"Fe \(Z=26\).*H, C, N, O"):
        adapter(graph_of(atoms))
    with pytest.raises(UnsupportedElementError, match="Fe"):
        adapter.native_energy_forces(graph_of(atoms))


def test_make_random_mace_leaves_the_global_rng_and_dtype_alone():
    rng, dtype = torch.get_rng_state(), torch.get_default_dtype()
    first = make_random_mace(hidden_lmax=1, seed=5, **TINY)
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_default_dtype() == dtype
    second = make_random_mace(hidden_lmax=1, seed=5, **TINY)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)  # the seed alone decides the weights
