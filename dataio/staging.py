"""The write protocol every dataset folder follows, whatever its file format.

A writer never leaves a half-written file under a name a reader looks for: each file is written under a
temporary name beside its target and moved there in one ``os.replace`` (``atomic_file``). Work in
progress lives in ``staging/``, one file per seed (``Staging``), so a killed run resumes from the seeds
already on disk; a commit turns staged files into shards (``shard_<k>.<ext>``) and deletes them only
after the shard is in place, so a kill between the two leaves duplicates that the next run removes
(``DatasetWriter.repair``), never a loss. One process writes a folder at a time (``locked``).

Demonstration datasets (``dataio.format.DatasetWriter``) and vl-data's captioned images (``vl/data.py``)
both build on this module.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vlagym.core.io import DatasetError

LOCK_NAME = ".lock"
STAGING = "staging"


class DatasetLocked(DatasetError):
    """Another process is writing the dataset folder; the message names it."""


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; when the block succeeds it replaces ``path`` at once.

    A failed block removes the temporary file; a killed one leaves only a ``.<name>.tmp`` that no reader
    looks for and the next write of ``path`` overwrites.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def shard_name(index: int, suffix: str) -> str:
    """``shard_00003.hdf5``: shards sort by name in the order they were committed."""
    return f"shard_{index:05d}{suffix}"


class Staging:
    """A dataset folder's ``staging/``: one file per seed (``<prefix>_<seed:09d><suffix>``) while a run is in
    progress, plus empty marker files (``<tag>_<seed:09d>``) for seeds tried that produced nothing to keep.

    Plain data (a folder and two strings), so it pickles into worker processes, which stage their own seeds.
    """

    def __init__(self, root: str | os.PathLike, prefix: str, suffix: str) -> None:
        self.dir = Path(root) / STAGING
        self.prefix, self.suffix = prefix, suffix

    def path(self, seed: int) -> Path:
        return self.dir / f"{self.prefix}_{seed:09d}{self.suffix}"

    @staticmethod
    def seed_of(path: Path) -> int:
        """The seed in a staged file's name (``ep_000000012.hdf5`` -> 12)."""
        return int(path.name.split("_")[1].split(".")[0])

    def paths(self) -> list[Path]:
        """Staged files in seed order (temporary files of an unfinished write are not among them)."""
        return sorted(self.dir.glob(f"{self.prefix}_*{self.suffix}"))

    def seeds(self) -> list[int]:
        return [self.seed_of(p) for p in self.paths()]

    def discard(self, seed: int) -> None:
        self.path(seed).unlink(missing_ok=True)

    def mark(self, seed: int, tag: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / f"{tag}_{seed:09d}").touch()

    def marked(self, tag: str) -> set[int]:
        return {self.seed_of(p) for p in self.dir.glob(f"{tag}_*")}

    def clear(self, tags: tuple[str, ...] = ()) -> None:
        """Delete the markers of ``tags`` and the folder once nothing else is in it."""
        for tag in tags:
            for marker in self.dir.glob(f"{tag}_*"):
                marker.unlink()
        try:
            os.rmdir(self.dir)
        except OSError:  # absent, or staged files remain (a run not yet committed)
            pass


@contextmanager
def locked(root: str | os.PathLike, what: str = "collect") -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``root/.lock`` for the block, or raise ``DatasetLocked``.

    The holder writes its pid, host and command into the file, so a refused process can say who
    holds the folder. The lock goes with the process (a killed holder releases it).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatasetLocked(f"{root} is being written by another process ({_holder(fd, path)}); wait for it "
                                f"to finish or use another --out") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv), "what": what,
                "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int, path: Path) -> str:
    text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    try:
        h = json.loads(text)
        return f"pid {h['pid']} on host {h['host']}, `{h['command']}`, since {h['since']}"
    except (json.JSONDecodeError, KeyError, TypeError):
        return f"{path} says {text!r}" if text else f"it has not yet written its pid into {path}"
