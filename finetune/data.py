"""Hessian datasets: readers for HORM LMDB, ASE SQLite databases and extended XYZ.

Every reader yields :class:`HessianSample` records in the same units and layout, so one molecule
read from any of the formats gives an identical sample:

- positions (N, 3) Å, float64; atomic numbers (N,) int64;
- energy eV (or None), forces (N, 3) eV/Å (or None);
- Hessian flat ``((3N)**2,)`` eV/Å², the row-major (3N, 3N) matrix with index ``3a + α``
  (atom-major, xyz inner): the HORM layout and the per-molecule block of the flat batch layout
  of :mod:`hip_head.assemble`.

The LMDB and database readers are lazy: constructing them reads only the record count; each
``dataset[i]`` reads and decodes one record. They reopen their file handle in each process, so
they are safe with ``torch.utils.data.DataLoader`` workers.

Bad records are checked by :func:`validate_sample`. Readers take ``on_error="raise"`` (raise
:class:`HessianDataError` naming the file, record and problem) or ``on_error="skip"`` (warn once
per bad record; ``dataset[i]`` then returns ``None``, iteration skips it and
:func:`collate_hessian` drops it).

Note:
    HORM LMDB values are pickles: only open files you trust (unpickling can run code).
"""

from __future__ import annotations

import bisect
import io
import os
import pickle
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols

from hip_head.errors import HIPError
from hip_head.graph import AtomicGraph

__all__ = [
    "HORM_ONE_HOT_NUMBERS",
    "MAX_ABS_HESSIAN",
    "AseDbDataset",
    "HessianDataError",
    "HessianDataset",
    "HessianSample",
    "HormLMDBDataset",
    "collate_hessian",
    "hessian_rms",
    "compact_database",
    "molecule_key",
    "pack_triu",
    "unpack_triu",
    "read_extxyz",
    "sample_from_atoms",
    "split_by_molecule",
    "validate_sample",
    "write_ase_db",
    "write_compact_db",
    "write_extxyz",
    "write_horm_lmdb",
]

#: Atomic numbers of the HORM ``one_hot`` columns (H, C, N, O, F).
HORM_ONE_HOT_NUMBERS = (1, 6, 7, 8, 9)

#: Largest plausible |Hessian entry|, eV/Å². Larger values usually mean wrong units.
MAX_ABS_HESSIAN = 1e4

#: Meta keys the readers add themselves (file and record index); not written back to files.
SOURCE_META_KEYS = ("source", "index")

OnError = Literal["raise", "skip"]


class HessianDataError(HIPError, ValueError):
    """A Hessian data file or record is unreadable or fails validation.

    Attributes:
        source: the file (or other source name).
        index: the record index or key, or None when the whole file is bad.
        problems: what is wrong.
    """

    def __init__(self, source: str, index: int | str | None, problems: str | Sequence[str]) -> None:
        self.source = str(source)
        self.index = index
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        where = self.source if index is None else f"{self.source}: record {index}"
        super().__init__(f"{where}: {'; '.join(self.problems)}")


