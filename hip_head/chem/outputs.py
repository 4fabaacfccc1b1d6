"""Files and plots of transition-state searches and IRCs.

:func:`plot_profile` draws an IRC's energy profile; :func:`write_irc_files` and
:func:`write_ts_files` write what ``hip irc`` and ``hip ts`` leave in their output folders
(extxyz structures with their energies, the profile plot, a JSON summary); :func:`write_json`
writes any JSON-ready summary. Structures are written as extended XYZ (Å; ``info["energy"]``
eV where known).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hip_head.chem.irc import IRCResult
    from hip_head.chem.ts import TSResult

__all__ = ["plot_profile", "write_irc_files", "write_json", "write_ts_files"]


def plot_profile(result: IRCResult, path: str | Path, title: str | None = None) -> Path:
    """Draw the IRC energy profile (energy relative to the reverse end against the arc length
    from the TS) to a PNG (matplotlib, Agg canvas).

    Args:
        result: the IRC.
        path: the PNG file to write.
        title: plot title (default: the imaginary frequency and barriers).

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    s, e = result.profile()
    ref = result.reverse.energy_eV
    fig = Figure(figsize=(6.0, 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(s, e - ref, "-", color="C0", lw=1.5)
    ax.plot([s[0], 0.0, s[-1]], [e[0] - ref, result.ts_energy_eV - ref, e[-1] - ref], "o",
            color="C3")  # fmt: skip
    ax.axvline(0.0, color="0.7", lw=0.8, ls=":")
    ax.set_xlabel("arc length from the TS (Å)")
    ax.set_ylabel("energy relative to the reverse end (eV)")
    b_rev, b_fwd = result.barriers_eV
    ax.set_title(
        title
        or f"IRC: {abs(result.imaginary_cm1):.0f}i cm⁻¹, barriers {b_rev:.3f} / {b_fwd:.3f} eV"
    )
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON (trailing newline) to ``path``; returns the path."""
    path = Path(path)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def write_irc_files(result: IRCResult, out: Path, prefix: str = "irc") -> dict[str, str]:
    """Write an IRC's files into ``out`` (created if missing).

    Files: ``<prefix>_ends.xyz`` (reverse end, forward end; ``info`` with ``direction`` and
    ``how``), ``<prefix>_path.xyz`` (the whole path, reverse end → TS → forward end, with
    energies) and ``<prefix>_profile.png`` (:func:`plot_profile`).

    Returns:
        ``{"ends" | "path" | "profile": file name}``.
    """
    from ase.io import write

    out.mkdir(parents=True, exist_ok=True)
    files = {
        "ends": out / f"{prefix}_ends.xyz",
        "path": out / f"{prefix}_path.xyz",
        "profile": out / f"{prefix}_profile.png",
    }
    ends = []
    for branch in (result.reverse, result.forward):
        end = branch.end.copy()
        end.info.update(direction=branch.direction, how=branch.how)
        ends.append(end)
    write(files["ends"], ends, format="extxyz")
    write(files["path"], result.path(), format="extxyz")
    plot_profile(result, files["profile"])
    return {k: str(v) for k, v in files.items()}


def write_ts_files(result: TSResult, out: Path) -> dict[str, str]:
    """Write a transition-state search's files into ``out`` (created if missing).

    Files: ``ts.xyz`` (the final geometry with ``verdict`` and, when found,
    ``imaginary_cm1``), ``path.xyz`` (the interpolated path, when there is one), the IRC's files
    (:func:`write_irc_files`, when it ran) and ``result.json`` (the summary with the file list).

    Returns:
        ``{what: file name}`` of everything written.
    """
    from ase.io import write

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    ts = result.atoms.copy()
    ts.info.update(verdict=result.verdict)
    if result.imaginary_cm1 is not None:
        ts.info["imaginary_cm1"] = result.imaginary_cm1
    write(out / "ts.xyz", ts, format="extxyz")
    files["ts"] = str(out / "ts.xyz")
    if result.path:
        write(out / "path.xyz", result.path, format="extxyz")
        files["path"] = str(out / "path.xyz")
    if result.irc is not None:
        files.update(write_irc_files(result.irc, out))
    write_json(out / "result.json", {**result.summary(), "files": files})
    files["result"] = str(out / "result.json")
    return files
