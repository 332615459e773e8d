"""SB3 zips load without unpickling: crafted entries never run, and a safe load predicts like SB3's own."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "crafted"))
from crafted import MARKER, crafted_sb3_zip  # noqa: E402

from vlagym.agents.policy_agent import PolicyAgent  # noqa: E402
from vlagym.agents.safe_load import PickleRefusedError, load_sb3  # noqa: E402

TOUCH = "vlagym/TabletopTouch-v0"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the crafted pickle writes its marker into the working directory
    monkeypatch.delenv("VLAGYM_TRUST_PICKLE", raising=False)
    return tmp_path


def vlagym_ppo(run: Path) -> Path:
    """A vlagym rl run folder (model.zip + env_args.json) with an untrained PPO on the Touch state obs."""
    from vlagym.experiments.rl import RLConfig, build_model, make_vec_env

    cfg = RLConfig(env=TOUCH, env_kwargs={"obs_mode": "state"}, instruction={"kind": "tokens"}, vec="dummy",
                   n_envs=1, n_steps=64, batch_size=32, n_epochs=1, out=str(run))
    venv = make_vec_env(cfg)
    model = build_model(cfg, venv)
    venv.close()
    run.mkdir(parents=True, exist_ok=True)
    model.save(str(run / "model.zip"))
    (run / "env_args.json").write_text(json.dumps({"env_id": TOUCH, "env_kwargs": {"obs_mode": "state"}}))
    return run / "model.zip"


def test_safe_load_predicts_like_sb3(tmp_path):
    import gymnasium as gym
    from stable_baselines3 import PPO, SAC

    env = gym.make("Pendulum-v1")
    for algo, kw in ((PPO, dict(n_steps=64, batch_size=32, n_epochs=1)),
                     (SAC, dict(buffer_size=100, learning_starts=8))):
        model = algo("MlpPolicy", env, seed=0, policy_kwargs={"net_arch": [8]}, **kw)
        model.learn(64)
        path = tmp_path / f"{algo.__name__}.zip"
        model.save(str(path))
        obs = np.random.default_rng(0).uniform(-1, 1, (32, 3)).astype(np.float32)
        want = algo.load(str(path)).predict(obs, deterministic=True)[0]
        safe = load_sb3(path)
        assert type(safe.policy) is type(model.policy)
        np.testing.assert_array_equal(safe.predict(obs, deterministic=True)[0], want)

    zipped = vlagym_ppo(tmp_path / "run")  # Dict obs, a vlagym features extractor in policy_kwargs
    obs = {k: np.stack([s.sample() for _ in range(8)]) for k, s in PPO.load(str(zipped)).observation_space.items()}
    np.testing.assert_array_equal(load_sb3(zipped).predict(obs, deterministic=True)[0],
                                  PPO.load(str(zipped)).predict(obs, deterministic=True)[0])


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_crafted_zip_never_unpickles(in_tmp, capsys):
    clean = vlagym_ppo(in_tmp / "clean")
    run = in_tmp / "run"
    run.mkdir()
    (run / "env_args.json").write_text((in_tmp / "clean" / "env_args.json").read_text())
    # A pickled entry vlagym rebuilds: the load is safe and the model the same.
    crafted_sb3_zip(clean, run / "model.zip", data_key="observation_space")
    agent = PolicyAgent.load(run)
    assert not (in_tmp / MARKER).exists()
    obs = {k: s.sample() for k, s in agent.space.items()}
    np.testing.assert_array_equal(agent.model.predict(obs, deterministic=True)[0],
                                  PolicyAgent.load(clean).model.predict(obs, deterministic=True)[0])
    # A pickled entry vlagym does not know, and a policy.pth that is no tensor file: refused.
    for name, kw in (("extra.zip", {"data_key": "evil"}), ("pth.zip", {"pth_member": "policy.pth"})):
        path = crafted_sb3_zip(clean, run / name, **kw)
        with pytest.raises(PickleRefusedError, match=rf"{name}.*--trust-pickle"):
            PolicyAgent.load(path)
        assert not (in_tmp / MARKER).exists()
    # The crafted file is live: the explicit flag unpickles it (after a warning).
    load_sb3(run / "extra.zip", trust_pickle=True)
    assert (in_tmp / MARKER).exists() and "WARNING: unpickling SB3 model" in capsys.readouterr().err
