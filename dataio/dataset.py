"""Demonstration datasets through the format interface (``dataio.format``), whatever their format.

What collection, training, the CLI and the tests call: index the episodes of one or many datasets, load
an episode, read one key across episodes, statistics, ``env_args``, the manifest, ``verify``. Each works
on any registered format (``open_dataset`` detects it); the robomimic HDF5 layout and its history are in
``dataio/robomimic_hdf5.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from vlagym.core.io import DatasetError, read_json  # noqa: F401  (re-exported: callers catch it from here)
from vlagym.dataio.format import (  # noqa: F401  (re-exported: the names datasets have always had)
    DemoRef,
    EpisodeRef,
    ShardCheck,
    Trajectory,
    open_dataset,
    reader_of,
)
from vlagym.dataio.staging import DatasetLocked, locked  # noqa: F401  (re-exported)


def index_demos(paths: list[os.PathLike] | str | os.PathLike, validate: bool = True) -> list[EpisodeRef]:
    """List every demo in the given datasets (folders, or single files where the format allows), checking
    their structure.

    Raises ``DatasetError`` naming the file and demo at fault for a truncated or corrupt file, and
    for a seed stored twice within one dataset (a merge that was not cleaned up).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return [ref for root in paths for ref in open_dataset(root).episodes(validate)]


def load_demo(ref: EpisodeRef) -> dict[str, Any]:
    """The whole demo as numpy arrays (obs dict, actions, rewards, dones, [expert_actions, labels], attrs)."""
    return reader_of(ref).load(ref)


def env_args(root: str | os.PathLike) -> dict[str, Any]:
    """The ``env_args`` a dataset records (a robomimic dataset: its first shard's)."""
    return open_dataset(root).env_args()


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    return open_dataset(root).metadata()


def iter_arrays(refs: list[EpisodeRef], key: str) -> Iterator[np.ndarray]:
    """``key`` of every demo that has it (a demo-level array such as actions, or an observation)."""
    for ref in refs:
        reader = reader_of(ref)
        have = reader.keys(ref)
        name = key if key in have else f"obs/{key}" if f"obs/{key}" in have else None
        if name is not None:
            yield reader.read(ref, name)


def compute_stats(refs: list[EpisodeRef], keys: tuple[str, ...] = ("actions", "expert_actions", "proprio")
                  ) -> dict[str, dict[str, list[float]]]:
    """Per-dimension mean, std, min, max of actions (executed and, where stored, the expert's
    noiseless ones) and proprio over all demos."""
    out = {}
    for key in keys:
        arrays = list(iter_arrays(refs, key))
        if not arrays:
            continue
        x = np.concatenate(arrays).astype(np.float64)
        out[key] = {"mean": x.mean(0).tolist(), "std": x.std(0).tolist(), "min": x.min(0).tolist(),
                    "max": x.max(0).tolist(), "count": int(len(x))}
    return out


def verify(root: str | os.PathLike) -> list[ShardCheck]:
    """Decode everything in the dataset and compare whatever checksums its format stores; one check per
    file, each problem a line naming file, demo, key and frame. Never raises for a damaged file."""
    return open_dataset(root).verify()
