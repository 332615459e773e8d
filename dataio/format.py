"""The dataset format interface: what every on-disk format of demonstrations offers, and the registry.

A dataset is episodes of frames: per episode, arrays with one row per step under flat keys (``actions``,
``rewards``, ``dones``, ``expert_actions``, ``obs/<key>``, ``labels/<role>/...``) and attributes
(``instruction``, ``seed``, ``success``, ``noise``, ``source``, ...); per dataset, ``env_args`` (which env,
with which kwargs) and metadata (``manifest.json``, ``stats.json``). A format says how that is laid out in
files:

* ``DatasetReader``: the episode index (``EpisodeRef``: length, seed, instruction, ...), an episode's
  arrays (all, some keys, or a range of rows), ``env_args``, metadata, the files, ``verify``.
* ``DatasetWriter``: stage one episode at a time (atomically, from any worker process), commit staged
  episodes into shards, write the metadata; every step is resume-safe (``dataio.staging``).

A format registers its reader, with its writer, under a name (``@register_format("robomimic_hdf5",
writer=...)``); ``open_dataset(path)`` asks every registered reader whether the path is one of its
datasets (``detect``) and opens it, or says which formats it tried and what each looks for.
``dataset_writer(root, format)`` creates a writer by name. docs/adding-a-dataset-format.md walks through
adding one.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from vlagym.core.io import DatasetError, atomic_write_text, read_json
from vlagym.core.plugins import load_plugins
from vlagym.dataio.staging import Staging

ARRAYS = ("actions", "rewards", "dones", "expert_actions")
"""The per-step arrays beside the observations (``expert_actions`` only where the expert's plan was stored)."""


@dataclass
class Trajectory:
    """What a dataset stores of an episode: ``obs[key]`` has one row per action taken
    (the observation the action was chosen from). ``expert_actions``: the noiseless action the
    expert planned at each step (``Expert.last_plan``), when the agent is a scripted expert.
    ``labels``: the privileged labels beside each observation (``vlagym.envs.labels``; key -> (T, ...)),
    when the env reports them."""

    obs: dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    expert_actions: np.ndarray | None = None
    labels: dict[str, np.ndarray] | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array under its flat key (``obs/rgb``, ``labels/object/pos``), as readers return them."""
        out = {f"obs/{k}": v for k, v in self.obs.items()}
        out.update(actions=self.actions, rewards=self.rewards, dones=self.dones)
        if self.expert_actions is not None:
            out["expert_actions"] = self.expert_actions
        out.update({f"labels/{k}": v for k, v in (self.labels or {}).items()})
        return out


@dataclass(frozen=True)
class EpisodeRef:
    """Where one episode lives, and what the index knows of it without loading its arrays."""

    path: Path
    """The file that holds it (a shard, or the episode's own file)."""
    key: str
    """Its name inside ``path`` (``demo_3``), for messages and for the reader."""
    length: int
    seed: int
    instruction: str
    success: bool = True
    source: str = "expert"
    """Who drove the episode: the scripted expert, or a policy under DAgger (labels from the expert)."""
    reader: DatasetReader | None = field(default=None, compare=False, repr=False)
    """The reader that indexed it (None for a reference built by hand: ``reader_of`` opens its path)."""


DemoRef = EpisodeRef  # the name collection, training and the tests have always used


@dataclass
class ShardCheck:
    """What ``verify`` found in one file of a dataset."""

    path: Path
    demos: int = 0
    without_checksums: int = 0  # demos written before checksums existed: decoded, but nothing to compare with
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class Stored(NamedTuple):
    """One written file as a resume sees it: the env_args it records and each of its episodes' attributes."""

    path: Path
    env_args: dict[str, Any]
    episodes: list[dict[str, Any]]


# --- reading ------------------------------------------------------------------------------------------------
class DatasetReader(ABC):
    """One dataset on disk, read through the episode index.

    Subclasses implement the abstract methods; the rest are built on them. A reader is cheap to make and
    pickles into DataLoader workers. Reads open and close their file unless ``keep_open`` is set (random
    access, as ``DemoWindows`` does): then ``handle`` keeps one handle per file per process, and drops them
    on pickling and in a forked child, where a parent's open file must not be used.
    """

    format: ClassVar[str] = ""
    """The registered name (set by ``register_format``)."""
    layout: ClassVar[str] = ""
    """What a dataset of this format looks like on disk, in a few words (for ``open_dataset``'s errors)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.keep_open = False
        self._handles: dict[Path, Any] = {}
        self._pid = os.getpid()

    @classmethod
    @abstractmethod
    def detect(cls, path: Path) -> bool:
        """Whether ``path`` (an existing file or folder) is a dataset of this format; cheap, reads no arrays."""

    @abstractmethod
    def index(self, validate: bool = True) -> list[EpisodeRef]:
        """Every episode, in a stable order, each with ``reader=self``; with ``validate``, check each episode's
        structure (keys present, rows agree) and raise ``DatasetError`` naming file and episode."""

    @abstractmethod
    def keys(self, ref: EpisodeRef) -> list[str]:
        """The flat keys of the episode's arrays (``actions``, ``obs/rgb``, ``labels/object/pos``, ...)."""

    @abstractmethod
    def read(self, ref: EpisodeRef, key: str, rows: slice | None = None) -> np.ndarray:
        """One array of the episode, or its ``rows`` (a slice along time); ``DatasetError`` names file,
        episode, key (and rows) when it does not decode, ``KeyError`` when the episode has no ``key``."""

    @abstractmethod
    def attrs(self, ref: EpisodeRef) -> dict[str, Any]:
        """The episode's attributes (``instruction``, ``seed``, ``success``, ``noise``, ``source``, ...)."""

    @abstractmethod
    def env_args(self, ref: EpisodeRef | None = None) -> dict[str, Any]:
        """The ``env_args`` recorded with the dataset, or with the file that holds ``ref``."""

    @abstractmethod
    def files(self) -> list[Path]:
        """The files that hold the episodes (their size is the dataset's size on disk)."""

    def episodes(self, validate: bool = True) -> list[EpisodeRef]:
        """``index`` with one more check: no seed twice (a commit whose staged files were not removed)."""
        refs = self.index(validate)
        first: dict[int, EpisodeRef] = {}
        for ref in refs:
            if ref.seed in first:
                other = first[ref.seed]
                raise DatasetError(f"{ref.path} [{ref.key}]: seed {ref.seed} is also stored in {other.path} "
                                   f"[{other.key}]; the dataset holds a demo twice")
            first[ref.seed] = ref
        return refs

    def read_keys(self, ref: EpisodeRef, keys: list[str] | tuple[str, ...]) -> dict[str, np.ndarray]:
        """Several whole arrays of one episode, by flat key."""
        return {k: self.read(ref, k) for k in keys}

    def load(self, ref: EpisodeRef) -> dict[str, Any]:
        """The whole episode: ``obs`` and ``labels`` dicts, the per-step arrays, ``attrs``."""
        out: dict[str, Any] = {"obs": {}}
        for key, arr in self.read_keys(ref, self.keys(ref)).items():
            group, _, name = key.partition("/")
            if group in ("obs", "labels") and name:
                out.setdefault(group, {})[name] = arr
            else:
                out[key] = arr
        out["attrs"] = self.attrs(ref)
        return out

    def metadata(self) -> dict[str, Any]:
        """The dataset's manifest (provenance, env_args, split, counts): ``manifest.json``."""
        path = self.path / "manifest.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; was the collection finished?")
        return read_json(path)

    def stats(self) -> dict[str, Any] | None:
        """Per-dimension statistics written with the dataset (``stats.json``), or None."""
        path = self.path / "stats.json"
        return read_json(path) if path.exists() else None

    def verify(self) -> list[ShardCheck]:
        """Decode every array of every episode, one check per file; never raises for a damaged file.

        Formats that store checksums override this to compare them too.
        """
        try:
            refs = self.index(validate=True)
        except DatasetError as e:
            return [ShardCheck(self.path, problems=[str(e)])]
        checks = {p: ShardCheck(p) for p in self.files()}
        for ref in refs:
            check = checks.setdefault(ref.path, ShardCheck(ref.path))
            check.demos += 1
            check.without_checksums += 1
            for key in self.keys(ref):
                try:
                    self.read(ref, key)
                except DatasetError as e:
                    check.problems.append(str(e))
        return list(checks.values())

    @contextmanager
    def opened(self, path: Path, opener: Callable[[Path], Any]) -> Iterator[Any]:
        """``opener(path)`` (a file object that is a context manager) for the block: opened and closed
        around it, or, with ``keep_open``, kept for the next block in this process."""
        if not self.keep_open:
            with opener(path) as h:
                yield h
            return
        if self._pid != os.getpid():  # a forked child: the parent's handles are not ours to read through
            self.close()
            self._pid = os.getpid()
        h = self._handles.get(path)
        if h is None:
            h = self._handles[path] = opener(path)
        yield h

    def close(self) -> None:
        """Close the handles kept open (``keep_open``); later reads reopen them."""
        for h in self._handles.values():
            h.close()
        self._handles = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handles": {}}


# --- writing ------------------------------------------------------------------------------------------------
class DatasetWriter(ABC):
    """Writes one dataset folder, resumably: episodes are staged one file per seed (``stage``, safe to call
    from worker processes: a writer pickles), then committed into shards (``commit``).

    Subclasses set ``suffix`` (the staged files' extension) and implement the abstract methods.
    """

    format: ClassVar[str] = ""
    suffix: ClassVar[str] = ""

    def __init__(self, root: str | os.PathLike, compression: str | None = None) -> None:
        """``compression``: how the format compresses images (its own names; None: not at all)."""
        self.root = Path(root)
        self.compression = compression
        self.staging = Staging(self.root, "ep", self.suffix)

    @abstractmethod
    def stage(self, seed: int, traj: Trajectory, attrs: dict[str, Any], env_args: dict[str, Any]) -> Path:
        """Write one episode into ``staging/`` atomically; returns its path."""

    @abstractmethod
    def shards(self) -> list[Path]:
        """The committed files, in order."""

    @abstractmethod
    def commit(self, env_args: dict[str, Any], shard_size: int) -> list[Path]:
        """Move every staged episode (in seed order) into new shards of at most ``shard_size`` episodes, each
        written atomically, and delete each group's staged files once its shard is in place."""

    @abstractmethod
    def stored(self) -> Iterator[Stored]:
        """Every shard, then every staged file, with the env_args and episode attributes it records: what a
        resume checks its settings against when ``request.json`` is lost."""

    @abstractmethod
    def format_version(self) -> int:
        """The format's version among the committed files (the oldest, when a resume kept older shards)."""

    def committed(self) -> list[EpisodeRef]:
        """The episodes in shards (validated; no seed twice)."""
        return _reader_class(self.format)(self.root).episodes() if self.shards() else []

    def repair(self) -> list[int]:
        """Delete staged episodes whose seeds a shard already holds (a commit killed before its deletes);
        returns their seeds."""
        staged = self.staging.seeds()
        if not staged or not self.shards():
            return []
        merged = {ref.seed for ref in self.committed()}
        dropped = [s for s in staged if s in merged]
        for seed in dropped:
            self.staging.discard(seed)
        return dropped

    def write_stats(self, stats: dict[str, Any]) -> None:
        atomic_write_text(self.root / "stats.json", _json(stats))

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_text(self.root / "manifest.json", _json(manifest))


def _json(content: Any) -> str:
    return json.dumps(content, indent=2)


# --- the registry -------------------------------------------------------------------------------------------
_FORMATS: dict[str, tuple[type[DatasetReader], type[DatasetWriter] | None]] = {}


def register_format(name: str, writer: type[DatasetWriter] | None = None
                    ) -> Callable[[type[DatasetReader]], type[DatasetReader]]:
    """Class decorator: register a ``DatasetReader`` (and the ``DatasetWriter`` that makes its datasets)
    under ``name``. A name is registered once; a second registration is refused naming the first."""

    def decorate(reader: type[DatasetReader]) -> type[DatasetReader]:
        if name in _FORMATS:
            held = _FORMATS[name][0]
            raise ValueError(f"dataset format {name!r} is already registered by {held.__module__}."
                             f"{held.__qualname__}; choose another name")
        if not reader.layout:
            raise ValueError(f"{reader.__qualname__} must say what its datasets look like on disk (layout)")
        reader.format = name
        if writer is not None:
            writer.format = name
        _FORMATS[name] = (reader, writer)
        return reader

    return decorate


PLUGIN_GROUP = "vlagym.dataset_formats"


def load_format_plugins() -> None:
    """Import the format modules other installed packages declare, so their ``@register_format`` runs::

        [project.entry-points."vlagym.dataset_formats"]
        npz_episodes = "my_package.npz_episodes"
    """
    load_plugins(PLUGIN_GROUP, "dataset format")


def formats() -> list[str]:
    """The registered format names."""
    return sorted(_FORMATS)


def _reader_class(name: str) -> type[DatasetReader]:
    _check_name(name)
    return _FORMATS[name][0]


def _check_name(name: str) -> None:
    if name not in _FORMATS:
        raise ValueError(f"unknown dataset format {name!r}; registered: {', '.join(formats()) or 'none'}")


def detect_format(path: str | os.PathLike) -> str:
    """The registered format ``path`` is a dataset of; ``FileNotFoundError`` saying what each format looks for
    when none claims it, ``DatasetError`` when two do."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no dataset at {path}")
    claims = [name for name, (reader, _) in _FORMATS.items() if reader.detect(path)]
    if not claims:
        looked = "; ".join(f"{name}: {reader.layout}" for name, (reader, _) in sorted(_FORMATS.items()))
        hint = " (a collection in progress: rerun it to resume)" if (path / "staging").is_dir() else ""
        raise FileNotFoundError(f"{path} is not a dataset of any registered format{hint}; looked for {looked}")
    if len(claims) > 1:
        raise DatasetError(f"{path} looks like a dataset of several formats ({', '.join(sorted(claims))}); "
                           f"open it with open_dataset(path, format=...)")
    return claims[0]


def open_dataset(path: str | os.PathLike, format: str | None = None) -> DatasetReader:
    """A reader for the dataset at ``path`` (a folder, or a single file where the format allows), of
    ``format`` or of the format detected from what is on disk."""
    if format is None:
        format = detect_format(path)
    reader = _reader_class(format)
    if not reader.detect(Path(path)):
        raise FileNotFoundError(f"{path} is not a {format} dataset (expected {reader.layout})")
    return reader(path)


def dataset_writer(root: str | os.PathLike, format: str, compression: str | None = None) -> DatasetWriter:
    """A writer of ``format`` into the folder ``root`` (created on the first write)."""
    check_format(format)
    return _FORMATS[format][1](root, compression=compression)


def check_format(name: str) -> None:
    """Raise ``ValueError`` naming the registered formats unless ``name`` is one that can be written."""
    _check_name(name)
    if _FORMATS[name][1] is None:
        raise ValueError(f"dataset format {name!r} can be read but not written here")


def reader_of(ref: EpisodeRef) -> DatasetReader:
    """The reader that indexed ``ref``, or one opened on its file for a reference built by hand."""
    return ref.reader if ref.reader is not None else open_dataset(ref.path)
