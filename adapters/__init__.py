"""Backbone adapters: one module per backbone family, registered by name.

``hip_head.adapters.register`` adds an adapter; ``hip_head.wrap`` picks one from the model's
class and checks its node irreps once (:func:`check_irreps_contract`). Backbone libraries are
imported lazily, inside each adapter. The plumbing adapters share (views of a backbone, feature
taps, SO(3) layout conversion, dtype and RNG contexts, the neighbour list) is re-exported here
from :mod:`hip_head.adapters._common`.
"""

from hip_head.adapters._common import (
    FeatureTap,
    SphericalEmbeddingAdapter,
    default_dtype,
    gradient_energy_forces,
    l_major_to_e3nn,
    module_view,
    natural_irreps,
    neighbor_edges,
    require_molecular,
    seeded,
    tree_view,
)
from hip_head.adapters.base import (
    BackboneAdapter,
    BackboneOutput,
    IrrepsContractError,
    check_irreps_contract,
    class_path_matches,
    filter_irreps,
    find_adapter,
    import_backbone,
    register,
    registered_adapters,
)

__all__ = [
    "BackboneAdapter",
    "BackboneOutput",
    "FeatureTap",
    "IrrepsContractError",
    "SphericalEmbeddingAdapter",
    "check_irreps_contract",
    "class_path_matches",
    "default_dtype",
    "filter_irreps",
    "find_adapter",
    "gradient_energy_forces",
    "import_backbone",
    "l_major_to_e3nn",
    "module_view",
    "natural_irreps",
    "neighbor_edges",
    "register",
    "registered_adapters",
    "require_molecular",
    "seeded",
    "tree_view",
]
