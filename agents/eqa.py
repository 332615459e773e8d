"""Embodied question answering, evaluated: a navigator drives, an answerer answers from what it saw.

Each episode of ``vlagym/NavEQA-v0`` is played by ``run_episode`` (the one evaluator's episode), with the
navigator wrapped in ``Watcher``, which keeps the last camera frames the navigator acted on; the answerer
(``vlagym.vl.eqa.Answerer``) then reads them and the question. A row reports answer accuracy (95% Wilson
interval, per question family) beside the navigation summary of ``summarize``: success, SPL, final
distance to the target.

Navigators (``NAVIGATORS``, or the path of a saved discrete navigation policy):

* ``expert``: the task's expert (shortest path, turns to face the target, stops): the answerer's ceiling.
* ``forward``: forward until it bumps into something, then stop (the forward-only baseline).
* ``random``: uniform random moves (forward, left, right) for ``random_steps`` steps, then stop.
* ``stop``: stop at once; with the blind (question-only) answerer, the blindfold baseline.
"""

from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlagym.agents.rollout import Episode, run_episode, summarize
from vlagym.core.io import atomic_write_text
from vlagym.core.splits import SPLIT_SEED_START, split_of
from vlagym.core.stats import wilson_interval
from vlagym.envs.nav.robot import FORWARD, LEFT, RIGHT, STOP
from vlagym.vl.eqa import ENV_ID, Answerer

NAVIGATORS = ("expert", "forward", "random", "stop")


class ForwardAgent:
    """Forward until the last move collided, then stop."""

    def act(self, obs, info):
        return STOP if info.get("collided") else FORWARD


class RandomWalk:
    """Uniform random moves (never ``stop``) for ``steps`` steps, then stop; seeded by the episode."""

    def __init__(self, seed: int, steps: int) -> None:
        self.rng, self.steps, self.t = np.random.default_rng([seed, 11]), steps, 0

    def act(self, obs, info):
        self.t += 1
        return STOP if self.t > self.steps else int(self.rng.choice([FORWARD, LEFT, RIGHT]))


class StopAgent:
    def act(self, obs, info):
        return STOP


class Watcher:
    """A navigator that remembers the last ``frames`` camera images it acted on."""

    def __init__(self, navigator: Any, frames: int) -> None:
        self.navigator, self.seen = navigator, deque(maxlen=frames)

    def reset(self) -> None:
        self.seen.clear()
        if hasattr(self.navigator, "reset"):
            self.navigator.reset()

    def act(self, obs, info):
        self.seen.append(obs["rgb"])
        return self.navigator.act(obs, info)


def navigator_factory(navigator: str, random_steps: int = 40):
    """``make(env, seed)`` for a navigator name or a saved policy's path; a ``ValueError`` for neither."""
    if navigator == "expert":
        return lambda env, seed: env.unwrapped.task.expert()
    if navigator == "forward":
        return lambda env, seed: ForwardAgent()
    if navigator == "random":
        return lambda env, seed: RandomWalk(seed, random_steps)
    if navigator == "stop":
        return lambda env, seed: StopAgent()
    if not Path(navigator).exists():
        raise ValueError(f"unknown navigator {navigator!r}: one of {', '.join(NAVIGATORS)} or a saved policy's path")
    from vlagym.agents.policy_agent import PolicyAgent

    agent = PolicyAgent.load(navigator)
    return lambda env, seed: agent


def play_eqa(env, seeds, make_navigator, answerer: Answerer, desc: str = "eqa") -> list[Episode]:
    """Play each seed; every episode's ``info`` gains ``predicted_answer`` and ``answer_correct``."""
    from tqdm import tqdm

    episodes = []
    for seed in tqdm(seeds, desc=desc, unit="ep"):
        made: list[Watcher] = []

        def make(e, seed=seed, made=made):
            made.append(Watcher(make_navigator(e, seed), answerer.config.frames))
            return made[-1]

        ep = run_episode(env, seed, make)
        predicted = answerer.answer(list(made[-1].seen), ep.instruction)
        ep.info["predicted_answer"] = predicted
        ep.info["answer_correct"] = predicted == ep.info["answer"]
        episodes.append(ep)
    return episodes


