"""Rebuild recipes: how a backbone is described in plain data and rebuilt by its own library.

A safe hip-head file (:mod:`hip_head.serialization`) holds no pickled code: a backbone is stored
as its ``state_dict`` (tensors only) plus a JSON description from which the backbone's own
library rebuilds an identical module. A :class:`BackboneRecipe` knows one backbone family:

- ``describe(model)`` returns the JSON-ready constructor configuration;
- ``build(config, state)`` calls the library's constructor (``state`` is the saved
  ``state_dict``, for constructor arguments that are tensors, e.g. PyG's ``atomref``).

Classes and functions inside a configuration (MACE's ``interaction_cls``, its ``gate``) are
written as dotted names and resolved **only** against the recipe's allow-list
(:attr:`BackboneRecipe.objects`): a name outside it is refused, nothing is imported by name.

Recipes shipped here: MACE (``mace.modules.models.MACE`` / ``ScaleShiftMACE``, through
``mace.tools.scripts_utils.extract_config_mace_model``, as mace's own model converters do) and
torch-geometric's ``SchNet`` and ``ViSNet`` (their constructor arguments). Other backbones
(fairchem's UMA and EquiformerV2, ...) have none: they are saved by pickling and need trust to
load (see ``docs/safety.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from hip_head.errors import NoSafeRecipeError

__all__ = [
    "BackboneRecipe",
    "NoSafeRecipeError",
    "decode_value",
    "encode_value",
    "find_recipe",
    "module_differences",
    "parameter_dtype",
    "recipe_named",
    "register_recipe",
]


@dataclass(frozen=True)
class BackboneRecipe:
    """How one backbone family is described in plain data and rebuilt.

    Attributes:
        name: recipe key stored in files (``"mace"``, ``"schnet"``, ``"visnet"``).
        classes: fully qualified class names handled (``module.QualName``, exact class).
        describe: ``model -> config`` (JSON-ready after :func:`encode_value`).
        build: ``(class, config, state) -> model``: the library's constructor; ``state`` is the
            saved ``state_dict`` ([name -> tensor]).
        objects: the allow-list, ``() -> {dotted name: object}``: every class and function a
            configuration may name (the classes of :attr:`classes` included).
    """

    name: str
    classes: frozenset[str]
    describe: Callable[[nn.Module], dict[str, Any]]
    build: Callable[[type, dict[str, Any], Mapping[str, torch.Tensor]], nn.Module]
    objects: Callable[[], dict[str, Any]] = field(default=dict)


_RECIPES: dict[str, BackboneRecipe] = {}


def register_recipe(recipe: BackboneRecipe) -> BackboneRecipe:
    """Add a recipe (replacing one of the same name). Returns it."""
    _RECIPES[recipe.name] = recipe
    return recipe


def _class_path(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def find_recipe(model: nn.Module) -> BackboneRecipe | None:
    """The recipe for ``model``'s exact class, or None (subclasses need their own recipe)."""
    path = _class_path(model)
    return next((r for r in _RECIPES.values() if path in r.classes), None)


def recipe_named(name: str) -> BackboneRecipe:
    """The recipe stored in a file under ``name``.

    Raises:
        NoSafeRecipeError: no such recipe in this version of hip-head.
    """
    if name not in _RECIPES:
        raise NoSafeRecipeError(
            f"unknown backbone recipe {name!r} (this hip-head knows {sorted(_RECIPES)}); "
            "the file was written by a newer hip-head"
        )
    return _RECIPES[name]


