"""The one evaluator: an agent played on an env over fixed seeds, with the summary every report gives.

BC training's validation (``vlagym.policies.train``, which sits below this layer and is handed
``validation_success``), the RL learning curve (``vlagym.experiments.rl``), ``vlagym eval`` and the suites all
play their episodes here, so one policy on one list of seeds gives the same numbers wherever it is measured.

An agent source is one of:

* ``"expert"``, ``"random"`` or the path of a saved policy (a policy folder, a training run, an SB3 zip or an
  RL run folder): its episodes run as ``Job``s through ``run_jobs``, in worker processes that load it once
  (or in this process with ``workers=1``);
* a live object: a vlagym ``Policy`` (acting through ``PolicyAgent``), a stable-baselines3 model (through
  ``SB3Agent``, the SB3 observation transform it was trained with) or an agent with ``act(obs, info)``. Its
  episodes run in this process on one env: the object may be mid-training on a GPU and is not sent elsewhere.

Either way every episode is ``run_episode`` and every summary ``summarize`` (success with its Wilson interval).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from vlagym.agents.backends import Backend
from vlagym.agents.policy_agent import PolicyAgent, SB3Agent
from vlagym.agents.rollout import Episode, Job, latency_facts, run_episode, run_jobs, summarize, with_latency


@dataclass
class Cell:
    """One agent on one env configuration over a fixed list of seeds: the unit every evaluation summarises."""

    agent: Any
    """``"expert"``, ``"random"``, a saved policy's path, or a live policy, SB3 model or agent (see the module)."""
    env_id: str
    seeds: Sequence[int]
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Passed to ``gym.make`` as they are (a policy's training kwargs are the caller's to merge in)."""
    record: int = 0
    """The first ``record`` seeds keep annotated video frames."""
    latency: float | str | None = None
    """Milliseconds each of the agent's decisions takes, or ``"measured"``: it plays through ``LatencyAgent``,
    the env executing the previous action meanwhile. None or 0: it acts at once."""

    def __post_init__(self) -> None:
        from vlagym.agents.latency import check_latency

        self.seeds = tuple(int(s) for s in self.seeds)
        self.env_kwargs = dict(self.env_kwargs)
        self.latency = check_latency(self.latency)
        if not self.seeds:
            raise ValueError(f"nothing to evaluate: no seeds for {_name(self.agent)} on {self.env_id}")
        if self.record < 0:
            raise ValueError(f"record must be >= 0 (the number of seeds to record), got {self.record}")

    @property
    def in_process(self) -> bool:
        """A live object plays here; a name or a path goes to the worker pool."""
        return not isinstance(self.agent, (str, os.PathLike))

    def job(self, index: int) -> Job:
        """The worker-pool job of the ``index``-th seed."""
        return Job(self.env_id, self.seeds[index], record=index < self.record,
                   env_kwargs=tuple(sorted(self.env_kwargs.items())), agent=os.fspath(self.agent),
                   latency=self.latency)


@dataclass
class Evaluation:
    """A cell's episodes, in seed order, and their summary."""

    cell: Cell
    episodes: list[Episode]

    @cached_property
    def summary(self) -> dict[str, Any]:
        """``summarize``: success rate and 95% Wilson interval, steps, distances, SPL, timing."""
        return summarize(self.episodes)

    @property
    def successes(self) -> list[bool]:
        return [ep.success for ep in self.episodes]


def as_agent(source: Any):
    """A live agent source as something with ``act(obs, info)``: a vlagym ``Policy`` through ``PolicyAgent`` (which
    puts it in eval mode; training puts it back), an SB3 model through ``SB3Agent`` (both leaving torch's thread
    count alone: the caller may be training), an agent as it is."""
    from vlagym.policies.base import Policy

    sb3 = sys.modules.get("stable_baselines3.common.base_class")  # an SB3 model means SB3 is imported
    if sb3 is not None and isinstance(source, sb3.BaseAlgorithm):
        return SB3Agent(source, threads=None)
    if isinstance(source, Policy):
        return PolicyAgent(source, threads=None)
    if callable(getattr(source, "act", None)):
        return source
    raise TypeError(f"cannot evaluate {type(source).__name__} {source!r}: an agent source is 'expert', 'random', "
                    "the path of a saved policy, a vlagym Policy, a stable-baselines3 model or an object with "
                    "act(obs, info)")


