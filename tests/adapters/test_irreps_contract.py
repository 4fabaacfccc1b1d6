"""``hip_head.wrap`` checks an adapter's node irreps once and names the adapter breaking them."""

from __future__ import annotations

import pytest

import hip_head
from hip_head import o3
from hip_head.adapters import IrrepsContractError, check_irreps_contract
from hip_head.errors import HIPError
from tests.toy_backbone import ToyAdapter, make_toy


class HighL(ToyAdapter):
    """Declares an l = 3 irrep the head cannot read."""

    @property
    def node_irreps(self):
        return o3.Irreps("8x0e+8x1o+8x3o")


class NoScalars(ToyAdapter):
    """Only pseudo-scalars and vectors: no 0e."""

    @property
    def node_irreps(self):
        return o3.Irreps("8x0o+8x1o")


class WrongWidth(ToyAdapter):
    """Declares 8 channels but would hand the head 16."""

    @property
    def feature_dim(self) -> int:
        return 16 * 9


class NotIrreps(ToyAdapter):
    @property
    def node_irreps(self):
        return "eight scalars"


@pytest.mark.parametrize(
    ("adapter", "message"),
    [
        (HighL, r"HighL breaks .*l > 2 \(3o\).*filter_irreps"),
        (NoScalars, r"NoScalars breaks .*no 0e scalars"),
        (WrongWidth, r"WrongWidth breaks .*feature_dim = 144, but the irreps have dim 72"),
        (NotIrreps, r"NotIrreps\.node_irreps = 'eight scalars' is not an e3nn Irreps"),
    ],
)
def test_wrap_refuses_a_broken_adapter_naming_it(adapter, message):
    with pytest.raises(IrrepsContractError, match=message):
        hip_head.wrap(make_toy(), adapter=adapter, channels=8)


def test_several_broken_clauses_are_reported_together_and_the_error_is_a_hip_error():
    class Both(HighL):
        @property
        def node_irreps(self):
            return o3.Irreps("8x1o+8x3o")

    with pytest.raises(HIPError, match=r"l > 2 .*; no 0e scalars"):
        check_irreps_contract(Both(make_toy()))
    assert issubclass(IrrepsContractError, ValueError)


def test_a_sound_adapter_passes():
    adapter = ToyAdapter(make_toy())
    check_irreps_contract(adapter)  # feature_dim undeclared: only l and 0e are checked
    assert adapter.feature_dim is None
    assert isinstance(hip_head.wrap(make_toy(), channels=8).adapter, ToyAdapter)
