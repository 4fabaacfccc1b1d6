"""The MACE adapter passes the shipped test kit, float32 and float64, reflections included."""

from __future__ import annotations

import pytest
import torch

from hip_head.adapters.mace import make_random_mace
from hip_head.testing import check_adapter

pytestmark = pytest.mark.mace


@pytest.mark.parametrize("hidden_lmax", [1, 2])
def test_mace_passes_the_kit(hidden_lmax):
    backbone = make_random_mace(
        channels=8, max_ell=2, hidden_lmax=hidden_lmax, correlation=2, dtype=torch.float64
    )
    report = check_adapter(
        backbone, dtypes=(torch.float32, torch.float64), max_examples=4, max_atoms=10, channels=8
    )
    assert report.reflections_checked and report.native_checked
    assert set(report.dtypes) == {"float32", "float64"}
    equivariance64 = {
        prop: err
        for (dtype, prop), err in report.worst.items()
        if dtype == "float64" and prop in ("rotation", "reflection", "translation", "permutation")
    }
    assert len(equivariance64) == 4, report.worst
    assert max(equivariance64.values()) < 1e-10, equivariance64  # the documented float64 bar


def test_kit_catches_a_mace_adapter_with_a_wrong_l1_basis():
    from hip_head.adapters.base import BackboneOutput
    from hip_head.adapters.mace import MACEAdapter

    class WrongBasisMACE(MACEAdapter):
        name = "mace-wrong-basis"

        def forward(self, graph):
            out = super().forward(graph)
            feats = out.node_feats.clone()
            for (mul, ir), sl in zip(out.node_irreps, out.node_irreps.slices()):
                if ir.l == 1:
                    block = feats[:, sl].reshape(-1, mul, 3)[..., [1, 2, 0]]
                    feats[:, sl] = block.reshape(-1, mul * 3)
            return BackboneOutput(out.energy, feats, out.node_irreps)

    backbone = make_random_mace(channels=8, max_ell=2, correlation=2, dtype=torch.float64)
    with pytest.raises(AssertionError, match="equivariance"):
        check_adapter(
            backbone, adapter=WrongBasisMACE, dtypes=(torch.float64,), max_examples=2, channels=8
        )
