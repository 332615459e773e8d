"""The Ray executor: the same datasets and reports as the local process pool, a killed actor's episodes rerun
once each, and a clear error when ``--address`` points at no cluster.

One single-node Ray cluster (2 CPUs) serves the whole session; starting it costs several seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vlagym.agents.backends import Backend, WorkerCrash
from vlagym.agents.collect import CollectConfig, collect
from vlagym.agents.rollout import FAULT_ENV, Job, run_jobs

ray = pytest.importorskip("ray")

JOBS = [Job("vlagym/TabletopTouch-v0", s, env_kwargs=(("obs_mode", "state"),)) for s in range(2_000_000, 2_000_004)]
TIMING = ("agent_ms_per_step", "env_ms_per_step")


@pytest.fixture(scope="module")  # shut down after this module: its processes would share the cores with the rest
def ray_cluster():
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def _same_dataset(a: Path, b: Path) -> None:
    """Every file byte for byte, but the manifest's timing and provenance (when and where it ran)."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files_a:
        if rel.name not in ("manifest.json", ".lock"):  # .lock: the last holder's pid and time
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    for key in ("episodes", "frames", "seeds", "dropped_seeds", "shards", "env_args", "seed_range"):
        assert ma.get(key) == mb.get(key), key


def _touch(out: Path, **kw) -> CollectConfig:  # touch_data's collection (conftest), into ``out``
    return CollectConfig(env="vlagym/TabletopTouch-v0", episodes=3, out=str(out), env_kwargs={"image_size": 32},
                         shard_size=2, **kw)


def test_ray_collects_the_local_pools_dataset(ray_cluster, touch_data, tmp_path):
    manifest = collect(_touch(tmp_path / "ray", workers=2, executor="ray"))
    assert manifest["episodes"] == 3
    _same_dataset(touch_data, tmp_path / "ray")


def test_a_killed_actors_episodes_rerun_once(ray_cluster, touch_data, tmp_path, monkeypatch):
    marker = tmp_path / "killed"
    monkeypatch.setenv(FAULT_ENV, f"{marker}:2")  # the first actor to start its second episode dies, once
    collect(_touch(tmp_path / "ray", workers=2, executor="ray"))
    assert marker.exists()  # an actor did die mid-collection
    _same_dataset(touch_data, tmp_path / "ray")  # nothing lost, nothing twice

    marker.unlink()
    finished = []
    episodes = run_jobs(JOBS, workers=2, backend="ray", on_result=lambda i, ep: finished.append(i))
    assert marker.exists()
    assert [e.seed for e in episodes] == [j.seed for j in JOBS] and all(e.success for e in episodes)
    assert sorted(finished) == [0, 1, 2, 3]  # each episode reported once, the rerun one included


def test_an_actor_dying_past_its_restarts_is_a_worker_crash(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, f"{tmp_path / 'killed'}:1")
    with pytest.raises(WorkerCrash, match="a Ray worker died past its 0 restarts"):
        run_jobs(JOBS, workers=2, backend="ray", retries=0)


def test_ray_and_local_evaluations_report_the_same(ray_cluster, tmp_path):
    from vlagym.experiments.evaluate import evaluate

    reports = [evaluate(None, ["vlagym/TabletopTouch-v0"], 3, workers=2, executor=ex,
                        env_kwargs={"obs_mode": "state"}, out=str(tmp_path / ex)) for ex in ("local", "ray")]
    lines = {ex: [json.loads(line) for line in (tmp_path / ex / "episodes.jsonl").read_text().splitlines()]
             for ex in ("local", "ray")}
    logs = [sorted(_untimed(e) for e in lines[ex] if "key" in e) for ex in ("local", "ray")]
    assert logs[0] == logs[1] and len(logs[0]) == 3
    assert reports[0]["agents"]["expert"]["overall"]["success_rate"] == \
        reports[1]["agents"]["expert"]["overall"]["success_rate"]


