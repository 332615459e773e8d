"""Gym-style regression testing: env contract checks, golden rollouts, policy report comparison.

* ``check_env_contract(env_id_or_factory)`` runs every env check below; each is public on its own and
  raises ``EnvContractError`` (an ``AssertionError``) with a message naming the cause.
* ``record_golden`` / ``check_golden`` pin a fixed-action rollout as per-step observation hashes.
* ``compare_reports`` tests, per task, whether a candidate policy's success fell below a baseline's.
* ``RecordGoldenConfig``, ``CheckGoldenConfig``, ``CompareConfig`` and ``RegressCheckConfig`` are the settings
  of ``vlagym regress``'s actions, from which their flags are generated.
* As a pytest plugin (entry point ``vlagym``) it offers the ``vlagym_env_contract`` fixture and
  ``contract_tests(ids)``, one line that checks a list of ids::

      test_contract = vlagym.testing.contract_tests(vlagym.ENV_IDS, env_kwargs={"image_size": 32})
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import os
import pickle
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from vlagym.core.splits import SPLIT_SEED_START

try:  # the pytest plugin part is optional; the checks work without pytest
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

EnvSource = str | Callable[[], gym.Env]


class EnvContractError(AssertionError):
    """An environment broke the contract; the message names the check and the cause."""


class ReportMismatch(ValueError):
    """Two reports that cannot be compared (different seeds, tasks, agents or versions)."""


# --- helpers ----------------------------------------------------------------------------------------------------
def _factory(source: EnvSource, env_kwargs: dict | None = None) -> tuple[Callable[[], gym.Env], str]:
    """A zero-argument env constructor and a label for messages."""
    if isinstance(source, str):
        import vlagym  # noqa: F401  (registers the ids)

        if source not in gym.registry:
            raise EnvContractError(f"{source}: not a registered environment id")
        return functools.partial(gym.make, source, **(env_kwargs or {})), source
    if not callable(source):
        raise TypeError(f"expected an env id or a zero-argument factory, got {source!r}")
    if env_kwargs:
        return functools.partial(source, **env_kwargs), getattr(source, "__name__", repr(source))
    return source, getattr(source, "__name__", repr(source))


def fixed_actions(action_space: spaces.Space, seed: int, steps: int) -> list[Any]:
    """A reproducible action sequence from ``np.random.default_rng(seed)``.

    ``action_space.sample()`` is not used: its generator is the space's own, seeded elsewhere.
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        if isinstance(action_space, spaces.Discrete):
            out.append(int(action_space.start + rng.integers(action_space.n)))
        elif isinstance(action_space, spaces.Box):
            low = np.where(np.isfinite(action_space.low), action_space.low, -1.0)
            high = np.where(np.isfinite(action_space.high), action_space.high, 1.0)
            out.append(rng.uniform(low, high).astype(action_space.dtype))
        else:
            raise TypeError(f"fixed_actions supports Box and Discrete action spaces, got {action_space}")
    return out


def _flat(obs: Any) -> dict[str, Any]:
    return dict(obs) if isinstance(obs, dict) else {"obs": obs}


def _bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    arr = np.ascontiguousarray(value)
    return f"{arr.dtype.str}{arr.shape}".encode() + arr.tobytes()


def obs_hashes(obs: Any) -> dict[str, str]:
    """sha256 per observation key (dtype and shape included)."""
    return {k: hashlib.sha256(_bytes(v)).hexdigest() for k, v in sorted(_flat(obs).items())}


def _first_diff(a: Any, b: Any) -> str | None:
    fa, fb = _flat(a), _flat(b)
    if sorted(fa) != sorted(fb):
        return f"keys {sorted(fa)} != {sorted(fb)}"
    for k in sorted(fa):
        if _bytes(fa[k]) != _bytes(fb[k]):
            return f"obs[{k!r}]"
    return None


def _client_id(env: gym.Env) -> int | None:
    sim = getattr(env.unwrapped, "sim", None)
    return getattr(sim, "id", None)


