"""The worked example of docs/adapters.md runs as written and passes the test kit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from ase.build import molecule

import hip_head
from hip_head.adapters.base import _REGISTRY
from hip_head.graph import AtomicGraph
from tests.adapters.kit_checks import (
    assert_features_rotate_with_e3nn,
    assert_passes_the_kit,
    molecules_graph,
)
from tests.adapters.toy_library import make_toy_library_model

DOC = Path(__file__).resolve().parents[2] / "docs" / "adapters.md"


@pytest.fixture(scope="module")
def adapter_cls():
    """The ``ToyLibraryAdapter`` class, defined by executing the page's code block."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    (source,) = [b for b in blocks if "class ToyLibraryAdapter" in b]
    lines = len(source.splitlines())
    assert lines <= 130, f"the worked example grew to {lines} lines"
    namespace: dict = {"__name__": "docs_adapters_example"}
    exec(compile(source, str(DOC), "exec"), namespace)  # noqa: S102 - our own docs
    yield namespace["ToyLibraryAdapter"]
    _REGISTRY.pop("toy_library", None)  # the example registers itself; leave no trace


def test_the_worked_example_passes_the_kit(adapter_cls):
    assert_passes_the_kit(make_toy_library_model(), parity=True, max_examples=4, max_atoms=8)


def test_wrap_finds_it_and_the_features_rotate_as_declared(adapter_cls):
    model = hip_head.wrap(make_toy_library_model(), channels=8)
    assert type(model.adapter) is adapter_cls
    assert str(model.adapter.node_irreps) == "8x0e+8x1o+8x2e"
    assert_features_rotate_with_e3nn(model.adapter, molecules_graph())


def test_its_neighbour_list_keeps_what_the_library_truncates(adapter_cls):
    adapter = adapter_cls(make_toy_library_model(max_neighbors=2))
    graph = AtomicGraph.from_ase(molecule("CH4"), dtype=torch.float64)
    with pytest.warns(UserWarning, match="max_neighbors=2"):
        energy = adapter(graph).energy
    native, _ = adapter.native_energy_forces(graph)  # the library's own, truncated search
    assert not torch.allclose(energy, native)
