"""The knobs and the level of theory of reaction discovery and framing.

:class:`ReactionSettings` holds every count, limit and threshold of
:func:`~hip_head.finetune.reactions.discover_reactions` and
:func:`~hip_head.finetune.reaction_data.reaction_frames` (defaults: the shipped reaction
dataset); :data:`XTB_METHOD` and :data:`XTB_ACCURACY` are the tblite level of both discovery and
labels.

Units: Å, eV/Å, s, K.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["REACTION_KINDS", "XTB_ACCURACY", "XTB_METHOD", "ReactionSettings"]

#: Values of ``info["kind"]`` / ``meta["kind"]`` on reaction frames.
REACTION_KINDS = ("ts", "irc", "minimum", "thermal")

#: The level of theory of discovery and labels (tblite method and accuracy).
XTB_METHOD = "GFN2-xTB"
XTB_ACCURACY = 0.01


@dataclass
class ReactionSettings:
    """Knobs of discovery and framing (defaults: the shipped reaction dataset).

    Attributes:
        n_random: random distortions of the minimum (Gaussian, ``random_sigma`` Å per coordinate).
        random_sigma: standard deviation of the random distortion, Å.
        n_hydrogen_moves: hydrogen-transfer guesses (seeded choice among all candidates).
        n_soft_modes: softest Eckart modes tried (± ``mode_displacement``).
        n_hydrogen_modes: stiff modes with the most hydrogen motion tried (± 0.5 Å).
        mode_displacement: displacement along the soft modes, Å.
        saddle_steps: Sella step limit per start.
        saddle_seconds: wall-time limit per Sella run, s.
        saddle_fmax: Sella convergence threshold, eV/Å; a saddle is kept up to 3x this.
        molecule_seconds: no new start is tried after this long on one molecule, s.
        mode_step: first step along the imaginary mode when Sella's IRC fails, Å (Cartesian norm).
        irc_steps: Sella IRC step limit per direction.
        descent_steps: mass-weighted steepest-descent step limit per direction.
        descent_fmax: the descent hands over to BFGS below this largest force, eV/Å.
        relax_fmax: final relaxation threshold of each end, eV/Å.
        energy_tol: TS energies closer than this (eV) with the same end graphs are duplicates.
        bond_scale: bond when distance < bond_scale x (sum of covalent radii); 1.25 keeps H₂
            (0.74 Å against 1.25 x 0.62 Å) bonded.
        n_irc_frames: frames kept along each descent path.
        n_ts_thermal: normal-mode frames around the TS (300 K plus ± ``ts_amplitude`` Å along
            the imaginary mode).
        ts_amplitude: largest displacement along the imaginary mode, Å.
        n_minimum_thermal: normal-mode frames around each minimum (half at 300 K, half at
            1000 K).
    """

    n_random: int = 8
    random_sigma: float = 0.3
    n_hydrogen_moves: int = 10
    n_soft_modes: int = 1
    n_hydrogen_modes: int = 1
    mode_displacement: float = 0.3
    saddle_steps: int = 100
    saddle_seconds: float = 30.0
    saddle_fmax: float = 0.01
    molecule_seconds: float = 400.0
    mode_step: float = 0.15
    irc_steps: int = 40
    descent_steps: int = 300
    descent_fmax: float = 0.1
    relax_fmax: float = 0.005
    energy_tol: float = 0.01
    bond_scale: float = 1.25
    n_irc_frames: int = 6
    n_ts_thermal: int = 24
    ts_amplitude: float = 0.25
    n_minimum_thermal: int = 8
