"""run_jobs survives a worker that dies: the pool is rebuilt and the unfinished episodes rerun."""

from __future__ import annotations

import pytest

from vlagym.agents.rollout import FAULT_ENV, Job, WorkerCrash, run_jobs

JOBS = [Job("vlagym/TabletopTouch-v0", s, env_kwargs=(("obs_mode", "state"),)) for s in range(2_000_000, 2_000_004)]


def test_a_killed_worker_costs_no_episode(tmp_path, monkeypatch):
    marker = tmp_path / "killed"
    monkeypatch.setenv(FAULT_ENV, f"{marker}:2")  # the first worker to start its second job dies, once
    finished = []
    episodes = run_jobs(JOBS, workers=2, on_result=lambda i, ep: finished.append(i))
    assert marker.exists()  # a worker did die
    assert [e.seed for e in episodes] == [j.seed for j in JOBS] and all(e.success for e in episodes)
    assert sorted(finished) == [0, 1, 2, 3]  # each reported once, after the rebuilt pool ran what was lost


def test_workers_that_keep_dying_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, f"{tmp_path / 'killed'}:1")
    with pytest.raises(WorkerCrash, match=r"worker process died 1 times .* 4 of 4 episodes unfinished, the first "
                                          r"vlagym/TabletopTouch-v0 seed 2000000"):
        run_jobs(JOBS, workers=2, retries=0)


def test_workers_below_one_are_refused():
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        run_jobs(JOBS, workers=0)