def count_pybullet_connections(max_id: int = 1024) -> int:
    """Connected PyBullet clients in this process."""
    import pybullet

    return sum(pybullet.getConnectionInfo(physicsClientId=i)["isConnected"] for i in range(max_id))


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


# --- the checks -------------------------------------------------------------------------------------------------
def check_gym_api(source: EnvSource, env_kwargs: dict | None = None) -> None:
    """Gymnasium's own ``check_env`` on the unwrapped env (render check skipped)."""
    from gymnasium.utils.env_checker import check_env

    make, label = _factory(source, env_kwargs)
    env = make()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_env(env.unwrapped, skip_render_check=True)
    except Exception as e:
        raise EnvContractError(f"{label}: gymnasium check_env failed: {type(e).__name__}: {e}") from e
    finally:
        env.close()


def check_rollout(source: EnvSource, seed: int = 0, steps: int = 20, env_kwargs: dict | None = None) -> None:
    """Signatures and spaces on a seeded rollout: ``reset -> (obs, info)``, ``step`` a 5-tuple whose info
    holds ``"success"``, every observation inside ``observation_space`` (the offending key named)."""
    make, label = _factory(source, env_kwargs)
    env = make()
    try:
        out = env.reset(seed=seed)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise EnvContractError(f"{label}: reset must return (obs, info), got {type(out).__name__}")
        obs, info = out
        _check_obs(env, obs, f"{label} seed {seed} step 0")
        for t, action in enumerate(fixed_actions(env.action_space, seed, steps), 1):
            out = env.step(action)
            if not (isinstance(out, tuple) and len(out) == 5):
                raise EnvContractError(f"{label} seed {seed} step {t}: step must return a 5-tuple "
                                       f"(obs, reward, terminated, truncated, info), got {out!r:.80}")
            obs, reward, terminated, truncated, info = out
            where = f"{label} seed {seed} step {t}"
            if not isinstance(info, dict) or "success" not in info:
                raise EnvContractError(f"{where}: info must be a dict with a 'success' key, got {info!r:.120}")
            if not isinstance(reward, (float, int, np.floating, np.integer)) or not np.isfinite(reward):
                raise EnvContractError(f"{where}: reward must be a finite number, got {reward!r}")
            if not isinstance(terminated, (bool, np.bool_)) or not isinstance(truncated, (bool, np.bool_)):
                raise EnvContractError(f"{where}: terminated/truncated must be bools, got "
                                       f"{type(terminated).__name__}/{type(truncated).__name__}")
            _check_obs(env, obs, where)
            if terminated or truncated:
                obs, _ = env.reset()
                _check_obs(env, obs, f"{where} (after reset)")
    finally:
        env.close()


def _check_obs(env: gym.Env, obs: Any, where: str) -> None:
    space = env.observation_space
    if isinstance(space, spaces.Dict):
        if not isinstance(obs, dict) or set(obs) != set(space.spaces):
            got = sorted(obs) if isinstance(obs, dict) else type(obs).__name__
            raise EnvContractError(f"{where}: observation keys {got} != space keys {sorted(space.spaces)}")
        for k, sub in space.spaces.items():
            if not sub.contains(obs[k]):
                raise EnvContractError(f"{where}: obs[{k!r}] outside its space {sub}: {_describe(obs[k])}")
    elif not space.contains(obs):
        raise EnvContractError(f"{where}: observation outside its space {space}: {_describe(obs)}")


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"dtype {value.dtype}, shape {value.shape}, range [{value.min()}, {value.max()}]" if value.size else \
            f"dtype {value.dtype}, shape {value.shape}"
    return f"{value!r:.80}"


