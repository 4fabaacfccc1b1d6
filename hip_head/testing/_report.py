"""What check_adapter reports: the worst error of every property, per dtype."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from ase.data import chemical_symbols

from ._compare import Property
from ._geometry import NATIVE_TOLERANCE, RELATIVE_TOLERANCE, dtype_name

#: Short names of the compared properties in :attr:`CheckReport.worst`.
REPORT_KEYS = {
    Property.TRANSLATION: "translation",
    Property.ROTATION: "rotation",
    Property.REFLECTION: "reflection",
    Property.PERMUTATION: "permutation",
    Property.BATCHING: "batching",
    Property.NATIVE: "native",
}


@dataclass
class CheckReport:
    """What :func:`check_adapter` checked, and the worst errors it saw.

    Attributes:
        adapter: the adapter's registry name.
        parity: the adapter's declared ``parity``.
        reflections_checked: whether improper transformations were checked.
        native_checked: whether energy and forces were compared with ``native_energy_forces``.
        elements: atomic numbers of the generated molecules.
        charges: total charges given to the molecules (empty: none set).
        dtypes: names of the dtypes checked.
        examples: dtype name -> number of molecules checked (explicit and generated).
        worst: (dtype name, property) -> largest error seen, divided by the quantity's scale;
            property is one of "translation", "rotation", "reflection", "permutation",
            "batching", "native" (compare with :attr:`tolerances`: the margin of each).
        tolerances: (dtype name, property) -> the relative tolerance it was checked against.
    """

    adapter: str
    parity: bool
    reflections_checked: bool
    native_checked: bool = False
    elements: tuple[int, ...] = ()
    charges: tuple[int, ...] = ()
    dtypes: tuple[str, ...] = ()
    examples: dict[str, int] = field(default_factory=dict)
    worst: dict[tuple[str, str], float] = field(default_factory=dict)
    tolerances: dict[tuple[str, str], float] = field(default_factory=dict)

    def _record(self, dtype: torch.dtype, prop: str, errors: dict[str, float] | float) -> None:
        value = max(errors.values()) if isinstance(errors, dict) else float(errors)
        key = (dtype_name(dtype), REPORT_KEYS[prop])
        self.worst[key] = max(self.worst.get(key, 0.0), value)
        table = NATIVE_TOLERANCE if prop == Property.NATIVE else RELATIVE_TOLERANCE
        self.tolerances[key] = table.get(dtype, 1e-2)

    def __str__(self) -> str:
        symbols = " ".join(chemical_symbols[z] for z in self.elements)
        lines = [
            f"check_adapter: adapter {self.adapter!r} (parity={self.parity}), elements {symbols}"
            + (f", charges {list(self.charges)}" if self.charges else ""),
            f"  reflections checked: {self.reflections_checked}; "
            f"native energy/forces checked: {self.native_checked}",
        ]
        for dtype in self.dtypes:
            lines.append(
                f"  {dtype}: {self.examples.get(dtype, 0)} molecules, worst relative errors:"
            )
            for (name, prop), value in sorted(self.worst.items()):
                if name == dtype:
                    tol = self.tolerances.get((name, prop), float("nan"))
                    lines.append(f"    {prop:<12} {value:.2e}  (tolerance {tol:.0e})")
        return "\n".join(lines)