def _untimed(entry: dict) -> str:
    """A log line without its timing (which no two runs share), as sortable text (the log is in finish order)."""
    entry["episode"] = {k: v for k, v in entry["episode"].items() if k not in TIMING}
    return json.dumps(entry, sort_keys=True)


def test_an_address_with_no_cluster_is_refused_at_once(tmp_path):
    with pytest.raises(ValueError, match=r"no Ray cluster at --address 127\.0\.0\.1:1: .*ray start --head"):
        Backend("ray", "127.0.0.1:1").pool(1)
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        Backend("ray", "somewhere").pool(1)
    with pytest.raises(ValueError, match="it needs --executor ray"):
        CollectConfig(env="vlagym/TabletopTouch-v0", episodes=1, out=str(tmp_path), address="10.0.0.1:6379")


TOUCH = ["--env", "vlagym/TabletopTouch-v0"]


@pytest.mark.parametrize("command", [
    ["collect", *TOUCH, "--episodes", "1"],
    ["eval", *TOUCH, "--policy", "runs/none", "--episodes", "1"],
    ["eval", *TOUCH, "--suite", "generalization", "--episodes", "1"],
    ["dagger", "--policy", "runs/none", "--episodes", "1"],
], ids=["collect", "eval", "suite", "dagger"])
def test_every_command_refuses_an_address_with_no_cluster(command, tmp_path):
    r = subprocess.run([sys.executable, "-m", "vlagym.experiments.cli", *command, "--out", str(tmp_path / "d"),
                        "--executor", "ray", "--address", "127.0.0.1:1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    last = r.stderr.splitlines()[-1]
    assert last.startswith(f"vlagym {command[0]}: error: no Ray cluster at --address 127.0.0.1:1: ")
    assert not (tmp_path / "d").exists()  # refused before anything was written


@pytest.mark.slow
def test_ray_and_local_suites_report_the_same(ray_cluster, tmp_path):
    from vlagym.experiments.suites import run_suite

    def cells(executor: str) -> list[dict]:
        report = run_suite("generalization", None, ["vlagym/TabletopTouch-v0"], 2, workers=2, executor=executor,
                           env_kwargs={"obs_mode": "state"}, out=str(tmp_path / executor))
        return [{k: v for k, v in c.items() if k not in ("agent_ms_per_step", "agent_hz", "env_ms_per_step")}
                for c in report["cells"]]

    local, on_ray = cells("local"), cells("ray")
    assert local == on_ray and len(local) == 5  # L1-L5, the expert's success and steps on each


TWO_NODES = """
import sys
from ray.cluster_utils import Cluster
from vlagym.agents.collect import CollectConfig, collect

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
cluster.add_node(num_cpus=1)
try:
    collect(CollectConfig(env="vlagym/TabletopTouch-v0", episodes=3, out=sys.argv[1], env_kwargs={"image_size": 32},
                          shard_size=2, workers=2, executor="ray", address=cluster.address))
finally:
    import ray

    ray.shutdown()
    cluster.shutdown()
"""


@pytest.mark.slow
def test_a_two_node_cluster_at_its_address_collects_the_same_dataset(touch_data, tmp_path):
    # One CPU per node and one per actor: the two workers run on different nodes. In a process of its own, since
    # this session's tests hold a single-node cluster already.
    r = subprocess.run([sys.executable, "-c", TWO_NODES, str(tmp_path / "two")], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    _same_dataset(touch_data, tmp_path / "two")


def test_more_workers_than_the_cluster_has_cpus_run_on_the_cpus_it_has(ray_cluster, capfd):
    episodes = run_jobs(JOBS, workers=4, backend="ray")  # two of four actors would never start, and wait forever
    assert [e.seed for e in episodes] == [j.seed for j in JOBS] and all(e.success for e in episodes)
    assert "ray: 4 workers asked for, the cluster has 2 CPUs: running 2" in capfd.readouterr().err