def check_determinism(source: EnvSource, seed: int = 0, steps: int = 20, env_kwargs: dict | None = None) -> None:
    """Two instances, same seed, same actions: byte-identical observations and equal rewards."""
    make, label = _factory(source, env_kwargs)
    a, b = make(), make()
    try:
        oa, _ = a.reset(seed=seed)
        ob, _ = b.reset(seed=seed)
        diff = _first_diff(oa, ob)
        if diff:
            raise EnvContractError(f"{label} seed {seed} step 0: {diff} differs between two envs reset "
                                   "with the same seed (non-deterministic)")
        for t, action in enumerate(fixed_actions(a.action_space, seed, steps), 1):
            oa, ra, ta, ua, _ = a.step(action)
            ob, rb, tb, ub, _ = b.step(action)
            diff = _first_diff(oa, ob)
            if diff:
                raise EnvContractError(f"{label} seed {seed} step {t}: {diff} differs between two envs with "
                                       "the same seed and actions (non-deterministic)")
            if (ra, ta, ua) != (rb, tb, ub):
                raise EnvContractError(f"{label} seed {seed} step {t}: reward/terminated/truncated "
                                       f"{(ra, ta, ua)} != {(rb, tb, ub)} (non-deterministic)")
            if ta or ua:
                break
    finally:
        a.close()
        b.close()


def check_seeds_differ(source: EnvSource, seeds: tuple[int, int] = (0, 1), env_kwargs: dict | None = None) -> None:
    """Different seeds must give different first observations (the seed reaches the scene)."""
    make, label = _factory(source, env_kwargs)
    env = make()
    try:
        first = env.reset(seed=seeds[0])[0]
        second = env.reset(seed=seeds[1])[0]
    finally:
        env.close()
    if _first_diff(first, second) is None:
        raise EnvContractError(f"{label}: seeds {seeds[0]} and {seeds[1]} give identical first observations "
                               "(the seed does not reach the scene)")


def check_close(source: EnvSource, cycles: int = 20, env_kwargs: dict | None = None, fd_slack: int = 4) -> None:
    """``close`` releases the PyBullet client: ``make``/``reset``/``close`` ``cycles`` times and check that
    each client disconnects and neither connections nor open file descriptors grow."""
    import pybullet

    make, label = _factory(source, env_kwargs)
    gc.collect()
    conns0, fds0 = count_pybullet_connections(), _open_fds()
    for i in range(cycles):
        env = make()
        env.reset(seed=i)
        cid = _client_id(env)
        env.close()
        if cid is not None and pybullet.getConnectionInfo(physicsClientId=cid)["isConnected"]:
            raise EnvContractError(f"{label}: PyBullet client {cid} still connected after close() "
                                   f"(cycle {i}): close() leaks the physics client")
        del env
    gc.collect()
    conns1, fds1 = count_pybullet_connections(), _open_fds()
    if conns1 > conns0:
        raise EnvContractError(f"{label}: {conns1 - conns0} PyBullet connections leaked over {cycles} "
                               "make/close cycles")
    if fds0 is not None and fds1 is not None and fds1 - fds0 > fd_slack:
        raise EnvContractError(f"{label}: open file descriptors grew from {fds0} to {fds1} over {cycles} "
                               "make/close cycles")


def check_vector(source: EnvSource, seed: int = 0, steps: int = 3, env_kwargs: dict | None = None,
                 num_envs: int = 2) -> None:
    """The env runs in ``SyncVectorEnv`` and ``AsyncVectorEnv`` (``shared_memory=False``: Gymnasium's
    shared-memory path breaks Text observations) and both give the same observations."""
    make, label = _factory(source, env_kwargs)
    runs = {}
    for name, cls, kw in (("SyncVectorEnv", gym.vector.SyncVectorEnv, {}),
                          ("AsyncVectorEnv", gym.vector.AsyncVectorEnv, {"shared_memory": False})):
        try:
            vec = cls([make] * num_envs, **kw)
        except Exception as e:
            raise EnvContractError(f"{label}: {name} construction failed: {type(e).__name__}: {e}") from e
        try:
            obs, _ = vec.reset(seed=seed)
            trace = [obs]
            for action in fixed_actions(vec.single_action_space, seed, steps):
                obs, _, _, _, info = vec.step(np.stack([np.asarray(action)] * num_envs))
                if "success" not in info:
                    raise EnvContractError(f"{label}: {name} step info lacks 'success': {sorted(info)}")
                trace.append(obs)
            runs[name] = trace
        except EnvContractError:
            raise
        except Exception as e:
            raise EnvContractError(f"{label}: {name} rollout failed: {type(e).__name__}: {e}") from e
        finally:
            vec.close()
    for t, (s, a) in enumerate(zip(runs["SyncVectorEnv"], runs["AsyncVectorEnv"])):
        diff = _first_diff(s, a)
        if diff:
            raise EnvContractError(f"{label} seed {seed} step {t}: {diff} differs between SyncVectorEnv and "
                                   "AsyncVectorEnv")


