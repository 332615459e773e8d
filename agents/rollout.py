"""Run agents in environments: single episodes, parallel batches and their summaries.

An *agent* is anything with ``act(obs, info) -> action`` and optionally ``reset()``. The
scripted experts are agents; so is a trained policy wrapped by ``PolicyAgent`` later.
Episodes run in worker processes, one environment each, seeded explicitly.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from vlagym.agents import backends
from vlagym.agents.backends import Backend, WorkerCrash
from vlagym.agents.video import annotate
from vlagym.core.stats import wilson_interval
from vlagym.dataio.dataset import Trajectory


@dataclass
class Episode:
    """The outcome of one episode (frames only when asked for)."""

    env_id: str
    seed: int
    instruction: str
    success: bool
    steps: int
    final_distance: float | None
    agent_ms_per_step: float
    env_ms_per_step: float
    info: dict[str, Any] = field(default_factory=dict)
    frames: list[np.ndarray] | None = None
    trajectory: Trajectory | None = None

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("frames", "trajectory")}
        return out


def expert_agent(env: gym.Env, noise: float = 0.0):
    """The task's scripted expert for the episode that ``env`` was just reset to."""
    return env.unwrapped.task.expert(noise=noise)


def run_episode(
    env: gym.Env,
    seed: int,
    make_agent: Callable[[gym.Env], Any] = expert_agent,
    record: bool = False,
    video_key: str = "rgb",
    keep_trajectory: bool = False,
    heatmaps: bool = False,
) -> Episode:
    """Reset ``env`` with ``seed``, let the agent act until the episode ends.

    ``record`` keeps annotated video frames; ``keep_trajectory`` keeps the raw observations,
    executed actions, rewards and dones (for datasets); ``heatmaps`` draws the agent's predicted
    heatmaps (``PolicyAgent.locate``) over the recorded frames.
    """
    obs, info = env.reset(seed=seed)
    agent = make_agent(env)
    if hasattr(agent, "reset"):
        agent.reset()
    instruction = obs["instruction"]
    draw = (lambda o: _with_heatmaps(o, agent)) if heatmaps else (lambda o: o)  # noqa: E731
    frames = [annotate(_frame(draw(obs), video_key), instruction, 0)] if record else None
    agent_t = env_t = 0.0
    steps, done = 0, False
    traj: dict[str, list] = {"obs": [], "actions": [], "rewards": [], "dones": [], "expert_actions": [],
                             "labels": []}
    while not done:
        t0 = time.perf_counter()
        action = agent.act(obs, info)
        t1 = time.perf_counter()
        if keep_trajectory:
            traj["obs"].append({k: v for k, v in obs.items() if k != "instruction"})
            traj["actions"].append(np.asarray(action, dtype=np.float32))
            if "labels" in info:
                traj["labels"].append(info["labels"])
            if getattr(agent, "last_plan", None) is not None:
                traj["expert_actions"].append(np.asarray(agent.last_plan, dtype=np.float32))
        obs, reward, terminated, truncated, info = env.step(action)
        if keep_trajectory:
            traj["rewards"].append(reward)
            traj["dones"].append(terminated or truncated)
        env_t += time.perf_counter() - t1
        agent_t += t1 - t0
        steps += 1
        done = terminated or truncated
        if record:
            outcome = None if not done else ("success" if info["success"] else "failure")
            frames.append(annotate(_frame(draw(obs), video_key), instruction, steps, outcome))
    facts = {k: v for k, v in info.items() if isinstance(v, (int, float, str, bool)) and k != "instruction"}
    return Episode(
        env_id=env.spec.id if env.spec else type(env.unwrapped).__name__,
        seed=int(seed),
        instruction=instruction,
        success=bool(info["success"]),
        steps=steps,
        final_distance=_final_distance(info),
        agent_ms_per_step=1000 * agent_t / steps,
        env_ms_per_step=1000 * env_t / steps,
        info=facts,
        frames=frames,
        trajectory=_stack(traj) if keep_trajectory else None,
    )


