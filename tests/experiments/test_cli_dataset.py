"""``vlagym dataset verify`` and ``info``, run the way a user runs them: in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from vlagym.agents.collect import CollectConfig, collect


def vlagym(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlagym.experiments.cli", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def dataset(tmp_path) -> Path:
    out = tmp_path / "touch"
    collect(CollectConfig(env="vlagym/TabletopTouch-v0", episodes=3, out=str(out), workers=1,
                          env_kwargs={"image_size": 32}, shard_size=2))
    return out


def test_verify_names_the_bad_frame_and_exits_non_zero(dataset):
    ok = vlagym("dataset", "verify", str(dataset))
    assert ok.returncode == 0, ok.stderr
    assert "shard_00000.hdf5  2 demos  ok, checksums match" in ok.stdout
    assert "verified 3 demos in 2 shards: no problems" in ok.stdout
    shard = dataset / "shard_00001.hdf5"
    with h5py.File(shard) as f:
        info = f["data/demo_0/obs/rgb"].id.get_chunk_info_by_coord((4, 0, 0, 0))
    with open(shard, "r+b") as fh:
        fh.seek(info.byte_offset + 8)
        fh.write(b"\x00" * (info.size - 16))
    assert vlagym("dataset", "info", str(dataset)).returncode == 0  # info checks only the last chunk
    bad = vlagym("dataset", "verify", str(dataset))
    assert bad.returncode == 1
    assert "shard_00001.hdf5  1 demos  BAD: 1 problems" in bad.stdout
    assert f"{shard} [demo_0] obs/rgb frame 4: does not decode" in bad.stdout
    assert "verified 3 demos in 2 shards: 1 problems in 1 shards" in bad.stdout


def test_info_reads_success_from_the_demos(dataset):
    with h5py.File(dataset / "shard_00000.hdf5", "a") as f:
        f["data/demo_1"].attrs["success"] = False
    res = vlagym("dataset", "info", str(dataset))
    assert res.returncode == 0, res.stderr
    assert "success      67% (2 of 3 episodes' 'success' attribute)" in res.stdout