def evaluate_cells(
    cells: Iterable[Cell],
    workers: int | None = None,
    desc: str = "eval",
    done: Mapping[tuple[int, int], Episode] | None = None,
    on_result: Callable[[int, int, Episode], None] | None = None,
    backend: Backend | str | None = None,
) -> list[Evaluation]:
    """Play every cell's seeds; one ``Evaluation`` per cell, in order.

    The cells with names or paths share one worker pool (``run_jobs``: a progress bar, rebuilt when a worker
    dies), so a report over many agents and envs loads each policy once per worker; live cells then run here.

    Args:
        done: episodes already played, by (cell index, seed index), reused instead of played (a resumed
            evaluation's log).
        on_result: called in this process as each episode finishes, with its cell index, seed index and episode.
        backend: where the pooled cells' workers run (``vlagym.agents.backends``: local processes, or Ray actors).
    """
    cells = list(cells)
    live = {c: as_agent(cell.agent) for c, cell in enumerate(cells) if cell.in_process}  # a bad source fails now
    episodes: dict[tuple[int, int], Episode] = dict(done or {})
    todo = [(c, i) for c, cell in enumerate(cells) for i in range(len(cell.seeds)) if (c, i) not in episodes]

    def finished(key: tuple[int, int], ep: Episode) -> None:
        episodes[key] = ep
        if on_result is not None:
            on_result(*key, ep)

    pooled = [key for key in todo if not cells[key[0]].in_process]
    if pooled:
        run_jobs([cells[c].job(i) for c, i in pooled], workers=workers, desc=desc,
                 on_result=lambda k, ep: finished(pooled[k], ep), backend=backend)
    for c, agent in live.items():
        here = [i for cc, i in todo if cc == c]
        if here:
            _play_here(cells[c], agent, here, lambda i, ep, c=c: finished((c, i), ep))
    return [Evaluation(cell, [episodes[c, i] for i in range(len(cell.seeds))]) for c, cell in enumerate(cells)]


def _play_here(cell: Cell, agent: Any, indices: list[int], finished: Callable[[int, Episode], None]) -> None:
    """A live agent's episodes, in this process, on one env made for them and closed after."""
    import gymnasium as gym

    import vlagym  # noqa: F401  (registers the env ids)

    env = gym.make(cell.env_id, **cell.env_kwargs)
    make = (lambda e: agent) if cell.latency is None else with_latency(lambda e: agent, cell.latency)
    try:
        for i in indices:
            finished(i, latency_facts(run_episode(env, cell.seeds[i], make, record=i < cell.record), make))
    finally:
        env.close()


def evaluate_agent(agent: Any, env_id: str, seeds: Iterable[int], env_kwargs: dict[str, Any] | None = None,
                   workers: int | None = None, record: int = 0, desc: str = "eval") -> Evaluation:
    """One agent source on one env over ``seeds`` (``evaluate_cells`` with one cell)."""
    return evaluate_cells([Cell(agent, env_id, tuple(seeds), env_kwargs or {}, record)], workers=workers,
                          desc=desc)[0]


def validation_success(policy: Any, env_id: str, env_kwargs: dict[str, Any], seeds: Sequence[int]) -> float:
    """BC training's validation (``vlagym.policies.train.Validator``): the success rate of the live policy."""
    return evaluate_agent(policy, env_id, seeds, env_kwargs).summary["success_rate"]


def _name(agent: Any) -> str:
    return os.fspath(agent) if isinstance(agent, (str, os.PathLike)) else f"a {type(agent).__name__}"
