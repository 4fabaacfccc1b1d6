"""HORM LMDB files: a lazy reader and a writer.

The format: an ``lmdb`` file with ``subdir=False``; keys ascii indices ``"0"``, ``"1"``, ...,
and ``"length"`` (pickled int); values pickled torch_geometric ``Data`` (or plain dicts with
the same fields). torch_geometric is needed neither to import this module nor to read a file.

Values are pickles, read by a **restricted** unpickler: it resolves only torch-geometric
classes (to a stand-in), the torch and numpy functions that rebuild tensors and arrays (nested
torch payloads with ``weights_only=True``) and a few plain containers; any other name a pickle
asks for (``os.system``, ``builtins.eval`` ...) stops the read with an error naming it, before
anything runs.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from hip_head.errors import InvalidArgumentError
from hip_head.finetune.data.sample import (
    HessianDataError,
    HessianSample,
    OnError,
    _Checked,
    _normalize_index,
    _portable_meta,
)

__all__ = ["HORM_ONE_HOT_NUMBERS", "HormLMDBDataset", "write_horm_lmdb"]

#: Atomic numbers of the HORM ``one_hot`` columns (H, C, N, O, F).
HORM_ONE_HOT_NUMBERS = (1, 6, 7, 8, 9)


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


def _load_tensor_bytes(data: bytes) -> Any:
    """``torch.storage._load_from_bytes`` without unpickling arbitrary objects."""
    return torch.load(io.BytesIO(data), weights_only=True)


#: The only globals a HORM record may name (besides torch_geometric classes).
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_tensor_bytes,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
}
_NUMPY_REBUILD = {"_reconstruct", "scalar", "ndarray", "dtype"}


class _HormUnpickler(pickle.Unpickler):
    """Restricted unpickler: torch_geometric classes become :class:`_PygStandIn`; only the
    globals of :data:`_ALLOWED_GLOBALS`, torch dtypes / storages and numpy's array rebuilders
    resolve; anything else raises ``pickle.UnpicklingError`` naming it."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch_geometric" or module.startswith("torch_geometric."):
            return _PygStandIn
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is not None:
            return allowed
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module == "torch" and name.endswith("Storage"):
            return getattr(torch, name)
        if module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray"):
            if name in _NUMPY_REBUILD:
                return super().find_class(module, name)
        if module in ("numpy", "numpy.dtypes") and name.endswith("DType"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"the record asks for {module}.{name}, which a HORM record never needs: refused "
            "(the LMDB reader resolves only tensor, array and torch_geometric data classes)"
        )


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
        on_error: ``"raise"`` or ``"skip"`` (see :mod:`hip_head.finetune.data.sample`).

    Raises:
        HessianDataError: the file is missing, not an LMDB, or truncated.
    """

    def __init__(
        self, path: str | os.PathLike, energy_key: str = "energy", on_error: OnError = "raise"
    ) -> None:
        if energy_key not in ("energy", "ae"):
            raise InvalidArgumentError(f"energy_key must be 'energy' or 'ae', got {energy_key!r}")
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
