"""What a dataset holds, in numbers (``vlagym dataset info``): episodes, frames, success, words, actions, size."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from vlagym.dataio.dataset import compute_stats
from vlagym.dataio.format import open_dataset


@dataclass
class DatasetSummary:
    """One dataset's numbers, from its manifest and its demos."""

    path: str
    env: str
    split: str
    noise: float
    episodes: int
    dropped_failures: int
    frames: int
    succeeded: int
    """Demos whose ``success`` attribute is true (DAgger keeps failures too)."""
    instructions: int
    """Distinct instructions."""
    vocabulary: list[str]
    """Words of the instructions, sorted (commas dropped)."""
    actions: dict[str, list[float]]
    """Per-dimension ``mean``, ``std``, ``min``, ``max`` of the executed actions."""
    bytes: int
    """Size of the shards on disk."""

    @property
    def mean_length(self) -> float:
        return self.frames / self.episodes

    @property
    def success_rate(self) -> float:
        return self.succeeded / self.episodes

    @property
    def bytes_per_frame(self) -> float:
        return self.bytes / max(self.frames, 1)


def summarize(path: str | os.PathLike) -> DatasetSummary:
    """The numbers of the dataset in folder ``path``, in any registered format (every demo is indexed and its
    actions read)."""
    dataset = open_dataset(path)
    refs = dataset.episodes()
    manifest = dataset.metadata()
    stats: dict[str, Any] = compute_stats(refs, keys=("actions",))["actions"]
    return DatasetSummary(
        path=str(path), env=manifest["env_args"]["env_name"], split=manifest["split"], noise=manifest["noise"],
        episodes=len(refs), dropped_failures=manifest["dropped_failures"], frames=sum(r.length for r in refs),
        succeeded=sum(r.success for r in refs), instructions=len({r.instruction for r in refs}),
        vocabulary=sorted({w for r in refs for w in r.instruction.replace(",", " ").split()}),
        actions={k: stats[k] for k in ("mean", "std", "min", "max")},
        bytes=sum(p.stat().st_size for p in dataset.files()))
