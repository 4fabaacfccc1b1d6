"""ASE SQLite databases: a lazy reader, writers, and the compact storage layout.

The compact layout stores each Hessian as its float32 upper triangle (:func:`pack_triu`,
3N(3N+1)/2 entries) in a database rewritten with 1 kB SQLite pages (:func:`compact_database`);
:func:`write_compact_db` does both. :class:`AseDbDataset` reads either layout as float64.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, Literal

import numpy as np

from hip_head.finetune.data.sample import (
    HessianDataError,
    HessianSample,
    OnError,
    _Checked,
    _normalize_index,
    _portable_meta,
    validate_sample,
)

__all__ = [
    "AseDbDataset",
    "compact_database",
    "pack_triu",
    "unpack_triu",
    "write_ase_db",
    "write_compact_db",
]


class AseDbDataset(_Checked):
    """ASE SQLite database reader (lazy; one row read per ``__getitem__``).

    Rows hold the structure, energy (eV) and forces (eV/Å) as calculator results, and
    ``row.data["hessian"]`` (eV/Å², flat ((3N)^2,) or (3N, 3N)) or its upper triangle
    ``row.data["hessian_triu"]`` (3N(3N+1)/2,) (:func:`pack_triu`); optional ``data["charge"]``,
    ``data["spin"]``, ``data["meta"]``.

    Args:
        path: the ``.db`` file.
        on_error: ``"raise"`` or ``"skip"`` (see :mod:`hip_head.finetune.data.sample`).

    Raises:
        HessianDataError: the file is missing or not an ASE database.
    """

    def __init__(self, path: str | os.PathLike, on_error: OnError = "raise") -> None:
        self.path = os.fspath(path)
        self._init_policy(self.path, on_error)
        if not os.path.isfile(self.path):
            raise HessianDataError(self.path, None, "no such file")
        if os.path.getsize(self.path) == 0:  # ase.db would write an empty schema into it
            raise HessianDataError(self.path, None, "the file is empty (0 bytes), not a database")
        self._db: Any = None
        self._pid: int | None = None
        try:
            # rows with status="failed" record failed calculations (label_many): not records
            self._ids = [
                row.id
                for row in self._connect().select(include_data=False)
                if row.get("status") != "failed"
            ]
        except HessianDataError:
            raise
        except Exception as exc:  # noqa: BLE001 - sqlite3 / ase errors
            raise HessianDataError(self.path, None, f"not a readable ASE database: {exc}") from exc
        finally:
            self._db = self._pid = None

    def _connect(self) -> Any:
        import ase.db

        if self._db is None or self._pid != os.getpid():
            self._db = ase.db.connect(self.path, type="db", use_lock_file=False)
            self._pid = os.getpid()
        return self._db

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_db"] = state["_pid"] = None
        return state

    def __len__(self) -> int:
        return len(self._ids)

    def _read_row(self, index: int) -> Any:
        """The ``ase.db`` row of record ``index`` (one database read)."""
        try:
            return self._connect().get(id=self._ids[index])
        except Exception as exc:  # noqa: BLE001
            raise HessianDataError(self.path, index, f"cannot read row: {exc}") from exc

    def column(self, name: str) -> list[Any]:
        """Key-value column ``name`` of every record (None where unset), without reading data.

        Args:
            name: an ASE db key (e.g. ``"split"``, ``"molecule"``, ``"kind"``) or a row
                attribute such as ``"formula"`` or ``"natoms"``.

        Returns:
            One value per record, in record order.
        """
        values = {row.id: row.get(name) for row in self._connect().select(include_data=False)}
        return [values.get(i) for i in self._ids]

    def __getitem__(self, index: int) -> HessianSample | None:
        """Read record ``index`` (0-based, in row-id order).

        Returns:
            The sample, or None when it is bad and ``on_error="skip"``.
        """
        index = _normalize_index(index, len(self))
        try:
            row = self._read_row(index)
            data = row.data or {}
            meta = dict(data.get("meta") or {})
            meta.update(source=self.path, index=index)
            energy, forces = row.get("energy"), row.get("forces")
            hessian = data.get("hessian")
            if hessian is None and "hessian_triu" in data:
                hessian = unpack_triu(data["hessian_triu"], 3 * len(row.numbers))
            sample = HessianSample(
                positions=row.positions,
                numbers=row.numbers,
                energy=None if energy is None else float(energy),
                forces=None if forces is None else np.asarray(forces, dtype=np.float64),
                hessian=None if hessian is None else np.asarray(hessian, np.float64).reshape(-1),
                charge=int(data.get("charge", 0)),
                spin=int(data.get("spin", 1)),
                meta=meta,
            )
        except HessianDataError as exc:
            self._fail(index, exc.problems)
            return None
        except (KeyError, ValueError, TypeError) as exc:
            self._fail(index, [f"malformed row: {exc!r}"])
            return None
        return self._check(sample, index)


def pack_triu(hessian: np.ndarray) -> np.ndarray:
    """Upper triangle (diagonal included) of a (3N, 3N) matrix, row-major: (3N(3N+1)/2,)."""
    hessian = np.asarray(hessian)
    return hessian[np.triu_indices(hessian.shape[0])]


def unpack_triu(packed: np.ndarray, n3: int) -> np.ndarray:
    """The symmetric (3N, 3N) float64 matrix whose upper triangle is ``packed``.

    Raises:
        HessianDataError: ``packed`` does not have 3N(3N+1)/2 entries.
    """
    packed = np.asarray(packed, dtype=np.float64).reshape(-1)
    if packed.size != n3 * (n3 + 1) // 2:
        raise HessianDataError(
            "hessian_triu", None, f"{packed.size} entries, expected {n3 * (n3 + 1) // 2}"
        )
    out = np.zeros((n3, n3))
    rows, cols = np.triu_indices(n3)
    out[rows, cols] = packed
    out[cols, rows] = packed
    return out.reshape(-1)


def compact_database(path: str | os.PathLike, page_size: int = 1024) -> int:
    """Rewrite an SQLite database with small pages (``VACUUM``); returns the new size, bytes.

    ASE stores each row's arrays as blobs; with SQLite's default 4 kB pages a small molecule's
    row still fills whole pages. 1 kB pages cut the shipped reaction set about 2x (measured
    on 20 ethanol rows: 152 kB at 4 kB pages, 67 kB at 1 kB with the triangle layout).
    """
    import sqlite3

    path = os.fspath(path)
    connection = sqlite3.connect(path)
    try:
        connection.execute(f"PRAGMA page_size={int(page_size)}")
        connection.execute("VACUUM")
    finally:
        connection.close()
    return os.path.getsize(path)


def write_compact_db(
    samples: Iterable[HessianSample],
    path: str | os.PathLike,
    key_value_pairs: Callable[[HessianSample], dict[str, Any]] | None = None,
) -> int:
    """Write a fresh, compact database: float32 upper-triangle Hessians, 1 kB pages.

    Written to ``<path>.tmp`` and renamed over ``path``, so an existing file is replaced, never
    appended to, and a crash leaves no half-written file.

    Returns:
        The number of rows written.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    if os.path.exists(tmp):
        os.remove(tmp)
    count = write_ase_db(
        samples, tmp, np.float32, key_value_pairs=key_value_pairs, hessian_layout="triu"
    )
    compact_database(tmp)
    os.replace(tmp, path)
    return count


