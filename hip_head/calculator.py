"""ASE calculator around a :class:`~hip_head.model.HIPModel`, and a Sella Hessian hook.

>>> calc = HIPCalculator(hip)                       # doctest: +SKIP
>>> atoms.calc = calc; atoms.get_forces()          # doctest: +SKIP
>>> calc.get_hessian(atoms)                         # (3N, 3N) eV/Å²  # doctest: +SKIP
>>> Sella(atoms, order=1, hessian_function=calc.hessian_function)   # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from hip_head.model import HIPModel


class HIPCalculator(Calculator):
    """Energy (eV), forces (eV/Å) and Hessian (eV/Å², (3N, 3N)) from a HIP model.

    Args:
        model: the wrapped model (head or autograd Hessian).
        compute_hessian: compute the Hessian on every call (it costs little with the head);
            otherwise only when asked through :meth:`get_hessian`.
    """

    implemented_properties = ["energy", "free_energy", "forces", "hessian"]

    def __init__(self, model: HIPModel, compute_hessian: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = model.eval()
        self.compute_hessian = compute_hessian

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        """ASE entry point: fills ``self.results``."""
        super().calculate(atoms, properties, system_changes)
        want_hessian = self.compute_hessian or "hessian" in properties
        out = self.model.predict(self.atoms, compute_hessian=want_hessian)
        self.results = {
            "energy": out["energy"],
            "free_energy": out["energy"],
            "forces": out["forces"],
        }
        if want_hessian:
            self.results["hessian"] = out["hessian"]

    def get_hessian(self, atoms: Atoms | None = None) -> np.ndarray:
        """(3N, 3N) Hessian of ``atoms`` in eV/Å², index 3a + α."""
        return self.get_property("hessian", atoms)

    def hessian_function(self, atoms: Atoms) -> np.ndarray:
        """Sella's ``hessian_function`` hook: the (3N, 3N) Hessian in eV/Å²."""
        return self.get_hessian(atoms.copy())
