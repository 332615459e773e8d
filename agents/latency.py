"""Evaluation that charges for the policy's compute time: a slow policy acts on stale observations.

``LatencyAgent`` wraps any agent (``act(obs, info)``, ``reset()``). A decision that takes ``latency`` costs
``d = ceil(latency * control_hz)`` control steps (``control_hz`` is the env's control rate, 10 Hz here:
``env.unwrapped.sim.control_hz``). The policy computes back to back:

* a computation starts at step ``s`` on the observation of step ``s`` — the newest one at that moment;
* during steps ``s .. s + d - 1`` the robot keeps executing the previous action;
* at step ``s + d`` the new action is applied, and the next computation starts on that step's observation.

So with a fixed ``d`` the inner agent is asked at steps 0, d, 2d, ..., and the action executed at step t
was computed from the observation of step ``(t // d - 1) * d``. Before an episode's first action exists
(steps 0 .. d - 1) the robot executes ``initial_action`` when one is given; by default it executes that
first action itself, as if the robot waited at reset for its first command (real robots do), which costs
the episode no steps. ``d = 0`` (latency 0) acts on every step's observation, as the bare agent does.

``latency="measured"`` times each of the inner agent's calls (wall clock) and charges each computation
its own ``d``; measured times depend on the machine and its load, fixed ones do not.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np


def control_hz_of(env) -> float:
    """The env's control rate in steps per second (the simulation's control rate; else ``render_fps``)."""
    sim = getattr(getattr(env, "unwrapped", env), "sim", None)
    hz = getattr(sim, "control_hz", None) or (getattr(env, "metadata", None) or {}).get("render_fps")
    if not hz:
        raise ValueError(f"cannot tell the control rate of {env!r}: it has no sim.control_hz and no "
                         "metadata['render_fps']; pass control_hz")
    return float(hz)


def check_latency(value: Any) -> float | str | None:
    """A latency setting as an evaluation takes it: a number of milliseconds >= 0 (text too: ``"300"``) or
    ``"measured"``; 0 and None are None (act at once: the bare agent, no wrapper). A ValueError names the
    value and what is allowed."""
    if value is None or value == "measured":
        return value
    text = value.strip() if isinstance(value, str) else value
    try:
        ms = float(text) if not isinstance(text, bool) else math.nan
    except (TypeError, ValueError):
        ms = math.nan
    if not (math.isfinite(ms) and ms >= 0):
        raise ValueError(f"latency {value!r} is not a number of milliseconds >= 0 or 'measured' (e.g. --latency 300, "
                         "--latency measured, --latency 0 for none)")
    return ms or None


def delay_steps(latency_ms: float, control_hz: float) -> int:
    """Control steps a computation of ``latency_ms`` spans: ``ceil(latency_ms / 1000 * control_hz)``."""
    if not latency_ms >= 0 or not math.isfinite(latency_ms):
        raise ValueError(f"latency must be a finite number of milliseconds >= 0, got {latency_ms!r}")
    # A hair of tolerance, so 100 ms at 10 Hz is 1 step, not 2 through float rounding.
    return math.ceil(latency_ms * control_hz / 1000.0 - 1e-9)


class LatencyAgent:
    """``agent`` acting as if each decision took ``latency_ms`` milliseconds (or its measured time).

    Args:
        agent: anything with ``act(obs, info)`` and ``reset()`` (``PolicyAgent``, an expert agent).
        latency_ms: milliseconds per decision, or ``"measured"``.
        control_hz: the env's control steps per second (``control_hz_of(env)``).
        initial_action: executed before an episode's first action is ready (see the module docstring);
            None executes the first action from step 0.

    ``decisions`` lists, for the current episode, ``(start step, delay steps)`` of every computation.
    """

    def __init__(self, agent, latency_ms: float | str, control_hz: float, initial_action: Any = None) -> None:
        if latency_ms != "measured":
            if isinstance(latency_ms, bool) or not isinstance(latency_ms, (int, float)):
                raise ValueError(f"latency_ms must be a number of milliseconds or 'measured', got {latency_ms!r}")
            delay_steps(latency_ms, 1.0)  # validates
        if not isinstance(control_hz, (int, float)) or not control_hz > 0:
            raise ValueError(f"control_hz must be a number > 0, got {control_hz!r}")
        self.agent = agent
        self.latency_ms = latency_ms
        self.control_hz = float(control_hz)
        self.initial_action = initial_action
        self.measured_ms: list[float] = []
        self.reset()

    @classmethod
    def for_env(cls, agent, env, latency_ms: float | str, initial_action: Any = None) -> LatencyAgent:
        """As the constructor, with the control rate read from ``env``."""
        return cls(agent, latency_ms, control_hz_of(env), initial_action)

    def reset(self) -> None:
        if hasattr(self.agent, "reset"):  # an agent need not have one (RandomAgent)
            self.agent.reset()
        self._t = 0
        self._next_start = 0
        self._pending: tuple[int, Any] | None = None  # (delivery step, action)
        self._current: Any = None
        self.decisions: list[tuple[int, int]] = []

    def _compute(self, obs: dict[str, Any], info: dict[str, Any] | None) -> tuple[Any, int]:
        t = time.perf_counter()
        action = self.agent.act(obs, info)
        if self.latency_ms == "measured":
            ms = (time.perf_counter() - t) * 1000.0
            self.measured_ms.append(ms)
        else:
            ms = float(self.latency_ms)
        return action, delay_steps(ms, self.control_hz)

    def act(self, obs: dict[str, Any], info: dict[str, Any] | None = None):
        t = self._t
        if self._pending is not None and self._pending[0] == t:  # a computation finishes now
            self._current, self._pending = self._pending[1], None
        if t == self._next_start:  # the policy is free: start on the newest observation
            action, d = self._compute(obs, info)
            self.decisions.append((t, d))
            if d == 0:
                self._current = action
                self._next_start = t + 1
            else:
                self._pending = (t + d, action)
                self._next_start = t + d
                if self._current is None:  # the episode's first action is not ready yet
                    self._current = self.initial_action if self.initial_action is not None else action
        self._t += 1
        current = self._current
        return current.copy() if isinstance(current, np.ndarray) else current

    def locate(self, obs: dict[str, Any]) -> dict[str, Any]:
        """The inner agent's grounding heads (for videos), on ``obs`` as given."""
        return self.agent.locate(obs)