def write_ase_db(
    samples: Iterable[HessianSample],
    path: str | os.PathLike,
    hessian_dtype: Any = np.float64,
    key_value_pairs: Callable[[HessianSample], dict[str, Any]] | None = None,
    hessian_layout: Literal["full", "triu"] = "full",
    validate: bool = True,
) -> int:
    """Write samples to an ASE SQLite database (appends when the file exists).

    Args:
        samples: the samples.
        path: the ``.db`` file.
        hessian_dtype: storage dtype of the Hessian (``np.float32`` halves the file; readers
            return float64 either way).
        hessian_layout: ``"full"`` stores ``data["hessian"]`` ((3N)²,); ``"triu"`` stores only
            the upper triangle (diagonal included) as ``data["hessian_triu"]``
            (3N(3N+1)/2,), about half the size; the reader rebuilds the symmetric matrix.
            Only for symmetric Hessians (the xTB labels are symmetrised).
        key_value_pairs: optional ``sample -> {key: str|int|float|bool}`` stored as ASE db
            key-value pairs (queryable with ``db.select(key=value)``).
        validate: refuse samples that fail :func:`validate_sample` (False writes them as
            they are, e.g. to build test files of bad records).

    Returns:
        The number of rows written.

    Raises:
        HessianDataError: with ``validate``, a sample fails :func:`validate_sample` (a NaN
            energy, say, would be stored by ASE as "no energy" and read back as a missing
            label); nothing of that sample is written.
    """
    import ase.db

    count = 0
    with ase.db.connect(os.fspath(path), type="db") as db:
        for sample in samples:
            problems = validate_sample(sample) if validate else []
            if problems:
                raise HessianDataError(os.fspath(path), count, problems)
            atoms = sample.to_atoms()
            atoms.info.clear()
            data: dict[str, Any] = {"charge": sample.charge, "spin": sample.spin}
            meta = _portable_meta(sample.meta)
            if meta:
                data["meta"] = meta
            if sample.hessian is not None and hessian_layout == "triu":
                data["hessian_triu"] = pack_triu(sample.hessian_matrix()).astype(hessian_dtype)
            elif sample.hessian is not None:
                data["hessian"] = np.asarray(sample.hessian, dtype=hessian_dtype)
            kvp = key_value_pairs(sample) if key_value_pairs is not None else {}
            db.write(atoms, data=data, **kvp)
            count += 1
    return count
