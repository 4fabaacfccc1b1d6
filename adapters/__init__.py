"""Backbone adapters: one module per backbone family, registered by name.

``hip_head.adapters.register`` adds an adapter; ``hip_head.wrap`` picks one from the model's
class. Backbone libraries are imported lazily, inside each adapter.
"""

from hip_head.adapters.base import (
    BackboneAdapter,
    BackboneOutput,
    filter_irreps,
    find_adapter,
    register,
    registered_adapters,
)

__all__ = [
    "BackboneAdapter",
    "BackboneOutput",
    "filter_irreps",
    "find_adapter",
    "register",
    "registered_adapters",
]
