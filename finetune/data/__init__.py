"""Hessian datasets: readers and writers for HORM LMDB, ASE SQLite databases and extended XYZ.

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

Modules (none imports Lightning or torch_geometric):

- :mod:`~hip_head.finetune.data.sample`: :class:`HessianSample`, :func:`sample_from_atoms`,
  :func:`validate_sample`, :class:`HessianDataError`;
- :mod:`~hip_head.finetune.data.horm`: HORM LMDB reader and writer;
- :mod:`~hip_head.finetune.data.asedb`: ASE database reader and writers, compact storage;
- :mod:`~hip_head.finetune.data.extxyz`: extended XYZ reader and writer;
- :mod:`~hip_head.finetune.data.collate`: :class:`HessianDataset`, :func:`collate_hessian`,
  :func:`hessian_rms`;
- :mod:`~hip_head.finetune.data.splits`: :func:`molecule_key`, :func:`split_by_molecule`;
- :mod:`~hip_head.finetune.data.sources`: :func:`open_source` (files or shipped datasets),
  :func:`default_dataset_path`;
- :mod:`~hip_head.finetune.data.sampler`: :class:`EpochBatchSampler`.

Note:
    HORM LMDB values are pickles: only open files you trust (unpickling can run code).
"""

from __future__ import annotations

from hip_head.finetune.data.asedb import (
    AseDbDataset,
    compact_database,
    pack_triu,
    unpack_triu,
    write_ase_db,
    write_compact_db,
)
from hip_head.finetune.data.collate import HessianDataset, collate_hessian, hessian_rms
from hip_head.finetune.data.extxyz import read_extxyz, write_extxyz
from hip_head.finetune.data.horm import HORM_ONE_HOT_NUMBERS, HormLMDBDataset, write_horm_lmdb
from hip_head.finetune.data.sample import (
    MAX_ABS_HESSIAN,
    SOURCE_META_KEYS,
    HessianDataError,
    HessianSample,
    OnError,
    sample_from_atoms,
    validate_sample,
)
from hip_head.finetune.data.sampler import EpochBatchSampler
from hip_head.finetune.data.sources import SHIPPED_DATASETS, default_dataset_path, open_source
from hip_head.finetune.data.splits import molecule_key, split_by_molecule

__all__ = [
    "HORM_ONE_HOT_NUMBERS",
    "MAX_ABS_HESSIAN",
    "SHIPPED_DATASETS",
    "SOURCE_META_KEYS",
    "AseDbDataset",
    "EpochBatchSampler",
    "HessianDataError",
    "HessianDataset",
    "HessianSample",
    "HormLMDBDataset",
    "OnError",
    "collate_hessian",
    "compact_database",
    "default_dataset_path",
    "hessian_rms",
    "molecule_key",
    "open_source",
    "pack_triu",
    "read_extxyz",
    "sample_from_atoms",
    "split_by_molecule",
    "unpack_triu",
    "validate_sample",
    "write_ase_db",
    "write_compact_db",
    "write_extxyz",
    "write_horm_lmdb",
]
