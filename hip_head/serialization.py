"""Model files that open without running code: the safe HIP and backbone formats.

``torch.load(weights_only=False)`` unpickles, and unpickling a crafted file can run any
command. hip-head therefore writes files that ``torch.load(weights_only=True)`` reads: only
tensors, plain containers, numbers and strings. A model is stored as its ``state_dict`` plus a
JSON description from which the model is rebuilt through its own classes:

HIP model file (``format: "hip-head/2"``, written by :meth:`hip_head.HIPModel.save`)::

    {"format": "hip-head/2",
     "description": JSON text: {"hessian_method": "head",
                                "adapter":  {"name": "mace", "options": {"layers": [0, 1], ...}},
                                "head":     {"class": "hip_head.readout.HessianReadout",
                                             "options": {constructor arguments}, ...},
                                "backbone": {"recipe": "mace", "class": "...ScaleShiftMACE",
                                             "config": {constructor configuration}, ...},
                                "versions": {...}},
     "tensors": {"backbone": state_dict, "adapter": state_dict, "head": state_dict}}

Backbone file (``format: "hip-head-backbone/1"``, written by :func:`save_backbone`)::

    {"format": "hip-head-backbone/1", "description": JSON text (the "backbone" part above),
     "state_dict": state_dict}

Adapters are resolved through the adapter registry, backbones through a
:class:`~hip_head.recipes.BackboneRecipe` whose allow-list is the only place a class or
function named in a file can come from. Backbones without a recipe (and any ``torch.save(model)``
pickle, e.g. a MACE ``.model`` file) still load, but only with ``trust=True``: without it
:class:`UntrustedFileError` says why and how. See ``docs/safety.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hip_head.errors import HIPError, InvalidArgumentError, UntrustedFileError
from hip_head.quiet import quiet_model_loading
from hip_head.recipes import (
    NoSafeRecipeError,
    decode_value,
    encode_value,
    find_recipe,
    module_differences,
    parameter_dtype,
    recipe_named,
)
from hip_head.safe_files import (
    PickleFormatWarning,
    _atomic_save,
    _describing,
    _load_state,
    _read,
    _registration,
    _restore_registration,
    _versions,
)

__all__ = [
    "BACKBONE_FORMAT",
    "FORMAT",
    "LEGACY_FORMAT",
    "NoSafeRecipeError",
    "PickleFormatWarning",
    "UntrustedFileError",
    "convert",
    "has_safe_recipe",
    "load_backbone",
    "load_model",
    "main_convert",
    "save_backbone",
    "save_model",
]

#: Safe HIP model files (tensors + JSON description).
FORMAT = "hip-head/2"
#: Pickled HIP model files (``{"format": "hip-head/1", "model": HIPModel}``); need trust.
LEGACY_FORMAT = "hip-head/1"
#: Safe backbone files (tensors + JSON description).
BACKBONE_FORMAT = "hip-head-backbone/1"

#: pip distribution of each recipe's library (recorded in files, named in errors).
_DISTRIBUTIONS = {"mace": "mace-torch", "schnet": "torch-geometric", "visnet": "torch-geometric"}


#: How a Python caller opens a trusted pickle (named in :class:`UntrustedFileError`).
_PASS_TRUST = "pass trust=True"


# ---------------------------------------------------------------------- backbones
def has_safe_recipe(backbone: nn.Module) -> bool:
    """True when ``backbone`` can be written in the safe format (a recipe handles its class)."""
    return find_recipe(backbone) is not None


def describe_backbone(backbone: nn.Module) -> dict[str, Any]:
    """The JSON-ready description of a backbone (recipe, class, dtype, configuration).

    Raises:
        NoSafeRecipeError: no recipe handles the backbone's class, or its configuration holds
            a value the recipe cannot describe.
    """
    recipe = find_recipe(backbone)
    if recipe is None:
        cls = type(backbone)
        raise NoSafeRecipeError(
            f"no safe-format recipe for backbones of class {cls.__module__}.{cls.__qualname__} "
            "(hip-head has recipes for MACE / ScaleShiftMACE, torch-geometric SchNet and ViSNet)"
        )
    objects = recipe.objects()
    distribution = _DISTRIBUTIONS.get(recipe.name)
    with _describing(f"the {recipe.name} backbone"):
        config = recipe.describe(backbone)
    return {
        "recipe": recipe.name,
        "class": f"{type(backbone).__module__}.{type(backbone).__qualname__}",
        "dtype": str(parameter_dtype(backbone)),
        "config": encode_value(config, objects),
        "versions": _versions(*([distribution] if distribution else [])),
        "registration": _registration(backbone),
    }


def build_backbone(description: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Rebuild a backbone from its description and ``state_dict`` (inverse of
    :func:`describe_backbone`); every class or function named comes from the recipe's
    allow-list.

    Returns:
        The backbone in eval mode, its tensors on the device they were loaded to.

    Raises:
        NoSafeRecipeError: unknown recipe or class, a name outside the allow-list, or a
            configuration the installed library no longer accepts.
        MissingBackboneError: the backbone's library is not installed.
    """
    recipe = recipe_named(str(description["recipe"]))
    with quiet_model_loading():  # importing the library may print notices (mace's cuEq line)
        objects = recipe.objects()
    name = str(description["class"])
    if name not in recipe.classes or name not in objects:
        raise NoSafeRecipeError(f"class {name!r} is not handled by the {recipe.name!r} recipe")
    config = decode_value(description["config"], objects)
    try:
        with quiet_model_loading():
            model = recipe.build(objects[name], config, state)
    except Exception as exc:  # noqa: BLE001 - whatever the library raises, say what to do
        saved = description.get("versions", {})
        raise NoSafeRecipeError(
            f"cannot rebuild the {name} backbone with the installed libraries "
            f"{_versions(_DISTRIBUTIONS.get(recipe.name, ''))} (saved with {saved}): {exc}"
        ) from exc
    _load_state(model, state, "backbone")
    _restore_registration(model, description.get("registration", {}))
    _to_state_device(model, state)
    return model.eval()