def answer_summary(episodes: list[Episode]) -> dict[str, Any]:
    """Answer accuracy with its 95% Wilson interval, overall and per question family."""
    correct = [bool(e.info["answer_correct"]) for e in episodes]
    out: dict[str, Any] = {"answer_accuracy": float(np.mean(correct)),
                           "answer_ci95": list(wilson_interval(sum(correct), len(correct)))}
    for fam in sorted({e.info["question_family"] for e in episodes}):
        sub = [c for c, e in zip(correct, episodes) if e.info["question_family"] == fam]
        out[f"answer_accuracy_{fam}"] = float(np.mean(sub))
        out[f"answer_n_{fam}"] = len(sub)
    return out


@dataclass
class EQAEvalConfig:
    """Settings of ``vlagym eqa-eval``."""

    answerer: str
    """Answerer folder (``vlagym eqa-train``)."""
    out: str
    """Folder for report.json."""
    navigators: list[str] = field(default_factory=lambda: ["expert", "forward", "random"])
    """Navigators, each ``expert``, ``forward``, ``random``, ``stop`` or a saved discrete navigation policy."""
    blind: str | None = None
    """A blind (question-only) answerer folder: adds its row, its navigator stopping at once."""
    episodes: int = 200
    """Episodes per navigator (consecutive seeds)."""
    split: str = "test"
    """Seed split of the episodes."""
    seed_start: int | None = None
    """First seed (default: the split's first)."""
    level: str | None = "L1"
    """Generalization level (L1: the training distribution on new seeds; None: every level)."""
    random_steps: int = 40
    """Moves of the random navigator before it stops."""

    def __post_init__(self) -> None:
        if self.split not in SPLIT_SEED_START:
            raise ValueError(f"split must be one of {sorted(SPLIT_SEED_START)}, got {self.split!r}")
        if self.episodes < 1 or self.random_steps < 0:
            raise ValueError(f"episodes must be >= 1 and random_steps >= 0, got {self.episodes}, {self.random_steps}")
        start = SPLIT_SEED_START[self.split] if self.seed_start is None else self.seed_start
        if split_of(start) != self.split or split_of(start + self.episodes - 1) != self.split:
            raise ValueError(f"seeds {start}..{start + self.episodes - 1} are not all in the {self.split} split")
        self.seed_start = start
        if not self.navigators and not self.blind:
            raise ValueError("nothing to evaluate: give navigators or a blind answerer")
        for nav in self.navigators:
            if nav not in NAVIGATORS and not Path(nav).exists():
                raise ValueError(f"unknown navigator {nav!r}: one of {', '.join(NAVIGATORS)} or a saved "
                                 "policy's path")


def evaluate_eqa(cfg: EQAEvalConfig) -> dict[str, Any]:
    """Every navigator with the answerer (and the blind row) on the same seeds; writes ``report.json``."""
    import gymnasium as gym

    import vlagym  # noqa: F401  (registers the env ids)

    answerer = Answerer.load(cfg.answerer)
    blind = Answerer.load(cfg.blind) if cfg.blind else None
    seeds = list(range(cfg.seed_start, cfg.seed_start + cfg.episodes))
    env = gym.make(ENV_ID, image_size=answerer.config.image_size, level=cfg.level)
    rows = []
    plan = [(nav, answerer, cfg.answerer) for nav in cfg.navigators]
    if blind is not None:
        plan.append(("stop", blind, cfg.blind))
    try:
        for nav, model, model_path in plan:
            episodes = play_eqa(env, seeds, navigator_factory(nav, cfg.random_steps), model, desc=f"eqa {nav}")
            nav_summary = summarize(episodes)
            rows.append({"navigator": nav, "answerer": os.fspath(model_path), "blind": model.config.blind,
                         **answer_summary(episodes),
                         "navigation_success": nav_summary["success_rate"],
                         "navigation_ci95": nav_summary["success_ci95"], "spl": nav_summary["spl"],
                         "final_distance_mean": nav_summary["final_distance_mean"],
                         "mean_steps": nav_summary["mean_steps"], "episodes": len(episodes),
                         "per_episode": [{"seed": e.seed, "question": e.instruction, "answer": e.info["answer"],
                                          "predicted": e.info["predicted_answer"], "success": e.success,
                                          "final_distance": e.final_distance} for e in episodes]})
    finally:
        env.close()
    report = {"env_id": ENV_ID, "config": asdict(cfg), "seeds": [seeds[0], seeds[-1]], "rows": rows}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.json", json.dumps(report, indent=1))
    return report