def check_pickle(source: EnvSource, env_kwargs: dict | None = None) -> None:
    """Constructor kwargs (an id's registered kwargs) or the factory pickle, as worker processes need."""
    if isinstance(source, str):
        _factory(source)
        what, obj = f"{source}: registered kwargs", {**gym.spec(source).kwargs, **(env_kwargs or {})}
    else:
        what, obj = f"{getattr(source, '__name__', repr(source))}: factory", source
    try:
        pickle.dumps(obj)
    except Exception as e:
        hint = "" if isinstance(source, str) else " (use functools.partial or a module-level function, not a lambda)"
        raise EnvContractError(f"{what} do(es) not pickle: {type(e).__name__}: {e}{hint}") from e


def check_sb3(source: EnvSource, env_kwargs: dict | None = None, instruction: dict | None = None) -> None:
    """stable-baselines3's ``check_env`` on the env behind ``vlagym.policies.sb3_env.SB3Wrapper`` (instruction
    as hashed token ids by default, so no sentence encoder loads; pass ``{"kind": "sentence"}`` for the
    embedding). SB3's advice-only warnings (e.g. images under 36 px) are not failures."""
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    from vlagym.policies.sb3_env import SB3Wrapper

    make, label = _factory(source, env_kwargs)
    env = make()
    try:
        wrapped = SB3Wrapper(env, instruction or {"kind": "tokens"})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sb3_check_env(wrapped, warn=True)
    except Exception as e:
        raise EnvContractError(f"{label}: stable-baselines3 check_env through SB3Wrapper failed: "
                               f"{type(e).__name__}: {e}") from e
    finally:
        env.close()


ALL_CHECKS = ("gym_api", "rollout", "determinism", "seeds_differ", "close", "vector", "pickle", "sb3")


def check_env_contract(source: EnvSource, seed: int = 0, steps: int = 20, env_kwargs: dict | None = None,
                       close_cycles: int = 20, checks: Iterable[str] = ALL_CHECKS) -> None:
    """Run every contract check on an env id or zero-argument factory; the first failure raises
    ``EnvContractError`` naming the check's cause."""
    checks = list(checks)
    unknown = set(checks) - set(ALL_CHECKS)
    if unknown:
        raise ValueError(f"unknown checks {sorted(unknown)}; choose from {ALL_CHECKS}")
    kw = {"env_kwargs": env_kwargs}
    run = {
        "gym_api": lambda: check_gym_api(source, **kw),
        "rollout": lambda: check_rollout(source, seed, steps, **kw),
        "determinism": lambda: check_determinism(source, seed, steps, **kw),
        "seeds_differ": lambda: check_seeds_differ(source, (seed, seed + 1), **kw),
        "close": lambda: check_close(source, close_cycles, **kw),
        "vector": lambda: check_vector(source, seed, min(steps, 3), **kw),
        "pickle": lambda: check_pickle(source, **kw),
        "sb3": lambda: check_sb3(source, **kw),
    }
    for name in checks:
        run[name]()


# --- golden rollouts --------------------------------------------------------------------------------------------
def _rollout_hashes(env_id: str, seed: int, steps: int, env_kwargs: dict) -> dict[str, Any]:
    env = gym.make(env_id, **env_kwargs)
    try:
        obs, _ = env.reset(seed=seed)
        frames, rewards = [obs_hashes(obs)], []
        for action in fixed_actions(env.action_space, seed, steps):
            obs, reward, terminated, truncated, _ = env.step(action)
            frames.append(obs_hashes(obs))
            rewards.append(float(reward))
            if terminated or truncated:
                break
    finally:
        env.close()
    return {"obs": frames, "rewards": rewards}


