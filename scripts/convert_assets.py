"""Rewrite the shipped model files in hip-head's safe format, proving the predictions unchanged.

``hip_head/assets/hip_pretrained.model`` (the trained HIP, ``hip_head.load("pretrained")``)
and ``hip_head/assets/mace_pretrained.model`` (the backbone ``model.backbone: default``) are
written by ``scripts/train_hip.py`` and ``scripts/pretrain_mace.py``. A file still in the pickle
format (these are this repository's own files, hence trusted) is loaded, written again with
:func:`hip_head.serialization.save_model` / :func:`~hip_head.serialization.save_backbone`,
reloaded with ``weights_only=True`` and compared with the original on a few molecules: energies
[eV], forces [eV/Å] and Hessians [eV/Å², head and autograd] must agree bit for bit in the
model's dtype before the file is replaced. Files already in the safe format are left alone.

Usage::

    python scripts/convert_assets.py            # convert what needs it
    python scripts/convert_assets.py --check    # only report each file's format
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from ase.build import molecule

import hip_head
from hip_head import serialization
from hip_head.assets import asset_path

#: Molecules the predictions are compared on (H/C/N/O, the shipped models' elements).
MOLECULES = ("H2O", "CH3CH2OH", "HCN", "CH3NO2")


def is_safe(path: Path) -> bool:
    """True when ``path`` opens with ``torch.load(weights_only=True)``."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any refusal means "not safe"
        return False
    return True


def predictions(model: hip_head.HIPModel) -> dict[str, np.ndarray]:
    """Energy, forces and head + autograd Hessians on :data:`MOLECULES`, in the model's dtype.

    Each is evaluated twice and the second result kept: TorchScript's profiling executor
    (e3nn's scripted spherical harmonics) re-optimises after the first calls in a process,
    which moves float32 forces by an ulp; warm results are reproducible.
    """
    autograd = hip_head.HIPModel(model.adapter, model.readout, hessian="autograd").eval()
    out = {}
    for name in [*MOLECULES, *MOLECULES]:
        graph = hip_head.AtomicGraph.from_ase(molecule(name), dtype=model.dtype)
        for label, m in (("head", model), ("autograd", autograd)):
            result = m(graph, hessian_output="flat")
            for key in ("energy", "forces", "hessian"):
                out[f"{name}/{label}/{key}"] = result[key].detach().cpu().numpy()
    return out


def assert_identical(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> None:
    """Raise unless every array is bitwise equal."""
    for key, value in before.items():
        if value.dtype != after[key].dtype or not np.array_equal(value, after[key]):
            diff = float(np.max(np.abs(value.astype(np.float64) - after[key])))
            raise AssertionError(f"{key} changed by up to {diff:.3e} after conversion")


def convert_hip(path: Path) -> None:
    """Rewrite the shipped HIP in the safe format (checked before replacing)."""
    original = serialization.load_model(path, trust=True)
    before = predictions(original)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        new = Path(tmp) / path.name
        fmt = serialization.save_model(original, new, allow_pickle=False)
        assert fmt == serialization.FORMAT and is_safe(new)
        assert_identical(before, predictions(serialization.load_model(new)))
        os.replace(new, path)


def convert_backbone(path: Path, meta_path: Path) -> None:
    """Rewrite the shipped backbone in the safe format (checked before replacing)."""
    original = serialization.load_backbone(path, trust=True)
    hip = hip_head.wrap(original, channels=4)  # any head: the backbone's features feed it
    before = predictions(hip)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        new = Path(tmp) / path.name
        serialization.save_backbone(original, new)
        assert is_safe(new)
        adapter = type(hip.adapter)(serialization.load_backbone(new))
        assert_identical(before, predictions(hip_head.HIPModel(adapter, hip.readout).eval()))
        os.replace(new, path)
    meta = json.loads(meta_path.read_text())
    meta["file_size_bytes"] = path.stat().st_size
    meta["file_format"] = (
        f"hip-head safe backbone file ({serialization.BACKBONE_FORMAT}: state_dict + JSON "
        "description, opens with torch.load(weights_only=True)); load with "
        "hip_head.serialization.load_backbone(path)"
    )
    meta_path.write_text(json.dumps(meta, indent=2, ensure_ascii=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report the formats")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    hip, backbone = asset_path("hip_pretrained.model"), asset_path("mace_pretrained.model")
    todo = [
        (hip, lambda: convert_hip(hip)),
        (backbone, lambda: convert_backbone(backbone, asset_path("mace_pretrained.json"))),
    ]
    for path, run in todo:
        if is_safe(path):
            print(f"{path.name}: safe format, {path.stat().st_size} bytes")
        elif args.check:
            print(f"{path.name}: pickle format (run without --check to convert)")
        else:
            run()
            print(f"{path.name}: converted, predictions identical, {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