def _stack(traj: dict[str, list]) -> Trajectory:
    keys = traj["obs"][0].keys()
    return Trajectory(
        obs={k: np.stack([o[k] for o in traj["obs"]]) for k in keys},
        actions=np.stack(traj["actions"]).astype(np.float32),
        rewards=np.asarray(traj["rewards"], dtype=np.float32),
        dones=np.asarray(traj["dones"], dtype=bool),
        expert_actions=(np.stack(traj["expert_actions"]).astype(np.float32)
                        if len(traj["expert_actions"]) == len(traj["actions"]) else None),
        labels=({k: np.stack([lab[k] for lab in traj["labels"]]) for k in traj["labels"][0]}
                if traj["labels"] and len(traj["labels"]) == len(traj["actions"]) else None),
    )


def _with_heatmaps(obs: dict[str, Any], agent) -> dict[str, Any]:
    """``obs`` with each camera image overlaid by the agent's predicted heatmaps (for videos only)."""
    from vlagym.agents.video import overlay_heatmaps

    where = agent.locate(obs)
    out = dict(obs)
    for key, pred in where.items():
        if isinstance(pred, dict) and key in obs:
            out[key] = overlay_heatmaps(obs[key], pred["heatmap"], pred["uv"])
    return out


def video_kwargs(env_id: str) -> dict[str, Any]:
    """Env kwargs for recording: navigation videos show the top-down map beside the camera."""
    from vlagym.envs import NAV_IDS

    return {"top_down_map": True} if env_id in NAV_IDS else {}


