"""``vlagym rl``: a tiny PPO run through the CLI, its evaluation by ``vlagym eval``, resume, SAC, BC init, and
PPO started from a vl-train model (``--vl-model``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vlagym.agents.policy_agent import PolicyAgent, SB3Agent, policy_env_kwargs, resolve_policy_dir
from vlagym.experiments.rl import RLConfig, latest_checkpoint, read_curve, train_rl

TOUCH = "vlagym/TabletopTouch-v0"


def vlagym(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlagym.experiments.cli", *args], capture_output=True, text=True,
                          timeout=600, env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                                            "PATH": "/usr/bin:/bin"})


TINY = ["--vec", "dummy", "--n-steps", "64", "--batch-size", "32", "--n-epochs", "2", "--eval-every", "128",
        "--eval-episodes", "2", "--checkpoint-every", "128", "--instruction", "tokens"]


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rl") / "touch"
    res = vlagym("rl", "--algo", "ppo", "--env", TOUCH, "--timesteps", "256", "--kwargs", "obs_mode=state",
                 "--out", str(out), "--test-episodes", "2", *TINY)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


def test_tiny_ppo_run_through_the_cli(ppo_run):
    out, res = ppo_run
    for name in ("model.zip", "rl_config.json", "env_args.json", "curve.csv", "curve.png", "eval/report.json"):
        assert (out / name).exists(), name
    assert list((out / "tb").rglob("events.out.tfevents*"))
    rows = read_curve(out)
    assert [int(r["timesteps"]) for r in rows] == [0, 128, 256]
    assert all(int(r["episodes"]) == 2 for r in rows)
    assert latest_checkpoint(out)[1] == 256
    report = json.loads((out / "eval" / "report.json").read_text())
    policy = report["agents"]["policy"]
    assert policy["overall"]["episodes"] == 2 and policy["per_task"][TOUCH]["seeds"] == [2_000_000, 2_000_001]
    assert "test seeds: success" in res.stdout
    assert policy_env_kwargs(out) == {"obs_mode": "state"}  # the sparse reward at evaluation


def test_rl_plot_overlays_runs(ppo_run, tmp_path):
    import imageio.v3 as iio

    out, _ = ppo_run
    png = tmp_path / "both.png"
    res = vlagym("rl-plot", str(out), str(out), "--labels", "a", "b", "--out", str(png))
    assert res.returncode == 0, res.stderr[-2000:]
    image = iio.imread(png)
    assert image.ndim == 3 and image.shape[0] > 100
    bad = vlagym("rl-plot", str(out), "--labels", "a", "b", "--out", str(png))
    assert bad.returncode != 0 and "2 names for 1 runs" in bad.stderr
    missing = vlagym("rl-plot", str(tmp_path), "--out", str(png))
    assert missing.returncode != 0 and "curve.csv is missing" in missing.stderr


def test_vlagym_eval_loads_the_sb3_model(ppo_run, tmp_path):
    out, _ = ppo_run
    assert resolve_policy_dir(out) == out / "model.zip"
    assert isinstance(PolicyAgent.load(out / "model.zip"), SB3Agent)
    res = vlagym("eval", "--policy", str(out), "--env", TOUCH, "--episodes", "2", "--workers", "1",
                 "--out", str(tmp_path / "eval"))
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["policy"].endswith("model.zip")
    assert report["agents"]["policy"]["overall"]["episodes"] == 2
    assert report["agents"]["expert"]["overall"]["episodes"] == 2
    # The same seeds and model give the same outcome as the run's own test evaluation.
    own = json.loads((out / "eval" / "report.json").read_text())["agents"]["policy"]["episodes"]
    assert [e["steps"] for e in report["agents"]["policy"]["episodes"]] == [e["steps"] for e in own]


def test_resume_continues_from_the_newest_checkpoint(ppo_run):
    out, _ = ppo_run
    res = vlagym("rl", "--env", TOUCH, "--timesteps", "384", "--kwargs", "obs_mode=state", "--out", str(out),
                 "--test-episodes", "0", *TINY)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [int(r["timesteps"]) for r in read_curve(out)] == [0, 128, 256, 384]
    assert latest_checkpoint(out)[1] == 384
    bad = vlagym("rl", "--env", TOUCH, "--timesteps", "512", "--kwargs", "obs_mode=state", "--out", str(out),
                 "--lr", "0.1", *TINY)
    assert bad.returncode == 2 and "different settings (learning_rate)" in bad.stderr


def test_sac_on_continuous_navigation(tmp_path):
    cfg = RLConfig(env="vlagym/NavObjectGoal-v0", algo="sac", timesteps=96, out=str(tmp_path / "sac"),
                   env_kwargs={"obs_mode": "state", "action_mode": "continuous"}, instruction={"kind": "tokens"},
                   vec="dummy", learning_starts=32, batch_size=16, eval_every=96, eval_episodes=1,
                   checkpoint_every=96, test_episodes=0)
    summary = train_rl(cfg)
    assert [int(r["timesteps"]) for r in summary["curve"]] == [0, 96]
    agent = PolicyAgent.load(tmp_path / "sac")
    assert type(agent.model).__name__ == "SAC"


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="continuous"):
        train_rl(RLConfig(env="vlagym/NavObjectGoal-v0", algo="sac", timesteps=8, out=str(tmp_path / "x"),
                          env_kwargs={"obs_mode": "state"}, instruction={"kind": "tokens"}, vec="dummy"))
    with pytest.raises(ValueError, match="algo must be one of"):
        RLConfig(algo="dqn")
    with pytest.raises(ValueError, match="unknown environment id"):
        RLConfig(env="vlagym/Nope-v0")


def _tiny_bcz(bc_dir, env):
    import torch

    from vlagym.policies import make_policy

    torch.manual_seed(0)
    bcz = make_policy("bcz", env.observation_space, env.action_space, text_encoder="hash", text_dim=16,
                      hidden_dim=32, horizon=2)
    torch.nn.init.normal_(bcz.continuous_head.weight, std=0.3)  # move, so rollouts differ if actions do
    bcz.save_pretrained(bc_dir)
    (bc_dir / "env_args.json").write_text(json.dumps({"env_kwargs": {"image_size": 64}}))
    return bc_dir


def test_critic_warmup_trains_the_critic_alone_then_releases_the_actor(tmp_path):
    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO

    from vlagym.experiments.rl import _adopt_bc, actor_parameters, build_model, make_vec_env

    bc_dir = _tiny_bcz(tmp_path / "bcz", gym.make(TOUCH, image_size=64))
    common = dict(env=TOUCH, init_from=str(bc_dir), vec="dummy", n_envs=1, n_steps=16, batch_size=16, n_epochs=1,
                  eval_every=10_000, eval_episodes=1, checkpoint_every=10_000, test_episodes=0)
    cfg = RLConfig(timesteps=32, out=str(tmp_path / "warm"), critic_warmup=32, **common)
    bc_policy = _adopt_bc(cfg)
    venv = make_vec_env(cfg)
    start = build_model(cfg, venv, bc_policy)
    venv.close()
    actor0 = [p.detach().clone() for p in actor_parameters(start.policy)]
    critic0 = [p.detach().clone() for p in start.policy.value_net.parameters()]
    train_rl(cfg)
    warm = PPO.load(str(tmp_path / "warm" / "model.zip"), device="cpu")
    for before, after in zip(actor0, actor_parameters(warm.policy), strict=True):
        torch.testing.assert_close(after.detach(), before)  # two rollouts, both within the warm-up
    assert any(not torch.equal(b, a) for b, a in zip(critic0, warm.policy.value_net.parameters(), strict=True))
    # Past the warm-up the actor learns: a third rollout on the same run moves it.
    train_rl(RLConfig(**{**cfg.to_dict(), "timesteps": 48}))
    later = PPO.load(str(tmp_path / "warm" / "model.zip"), device="cpu")
    assert any(not torch.equal(b, a.detach()) for b, a in zip(actor0, actor_parameters(later.policy), strict=True))
    with pytest.raises(ValueError, match="critic_warmup is for PPO"):
        RLConfig(env="vlagym/NavObjectGoal-v0", algo="sac", critic_warmup=10)


def test_init_from_a_bcz_checkpoint_starts_as_the_bc_policy(tmp_path):
    """Before any update, the PPO model's deterministic rollout is BC-Z's, step for step."""
    import gymnasium as gym
    import numpy as np

    from vlagym.agents.rollout import run_episode
    from vlagym.experiments.rl import _adopt_bc, build_model, make_vec_env

    env = gym.make(TOUCH, image_size=64)
    bc_dir = _tiny_bcz(tmp_path / "bcz", env)
    cfg = RLConfig(env=TOUCH, timesteps=32, out=str(tmp_path / "ft"), init_from=str(bc_dir), vec="dummy", n_envs=1,
                   n_steps=16, batch_size=16, n_epochs=1, eval_every=32, eval_episodes=1, checkpoint_every=32,
                   test_episodes=0)
    bc_policy = _adopt_bc(cfg)
    assert cfg.instruction == {"kind": "tokens", "buckets": 4096}
    assert cfg.env_kwargs == {"reward_type": "dense", "image_size": 64}
    venv = make_vec_env(cfg)
    model = build_model(cfg, venv, bc_policy)
    venv.close()
    actions = {}
    for name, agent in (("bc", PolicyAgent.load(bc_dir)), ("ppo", SB3Agent(model))):
        recorded = []

        class Recorder:
            def __init__(self, agent, recorded):
                self.agent, self.recorded = agent, recorded

            def reset(self):
                self.agent.reset()

            def act(self, obs, info):
                self.recorded.append(self.agent.act(obs, info))
                return self.recorded[-1]

        episode = run_episode(env, 1_000_000, lambda e, a=agent, r=recorded: Recorder(a, r))
        actions[name] = (np.stack(recorded), episode.steps)
    (bc, bc_steps), (ppo, ppo_steps) = actions["bc"], actions["ppo"]
    assert bc_steps == ppo_steps
    np.testing.assert_allclose(ppo[:, :4], bc[:, :4], atol=1e-4)
    assert (np.sign(ppo[:, 4]) == np.sign(bc[:, 4])).all()
    env.close()
    summary = train_rl(cfg)  # and the run itself goes through
    assert [int(r["timesteps"]) for r in summary["curve"]] == [0, 32]


# --- --vl-model: PPO from a vl-train model's towers -------------------------------------------------------------
VL_MICRO = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
VL_TINY = [a for a in TINY if a not in ("--instruction", "tokens")]


def _vl_run_folder(path, seed):
    """A vl-train run folder (``model/`` inside) with untrained micro towers."""
    import torch

    from vlagym.vl.model import VLModel

    torch.manual_seed(seed)
    VLModel("vlagym-clip-tiny", VL_MICRO, 32).save(path / "model")
    return path


@pytest.fixture(scope="module")
def vl_ppo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlrl")
    vl = _vl_run_folder(root / "vl", seed=0)
    out = root / "touch"
    res = vlagym("rl", "--env", TOUCH, "--timesteps", "256", "--kwargs", "image_size=32", "--vl-model", str(vl),
                 "--out", str(out), "--test-episodes", "2", *VL_TINY)
    assert res.returncode == 0, res.stderr[-3000:]
    return root, vl, out


@pytest.mark.slow
def test_ppo_from_a_vl_model_records_it_and_vlagym_eval_loads_it(vl_ppo_run, tmp_path):
    import hashlib

    from vlagym.policies.rl import VLFeaturesExtractor

    root, vl, out = vl_ppo_run
    cfg = json.loads((out / "rl_config.json").read_text())
    weights = vl / "model" / "open_clip_model.safetensors"
    assert cfg["vl_model"] == str((vl / "model").resolve()) and cfg["vl_freeze"] is False
    assert cfg["vl_weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert cfg["instruction"] == {"kind": "clip", "model": "vlagym-clip-tiny", "max_tokens": 24}
    assert cfg["image_backbone"] is None
    assert [int(r["timesteps"]) for r in read_curve(out)] == [0, 128, 256]
    assert json.loads((out / "eval" / "report.json").read_text())["agents"]["policy"]["overall"]["episodes"] == 2
    agent = PolicyAgent.load(out)
    ext = agent.model.policy.features_extractor
    assert isinstance(ext, VLFeaturesExtractor) and agent.instruction.kind == "clip"
    assert agent.model.policy.features_extractor.clip.visual.conv1.weight.requires_grad  # trained, not frozen
    moved = root / "vl_moved"  # the zip holds the towers: evaluation needs no VL folder
    vl.rename(moved)
    try:
        res = vlagym("eval", "--policy", str(out), "--env", TOUCH, "--episodes", "2", "--workers", "1",
                     "--no-expert", "--out", str(tmp_path / "eval"))
    finally:
        moved.rename(vl)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["policy"].endswith("model.zip") and report["agents"]["policy"]["overall"]["episodes"] == 2
    own = json.loads((out / "eval" / "report.json").read_text())["agents"]["policy"]["episodes"]
    assert [e["steps"] for e in report["agents"]["policy"]["episodes"]] == [e["steps"] for e in own]


@pytest.mark.slow
def test_resume_refuses_another_vl_model(vl_ppo_run):
    from vlagym.experiments.rl import _adopt_vl, _check_resume

    root, vl, out = vl_ppo_run
    other = _vl_run_folder(root / "vl_other", seed=1)
    settings = dict(env=TOUCH, timesteps=384, out=str(out), env_kwargs={"image_size": 32}, vec="dummy",
                    n_steps=64, batch_size=32, n_epochs=2, eval_every=128, eval_episodes=2, checkpoint_every=128)
    with pytest.raises(ValueError, match=r"different settings \(vl_model, vl_weights_sha256\)"):
        train_rl(RLConfig(vl_model=str(other), **settings))
    assert latest_checkpoint(out)[1] == 256
    same = RLConfig(vl_model=str(vl / "model"), **settings)  # the model folder itself, not the run folder
    _adopt_vl(same)
    _check_resume(out, same)  # accepted: the same model folder


def test_vl_model_starts_the_extractor_from_its_weights(tmp_path):
    """Before any update, every tower tensor of the SB3 model (SAC: actor, critic, target critic) is the saved one."""
    import torch
    from safetensors.torch import load_file

    from vlagym.experiments.rl import _adopt_vl, build_model, make_vec_env
    from vlagym.policies.rl import VLFeaturesExtractor

    vl = _vl_run_folder(tmp_path / "vl", seed=0)
    saved = load_file(str(vl / "model" / "open_clip_model.safetensors"))
    cfg = RLConfig(env="vlagym/NavObjectGoal-v0", algo="sac", timesteps=8, out=str(tmp_path / "sac"),
                   env_kwargs={"image_size": 32, "action_mode": "continuous"}, vl_model=str(vl), vl_freeze=True,
                   vec="dummy", n_envs=1, buffer_size=64, test_episodes=0)
    vl_config = _adopt_vl(cfg)
    venv = make_vec_env(cfg)
    try:
        model = build_model(cfg, venv, vl_config=vl_config)
    finally:
        venv.close()
    extractors = [m for m in model.policy.modules() if isinstance(m, VLFeaturesExtractor)]
    assert len(extractors) == 3
    for ext in extractors:
        assert ext.freeze and not any(p.requires_grad for p in ext.clip.parameters())
        state = ext.clip.state_dict()
        for key, value in saved.items():
            assert torch.equal(state[key], value), key


def test_vl_model_errors_name_the_folder_and_the_missing_images(tmp_path):
    base = dict(env=TOUCH, timesteps=8, out=str(tmp_path / "x"), vec="dummy", n_envs=1, test_episodes=0)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nope'} does not exist"):
        train_rl(RLConfig(vl_model=str(tmp_path / "nope"), **base))
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError, match="plain holds no vl_config.json"):
        train_rl(RLConfig(vl_model=str(tmp_path / "plain"), **base))
    vl = _vl_run_folder(tmp_path / "vl", seed=0)
    with pytest.raises(ValueError, match=r"has an image encoder, but the env is made with obs_mode='state'"):
        train_rl(RLConfig(vl_model=str(vl), env_kwargs={"obs_mode": "state"}, **base))
    with pytest.raises(ValueError, match="instruction is the VL model's token ids"):
        RLConfig(vl_model=str(vl), instruction={"kind": "tokens"}, **base)
    with pytest.raises(ValueError, match="does not apply with vl_model"):
        RLConfig(vl_model=str(vl), image_backbone="resnet18", **base)
    with pytest.raises(ValueError, match="vl_freeze needs vl_model"):
        RLConfig(vl_freeze=True, **base)
    res = vlagym("rl", "--env", TOUCH, "--timesteps", "8", "--vl-model", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "y"))
    assert res.returncode == 2 and f"{tmp_path / 'nope'} does not exist" in res.stderr
