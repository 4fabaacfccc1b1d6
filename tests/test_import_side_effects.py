"""Importing hip-head changes no process-wide state (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import io, json, warnings
import torch

filters = list(warnings.filters)
dtype = torch.get_default_dtype()
rng = torch.get_rng_state().clone()

import hip_head
import hip_head.finetune.data
import hip_head.finetune.losses

buffer = io.BytesIO()
torch.save({"s": slice(1, 2)}, buffer)
buffer.seek(0)
try:
    torch.load(buffer, weights_only=True)
    slice_loads = True
except Exception:
    slice_loads = False
print(json.dumps({
    "filters": list(warnings.filters) == filters,
    "dtype": torch.get_default_dtype() == dtype,
    "rng": bool(torch.equal(torch.get_rng_state(), rng)),
    "slice_safe_global": slice in torch.serialization.get_safe_globals(),
    "slice_loads_weights_only": slice_loads,
}))
"""


def test_import_leaves_dtype_rng_warning_filters_and_torch_load_as_they_were():
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=300
    )
    state = json.loads(out.stdout.strip().splitlines()[-1])
    assert state == {
        "filters": True,
        "dtype": True,
        "rng": True,
        "slice_safe_global": False,
        "slice_loads_weights_only": False,
    }, state


def test_building_a_head_keeps_the_default_dtype_and_warning_filters():
    import warnings

    import torch

    from hip_head import o3
    from hip_head.readout import HessianReadout

    filters, dtype = list(warnings.filters), torch.get_default_dtype()
    rng = torch.get_rng_state().clone()
    HessianReadout(o3.Irreps("4x0e + 2x1o + 1x2e"), channels=4)
    assert list(warnings.filters) == filters and torch.get_default_dtype() == dtype
    assert not torch.equal(torch.get_rng_state(), rng)  # initialisation draws from the caller's RNG
