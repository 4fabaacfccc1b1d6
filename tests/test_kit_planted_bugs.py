"""The kit tests itself: every planted adapter bug fails check_adapter, naming its property.

``check_adapter`` runs with its defaults (float32 then float64, ``max_examples=10``), as an
adapter author would call it; a bug the kit does not catch, or blames on another property,
fails here.
"""

from __future__ import annotations

import functools
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hip_head
from hip_head.testing import (
    PROPERTIES,
    AdapterCheckError,
    assert_batch_independent,
    check_adapter,
    molecules,
)
from tests.planted_bugs import CATALOGUE, BatchStandardisation, ChargedToy
from tests.toy_backbone import make_toy


@pytest.mark.parametrize("bug", list(CATALOGUE), ids=lambda name: name.replace(" ", "-"))
def test_the_kit_catches_the_planted_bug_and_names_its_property(bug):
    planted = CATALOGUE[bug]
    assert planted.prop in PROPERTIES
    with pytest.raises(AdapterCheckError) as info:
        check_adapter(make_toy(), adapter=planted.adapter, **planted.options)
    message = str(info.value)
    print(message)
    assert info.value.property_name == planted.prop, message
    assert message.startswith(f"{planted.prop} [float32]"), message
    assert "ase.Atoms(numbers=" in message
    for fragment in planted.must_mention:
        assert fragment in message, (fragment, message)


def test_a_charge_aware_adapter_passes_with_mixed_charges():
    report = check_adapter(make_toy(), adapter=ChargedToy, charges=(-1, 0, 1), max_examples=4)
    assert report.charges == (-1, 0, 1)
    assert report.worst[("float64", "batching")] < 1e-12


def test_batching_names_the_molecule_its_batch_mates_and_the_output_that_moved():
    with pytest.raises(AdapterCheckError) as info:
        check_adapter(make_toy(), adapter=BatchStandardisation, dtypes=(torch.float64,))
    message = str(info.value)
    assert message.startswith("batching [float64] (molecule 0 of a batch of 3")
    assert re.search(
        r"the (energy|forces|hessian) moved: max \|Δ(energy|forces|hessian)\|", message
    )
    assert message.count("ase.Atoms(numbers=") == 3  # the molecule and its two batch-mates


@functools.cache
def _standardising_model() -> torch.nn.Module:
    return hip_head.wrap(make_toy(), adapter=BatchStandardisation)


@settings(max_examples=10, deadline=None, database=None)
@given(batch=st.lists(molecules(min_atoms=2, max_atoms=6), min_size=2, max_size=3, unique_by=len))
def test_batch_standardisation_is_seen_in_every_generated_mixed_batch(batch):
    """Not only on the probe: any batch of molecules of different sizes exposes it."""
    with pytest.raises(AdapterCheckError, match=r"^batching \[float64\]"):
        assert_batch_independent(_standardising_model(), batch)
