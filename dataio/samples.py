"""Shards of independent samples: per-sample arrays (one row each) and a JSON row of metadata per sample.

What vl-data stores (images, masks and a caption row per image): samples, not episodes, so it has no
episode index, but it is written by the same protocol as every dataset (``dataio.staging``: each file
atomic, one staged file per seed, shards committed from them). One HDF5 file holds one dataset per array
column, ``(N, ...)``, and ``meta``, N JSON strings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vlagym.core.io import DatasetError
from vlagym.dataio.staging import atomic_file

SUFFIX = ".hdf5"
SHARD_GLOB = f"shard_*{SUFFIX}"
_ERRORS = (OSError, KeyError, ValueError)  # h5py on a truncated or garbled file


def write_samples(path: Path, columns: dict[str, np.ndarray], meta: list[dict[str, Any]],
                  frame_chunks: tuple[str, ...] = ()) -> None:
    """Write ``columns`` (each ``(N, ...)``) and ``meta`` (N rows) to ``path`` atomically, gzip-compressed;
    the columns in ``frame_chunks`` get one chunk per row (images read one at a time). N may be 0."""
    n = len(meta)
    bad = {k: len(v) for k, v in columns.items() if len(v) != n}
    if bad:
        raise ValueError(f"{path}: every column needs {n} rows (one per meta row), got {bad}")
    with atomic_file(path) as tmp, h5py.File(tmp, "w") as f:
        for name, arr in columns.items():
            chunks = (1, *arr.shape[1:]) if n and name in frame_chunks else None
            f.create_dataset(name, data=arr, chunks=chunks, compression="gzip" if n else None)
        f.create_dataset("meta", data=[json.dumps(m) for m in meta], dtype=h5py.string_dtype())


def read_samples(path: Path) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Every column and the meta rows of one file; ``DatasetError`` naming it when it does not decode or its
    columns disagree in length."""
    try:
        with h5py.File(path, "r") as f:
            columns = {k: f[k][()] for k in f if k != "meta"}
            meta = [json.loads(m) for m in f["meta"].asstr()[()]]
    except _ERRORS as e:
        raise DatasetError(f"{path}: cannot read ({e}); the file is corrupt or truncated") from e
    bad = {k: len(v) for k, v in columns.items() if len(v) != len(meta)}
    if bad:
        raise DatasetError(f"{path}: {len(meta)} meta rows but columns of {bad} rows")
    return columns, meta


def count_samples(path: Path) -> int:
    """How many samples a file holds, without reading them."""
    try:
        with h5py.File(path, "r") as f:
            return int(f["meta"].shape[0])
    except _ERRORS as e:
        raise DatasetError(f"{path}: cannot read ({e}); delete it to have it rewritten") from e