# ---------------------------------------------------------------------------------- the sample
@dataclass
class HessianSample:
    """One structure with its labels.

    Attributes:
        positions: (N, 3) float64 Cartesian positions, Å.
        numbers: (N,) int64 atomic numbers.
        energy: energy, eV, or None.
        forces: (N, 3) float64 forces, eV/Å, or None.
        hessian: ((3N)**2,) float64 flat Hessian, eV/Å², row-major (3N, 3N) with index
            ``3a + α``, or None.
        charge: total charge, e.
        spin: spin multiplicity.
        meta: free-form metadata, e.g. ``rxn``, ``molecule``; readers add ``source`` (the file)
            and ``index`` (the record index).
    """

    positions: np.ndarray
    numbers: np.ndarray
    energy: float | None = None
    forces: np.ndarray | None = None
    hessian: np.ndarray | None = None
    charge: int = 0
    spin: int = 1
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.float64)
        self.numbers = np.asarray(self.numbers).astype(np.int64).reshape(-1)
        if self.energy is not None:
            self.energy = float(self.energy)
        if self.forces is not None:
            self.forces = np.asarray(self.forces, dtype=np.float64)
        if self.hessian is not None:
            self.hessian = np.asarray(self.hessian, dtype=np.float64).reshape(-1)
        self.charge = int(self.charge)
        self.spin = int(self.spin)

    @property
    def num_atoms(self) -> int:
        """Number of atoms N."""
        return int(self.numbers.shape[0])

    def hessian_matrix(self) -> np.ndarray | None:
        """The Hessian as a (3N, 3N) matrix, eV/Å² (a view), or None."""
        if self.hessian is None:
            return None
        n3 = 3 * self.num_atoms
        return self.hessian.reshape(n3, n3)

    def to_atoms(self) -> Atoms:
        """An ``ase.Atoms`` with the labels attached.

        Returns:
            Atoms with positions (Å); energy (eV) and forces (eV/Å) in a
            ``SinglePointCalculator``; ``info["charge"]``, ``info["spin"]``,
            ``info["hessian"]`` (flat ((3N)**2,), eV/Å²) and ``info["meta"]`` (without the
            reader-added ``source``/``index``).
        """
        atoms = Atoms(numbers=self.numbers, positions=self.positions)
        atoms.info["charge"] = self.charge
        atoms.info["spin"] = self.spin
        meta = _portable_meta(self.meta)
        if meta:
            atoms.info["meta"] = meta
        if self.hessian is not None:
            atoms.info["hessian"] = self.hessian.copy()
        if self.energy is not None or self.forces is not None:
            atoms.calc = SinglePointCalculator(atoms, energy=self.energy, forces=self.forces)
        return atoms


def _portable_meta(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k not in SOURCE_META_KEYS}


def sample_from_atoms(
    atoms: Atoms, hessian: np.ndarray | None = None, meta: dict[str, Any] | None = None
) -> HessianSample:
    """Build a sample from an ``ase.Atoms``.

    Args:
        atoms: the structure; energy/forces are taken from its calculator results when present,
            charge/spin/meta/hessian from ``atoms.info``.
        hessian: Hessian, eV/Å², flat ((3N)**2,) or (3N, 3N); overrides ``info["hessian"]``.
        meta: extra metadata merged over ``info["meta"]``.

    Returns:
        The sample.
    """
    energy = forces = None
    calc = atoms.calc
    if calc is not None:
        results = getattr(calc, "results", {})
        energy = results.get("energy")
        forces = results.get("forces")
    if hessian is None:
        hessian = atoms.info.get("hessian")
    merged = dict(atoms.info.get("meta") or {})
    merged.update(meta or {})
    return HessianSample(
        positions=atoms.get_positions(),
        numbers=atoms.get_atomic_numbers(),
        energy=None if energy is None else float(energy),
        forces=None if forces is None else np.asarray(forces, dtype=np.float64),
        hessian=None if hessian is None else np.asarray(hessian, dtype=np.float64).reshape(-1),
        charge=int(atoms.info.get("charge", 0)),
        spin=int(atoms.info.get("spin", 1)),
        meta=merged,
    )


# ---------------------------------------------------------------------------------- validation
def validate_sample(
    sample: HessianSample, index: int | str | None = None, source: str = ""
) -> list[str]:
    """List what is wrong with a sample (empty when it is fine).

    Checks: positions (N, 3) and finite; forces (N, 3) and finite; energy finite; Hessian of
    length (3N)² and finite; max |H| <= :data:`MAX_ABS_HESSIAN` eV/Å².

    Args:
        sample: the sample.
        index: its record index (only used by callers to build messages).
        source: its file (only used by callers to build messages).

    Returns:
        Human-readable problems.
    """
    del index, source  # part of the signature so callers can pass context uniformly
    problems: list[str] = []
    n = sample.num_atoms
    if n == 0:
        problems.append("the structure has no atoms")
    if sample.positions.shape != (n, 3):
        problems.append(f"positions have shape {sample.positions.shape}, expected ({n}, 3)")
    elif not np.isfinite(sample.positions).all():
        problems.append("positions contain NaN/inf")
    if sample.energy is not None and not np.isfinite(sample.energy):
        problems.append(f"energy is {sample.energy}")
    if sample.forces is not None:
        if sample.forces.shape != (n, 3):
            problems.append(f"forces have shape {sample.forces.shape}, expected ({n}, 3)")
        elif not np.isfinite(sample.forces).all():
            problems.append("forces contain NaN/inf")
    if sample.hessian is not None:
        h = sample.hessian
        if h.size != (3 * n) ** 2:
            problems.append(
                f"Hessian has {h.size} entries but {n} atoms need (3N)^2 = {(3 * n) ** 2}"
            )
        if not np.isfinite(h).all():
            problems.append("Hessian contains NaN/inf")
        elif h.size and np.abs(h).max() > MAX_ABS_HESSIAN:
            problems.append(
                f"max |Hessian| = {np.abs(h).max():.3g} > {MAX_ABS_HESSIAN:g} eV/Å^2 "
                "(wrong units? maybe Hartree/Bohr^2 or not eV/Å^2)"
            )
    return problems


