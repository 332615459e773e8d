"""Copy a dataset into another registered format (``vlagym dataset export --format lerobot DIR OUT``).

Every episode is read through the source's reader and written through the target format's writer, as a
collection writes it: staged one per seed, committed in groups of ``shard_size``, then the statistics and the
manifest (the source's, with the new format and where it came from). A killed export resumes: staged seeds are
not read again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vlagym.core.io import DatasetError
from vlagym.dataio.dataset import compute_stats
from vlagym.dataio.format import Trajectory, dataset_writer, open_dataset
from vlagym.dataio.staging import locked


def trajectory(episode: dict[str, Any]) -> Trajectory:
    """A loaded episode (``DatasetReader.load``) as the Trajectory a writer stages."""
    return Trajectory(obs=episode["obs"], actions=episode["actions"], rewards=episode["rewards"],
                      dones=episode["dones"], expert_actions=episode.get("expert_actions"),
                      labels=episode.get("labels") or None)


def export_dataset(src: str | os.PathLike, out: str | os.PathLike, format: str, shard_size: int = 100,
                   compression: str | None = "gzip") -> dict[str, Any]:
    """Write every episode of the dataset at ``src`` (any registered format) into a new ``format`` dataset at
    ``out``; returns its manifest. Refuses an ``out`` that already holds a committed dataset. ``compression``:
    in the target format's terms, as for collection (the default: gzip for HDF5, AV1 video for lerobot)."""
    src, out = Path(src), Path(out)
    if src.resolve() == out.resolve():
        raise ValueError(f"export needs another folder than its source ({src})")
    reader = open_dataset(src)
    refs = reader.episodes()
    if not refs:
        raise DatasetError(f"{src} holds no episodes to export")
    writer = dataset_writer(out, format, compression)
    with locked(out, "export"):
        if writer.shards():
            raise FileExistsError(f"{out} already holds a {format} dataset; export into a new folder")
        staged = set(writer.staging.seeds())
        env_args = reader.env_args()
        for ref in tqdm(refs, desc=f"export to {format}", unit="episode"):
            if ref.seed in staged:
                continue
            episode = reader.load(ref)
            attrs = {k: v for k, v in episode["attrs"].items() if k not in ("num_samples", "checksums")}
            writer.stage(ref.seed, trajectory(episode), attrs, reader.env_args(ref))
        writer.commit(env_args, shard_size)
        writer.staging.clear()
        new = writer.committed()
        writer.write_stats(compute_stats(new))
        try:
            manifest = dict(reader.metadata())
        except FileNotFoundError:
            manifest = {"env_args": env_args}
        manifest.update(format=format, format_version=writer.format_version(), episodes=len(new),
                        frames=int(sum(r.length for r in new)), shards=[p.name for p in writer.shards()],
                        exported_from={"path": str(src), "format": reader.format})
        writer.write_manifest(manifest)
    return manifest