def _frame(obs: dict[str, Any], key: str) -> np.ndarray:
    if key not in obs:
        raise KeyError(f"observation has no {key!r} to record; keys: {sorted(obs)} (use obs_mode='rgb')")
    frame = obs[key]
    if "rgb_wrist" in obs and key == "rgb" and obs["rgb_wrist"].shape == frame.shape:
        frame = np.concatenate([frame, obs["rgb_wrist"]], axis=1)  # tabletop: the wrist view beside the front one
    if "rgb_map" in obs and key == "rgb":  # navigation: the map beside the camera view
        m = obs["rgb_map"]
        if m.shape[0] != frame.shape[0]:
            reps = max(1, frame.shape[0] // m.shape[0])
            m = np.repeat(np.repeat(m, reps, 0), reps, 1)[: frame.shape[0]]
        frame = np.concatenate([frame, m], axis=1)
    return frame


class RandomAgent:
    """Uniform random actions from the env's action space, seeded by the episode (no ``stop`` in
    discrete navigation: it would end the episode)."""

    def __init__(self, env: gym.Env, seed: int) -> None:
        self.space = env.action_space
        self.rng = np.random.default_rng([seed, 7])

    def act(self, obs, info):
        if isinstance(self.space, gym.spaces.Discrete):
            return int(self.rng.integers(1, self.space.n))
        return self.rng.uniform(self.space.low, self.space.high).astype(np.float32)


class TakeoverAgent:
    """Let ``driver`` act for ``steps`` steps, then hand the episode to a freshly made expert.
    (``Job(takeover=k)`` lengthens the time limit by k steps, so the expert keeps its whole budget.)

    The expert reads its phase from the simulator, so it must solve the task from wherever the
    driver left it, unless the state is unsolvable (``Task.unsolvable``), which ``handover``
    records: ``{"step": k, "unsolvable": reason or None}``.
    """

    def __init__(self, env: gym.Env, driver: Any, steps: int) -> None:
        self.env, self.driver, self.steps = env, driver, steps
        self.t, self.expert, self.handover = 0, None, None

    def reset(self) -> None:
        if hasattr(self.driver, "reset"):
            self.driver.reset()

    def act(self, obs, info):
        self.t += 1
        if self.t <= self.steps:
            return self.driver.act(obs, info)
        if self.expert is None:
            task = self.env.unwrapped.task
            self.expert = task.expert()
            self.handover = {"step": self.steps, "unsolvable": task.unsolvable()}
        return self.expert.act(obs, info)


def _final_distance(info: dict[str, Any]) -> float | None:
    for key in ("distance_to_goal", "target_distance"):
        if key in info:
            return float(info[key])
    return None


# --- parallel batches ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One episode to run: ``agent`` is "expert" or the path of a saved policy."""

    env_id: str
    seed: int
    record: bool = False
    noise: float = 0.0
    env_kwargs: tuple = ()
    agent: str = "expert"
    takeover: int | None = None
    """Hand over to the expert after this many steps of ``agent`` ("random" or a policy path)."""
    latency: float | str | None = None
    """Milliseconds each of ``agent``'s decisions takes, or ``"measured"`` (``LatencyAgent``); None acts at once."""


# Fault injection for tests: ``VLAGYM_FAULT_EXIT_ONCE=<marker file>:<n>`` makes the process that starts its
# n-th job exit at once, unless the marker file exists (it is created first, atomically, so one process
# dies once). In a worker that is a killed worker; with workers=1 it is the evaluating process itself.
FAULT_ENV = "VLAGYM_FAULT_EXIT_ONCE"
_JOBS_STARTED: dict[int, int] = {}  # per process id: a forked worker starts counting at 0


def _fault_hook() -> None:
    pid = os.getpid()
    _JOBS_STARTED[pid] = _JOBS_STARTED.get(pid, 0) + 1
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    marker, _, n = spec.rpartition(":")
    if _JOBS_STARTED[pid] != int(n):
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os._exit(70)


def _run_job(job: Job) -> Episode:
    _fault_hook()
    env = _worker_env(job.env_id, job.env_kwargs, job.takeover or 0)
    if job.agent == "expert":
        make = lambda e: expert_agent(e, job.noise)  # noqa: E731
    elif job.agent == "random":
        make = lambda e: RandomAgent(e, job.seed)  # noqa: E731
    else:
        agent = _worker_policy(job.agent)
        make = lambda e: agent  # noqa: E731
    if job.latency is not None:
        make = with_latency(make, job.latency)
    if job.takeover is None:
        return latency_facts(run_episode(env, job.seed, make, record=job.record), make)
    made: list[TakeoverAgent] = []

    def make_takeover(e):
        made.append(TakeoverAgent(e, make(e), job.takeover))
        return made[-1]

    ep = run_episode(env, job.seed, make_takeover, record=job.record)
    # None: the episode ended before the hand-over (the driver solved it, or a discrete stop).
    ep.info["handover"] = made[-1].handover
    return latency_facts(ep, make)


def with_latency(make: Callable[[gym.Env], Any], latency: float | str) -> Callable[[gym.Env], Any]:
    """``make`` with each agent it makes wrapped in ``LatencyAgent`` at the env's control rate; the last one
    made is kept as ``.made`` (for ``latency_facts``)."""
    from vlagym.agents.latency import LatencyAgent

    def wrapped(env: gym.Env):
        wrapped.made = LatencyAgent.for_env(make(env), env, latency)
        return wrapped.made

    wrapped.made = None
    return wrapped


def latency_facts(ep: Episode, make: Callable[[gym.Env], Any]) -> Episode:
    """With a ``with_latency`` agent: how many decisions the episode took and their mean delay in control
    steps, into ``ep.info`` (nothing otherwise, so episodes without latency read as before)."""
    agent = getattr(make, "made", None)
    if agent is not None and agent.decisions:
        ep.info["decisions"] = len(agent.decisions)
        ep.info["delay_steps_mean"] = float(np.mean([d for _, d in agent.decisions]))
    return ep


_POLICIES: dict[str, Any] = {}


def _worker_policy(path: str):
    """One loaded policy per worker process (loading once, not per episode)."""
    if path not in _POLICIES:
        from vlagym.agents.policy_agent import PolicyAgent

        _POLICIES[path] = PolicyAgent.load(path)
    return _POLICIES[path]


_ENVS: dict[tuple, gym.Env] = {}


def _worker_env(env_id: str, kwargs: tuple, extra_steps: int = 0) -> gym.Env:
    """One env per (id, kwargs) per worker process, reused across episodes (reset wipes it).
    ``extra_steps`` lengthens the time limit (a hand-over gives the expert its whole budget)."""
    import vlagym  # noqa: F401  (registers ids in spawned workers)

    key = (env_id, kwargs, extra_steps)
    if key not in _ENVS:
        limit = {"max_episode_steps": gym.spec(env_id).max_episode_steps + extra_steps} if extra_steps else {}
        _ENVS[key] = gym.make(env_id, **limit, **dict(kwargs))
    return _ENVS[key]


def run_jobs(jobs: Iterable[Job], workers: int | None = None, desc: str = "episodes",
             on_result: Callable[[int, Episode], None] | None = None, retries: int = 2,
             backend: Backend | str | None = None) -> list[Episode]:
    """Run episodes in ``workers`` processes with a progress bar; results in job order.

    ``on_result(i, episode)`` runs in this process as each job finishes (evaluation logs episodes there,
    so a crash loses none). ``backend`` says where the workers are (``vlagym.agents.backends``: a local process
    pool, the default, or Ray actors). A local worker that dies takes the pool with it (``BrokenProcessPool``):
    the pool is rebuilt and the unfinished jobs resubmitted, up to ``retries`` times, then ``WorkerCrash``; Ray
    restarts a dead actor and reruns its unfinished jobs itself, up to ``retries`` times.
    """
    jobs = list(jobs)
    backend = backends.backend(backend)
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    results: list[Episode | None] = [None] * len(jobs)
    bar = tqdm(total=len(jobs), desc=desc, unit="ep", dynamic_ncols=True)
    ok = 0

    def done(i: int, ep: Episode) -> None:
        nonlocal ok
        results[i] = ep
        if on_result is not None:
            on_result(i, ep)
        ok += ep.success
        bar.set_postfix(success=f"{ok}/{bar.n + 1}")
        bar.update()

    if workers == 1 and backend.executor == "local":
        for i, job in enumerate(jobs):
            done(i, _run_job(job))
    else:
        crashes = 0
        while (pending := [i for i, r in enumerate(results) if r is None]):
            pool = backend.pool(min(workers, len(pending)), retries)
            try:
                # A few jobs per worker in flight, not all of them: Ray assigns a job to an actor when it is
                # submitted, so a long episode then holds back only the one or two queued behind it.
                queue, futures = iter(pending), {}
                for i in itertools.islice(queue, 2 * workers):
                    futures[pool.submit(_run_job, jobs[i])] = i
                while futures:
                    finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        done(futures.pop(fut), fut.result())
                        for i in itertools.islice(queue, 1):
                            futures[pool.submit(_run_job, jobs[i])] = i
            except BrokenProcessPool as e:
                crashes += 1
                left = [i for i, r in enumerate(results) if r is None]
                first = jobs[left[0]]
                if crashes > retries:
                    bar.close()
                    raise WorkerCrash(
                        f"{desc}: a worker process died {crashes} times (killed, out of memory or a crash in "
                        f"native code); {len(left)} of {len(jobs)} episodes unfinished, the first "
                        f"{first.env_id} seed {first.seed}") from e
                bar.write(f"{desc}: a worker process died; rerunning the {len(left)} unfinished episodes in a new "
                          f"pool (retry {crashes} of {retries})", file=sys.stderr)
            except WorkerCrash:
                bar.close()
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    bar.close()
    return results


def summarize(episodes: list[Episode]) -> dict[str, Any]:
    """Success with a 95% Wilson interval, lengths, distances and timing for a list of episodes."""
    n = len(episodes)
    k = sum(e.success for e in episodes)
    lo, hi = wilson_interval(k, n)
    dists = [e.final_distance for e in episodes if e.final_distance is not None]
    agent_ms = float(np.mean([e.agent_ms_per_step for e in episodes])) if n else 0.0
    nav = n > 0 and all("shortest_path_length" in e.info and "path_length" in e.info for e in episodes)
    extra = {}
    if nav:
        from vlagym.agents.metrics import spl

        extra["spl"] = spl([e.success for e in episodes], [e.info["shortest_path_length"] for e in episodes],
                           [e.info["path_length"] for e in episodes])
    return {
        "episodes": n,
        "successes": k,
        "success_rate": k / n if n else 0.0,
        "success_ci95": [lo, hi],
        "mean_steps": float(np.mean([e.steps for e in episodes])) if n else 0.0,
        "final_distance_mean": float(np.mean(dists)) if dists else None,
        "agent_ms_per_step": agent_ms,
        "agent_hz": 1000.0 / agent_ms if agent_ms > 0 else None,
        "env_ms_per_step": float(np.mean([e.env_ms_per_step for e in episodes])) if n else 0.0,
        **extra,
    }
