"""Property tests for Hessian models and backbone adapters: the hip-head test kit.

Anyone writing an adapter for a new backbone proves it with one call, :func:`check_adapter`.
It wraps the backbone with a random, seeded :class:`~hip_head.HessianReadout` and checks, in
float32 and float64, one property at a time in this order (:data:`PROPERTIES`):

* **differentiability**: the adapter's energy has a gradient w.r.t. ``graph.positions``;
* **output shapes**, **exact symmetry** (H == Hᵀ bit for bit) and a **non-trivial Hessian**
  (a zero head would pass every other check vacuously), on a fixed chiral probe molecule;

then, on every element alone, on the probe and on Hypothesis-generated molecules:

* **translation invariance**: E, F and H unchanged by r -> r + t;
* **rotation equivariance** about the centroid: H -> (I⊗Q) H (I⊗Q)ᵀ, F -> F Qᵀ, E unchanged;
* **reflection equivariance** (det Q = -1), when the adapter declares ``parity = True``;
* **permutation equivariance**: H(P r) = P H(r) Pᵀ (3x3 blocks moved), F(P r) = P F(r);
* **batching**: the molecule batched between two different molecules (other sizes, other
  elements, other charges when asked) gives every molecule its own result;
* **native energy/forces**: the wrapped model's energy and forces equal the adapter's
  ``native_energy_forces`` (the bare backbone's).

A failure raises :class:`AdapterCheckError` (an ``AssertionError``) whose message starts with
the property and the dtype and names the transformation (Q, t, the permutation, the
batch-mates) and every molecule as an ``ase.Atoms(...)`` expression that rebuilds it exactly::

    import torch
    from hip_head.testing import check_adapter, float64_default

    from my_package import MyBackbone
    import my_package.hip_adapter  # noqa: F401  (importing the adapter registers it)


    def test_my_adapter():
        with float64_default():  # build in float64: the kit casts a copy to float32 itself
            backbone = MyBackbone(channels=16, num_layers=2)
        report = check_adapter(backbone)  # or check_adapter(backbone, adapter=MyAdapter)
        print(report)  # the worst relative error of every property, per dtype

The building blocks are public too: the Hypothesis strategies :func:`molecules`,
:func:`rotations`, :func:`orthogonal_matrices`, :func:`translations` and :func:`permutations`;
the assertions :func:`assert_translation_invariant`, :func:`assert_hessian_equivariant`,
:func:`assert_hessian_permutation_equivariant`, :func:`assert_batch_independent` and
:func:`assert_hessian_symmetric`; and the helpers :func:`transform_atoms`,
:func:`rotate_hessian`, :func:`permute_hessian`, :func:`random_rotation`,
:func:`random_orthogonal`, :func:`default_tolerance`. ``docs/adapters.md`` shows each in use.

Tolerances are relative to the magnitude of the quantity compared (energies and forces below
1 eV and 1 eV/Å count as 1): 1e-10 in float64 and 1e-4 in float32 for every symmetry and for
batching; 1e-6 (float64) and 1e-4 (float32) for the backbone's own energy and forces.
"""

from __future__ import annotations

try:
    import hypothesis  # noqa: F401
except ImportError as _exc:  # pragma: no cover - hypothesis is a test dependency
    raise ImportError(
        "hip_head.testing needs Hypothesis: `pip install hypothesis` (or `pip install "
        "hip-head[testing]`)"
    ) from _exc

from hip_head._e3nn import float64_default

from ._assertions import (
    assert_batch_independent,
    assert_hessian_equivariant,
    assert_hessian_permutation_equivariant,
    assert_hessian_symmetric,
    assert_translation_invariant,
)
from ._check import CheckReport, check_adapter
from ._compare import PROPERTIES, AdapterCheckError
from ._geometry import (
    default_tolerance,
    permute_hessian,
    random_orthogonal,
    random_rotation,
    rotate_hessian,
    transform_atoms,
)
from ._strategies import (
    DEFAULT_ELEMENTS,
    molecules,
    orthogonal_matrices,
    permutations,
    rotations,
    translations,
)

__all__ = [
    "DEFAULT_ELEMENTS",
    "PROPERTIES",
    "AdapterCheckError",
    "CheckReport",
    "assert_batch_independent",
    "assert_hessian_equivariant",
    "assert_hessian_permutation_equivariant",
    "assert_hessian_symmetric",
    "assert_translation_invariant",
    "check_adapter",
    "default_tolerance",
    "float64_default",
    "molecules",
    "orthogonal_matrices",
    "permutations",
    "permute_hessian",
    "random_orthogonal",
    "random_rotation",
    "rotate_hessian",
    "rotations",
    "transform_atoms",
    "translations",
]
