"""EQA evaluation: each navigator drives, the answerer reads the frames it acted on, and the report gives answer
accuracy beside navigation success, SPL and final distance; bad input fails naming it."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import vlagym  # noqa: F401
from vlagym.agents.eqa import (
    EQAEvalConfig,
    ForwardAgent,
    RandomWalk,
    Watcher,
    evaluate_eqa,
    navigator_factory,
    play_eqa,
)
from vlagym.experiments.cli import main
from vlagym.vl.eqa import Answerer, AnswererConfig

SEEDS = 2


class Oracle(Answerer):
    """An answerer that reads the truth from the env: what the evaluation must score as all correct."""

    def __init__(self, env) -> None:
        super().__init__(AnswererConfig(vocab=[], image_size=32, frames=3, width=2, dim=4))
        self.env, self.frames_seen = env, []

    def answer(self, frames, questions):
        self.frames_seen.append(len(frames))
        return self.env.unwrapped.task.answer


@pytest.fixture(scope="module")
def answerer_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("eqa") / "answerer"
    Answerer(AnswererConfig(vocab=["colour", "shape"], image_size=32, frames=2, width=4, dim=8)).save(d)
    blind = d.parent / "blind"
    Answerer(AnswererConfig(vocab=["colour", "shape"], image_size=32, frames=2, width=4, dim=8,
                            blind=True)).save(blind)
    return d


def test_answers_are_scored_against_the_truth_and_frames_are_the_last_seen():
    env = gym.make("vlagym/NavEQA-v0", image_size=32)
    oracle = Oracle(env)
    episodes = play_eqa(env, [2_000_000, 2_000_001], navigator_factory("expert"), oracle)
    assert all(e.info["answer_correct"] and e.success for e in episodes)
    assert oracle.frames_seen == [3, 3]
    w = Watcher(ForwardAgent(), 3)
    for k in range(5):
        w.act({"rgb": np.full((2, 2, 3), k, np.uint8)}, {})
    assert [int(f[0, 0, 0]) for f in w.seen] == [2, 3, 4]


def test_forward_and_random_navigators():
    assert ForwardAgent().act({}, {"collided": False}) == 1 and ForwardAgent().act({}, {"collided": True}) == 0
    walk = RandomWalk(seed=5, steps=3)
    moves = [walk.act({}, {}) for _ in range(4)]
    assert all(m in (1, 2, 3) for m in moves[:3]) and moves[3] == 0
    again = RandomWalk(seed=5, steps=3)
    assert [again.act({}, {}) for _ in range(4)] == moves  # seeded by the episode


def test_report_rows_for_each_navigator_and_the_blind_baseline(answerer_dir, tmp_path):
    cfg = EQAEvalConfig(answerer=str(answerer_dir), out=str(tmp_path / "r"), episodes=SEEDS,
                        navigators=["expert", "forward", "random"], blind=str(answerer_dir.parent / "blind"),
                        random_steps=5)
    report = evaluate_eqa(cfg)
    rows = {r["navigator"]: r for r in report["rows"]}
    assert list(rows) == ["expert", "forward", "random", "stop"] and rows["stop"]["blind"]
    assert rows["expert"]["navigation_success"] == 1.0 and rows["expert"]["spl"] > 0.5
    assert rows["expert"]["final_distance_mean"] <= 0.5
    assert rows["random"]["mean_steps"] == 6 and rows["stop"]["mean_steps"] == 1
    for r in rows.values():
        eps = r["per_episode"]
        assert [e["seed"] for e in eps] == [2_000_000, 2_000_001]
        assert r["answer_accuracy"] == np.mean([e["answer"] == e["predicted"] for e in eps])
        lo, hi = r["answer_ci95"]
        assert 0 <= lo <= r["answer_accuracy"] <= hi <= 1
    assert json.loads((tmp_path / "r" / "report.json").read_text())["rows"][0]["navigator"] == "expert"


def test_cli_runs_and_bad_input_is_one_line(answerer_dir, tmp_path, capsys):
    assert main(["eqa-eval", "--answerer", str(answerer_dir), "--out", str(tmp_path / "c"), "--episodes", "1",
                 "--navigators", "stop"]) == 0
    assert "stop + answerer: answer" in capsys.readouterr().out
    assert main(["eqa-eval", "--answerer", str(tmp_path / "missing"), "--out", str(tmp_path / "c"),
                 "--episodes", "1"]) == 2
    assert "no answerer folder at" in capsys.readouterr().err
    assert main(["eqa-eval", "--answerer", str(answerer_dir), "--out", str(tmp_path / "c"),
                 "--navigators", "teleport"]) == 2
    assert "unknown navigator 'teleport'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not all in the test split"):
        EQAEvalConfig(answerer="a", out="o", seed_start=1_999_999, episodes=2)