def _to_state_device(module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Move what the state did not set (non-persistent buffers) to the state's device."""
    device = next((t.device for t in state.values()), torch.device("cpu"))
    if device.type != "cpu":
        module.to(device)


def _checked_backbone_description(backbone: nn.Module) -> dict[str, Any]:
    """:func:`describe_backbone`, proven by rebuilding the backbone and comparing it."""
    description = json.loads(json.dumps(describe_backbone(backbone)))
    rebuilt = build_backbone(description, backbone.state_dict())
    differences = module_differences(backbone, rebuilt)
    if differences:
        raise NoSafeRecipeError(
            "the backbone rebuilt from its description differs from the original: "
            + "; ".join(differences)
        )
    return description


def save_backbone(backbone: nn.Module, path: str | Path) -> None:
    """Write a backbone in the safe format (``state_dict`` + JSON description).

    The description is checked before writing: the backbone is rebuilt from it and compared
    with the original (classes, every plain attribute, every tensor).

    Args:
        backbone: a model with a recipe (MACE / ScaleShiftMACE, torch-geometric SchNet, ViSNet).
        path: destination (written atomically).

    Raises:
        NoSafeRecipeError: the backbone cannot be described safely (keep its pickle and open it
            with ``trust=True``).
    """
    description = _checked_backbone_description(backbone)
    payload = {
        "format": BACKBONE_FORMAT,
        "description": json.dumps(description),
        "state_dict": backbone.state_dict(),
    }
    _atomic_save(payload, path)


def _backbone_from_payload(payload: Any, pickled: bool, path: str | Path) -> nn.Module:
    if isinstance(payload, dict) and payload.get("format") == BACKBONE_FORMAT:
        return build_backbone(json.loads(payload["description"]), payload["state_dict"])
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        raise InvalidArgumentError(
            f"{path} is a HIP model file, not a backbone: load it with hip_head.load"
        )
    if pickled and isinstance(payload, dict) and isinstance(payload.get("model"), nn.Module):
        payload = payload["model"]
    if not isinstance(payload, nn.Module):
        raise InvalidArgumentError(f"{path} holds a {type(payload).__name__}, not a model")
    return payload


def load_backbone(
    path: str | Path, *, map_location: Any = "cpu", trust: bool = False, how: str = _PASS_TRUST
) -> nn.Module:
    """Load a backbone file: the safe format always, a ``torch.save(model)`` pickle (a MACE
    ``.model`` file) only with ``trust``. The arguments are those of :func:`load_model`.

    Returns:
        The backbone module.

    Raises:
        UntrustedFileError: the file is a pickle and ``trust`` is False (nothing was run).
        ValueError: the file holds no model.
    """
    payload, pickled = _read(path, map_location, trust, how)
    return _backbone_from_payload(payload, pickled, path)


# ---------------------------------------------------------------------- HIP models
def _adapter_options(adapter: nn.Module) -> dict[str, Any]:
    """The keyword arguments that rebuild ``adapter`` around its backbone."""
    name = getattr(adapter, "name", "")
    extractors: dict[str, Callable[[Any], dict[str, Any]]] = {
        "mace": lambda a: {"layers": list(a.layers), "head": a.head},
        "schnet": lambda a: {},
        "visnet": lambda a: {},
        "uma": lambda a: {"task_name": a.task_name},
        "equiformer_v2": lambda a: {"energy_head": a.energy_head},
    }
    if name not in extractors:
        raise NoSafeRecipeError(f"no safe description of the adapter {type(adapter).__name__}")
    return extractors[name](adapter)


def _head_description(readout: nn.Module) -> dict[str, Any]:
    """The constructor arguments of a :class:`~hip_head.readout.HessianReadout`."""
    from hip_head.readout import HessianReadout

    if type(readout) is not HessianReadout:
        raise NoSafeRecipeError(f"no safe description of the head {type(readout).__name__}")
    present = {str(ir) for _, ir in readout.node_irreps if ir.l <= 2}
    hidden = {str(ir) for _, ir in readout.hidden_irreps}
    options = {
        "node_irreps": str(readout.node_irreps),
        "channels": int(readout.hidden_irreps[0].mul),
        "hessian_cutoff": float(readout.hessian_cutoff),
        "num_interactions": len(readout.interactions),
        "num_radial": int(readout.radial_basis.frequencies.numel()),
        "radial_hidden": int(readout.pair_radial.net[0].out_features),
        "avg_num_pairs": float(readout.norm) ** 2,
        "diagonal": str(readout.diagonal_mode),
        "hidden_irreps": "full" if hidden - present else "backbone",
        "block_scale": float(readout.block_scale),
    }
    # the normaliser itself, exactly (sqrt(avg_num_pairs) may differ in the last bit)
    return {"class": "hip_head.readout.HessianReadout", "options": options, "norm": readout.norm}


def _describe_model(model: nn.Module) -> tuple[dict[str, Any], dict[str, Any]]:
    """(JSON-ready description, tensors) of a :class:`~hip_head.model.HIPModel`."""
    from hip_head.adapters.base import registered_adapters
    from hip_head.model import HIPModel

    if type(model) is not HIPModel:
        raise NoSafeRecipeError(f"no safe description of {type(model).__name__}")
    adapter = model.adapter
    if registered_adapters().get(getattr(adapter, "name", "")) is not type(adapter):
        raise NoSafeRecipeError(f"the adapter {type(adapter).__name__} is not registered")
    adapter_state = {k: v for k, v in adapter.state_dict().items() if not k.startswith("backbone.")}
    description = {
        "hessian_method": model.hessian_method,
        "adapter": {
            "name": adapter.name,
            "options": encode_value(_adapter_options(adapter), {}),
        },
        "head": _head_description(model.readout),
        "backbone": describe_backbone(model.backbone),
        "versions": _versions(),
        "registration": _registration(model),
    }
    tensors = {
        "backbone": model.backbone.state_dict(),
        "adapter": adapter_state,
        "head": model.readout.state_dict(),
    }
    return json.loads(json.dumps(description)), tensors


def build_model(description: Mapping[str, Any], tensors: Mapping[str, Any]) -> nn.Module:
    """Rebuild a :class:`~hip_head.model.HIPModel` from its description and tensors.

    Returns:
        The model in eval mode.

    Raises:
        NoSafeRecipeError: an unknown adapter, head or backbone, or weights that do not fit.
    """
    from hip_head.adapters.base import registered_adapters
    from hip_head.model import HIPModel
    from hip_head.readout import HessianReadout

    backbone = build_backbone(description["backbone"], tensors["backbone"])
    adapter_spec = description["adapter"]
    adapter_cls = registered_adapters().get(str(adapter_spec["name"]))
    if adapter_cls is None:
        raise NoSafeRecipeError(f"unknown adapter {adapter_spec['name']!r}")
    adapter = adapter_cls(backbone, **decode_value(adapter_spec["options"], {}))
    own = dict(tensors.get("adapter", {}))
    missing, unexpected = adapter.load_state_dict(own, strict=False, assign=True)
    stray = [*unexpected, *(k for k in missing if not k.startswith("backbone."))]
    if stray:
        raise NoSafeRecipeError(f"the saved adapter tensors do not fit: {stray[:5]}")
    head = description["head"]
    if head.get("class") != "hip_head.readout.HessianReadout":
        raise NoSafeRecipeError(f"unknown head class {head.get('class')!r}")
    readout = HessianReadout(**head["options"])
    readout.norm = float(head["norm"])
    _load_state(readout, tensors["head"], "head")
    model = HIPModel(adapter, readout, hessian=str(description["hessian_method"]))
    _restore_registration(model, description.get("registration", {}))
    _to_state_device(model, tensors["head"])
    return model.eval()


def _safe_model_payload(model: nn.Module) -> dict[str, Any]:
    """The safe payload of a HIP, checked by rebuilding the model and comparing it."""
    with _describing("the model"):
        description, tensors = _describe_model(model)
    differences = module_differences(model, build_model(description, tensors))
    if differences:
        raise NoSafeRecipeError(
            "the model rebuilt from its description differs from the original: "
            + "; ".join(differences)
        )
    return {"format": FORMAT, "description": json.dumps(description), "tensors": tensors}


def save_model(model: nn.Module, path: str | Path, *, allow_pickle: bool = True) -> str:
    """Write a HIP: the safe format when its backbone has a recipe, else the pickle format.

    Args:
        model: the :class:`~hip_head.model.HIPModel`.
        path: destination (written atomically: temporary file, then rename).
        allow_pickle: fall back to the pickle format (with a :class:`PickleFormatWarning`)
            when the model has no safe description; False raises instead.

    Returns:
        The format written: :data:`FORMAT` or :data:`LEGACY_FORMAT`.

    Raises:
        NoSafeRecipeError: no safe description and ``allow_pickle`` is False.
    """
    try:
        payload = _safe_model_payload(model)
    except NoSafeRecipeError as exc:
        if not allow_pickle:
            raise
        warnings.warn(
            f"{path} is written in the pickle format ({LEGACY_FORMAT}), which opens only with "
            f"trust=True: {exc}",
            PickleFormatWarning,
            stacklevel=3,
        )
        payload = {"format": LEGACY_FORMAT, "model": model}
    _atomic_save(payload, path)
    return payload["format"]


def _model_from_payload(payload: Any, pickled: bool, path: str | Path) -> nn.Module:
    from hip_head.model import HIPModel

    if pickled and isinstance(payload, HIPModel):
        return payload.eval()
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if fmt == FORMAT:
        return build_model(json.loads(payload["description"]), payload["tensors"])
    if fmt == LEGACY_FORMAT and pickled and isinstance(payload.get("model"), HIPModel):
        return payload["model"].eval()
    if fmt == BACKBONE_FORMAT:
        raise InvalidArgumentError(
            f"{path} is a backbone file, not a HIP: load it with "
            "hip_head.serialization.load_backbone and wrap it with hip_head.wrap"
        )
    raise InvalidArgumentError(f"{path} is not a hip-head model file (expected format {FORMAT})")


def load_model(
    path: str | Path,
    map_location: str | torch.device | None = "cpu",
    *,
    trust: bool = False,
    how: str = "pass trust=True to hip_head.load",
) -> nn.Module:
    """Load a HIP file: the safe format always, the pickle format only with ``trust``.

    Args:
        path: the file.
        map_location: device to load onto.
        trust: allow unpickling (``weights_only=False``; a :class:`PickleFormatWarning` is
            emitted): only for files from a source you trust.
        how: how the caller's user grants trust (for the error message).

    Returns:
        The :class:`~hip_head.model.HIPModel` in eval mode.

    Raises:
        UntrustedFileError: the file holds pickled objects and ``trust`` is False.
        ValueError: not a hip-head model file.
    """
    payload, pickled = _read(path, map_location, trust, how)
    return _model_from_payload(payload, pickled, path)


# ---------------------------------------------------------------------- conversion
def convert(path_in: str | Path, path_out: str | Path, *, trust: bool = False) -> str:
    """Rewrite a HIP or backbone file in the safe format.

    A pickled file (a legacy HIP, a ``torch.save(model)`` backbone such as a MACE ``.model``)
    is unpickled, so pass ``trust=True`` only for files from a source you trust; a file that is
    already safe is rewritten without trust.

    Args:
        path_in: the file to convert.
        path_out: the safe file to write (atomically).
        trust: allow unpickling ``path_in``.

    Returns:
        ``"model"`` (a HIP was written, load it with :func:`hip_head.load`) or ``"backbone"``
        (load it with :func:`load_backbone` / ``hip finetune --backbone``).

    Raises:
        UntrustedFileError: ``path_in`` needs unpickling and ``trust`` is False.
        NoSafeRecipeError: the model's backbone has no safe recipe.
    """
    from hip_head.model import HIPModel

    how = "pass trust=True (--trust)"
    payload, pickled = _read(path_in, "cpu", trust, how)
    is_hip = isinstance(payload, HIPModel) or (
        isinstance(payload, dict) and payload.get("format") in (FORMAT, LEGACY_FORMAT)
    )
    if is_hip:
        model = _model_from_payload(payload, pickled, path_in)
        save_model(model, path_out, allow_pickle=False)
        return "model"
    save_backbone(_backbone_from_payload(payload, pickled, path_in), path_out)
    return "backbone"


def main_convert(argv: Sequence[str] | None = None) -> int:
    """``hip convert IN OUT [--trust]`` (also ``python -m hip_head.serialization``): convert a file
    to the safe format.

    Returns:
        Exit code: 0 on success, 2 when the file needs ``--trust`` or cannot be converted.
    """
    parser = argparse.ArgumentParser(
        prog="hip convert",
        description="Rewrite a HIP or backbone file in hip-head's safe (pickle-free) format.",
    )
    parser.add_argument("input", help="HIP file or backbone file (e.g. a MACE .model)")
    parser.add_argument("output", help="the safe file to write")
    parser.add_argument(
        "--trust",
        action="store_true",
        help="unpickle the input (it can run code: only for files from a source you trust)",
    )
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PickleFormatWarning)
            kind = convert(args.input, args.output, trust=args.trust)
    except (HIPError, ValueError, FileNotFoundError) as exc:
        print(f"convert: {exc}", file=sys.stderr)
        return 2
    loader = "hip_head.load" if kind == "model" else "load_backbone / hip finetune --backbone"
    print(f"wrote {args.output} ({kind}, safe format: opens with {loader} without trust)")
    return 0


if __name__ == "__main__":  # pragma: no cover - command line
    sys.exit(main_convert())