class _Checked:
    """Validation and error policy shared by the readers."""

    source: str
    on_error: OnError

    def _init_policy(self, source: str, on_error: OnError) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.source = str(source)
        self.on_error = on_error
        self._warned: set[int | str] = set()

    def _fail(self, index: int | str, problems: Sequence[str]) -> None:
        if self.on_error == "raise":
            raise HessianDataError(self.source, index, problems)
        if index not in self._warned:
            self._warned.add(index)
            warnings.warn(
                f"skipping {self.source}: record {index}: {'; '.join(problems)}", stacklevel=3
            )

    def __iter__(self) -> Iterator[HessianSample]:
        """Good samples in order (bad ones skipped or raised per ``on_error``)."""
        for i in range(len(self)):
            sample = self[i]
            if sample is not None:
                yield sample

    def _check(self, sample: HessianSample, index: int | str) -> HessianSample | None:
        problems = validate_sample(sample, index, self.source)
        if problems:
            self._fail(index, problems)
            return None
        return sample


# ---------------------------------------------------------------------------------- HORM LMDB
class _PygStandIn:
    """Stand-in for torch_geometric classes when unpickling (no torch_geometric needed).

    PyG 2.x pickles ``Data`` as an object whose state is ``{"_store": GlobalStorage, ...}``
    and a ``GlobalStorage`` whose state is ``{"_mapping": {field: value}, "_parent": Data}``;
    PyG 1.x pickles the fields directly in ``Data.__dict__``. Both end up in ``__dict__`` here.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)

    def fields(self) -> dict[str, Any]:
        """The stored attributes (``_store._mapping`` for PyG 2.x, else ``__dict__``)."""
        store = self.__dict__.get("_store")
        if store is not None:
            mapping = store.__dict__.get("_mapping") if isinstance(store, _PygStandIn) else None
            if mapping is None and isinstance(store, dict):
                mapping = store
            if mapping is not None:
                return dict(mapping)
        if "_mapping" in self.__dict__:
            return dict(self.__dict__["_mapping"])
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


class _HormUnpickler(pickle.Unpickler):
    """Unpickler mapping every torch_geometric class to :class:`_PygStandIn`."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch_geometric" or module.startswith("torch_geometric."):
            return _PygStandIn
        return super().find_class(module, name)


def _record_fields(obj: Any) -> dict[str, Any]:
    if isinstance(obj, _PygStandIn):
        return obj.fields()
    if isinstance(obj, dict):
        return dict(obj)
    raise TypeError(f"expected a torch_geometric Data or dict, got {type(obj).__name__}")


def _to_numpy(value: Any, dtype: Any = np.float64) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _to_scalar(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, np.ndarray) and value.size == 1:
        return value.item()
    return value


def _check_lmdb_size(env: Any, path: str) -> None:
    """Refuse files shorter than their last page: mmap reads past EOF would SIGBUS."""
    info, stat = env.info(), env.stat()
    needed = (int(info["last_pgno"]) + 1) * int(stat["psize"])
    size = os.path.getsize(path)
    if size < needed:
        raise HessianDataError(
            path, None, f"LMDB file is truncated: {size} bytes, its pages need {needed} bytes"
        )