@dataclass
class RecordGoldenConfig:
    """Settings of ``vlagym regress record-golden``."""

    env: str
    """Env id."""
    out: str
    """Golden JSON file."""
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    """Episode seeds."""
    steps: int = 10
    """Fixed actions per seed."""
    image_size: int = 32
    """Camera resolution (pixels)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """More env keyword arguments."""


@dataclass
class CheckGoldenConfig:
    """Settings of ``vlagym regress check-golden``."""

    files: list[str]
    """Golden JSON files."""


def record_golden(env_id: str, seeds: Iterable[int], steps: int, path: str | os.PathLike,
                  env_kwargs: dict | None = None) -> dict[str, Any]:
    """Roll out a fixed action sequence per seed and store per-step observation hashes and rewards as JSON."""
    import vlagym

    _factory(env_id)
    env_kwargs = dict(env_kwargs or {})
    golden = {
        "env_id": env_id,
        "env_kwargs": env_kwargs,
        "steps": int(steps),
        "actions": "np.random.default_rng(seed), uniform over the action space",
        "vlagym_version": vlagym.__version__,
        "seeds": {str(s): _rollout_hashes(env_id, int(s), int(steps), env_kwargs) for s in seeds},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(golden, indent=1) + "\n")
    return golden


def check_golden(path: str | os.PathLike) -> None:
    """Replay a golden file; raise ``EnvContractError`` at the first differing seed, step and key."""
    golden = json.loads(Path(path).read_text())
    env_id, kwargs = golden["env_id"], golden["env_kwargs"]
    _factory(env_id)
    for seed, want in golden["seeds"].items():
        got = _rollout_hashes(env_id, int(seed), golden["steps"], kwargs)
        where = f"{path}: {env_id} seed {seed}"
        for t, (w, g) in enumerate(zip(want["obs"], got["obs"])):
            if sorted(w) != sorted(g):
                raise EnvContractError(f"{where} step {t}: observation keys {sorted(g)} != golden {sorted(w)}")
            for k in sorted(w):
                if w[k] != g[k]:
                    raise EnvContractError(f"{where} step {t}: obs[{k!r}] differs from the golden rollout")
            if t and want["rewards"][t - 1] != got["rewards"][t - 1]:
                raise EnvContractError(f"{where} step {t}: reward {got['rewards'][t - 1]} != golden "
                                       f"{want['rewards'][t - 1]}")
        if len(want["obs"]) != len(got["obs"]):
            raise EnvContractError(f"{where}: episode ended after {len(got['obs']) - 1} steps, golden after "
                                   f"{len(want['obs']) - 1}")


# --- policy report comparison -----------------------------------------------------------------------------------
@dataclass
class CompareConfig:
    """Settings of ``vlagym regress compare``."""

    baseline: str
    """Baseline report.json."""
    candidate: str
    """Candidate report.json."""
    alpha: float = 0.05
    """Significance level of the one-sided Fisher exact test."""
    agent: str = "policy"
    """Agent row to compare."""
    allow_version_mismatch: bool = False
    """Compare reports written by different vlagym versions."""


@dataclass
class RegressCheckConfig:
    """Settings of ``vlagym regress check``."""

    policy: str
    """Policy folder or training run folder."""
    env: str
    """Env id."""
    min_success: float
    """Bar for the 95% Wilson lower bound of the success rate."""
    episodes: int = 100
    """Test episodes."""
    seed_start: int = SPLIT_SEED_START["test"]
    """First seed (test split)."""
    workers: int | None = None
    """Worker processes (default: all cores)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Env keyword arguments on top of the policy's training env (e.g. level=L1)."""


@dataclass
class TaskComparison:
    env_id: str
    baseline: tuple[int, int]
    """(successes, episodes)"""
    candidate: tuple[int, int]
    p_value: float
    regressed: bool


