"""Dataset integrity under failure: a kill mid-merge, two concurrent collections, a lost
request.json, corrupt chunks and flipped bytes (issue step 10, findings 3-6)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import pytest

from vlagym.agents.collect import CollectConfig, _env_args, collect
from vlagym.dataio.dataset import (
    DatasetError,
    Trajectory,
    index_demos,
    load_demo,
    read_manifest,
    verify,
)
from vlagym.dataio.robomimic_hdf5 import write_episode_file
from vlagym.dataio.windows import DemoWindows

ENV = "vlagym/TabletopTouch-v0"
SMALL = {"image_size": 32}

def _python(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


# --- finding 3: a kill between replacing a shard and unlinking its staged files ---------------------------
KILL_AFTER_SHARD_REPLACE = """
    import os, sys
    real_replace = os.replace
    def replace(src, dst):
        real_replace(src, dst)
        if os.path.basename(str(dst)).startswith("shard_"):
            os._exit(9)  # SIGKILL-like: no cleanup, no finally blocks
    os.replace = replace
    from vlagym.agents.collect import CollectConfig, _env_args, collect
    collect(CollectConfig(env=sys.argv[1], episodes=5, out=sys.argv[2], workers=1,
                          env_kwargs={"image_size": 32}, shard_size=2))
"""


def test_kill_between_shard_replace_and_staged_unlink_then_rerun(tmp_path):
    out = tmp_path / "merge"
    proc = _python(KILL_AFTER_SHARD_REPLACE, ENV, str(out))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 9, err[-2000:]
    staged = sorted((out / "staging").glob("ep_*.hdf5"))
    in_shard = {r.seed for r in index_demos(out)}
    assert len(staged) == 5 and len(in_shard) == 2, "the kill did not land between replace and unlink"
    manifest = collect(CollectConfig(env=ENV, episodes=5, out=str(out), workers=1, env_kwargs=SMALL, shard_size=2))
    seeds = [r.seed for r in index_demos(out)]
    assert manifest["episodes"] == 5 and len(seeds) == 5 and len(set(seeds)) == 5
    assert not (out / "staging").exists()


def test_index_refuses_a_seed_stored_twice(touch_copy):
    shutil.copy(touch_copy / "shard_00000.hdf5", touch_copy / "shard_00002.hdf5")
    with pytest.raises(DatasetError, match=r"shard_00002.hdf5 \[demo_0\]: seed \d+ is also stored in .*shard_00000"):
        index_demos(touch_copy)


# --- finding 4: two collections into one folder at once -----------------------------------------------------
HOLD_AT_MERGE = """
    import sys, time
    from pathlib import Path
    import vlagym.agents.collect as c
    real_merge = c._merge_staged
    def merge(root, cfg):  # hold the folder (and its lock) until the test says go
        Path(sys.argv[3], "ready").touch()
        while not Path(sys.argv[3], "go").exists():
            time.sleep(0.05)
        real_merge(root, cfg)
    c._merge_staged = merge
    c.collect(c.CollectConfig(env=sys.argv[1], episodes=3, out=sys.argv[2], workers=1,
                              env_kwargs={"image_size": 32}))
"""


def test_concurrent_collection_is_refused_naming_the_holder(tmp_path):
    out, flags = tmp_path / "shared", tmp_path / "flags"
    flags.mkdir()
    first = _python(HOLD_AT_MERGE, ENV, str(out), str(flags))
    try:
        deadline = time.time() + 120
        while not (flags / "ready").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert (flags / "ready").exists(), first.communicate()[1][-2000:]
        second = subprocess.run([sys.executable, "-m", "vlagym.experiments.cli", "collect", "--env", ENV,
                                 "--episodes", "3", "--workers", "1", "--image-size", "32", "--out", str(out)],
                                capture_output=True, text=True, timeout=300)
        assert second.returncode != 0
        assert f"pid {first.pid} on host" in second.stderr and "another process" in second.stderr
    finally:
        (flags / "go").touch()
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    seeds = [r.seed for r in index_demos(out)]
    assert len(seeds) == 3 == len(set(seeds)) and read_manifest(out)["episodes"] == 3
    assert all(v is not None for r in index_demos(out) for v in load_demo(r)["obs"].values())


# --- finding 5: a lost request.json -------------------------------------------------------------------------
def test_lost_request_json_still_refuses_other_settings(touch_copy):
    (touch_copy / "request.json").unlink()
    with pytest.raises(ValueError, match=r"shard_00000.hdf5 was collected with different settings: "
                                         r"env_kwargs.image_size \(stored 32, requested 48\)"):
        collect(CollectConfig(env=ENV, episodes=3, out=str(touch_copy), env_kwargs={"image_size": 48}, shard_size=2))
    with pytest.raises(ValueError, match=r"noise \(stored 0.0, requested 0.2\)"):
        collect(CollectConfig(env=ENV, episodes=3, out=str(touch_copy), env_kwargs=SMALL, shard_size=2, noise=0.2))
    with pytest.raises(ValueError, match=r"outside the requested train range \[100, "):
        collect(CollectConfig(env=ENV, episodes=3, out=str(touch_copy), env_kwargs=SMALL, shard_size=2, seed_start=100))
    # Staged episodes (no shard yet) are checked too.
    demo = load_demo(index_demos(touch_copy)[0])
    for shard in touch_copy.glob("shard_*.hdf5"):
        shard.unlink()
    (touch_copy / "staging").mkdir(exist_ok=True)  # the refused runs above made it
    traj = Trajectory(demo["obs"], demo["actions"], demo["rewards"], demo["dones"], demo.get("expert_actions"))
    write_episode_file(touch_copy / "staging" / "ep_000000000.hdf5", traj, {**demo["attrs"]}, _env_args(ENV, SMALL))
    with pytest.raises(ValueError, match=r"ep_000000000.hdf5 was collected with different settings: "
                                         r"env_kwargs.image_size \(stored 32, requested 48\)"):
        collect(CollectConfig(env=ENV, episodes=3, out=str(touch_copy), env_kwargs={"image_size": 48}, shard_size=2))


# --- finding 6: corrupt chunks, checksums, flipped bytes ----------------------------------------------------
def _overwrite_chunk(path: Path, demo: str, frame: int) -> None:
    with h5py.File(path, "r") as f:
        ds = f[f"data/{demo}/obs/rgb"]
        info = ds.id.get_chunk_info_by_coord((frame, 0, 0, 0))
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 3)
        fh.write(b"\xff" * (info.size // 3))


def test_corrupt_middle_chunk_is_found_by_verify_and_named_by_every_reader(touch_copy):
    shard = touch_copy / "shard_00000.hdf5"
    with h5py.File(shard, "r") as f:
        n = int(f["data/demo_1"].attrs["num_samples"])
    _overwrite_chunk(shard, "demo_1", n // 2)
    checks = verify(touch_copy)
    assert [c.ok for c in checks] == [False, True]
    assert checks[0].problems == [p for p in checks[0].problems if f"[demo_1] obs/rgb frame {n // 2}:" in p]
    assert len(checks[0].problems) == 1 and str(shard) in checks[0].problems[0]
    refs = index_demos(touch_copy)  # the structure and the last chunk are fine: only verify decodes everything
    with pytest.raises(DatasetError, match=r"shard_00000.hdf5 \[demo_1\] obs/rgb: cannot read"):
        load_demo(refs[1])
    windows = DemoWindows(touch_copy)
    t = refs[0].length + n // 2
    with pytest.raises(DatasetError, match=rf"shard_00000.hdf5 \[demo_1\] obs/rgb frames {n // 2}..{n // 2}"):
        windows[t]


def test_checksums_catch_bytes_that_still_decode(touch_copy):
    shard = touch_copy / "shard_00001.hdf5"
    with h5py.File(shard, "r") as f:
        offset = f["data/demo_0/actions"].id.get_offset()
        assert "actions" in json.loads(f["data/demo_0"].attrs["checksums"])
    with open(shard, "r+b") as fh:
        fh.seek(offset + 5)
        byte = fh.read(1)
        fh.seek(offset + 5)
        fh.write(bytes([byte[0] ^ 0x01]))
    problems = [p for c in verify(touch_copy) for p in c.problems]
    assert len(problems) == 1 and "shard_00001.hdf5 [demo_0] actions: checksum mismatch" in problems[0]


def test_verify_says_when_a_dataset_has_no_checksums(touch_copy):
    for shard in touch_copy.glob("shard_*.hdf5"):
        with h5py.File(shard, "a") as f:  # as a format-1 dataset was written
            for demo in f["data"].values():
                del demo.attrs["checksums"]
    checks = verify(touch_copy)
    assert all(c.ok for c in checks) and sum(c.without_checksums for c in checks) == 3
    assert len(DemoWindows(touch_copy)) == sum(r.length for r in index_demos(touch_copy))  # still loadable


def test_flipped_bytes_raise_dataset_errors_naming_the_file(touch_copy, tmp_path):
    data = (touch_copy / "shard_00000.hdf5").read_bytes()
    broken = tmp_path / "flipped"
    broken.mkdir()
    kinds = set()
    for offset in range(0, min(len(data), 6000), 7):
        flipped = bytearray(data)
        flipped[offset] ^= 0xFF
        (broken / "shard_00000.hdf5").write_bytes(bytes(flipped))
        try:
            for ref in index_demos(broken):
                load_demo(ref)
        except DatasetError as e:
            assert "shard_00000.hdf5" in str(e), (offset, e)
            kinds.add(type(e.__cause__).__name__ if e.__cause__ else "DatasetError")
        assert all(isinstance(p, str) for c in verify(broken) for p in c.problems)
    assert "RuntimeError" in kinds  # h5py's bare RuntimeError (a B-tree signature) is among those wrapped


def test_bad_stats_json_is_named(touch_copy):
    (touch_copy / "stats.json").write_text('{"actions": {"mean": [0.1,')
    with pytest.raises(DatasetError, match=r"stats.json: not valid JSON"):
        DemoWindows(touch_copy).action_stats()