#: Open LMDB environments of this process, keyed by the data file's (st_dev, st_ino): py-lmdb
#: refuses to open one file twice in a process, so all datasets on a file share one handle.
_LMDB_ENVS: dict[tuple[int, int], tuple[int, Any, tuple]] = {}


def _file_id(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise HessianDataError(path, None, "no such file") from exc
    return st.st_dev, st.st_ino


def _file_version(path: str) -> tuple:
    st = os.stat(path)
    return os.path.realpath(path), st.st_size, st.st_mtime_ns


def _lmdb_env(path: str) -> Any:
    """This process's read-only handle on the LMDB file ``path`` (opened on first use).

    A handle inherited through ``fork`` (DataLoader workers) is closed in the child and
    reopened, since LMDB handles must not cross processes.
    """
    import lmdb

    if not os.path.isfile(path):
        raise HessianDataError(path, None, "no such file")
    key, pid = _file_id(path), os.getpid()
    version = _file_version(path)
    cached = _LMDB_ENVS.get(key)
    if cached is not None:
        if cached[0] == pid and cached[2] == version:
            return cached[1]
        del _LMDB_ENVS[key]
        try:
            cached[1].close()  # stale file, or the child's copy of the parent's handle
        except lmdb.Error:  # pragma: no cover
            pass
    try:
        env = lmdb.open(
            path, subdir=False, readonly=True, lock=False, readahead=False, meminit=False
        )
    except lmdb.Error as exc:
        raise HessianDataError(path, None, f"not a readable LMDB file: {exc}") from exc
    try:
        _check_lmdb_size(env, path)
    except BaseException:
        env.close()
        raise
    _LMDB_ENVS[key] = (pid, env, version)
    return env


def _close_lmdb_env(path: str) -> None:
    try:
        key = _file_id(path)
    except HessianDataError:
        return
    cached = _LMDB_ENVS.pop(key, None)
    if cached is not None and cached[0] == os.getpid():
        cached[1].close()


class HormLMDBDataset(_Checked):
    """HORM LMDB reader (lazy; one record decoded per ``__getitem__``).

    The format: ``lmdb`` file with ``subdir=False``; keys ascii indices ``"0"``, ``"1"``, ...,
    and ``"length"`` (pickled int); values pickled torch_geometric ``Data`` with ``pos (N,3)``
    Å, ``energy`` and ``ae`` eV, ``forces (N,3)`` eV/Å, ``hessian ((3N)^2,)`` eV/Å²,
    ``charges (N,)`` atomic numbers, ``one_hot (N,5)`` (H, C, N, O, F), ``natoms``, ``rxn``.
    torch_geometric is not needed to read it.

    Args:
        path: the ``.lmdb`` file.
        energy_key: ``"energy"`` (total energy) or ``"ae"`` (atomization energy, what HORM /
            HIP train on) becomes :attr:`HessianSample.energy`.
        on_error: ``"raise"`` or ``"skip"`` (see module docs).

    Raises:
        HessianDataError: the file is missing, not an LMDB, or truncated.
    """

    def __init__(
        self, path: str | os.PathLike, energy_key: str = "energy", on_error: OnError = "raise"
    ) -> None:
        if energy_key not in ("energy", "ae"):
            raise ValueError(f"energy_key must be 'energy' or 'ae', got {energy_key!r}")
        self.path = os.fspath(path)
        self._init_policy(self.path, on_error)
        self.energy_key = energy_key
        env = self._open()
        raw = self._get(env, b"length")
        if raw is not None:
            try:
                self._length = int(pickle.loads(raw))
            except Exception as exc:  # noqa: BLE001 - any unpickling failure
                raise HessianDataError(self.path, "length", f"unreadable: {exc}") from exc
        else:
            self._length = int(env.stat()["entries"])

    # -- file handling
    def _open(self) -> Any:
        return _lmdb_env(self.path)

    def close(self) -> None:
        """Close this process's handle on the file (reopened on the next read)."""
        _close_lmdb_env(self.path)

    def _get(self, env: Any, key: bytes) -> bytes | None:
        import lmdb

        try:
            with env.begin(write=False) as txn:
                return txn.get(key)
        except lmdb.Error as exc:
            raise HessianDataError(self.path, key.decode(), f"LMDB read failed: {exc}") from exc

    # -- access
    def __len__(self) -> int:
        return self._length

    def _read_raw(self, index: int) -> bytes:
        """The pickled bytes of record ``index`` (one LMDB read)."""
        raw = self._get(self._open(), str(index).encode("ascii"))
        if raw is None:
            raise HessianDataError(self.path, index, "key missing from the LMDB")
        return raw

    def _decode(self, raw: bytes, index: int) -> HessianSample:
        try:
            record = _record_fields(_HormUnpickler(io.BytesIO(raw)).load())
        except Exception as exc:  # noqa: BLE001 - any unpickling failure
            raise HessianDataError(self.path, index, f"cannot unpickle record: {exc}") from exc
        try:
            positions = _to_numpy(record["pos"]).reshape(-1, 3)
            if record.get("charges") is not None:
                numbers = np.rint(_to_numpy(record["charges"]).reshape(-1)).astype(np.int64)
            elif record.get("one_hot") is not None:
                table = np.asarray(HORM_ONE_HOT_NUMBERS)
                numbers = table[_to_numpy(record["one_hot"]).reshape(-1, 5).argmax(axis=1)]
            else:
                raise KeyError("neither 'charges' nor 'one_hot'")
            energy = record.get(self.energy_key)
            forces = record.get("forces")
            hessian = record.get("hessian")
            known = {"pos", "charges", "one_hot", "energy", "ae", "forces", "hessian", "natoms"}
            meta = {}
            for key, value in record.items():
                value = _to_scalar(value)
                if key not in known and isinstance(value, (str, int, float, bool)):
                    meta[key] = value
            meta.update(source=self.path, index=index)
            return HessianSample(
                positions=positions,
                numbers=numbers,
                energy=None if energy is None else float(_to_numpy(energy).reshape(-1)[0]),
                forces=None if forces is None else _to_numpy(forces),
                hessian=None if hessian is None else _to_numpy(hessian).reshape(-1),
                charge=int(_to_scalar(record.get("charge", 0)) or 0),
                spin=int(_to_scalar(record.get("spin", 1)) or 1),
                meta=meta,
            )
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise HessianDataError(self.path, index, f"malformed record: {exc!r}") from exc

    def __getitem__(self, index: int) -> HessianSample | None:
        """Read record ``index``.

        Returns:
            The sample, or None when it is bad and ``on_error="skip"``.

        Raises:
            IndexError: index out of range.
            HessianDataError: a bad record with ``on_error="raise"``.
        """
        index = _normalize_index(index, len(self))
        try:
            sample = self._decode(self._read_raw(index), index)
        except HessianDataError as exc:
            if exc.index is None:
                raise
            self._fail(index, exc.problems)
            return None
        return self._check(sample, index)


def _normalize_index(index: int, length: int) -> int:
    index = int(index)
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range for {length} records")
    return index


def write_horm_lmdb(
    samples: Iterable[HessianSample],
    path: str | os.PathLike,
    ae: Sequence[float] | None = None,
    dtype: torch.dtype = torch.float32,
) -> int:
    """Write samples in the HORM LMDB format.

    Values are pickled torch_geometric ``Data`` when torch_geometric is installed (as HORM
    publishes them), else plain dicts with the same fields (which :class:`HormLMDBDataset`
    also reads). Floats are stored as ``dtype`` (HORM: float32).

    Args:
        samples: the samples; ``rxn`` and other str/int/float ``meta`` entries (except
            ``source``/``index``) are stored as extra fields.
        path: output file (overwritten).
        ae: atomization energies, eV, one per sample, for the ``ae`` field (default: the
            sample energies).
        dtype: floating dtype of the stored tensors.

    Returns:
        The number of records written.
    """
    import lmdb

    try:
        from torch_geometric.data import Data
    except ImportError:  # pragma: no cover - exercised only without torch_geometric
        Data = None  # noqa: N806

    path = os.fspath(path)
    _close_lmdb_env(path)
    for stale in (path, path + "-lock"):
        if os.path.exists(stale):
            os.remove(stale)
    ae = None if ae is None else list(ae)
    map_size = 1 << 28
    env = lmdb.open(path, subdir=False, map_size=map_size, meminit=False, lock=True)
    count = 0
    try:
        for i, sample in enumerate(samples):
            n = sample.num_atoms
            one_hot = torch.zeros(n, 5, dtype=torch.long)
            for a, z in enumerate(sample.numbers.tolist()):
                if z in HORM_ONE_HOT_NUMBERS:
                    one_hot[a, HORM_ONE_HOT_NUMBERS.index(z)] = 1
            fields_: dict[str, Any] = {
                "pos": torch.as_tensor(sample.positions, dtype=dtype),
                "charges": torch.as_tensor(sample.numbers, dtype=torch.long),
                "one_hot": one_hot,
                "natoms": torch.tensor([n], dtype=torch.long),
            }
            if sample.energy is not None:
                fields_["energy"] = torch.tensor([sample.energy], dtype=dtype)
                value = sample.energy if ae is None else ae[i]
                fields_["ae"] = torch.tensor([value], dtype=dtype)
            if sample.forces is not None:
                fields_["forces"] = torch.as_tensor(sample.forces, dtype=dtype)
            if sample.hessian is not None:
                fields_["hessian"] = torch.as_tensor(sample.hessian, dtype=dtype).reshape(-1)
            if sample.charge != 0:
                fields_["charge"] = sample.charge
            if sample.spin != 1:
                fields_["spin"] = sample.spin
            for key, value in _portable_meta(sample.meta).items():
                if isinstance(value, (str, int, float, bool)) and key not in fields_:
                    fields_[key] = value
            record = Data(**fields_) if Data is not None else fields_
            raw = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
            while True:
                try:
                    with env.begin(write=True) as txn:
                        txn.put(str(i).encode("ascii"), raw)
                    break
                except lmdb.MapFullError:
                    map_size *= 2
                    env.set_mapsize(map_size)
            count += 1
        with env.begin(write=True) as txn:
            txn.put(b"length", pickle.dumps(count, protocol=pickle.HIGHEST_PROTOCOL))
        env.sync()
    finally:
        env.close()
    lock = path + "-lock"
    if os.path.exists(lock):
        os.remove(lock)
    return count


# ---------------------------------------------------------------------------------- ASE database
class AseDbDataset(_Checked):
    """ASE SQLite database reader (lazy; one row read per ``__getitem__``).

    Rows hold the structure, energy (eV) and forces (eV/Å) as calculator results, and
    ``row.data["hessian"]`` (eV/Å², flat ((3N)^2,) or (3N, 3N)) or its upper triangle
    ``row.data["hessian_triu"]`` (3N(3N+1)/2,) (:func:`pack_triu`); optional ``data["charge"]``,
    ``data["spin"]``, ``data["meta"]``.

    Args:
        path: the ``.db`` file.
        on_error: ``"raise"`` or ``"skip"`` (see module docs).

    Raises:
        HessianDataError: the file is missing or not an ASE database.
    """

    def __init__(self, path: str | os.PathLike, on_error: OnError = "raise") -> None:
        self.path = os.fspath(path)
        self._init_policy(self.path, on_error)
        if not os.path.isfile(self.path):
            raise HessianDataError(self.path, None, "no such file")
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

    Returns:
        The number of rows written.
    """
    import ase.db

    count = 0
    with ase.db.connect(os.fspath(path), type="db") as db:
        for sample in samples:
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


# ---------------------------------------------------------------------------------- extxyz
def read_extxyz(path: str | os.PathLike, on_error: OnError = "raise") -> list[HessianSample]:
    """Read every frame of an extended XYZ file.

    The Hessian of each frame is ``info["hessian"]`` (flat ((3N)^2,), eV/Å²); energy (eV) and
    forces (eV/Å) are the frame's calculator results. Positions and forces in extxyz columns
    carry 8 decimals (ASE's writer); info values are exact float64.

    Args:
        path: the file.
        on_error: ``"raise"`` or ``"skip"`` (see module docs).

    Returns:
        The good samples.

    Raises:
        HessianDataError: unreadable file, or a bad frame with ``on_error="raise"``.
    """
    import ase.io

    path = os.fspath(path)
    try:
        frames = ase.io.read(path, index=":", format="extxyz")
    except Exception as exc:  # noqa: BLE001 - ase parse errors vary
        raise HessianDataError(path, None, f"not a readable extxyz file: {exc}") from exc
    checker = _Checked()
    checker._init_policy(path, on_error)
    out = []
    for i, atoms in enumerate(frames):
        sample = sample_from_atoms(atoms, meta={"source": path, "index": i})
        if checker._check(sample, i) is not None:
            out.append(sample)
    return out


def write_extxyz(samples: Iterable[HessianSample], path: str | os.PathLike) -> int:
    """Write samples as extended XYZ frames (Hessian flat in ``info["hessian"]``, eV/Å²).

    Args:
        samples: the samples.
        path: output file (overwritten).

    Returns:
        The number of frames written.
    """
    import ase.io

    frames = [sample.to_atoms() for sample in samples]
    ase.io.write(os.fspath(path), frames, format="extxyz")
    return len(frames)


# ---------------------------------------------------------------------------------- torch side
class HessianDataset(torch.utils.data.Dataset):
    """Concatenation of readers and samples as one torch ``Dataset``.

    Args:
        sources: each item a :class:`HessianSample` (one record) or a sequence-like of samples
            (a reader, a list): anything with ``__len__`` and ``__getitem__``.

    ``dataset[i]`` returns a :class:`HessianSample`, or None for a record its reader skipped;
    :func:`collate_hessian` drops those.
    """

    def __init__(self, sources: Sequence[Any]) -> None:
        self.sources = [[s] if isinstance(s, HessianSample) else s for s in sources]
        self._offsets = [0]
        for source in self.sources:
            self._offsets.append(self._offsets[-1] + len(source))

    def __len__(self) -> int:
        return self._offsets[-1]

    def __getitem__(self, index: int) -> HessianSample | None:
        index = _normalize_index(index, len(self))
        k = bisect.bisect_right(self._offsets, index) - 1
        return self.sources[k][index - self._offsets[k]]


def collate_hessian(
    samples: Sequence[HessianSample | None], dtype: torch.dtype | None = None
) -> tuple[AtomicGraph, dict[str, torch.Tensor]]:
    """Batch samples into an :class:`AtomicGraph` and label tensors.

    ``None`` entries (records skipped by a reader) are dropped. Labels missing on some samples
    are NaN there (mask with ``torch.isfinite``); a label missing on all is left out.

    Args:
        samples: the samples.
        dtype: floating dtype (default: torch's default dtype).

    Returns:
        ``(graph, labels)``: the graph (positions Å, charge, spin) and labels ``"energy"`` [B]
        eV, ``"forces"`` [N, 3] eV/Å, ``"hessian"`` [Σ_g (3N_g)²] eV/Å² in the flat batch
        layout (each molecule's (3N, 3N) row-major block, index ``3a + α``, concatenated).

    Raises:
        ValueError: no samples are left.
    """
    dtype = dtype or torch.get_default_dtype()
    kept = [s for s in samples if s is not None]
    if not kept:
        raise ValueError("empty batch: every sample was skipped or none was given")
    counts = np.array([s.num_atoms for s in kept], dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    graph = AtomicGraph(
        positions=torch.from_numpy(np.concatenate([s.positions for s in kept])).to(dtype),
        atomic_numbers=torch.from_numpy(np.concatenate([s.numbers for s in kept])),
        batch=torch.from_numpy(np.repeat(np.arange(len(kept)), counts)),
        ptr=torch.from_numpy(ptr),
        charge=torch.tensor([float(s.charge) for s in kept], dtype=dtype),
        spin=torch.tensor([float(s.spin) for s in kept], dtype=dtype),
    )
    labels: dict[str, torch.Tensor] = {}
    if any(s.energy is not None for s in kept):
        energies = [np.nan if s.energy is None else s.energy for s in kept]
        labels["energy"] = torch.tensor(energies, dtype=dtype)
    if any(s.forces is not None for s in kept):
        parts = [
            s.forces if s.forces is not None else np.full((s.num_atoms, 3), np.nan) for s in kept
        ]
        labels["forces"] = torch.from_numpy(np.concatenate(parts)).to(dtype)
    if any(s.hessian is not None for s in kept):
        parts = [
            s.hessian if s.hessian is not None else np.full((3 * s.num_atoms) ** 2, np.nan)
            for s in kept
        ]
        labels["hessian"] = torch.from_numpy(np.concatenate(parts)).to(dtype)
    return graph, labels


# ---------------------------------------------------------------------------------- statistics
def hessian_rms(dataset: Any, max_frames: int = 256, seed: int = 0) -> float:
    """Root mean square of the Hessian label entries, eV/Å² (the head's ``block_scale: auto``).

    Args:
        dataset: indexable samples (``len`` and ``[i]`` giving :class:`HessianSample`).
        max_frames: at most this many frames, drawn without replacement (seeded).
        seed: seed of the draw.

    Returns:
        sqrt(mean over all entries of all drawn frames of H²).

    Raises:
        HessianDataError: no drawn frame has a Hessian.
    """
    n = len(dataset)
    rng = np.random.default_rng(seed)
    indices = rng.choice(n, size=min(n, max_frames), replace=False) if n else []
    total, count = 0.0, 0
    for i in indices:
        hessian = dataset[int(i)].hessian
        if hessian is not None:
            total += float(np.square(hessian).sum())
            count += hessian.size
    if count == 0:
        raise HessianDataError(
            "training data", None, "no Hessian labels to take the RMS of (block_scale: auto)"
        )
    return float(np.sqrt(total / count))


# ---------------------------------------------------------------------------------- splitting
def molecule_key(sample: HessianSample) -> str:
    """``meta["molecule"]`` when set, else the Hill formula of the atomic numbers."""
    name = sample.meta.get("molecule")
    if name:
        return str(name)
    counts = Counter(chemical_symbols[int(z)] for z in sample.numbers)
    order = (["C", "H"] if "C" in counts else []) + sorted(
        s for s in counts if not ("C" in counts and s in ("C", "H"))
    )
    return "".join(f"{s}{counts[s] if counts[s] > 1 else ''}" for s in order)


def split_by_molecule(
    samples_or_keys: Sequence[Any],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    key: Callable[[HessianSample], Any] = molecule_key,
) -> list[list[int]]:
    """Split indices so that all frames of one molecule land in the same split.

    Molecules are shuffled with ``seed`` and each is given to the split furthest below its
    target frame count, so split sizes follow ``fractions`` as closely as whole molecules allow.

    Args:
        samples_or_keys: samples (grouped by ``key``) or precomputed group keys (str/int; pass
            these for lazy datasets to avoid reading every record).
        fractions: target fraction of frames per split (normalised to sum 1).
        seed: shuffling seed.
        key: group key of a sample (default :func:`molecule_key`; e.g.
            ``lambda s: s.meta["rxn"]`` for HORM reactions).

    Returns:
        One sorted list of indices per fraction.
    """
    if not fractions or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"fractions must be non-negative and sum > 0, got {fractions}")
    groups: dict[Any, list[int]] = {}
    for i, item in enumerate(samples_or_keys):
        k = key(item) if isinstance(item, HessianSample) else item
        groups.setdefault(k, []).append(i)
    names = sorted(groups, key=repr)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(names))
    total = sum(len(v) for v in groups.values())
    weights = np.asarray(fractions, dtype=np.float64) / float(sum(fractions))
    targets = weights * total
    filled = np.zeros(len(weights))
    splits: list[list[int]] = [[] for _ in weights]
    for j in order:
        members = groups[names[j]]
        deficit = np.where(weights > 0, (targets - filled) / np.maximum(targets, 1e-12), -np.inf)
        s = int(np.argmax(deficit))
        splits[s].extend(members)
        filled[s] += len(members)
    return [sorted(s) for s in splits]