# ---------------------------------------------------------------------- value codec
def encode_value(value: Any, objects: Mapping[str, Any]) -> Any:
    """Turn a constructor argument into JSON-ready data.

    Plain JSON values pass through (floats exactly: ``json`` writes ``repr``). Tagged forms:
    ``{"$irreps": "32x0e+32x1o"}`` (e3nn ``Irreps``), ``{"$array": [...], "dtype": ...}``
    (numpy), ``{"$tensor": [...], "dtype": ...}`` (torch), ``{"$tuple": [...]}`` and
    ``{"$object": "dotted.name"}`` for a class or function found (by identity) in ``objects``.

    Raises:
        NoSafeRecipeError: a value of any other kind (the model needs the pickle format).
    """
    import numpy as np

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if _class_path(value) == "e3nn.o3._irreps.Irreps":  # a tuple subclass: before tuples
        return {"$irreps": str(value)}
    if isinstance(value, (list, tuple)):
        items = [encode_value(v, objects) for v in value]
        return items if isinstance(value, list) else {"$tuple": items}
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) and not k.startswith("$") for k in value):
            raise NoSafeRecipeError(f"a mapping with keys {list(value)} cannot be stored safely")
        return {k: encode_value(v, objects) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return {"$array": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, torch.Tensor):
        return {"$tensor": value.detach().cpu().tolist(), "dtype": str(value.dtype)}
    for name, obj in objects.items():
        if obj is value:
            return {"$object": name}
    raise NoSafeRecipeError(
        f"the value {value!r} ({_class_path(value)}) has no safe description (it is not a plain "
        "value, an array or an allow-listed class or function)"
    )


def decode_value(data: Any, objects: Mapping[str, Any]) -> Any:
    """Inverse of :func:`encode_value`; ``{"$object": name}`` resolves only in ``objects``.

    Raises:
        NoSafeRecipeError: a name outside the allow-list, or an unknown tag.
    """
    import numpy as np

    if isinstance(data, list):
        return [decode_value(v, objects) for v in data]
    if not isinstance(data, dict):
        return data
    tags = [k for k in data if k.startswith("$")]
    if not tags:
        return {k: decode_value(v, objects) for k, v in data.items()}
    tag = tags[0]
    if tag == "$tuple":
        return tuple(decode_value(v, objects) for v in data[tag])
    if tag == "$array":
        return np.asarray(data[tag], dtype=np.dtype(str(data["dtype"])))
    if tag == "$tensor":
        return torch.tensor(data[tag], dtype=_dtype(str(data["dtype"])))
    if tag == "$irreps":
        from hip_head._e3nn import o3

        return o3().Irreps(str(data[tag]))
    if tag == "$object":
        name = str(data[tag])
        if name not in objects:
            raise NoSafeRecipeError(
                f"the file names {name!r}, which is not on this recipe's allow-list; "
                "refusing to resolve it"
            )
        return objects[name]
    raise NoSafeRecipeError(f"unknown tag {tag!r} in a model description")


def _dtype(name: str) -> torch.dtype:
    """``"torch.float32"`` -> ``torch.float32`` (torch dtypes only)."""
    value = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise NoSafeRecipeError(f"{name!r} is not a torch dtype")
    return value


# ---------------------------------------------------------------------- checks
#: Attributes every ``nn.Module`` has: bookkeeping, not configuration.
_MODULE_INTERNALS = frozenset(nn.Module().__dict__) | {"_exact_constants"}


def _comparable(value: Any) -> Any:
    """A comparable form of a plain attribute, or its class name for anything else."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return "nan" if math.isnan(value) else value
    if _class_path(value) == "e3nn.o3._irreps.Irreps":
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_comparable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _comparable(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return ("tensor", value.dtype, tuple(value.shape), value.detach().cpu().tolist())
    return ("object", _class_path(value))


def module_differences(original: nn.Module, rebuilt: nn.Module) -> list[str]:
    """Where a rebuilt module differs from the original (empty: identical).

    Compares, module by module: the class, every plain attribute (numbers, strings, lists,
    e3nn irreps, unregistered tensors; other objects by class), the full ``state_dict``
    (names, dtypes, exact values) and which parameters are frozen (``requires_grad``).

    Returns:
        Human-readable differences (at most a few per kind).
    """
    problems: list[str] = []
    mods_a, mods_b = dict(original.named_modules()), dict(rebuilt.named_modules())
    if mods_a.keys() != mods_b.keys():
        extra = sorted(mods_a.keys() ^ mods_b.keys())[:5]
        problems.append(f"module trees differ (e.g. {extra})")
    for name in mods_a.keys() & mods_b.keys():
        a, b = mods_a[name], mods_b[name]
        if _class_path(a) != _class_path(b):
            problems.append(f"{name or '<root>'}: {_class_path(a)} != {_class_path(b)}")
            continue
        if isinstance(a, torch.jit.ScriptModule):
            continue
        keys = (a.__dict__.keys() | b.__dict__.keys()) - _MODULE_INTERNALS
        for key in sorted(keys):
            if key.startswith("__") or key in ("code", "_code", "_graph", "graph"):
                continue
            va, vb = _comparable(a.__dict__.get(key)), _comparable(b.__dict__.get(key))
            if va != vb:
                problems.append(f"{name or '<root>'}.{key}: {str(va)[:60]} != {str(vb)[:60]}")
    sa, sb = original.state_dict(), rebuilt.state_dict()
    if sa.keys() != sb.keys():
        problems.append(f"state_dict keys differ: {sorted(sa.keys() ^ sb.keys())[:5]}")
    registered_a, registered_b = _registered(original), _registered(rebuilt)
    for kind, names in registered_a.items():
        if names != registered_b[kind]:
            problems.append(f"{kind} differ: {sorted(names ^ registered_b[kind])[:5]}")
    for key in sa.keys() & sb.keys():
        ta, tb = sa[key], sb[key]
        if ta.dtype != tb.dtype or ta.shape != tb.shape or not torch.equal(ta.cpu(), tb.cpu()):
            problems.append(f"state_dict[{key!r}] differs")
    return problems[:20]


def _registered(module: nn.Module) -> dict[str, set[str]]:
    """Names of the parameters, buffers and frozen parameters of ``module``."""
    parameters = dict(module.named_parameters())
    return {
        "parameters": set(parameters),
        "buffers": {name for name, _ in module.named_buffers()},
        "frozen parameters": {n for n, p in parameters.items() if not p.requires_grad},
    }


def parameter_dtype(model: nn.Module) -> torch.dtype:
    """Dtype of the first floating parameter or buffer (float32 when there is none)."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


# ---------------------------------------------------------------------- MACE
_MACE_MODELS = ("mace.modules.models.MACE", "mace.modules.models.ScaleShiftMACE")
#: Activation functions a MACE configuration may name (its ``gate``).
_GATES = ("silu", "relu", "gelu", "tanh", "sigmoid", "softplus", "elu", "selu", "mish")


def _mace_objects() -> dict[str, Any]:
    """MACE's allow-list: its two model classes, every ``nn.Module`` class defined in
    ``mace.modules.blocks`` (interaction and readout blocks) and a few activations."""
    from hip_head.adapters.base import import_backbone

    blocks = import_backbone("mace.modules.blocks", "mace-torch", "mace")
    models = import_backbone("mace.modules.models", "mace-torch", "mace")
    allowed: dict[str, Any] = {
        path: getattr(models, path.rsplit(".", 1)[1]) for path in _MACE_MODELS
    }
    for name, obj in vars(blocks).items():
        if (
            isinstance(obj, type)
            and issubclass(obj, nn.Module)
            and obj.__module__ == blocks.__name__
        ):
            allowed[f"{blocks.__name__}.{name}"] = obj
    for name in _GATES:
        allowed[f"torch.nn.functional.{name}"] = getattr(torch.nn.functional, name)
    allowed.update(
        {"torch.tanh": torch.tanh, "torch.abs": torch.abs, "torch.sigmoid": torch.sigmoid}
    )
    return allowed


class _ScaleShiftView:
    """A plain MACE seen as a ScaleShiftMACE with scale 1 and shift 0 (mace's config extractor
    accepts only ScaleShiftMACE-like classes; the two extra keys are dropped afterwards)."""

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        one = torch.ones(1, dtype=torch.float64)
        self.scale_shift = SimpleNamespace(scale=one, shift=0 * one)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


_ScaleShiftView.__name__ = _ScaleShiftView.__qualname__ = "ScaleShiftMACE"


def _describe_mace(model: nn.Module) -> dict[str, Any]:
    from hip_head.adapters.base import import_backbone

    scripts = import_backbone("mace.tools.scripts_utils", "mace-torch", "mace")
    plain = type(model).__name__ == "MACE"
    config = dict(scripts.extract_config_mace_model(_ScaleShiftView(model) if plain else model))
    if "error" in config:
        raise NoSafeRecipeError(f"mace cannot describe this model: {config['error']}")
    config["atomic_numbers"] = [int(z) for z in config["atomic_numbers"]]
    if plain:
        config.pop("atomic_inter_scale")
        config.pop("atomic_inter_shift")
    if config.get("cueq_config") is not None or getattr(model, "oeq_config", None) is not None:
        raise NoSafeRecipeError("MACE models converted to cuEquivariance/OpenEquivariance")
    return {
        "config": config,
        # mace's extractor reads the first layer's value only; keep every layer's own
        "avg_num_neighbors": [float(i.avg_num_neighbors) for i in model.interactions],
    }


def _build_mace(cls: type, description: dict[str, Any], state: Mapping[str, Any]) -> nn.Module:
    from hip_head.adapters._common import default_dtype

    with default_dtype(torch.float64):  # e3nn constants exact; the state sets every value
        model = cls(**description["config"])
    for block, value in zip(model.interactions, description["avg_num_neighbors"]):
        block.avg_num_neighbors = value
    return model


register_recipe(
    BackboneRecipe(
        name="mace",
        classes=frozenset(_MACE_MODELS),
        describe=_describe_mace,
        build=_build_mace,
        objects=_mace_objects,
    )
)


# ---------------------------------------------------------------------- torch-geometric
_SCHNET = "torch_geometric.nn.models.schnet.SchNet"
_VISNET = "torch_geometric.nn.models.visnet.ViSNet"
_PYG_GRAPH = "torch_geometric.nn.models.schnet.RadiusInteractionGraph"
_HIP_GRAPH = "hip_head.adapters.torch_geometric.RadiusGraph"


def _pyg_objects() -> dict[str, Any]:
    from hip_head.adapters.base import import_backbone

    schnet = import_backbone("torch_geometric.nn.models.schnet", "torch-geometric", "pyg")
    visnet = import_backbone("torch_geometric.nn.models.visnet", "torch-geometric", "pyg")
    return {_SCHNET: schnet.SchNet, _VISNET: visnet.ViSNet}


def _describe_schnet(model: nn.Module) -> dict[str, Any]:
    graph = model.interaction_graph
    if _class_path(graph) not in (_PYG_GRAPH, _HIP_GRAPH):
        raise NoSafeRecipeError(f"SchNet with the interaction graph {_class_path(graph)}")
    readout = type(model.readout).__name__.removesuffix("Aggregation").lower()
    return {
        "hidden_channels": int(model.hidden_channels),
        "num_filters": int(model.num_filters),
        "num_interactions": int(model.num_interactions),
        "num_gaussians": int(model.num_gaussians),
        "cutoff": float(model.cutoff),
        "max_num_neighbors": graph.max_num_neighbors,
        "hip_radius_graph": _class_path(graph) == _HIP_GRAPH,
        "graph_cutoff": float(graph.cutoff),
        "readout": readout,
        "dipole": bool(model.dipole),
        "mean": model.mean,
        "std": model.std,
        "scale": model.scale,
    }


def _build_schnet(cls: type, d: dict[str, Any], state: Mapping[str, Any]) -> nn.Module:
    graph = None
    if d["hip_radius_graph"]:
        from hip_head.adapters.torch_geometric import RadiusGraph

        graph = RadiusGraph(d["graph_cutoff"], d["max_num_neighbors"])
    model = cls(
        hidden_channels=d["hidden_channels"],
        num_filters=d["num_filters"],
        num_interactions=d["num_interactions"],
        num_gaussians=d["num_gaussians"],
        cutoff=d["cutoff"],
        interaction_graph=graph,
        max_num_neighbors=d["max_num_neighbors"],
        readout=d["readout"],
        dipole=d["dipole"],
        mean=d["mean"],
        std=d["std"],
        atomref=state.get("initial_atomref"),
    )
    model.scale = d["scale"]
    return model


def _describe_visnet(model: nn.Module) -> dict[str, Any]:
    rep = model.representation_model
    vertex = any(type(layer).__name__ == "ViS_MP_Vertex" for layer in rep.vis_mp_layers)
    return {
        "lmax": int(rep.lmax),
        "vecnorm_type": rep.vecnorm_type,
        "trainable_vecnorm": bool(rep.trainable_vecnorm),
        "num_heads": int(rep.num_heads),
        "num_layers": int(rep.num_layers),
        "hidden_channels": int(rep.hidden_channels),
        "num_rbf": int(rep.num_rbf),
        "trainable_rbf": bool(rep.trainable_rbf),
        "max_z": int(rep.max_z),
        "cutoff": float(rep.cutoff),
        "max_num_neighbors": int(rep.max_num_neighbors),
        "vertex": vertex,
        "reduce_op": model.reduce_op,
        "derivative": bool(model.derivative),
    }


def _build_visnet(cls: type, d: dict[str, Any], state: Mapping[str, Any]) -> nn.Module:
    return cls(**d, atomref=state.get("prior_model.initial_atomref"))


for _name, _path, _describe, _build in (
    ("schnet", _SCHNET, _describe_schnet, _build_schnet),
    ("visnet", _VISNET, _describe_visnet, _build_visnet),
):
    register_recipe(BackboneRecipe(_name, frozenset({_path}), _describe, _build, _pyg_objects))
