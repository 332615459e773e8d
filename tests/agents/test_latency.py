"""LatencyAgent: a decision that takes d control steps is applied d steps after the observation it saw,
and the previous action is held meanwhile — exactly."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import vlagym  # noqa: F401  (registers the env ids)
from vlagym.agents.latency import LatencyAgent, control_hz_of, delay_steps


class Counter:
    """Answers each observation with its step number, and remembers when it was asked."""

    def __init__(self) -> None:
        self.asked: list[int] = []
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def act(self, obs, info=None):
        self.asked.append(obs["t"])
        return np.array([float(obs["t"])], dtype=np.float32)


def run(agent: LatencyAgent, steps: int) -> list[float]:
    agent.reset()
    return [float(agent.act({"t": t})[0]) for t in range(steps)]


def test_delay_steps_is_the_ceiling_of_latency_times_rate():
    assert delay_steps(0, 10) == 0
    assert delay_steps(1, 10) == 1
    assert delay_steps(100, 10) == 1  # exactly one control period, not two through rounding
    assert delay_steps(101, 10) == 2
    assert delay_steps(250, 10) == 3
    assert delay_steps(250, 20) == 5
    with pytest.raises(ValueError, match="latency"):
        delay_steps(-1, 10)


def test_holds_the_previous_action_for_exactly_d_steps():
    inner = Counter()
    agent = LatencyAgent(inner, latency_ms=250, control_hz=10)  # d = 3
    executed = run(agent, 12)
    assert inner.asked == [0, 3, 6, 9]  # back-to-back computations, each on the newest observation
    # steps 0-2 execute the first action (the robot waited at reset for it), then each action computed at
    # step s is applied from s + 3 for 3 steps
    assert executed == [0, 0, 0, 0, 0, 0, 3, 3, 3, 6, 6, 6]
    assert agent.decisions == [(0, 3), (3, 3), (6, 3), (9, 3)]


def test_initial_action_before_the_first_decision_arrives():
    agent = LatencyAgent(Counter(), latency_ms=200, control_hz=10, initial_action=np.array([-1.0]))  # d = 2
    assert run(agent, 7) == [-1, -1, 0, 0, 2, 2, 4]


def test_zero_latency_is_the_bare_agent_and_reset_starts_over():
    inner = Counter()
    agent = LatencyAgent(inner, latency_ms=0, control_hz=10)
    assert run(agent, 4) == [0, 1, 2, 3]
    assert inner.asked == [0, 1, 2, 3]
    agent = LatencyAgent(inner, latency_ms=150, control_hz=10)  # d = 2
    run(agent, 5)
    assert run(agent, 3) == [0, 0, 0]  # a new episode forgets the old one's pending action
    assert inner.resets >= 3


def test_measured_latency_charges_each_call_its_own_delay(monkeypatch):
    import vlagym.agents.latency as latency

    clock = iter(np.arange(0.0, 100.0, 0.125))  # every perf_counter call advances 125 ms: each act takes 125 ms
    monkeypatch.setattr(latency.time, "perf_counter", lambda: float(next(clock)))
    agent = LatencyAgent(Counter(), latency_ms="measured", control_hz=10)
    executed = run(agent, 6)
    assert agent.measured_ms == pytest.approx([125.0, 125.0, 125.0])
    assert agent.decisions == [(0, 2), (2, 2), (4, 2)]
    assert executed == [0, 0, 0, 0, 2, 2]


def test_control_rate_comes_from_the_env():
    env = gym.make("vlagym/TabletopTouch-v0", image_size=32)
    try:
        assert control_hz_of(env) == 10.0
        agent = LatencyAgent.for_env(Counter(), env, 300)
        assert agent.control_hz == 10.0
    finally:
        env.close()
    with pytest.raises(ValueError, match="latency_ms"):
        LatencyAgent(Counter(), latency_ms="slow", control_hz=10)
    with pytest.raises(ValueError, match="control_hz"):
        LatencyAgent(Counter(), latency_ms=10, control_hz=0)