@dataclass
class Comparison:
    agent: str
    alpha: float
    tasks: list[TaskComparison] = field(default_factory=list)

    @property
    def regressed(self) -> list[str]:
        return [t.env_id for t in self.tasks if t.regressed]

    def table(self) -> str:
        lines = [f"one-sided Fisher exact test, candidate < baseline, alpha={self.alpha} (agent {self.agent!r})",
                 "| task | baseline | candidate | p-value | verdict |", "|---|---:|---:|---:|---|"]
        for t in self.tasks:
            b = f"{t.baseline[0]}/{t.baseline[1]} ({t.baseline[0] / max(t.baseline[1], 1):.0%})"
            c = f"{t.candidate[0]}/{t.candidate[1]} ({t.candidate[0] / max(t.candidate[1], 1):.0%})"
            lines.append(f"| {t.env_id} | {b} | {c} | {t.p_value:.4g} | {'REGRESSED' if t.regressed else 'ok'} |")
        return "\n".join(lines)


def compare_reports(baseline: dict, candidate: dict, alpha: float = 0.05, agent: str = "policy",
                    allow_version_mismatch: bool = False) -> Comparison:
    """Per task, a one-sided Fisher exact test of "candidate succeeds less often than baseline".

    Raises ``ReportMismatch`` when the reports cannot be compared: a different vlagym version (unless
    allowed), a missing agent, different env ids, or seed lists of which neither is a prefix of the other.
    """
    from scipy.stats import fisher_exact

    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    vb = baseline.get("provenance", {}).get("vlagym_version")
    vc = candidate.get("provenance", {}).get("vlagym_version")
    if vb != vc and not allow_version_mismatch:
        raise ReportMismatch(f"vlagym versions differ: baseline {vb}, candidate {vc} (the envs may differ)")
    blocks = []
    for name, rep in (("baseline", baseline), ("candidate", candidate)):
        if agent not in rep.get("agents", {}):
            raise ReportMismatch(f"{name} report has no agent {agent!r} (has {sorted(rep.get('agents', {}))})")
        blocks.append(rep["agents"][agent]["per_task"])
    b_tasks, c_tasks = blocks
    if set(b_tasks) != set(c_tasks):
        raise ReportMismatch(f"env ids differ: baseline {sorted(b_tasks)}, candidate {sorted(c_tasks)}")
    result = Comparison(agent=agent, alpha=alpha)
    for env_id in sorted(b_tasks):
        b, c = b_tasks[env_id], c_tasks[env_id]
        sb, sc = list(b.get("seeds", [])), list(c.get("seeds", []))
        n = min(len(sb), len(sc))
        if sb[:n] != sc[:n]:
            raise ReportMismatch(f"{env_id}: seeds differ (baseline starts {sb[:3]}, candidate {sc[:3]}); "
                                 "compare reports on the same seeds")
        table = [[c["successes"], c["episodes"] - c["successes"]], [b["successes"], b["episodes"] - b["successes"]]]
        p = float(fisher_exact(table, alternative="less").pvalue)
        result.tasks.append(TaskComparison(env_id, (b["successes"], b["episodes"]), (c["successes"], c["episodes"]),
                                           p, p < alpha))
    return result


# --- pytest plugin ----------------------------------------------------------------------------------------------
def contract_tests(env_ids: Iterable[EnvSource], **kwargs) -> Callable:
    """A test function parametrised over ``env_ids``; assign it to a ``test_*`` name in a test module."""
    if pytest is None:  # pragma: no cover
        raise RuntimeError("contract_tests needs pytest")
    ids = list(env_ids)

    @pytest.mark.parametrize("env_source", ids, ids=[e if isinstance(e, str) else repr(e) for e in ids])
    def test_env_contract(env_source):
        check_env_contract(env_source, **kwargs)

    return test_env_contract


if pytest is not None:

    @pytest.fixture
    def vlagym_env_contract() -> Callable[..., None]:
        """``check(env_id_or_factory, **kw)``: ``check_env_contract`` as a fixture."""
        return check_env_contract


# --- policies ---------------------------------------------------------------------------------------------
def overfit_losses(policy, batch: dict[str, Any], steps: int = 20, lr: float = 2e-3) -> list[float]:
    """``policy.loss(batch)`` over ``steps`` Adam steps on one fixed batch: the smoke test that a new
    policy (or head) can learn at all. A working one ends well below where it started."""
    import torch

    opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=lr)
    policy.train()
    losses = []
    for _ in range(steps):
        loss, _ = policy.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses
