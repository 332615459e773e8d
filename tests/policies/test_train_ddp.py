"""Distributed data parallel training: ``vlagym train --nproc 2`` (two gloo processes on this machine) matches
one process at the same global batch, within a tolerance (BatchNorm's statistics are per process), and rank 0
alone writes the run, with both ranks' RNG states in the checkpoint."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from vlagym.policies.train import StepSampler, TrainConfig, train

TINY_BCZ = {"text_encoder": "hash", "text_dim": 16, "hidden_dim": 32, "horizon": 3}
SETTINGS = dict(policy="bcz", steps=8, batch_size=8, num_workers=0, eval_every=0, save_every=4, log_every=2,
                warmup_steps=2, threads=1)


def _cli_args(data, out, **kw) -> list[str]:
    settings = {**SETTINGS, "data": f"[{data}]", "out": out, **kw}
    return [f"{k}={v}" for k, v in settings.items()] + [f"policy.{k}={v}" for k, v in TINY_BCZ.items()]


def test_the_ranks_share_each_global_batch():
    whole = list(StepSampler(100, 8, 3, seed=0))
    shares = [list(StepSampler(100, 8, 3, seed=0, rank=r, world=2)) for r in (0, 1)]
    assert [a + b for a, b in zip(*shares)] == whole
    with pytest.raises(ValueError, match="batch_size 8 does not split over 3 processes"):
        StepSampler(100, 8, 3, seed=0, world=3)


def test_two_processes_match_one_at_the_same_global_batch(touch_data, tmp_path):
    single = train(TrainConfig(data=[str(touch_data)], out=str(tmp_path / "single"), policy_overrides=TINY_BCZ,
                               **SETTINGS), progress=False)
    train(TrainConfig(data=[str(touch_data)], out=str(tmp_path / "seed1"), policy_overrides=TINY_BCZ,
                      seed=1, **SETTINGS), progress=False)
    r = subprocess.run([sys.executable, "-m", "vlagym.experiments.cli", "train", "--nproc", "2",
                        *_cli_args(touch_data, tmp_path / "ddp")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("final policy:") == 1  # rank 0 reports, rank 1 is silent

    import json

    ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert ddp["final_loss"] == pytest.approx(single["final_loss"], rel=0.05)
    a, b, c = (load_file(tmp_path / run / "best" / "model.safetensors") for run in ("single", "ddp", "seed1"))
    params = [k for k in a if a[k].is_floating_point() and "running_" not in k]  # BN's running stats are rank 0's
    gap = max(float((a[k] - b[k]).abs().max()) for k in params)
    seed_gap = max(float((a[k] - c[k]).abs().max()) for k in params)
    assert gap < 0.02 and gap < seed_gap / 50, (gap, seed_gap)  # here: 0.003 against 1.5

    state = torch.load(tmp_path / "ddp" / "checkpoint" / "train_state.pt", weights_only=True)
    assert state["step"] == 8 and len(state["rank_rngs"]) == 2
    assert not any(p.name.startswith(".") for p in (tmp_path / "ddp").iterdir())  # no half-written checkpoint


def test_nproc_refuses_a_batch_that_does_not_split(touch_data, tmp_path):
    r = subprocess.run([sys.executable, "-m", "vlagym.experiments.cli", "train", "--nproc", "3",
                        *_cli_args(touch_data, tmp_path / "ddp")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "batch_size 8 does not split over --nproc 3" in r.stderr


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_same_weights(touch_data, tmp_path):
    import os
    import signal
    import time
    from pathlib import Path

    def _state(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            return "X"

    def _children(pid: int) -> list[int]:  # every descendant: vlagym train -> torchrun -> the ranks
        parent = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parent[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError):
                pass
        out, frontier = [], [pid]
        while frontier:
            frontier = [p for p, pp in parent.items() if pp in frontier]
            out += frontier
        return out

    cmd = [sys.executable, "-m", "vlagym.experiments.cli", "train", "--nproc", "2"]
    ref = subprocess.run(cmd + _cli_args(touch_data, tmp_path / "ref", steps=40), capture_output=True, text=True,
                         timeout=900)
    assert ref.returncode == 0, ref.stderr[-3000:]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + _cli_args(touch_data, killed, steps=40), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and not (killed / "checkpoint" / "train_state.pt").exists():
        time.sleep(0.05)
    ranks = _children(proc.pid)  # torchrun starts each rank in a session of its own: kill them all at once
    for pid in [proc.pid, *ranks]:
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    while any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in ranks):
        time.sleep(0.05)
    assert torch.load(killed / "checkpoint" / "train_state.pt", weights_only=True)["step"] < 40, "killed too late"
    res = subprocess.run(cmd + _cli_args(touch_data, killed, steps=40) + ["--resume"], capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = (load_file(run / "checkpoint" / "policy" / "model.safetensors") for run in (tmp_path / "ref", killed))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{k} differs after resume")
