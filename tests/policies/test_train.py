"""Behavior-cloning training: configs, schedule, checkpoints, and resume after a real kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from vlagym.agents.collect import CollectConfig, collect
from vlagym.agents.evaluation import evaluate_agent, validation_success
from vlagym.core.splits import VAL_SEED_START
from vlagym.policies import policy_names
from vlagym.policies.train import StepSampler, TrainConfig, load_config, lr_at, train

TINY_BCZ = {"text_encoder": "hash", "text_dim": 16, "hidden_dim": 32, "horizon": 3}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "touch"
    collect(CollectConfig(env="vlagym/TabletopTouch-v0", episodes=3, out=str(out), workers=1,
                          env_kwargs={"image_size": 32}))
    return out


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(data=[str(data)], policy="bcz", policy_overrides=TINY_BCZ, out=str(out), steps=8, batch_size=4,
                num_workers=0, eval_every=0, save_every=4, log_every=2, warmup_steps=2, threads=1)
    return TrainConfig(**{**base, **kw})


def test_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"policy": "bcz", "steps": 10, "data": ["a"]}))
    cfg = load_config(path, ["steps=20", "policy.horizon=4", "lr=1e-3"])
    assert cfg.steps == 20 and cfg.policy_overrides == {"horizon": 4} and cfg.lr == 1e-3 and cfg.data == ["a"]
    with pytest.raises(ValueError, match="unknown config keys"):
        load_config(path, ["stepz=3"])
    with pytest.raises(ValueError, match="steps must be >= 1"):
        load_config(path, ["steps=0"])
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    assert load_config(path, ["labels=expert_actions"]).labels == "expert_actions"
    with pytest.raises(ValueError, match="labels must be one of"):
        load_config(path, ["labels=clean"])


def test_shipped_configs_load():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[2] / "experiments" / "configs").glob("*.yaml"))
    assert len(configs) >= 4
    for path in configs:
        cfg = load_config(path)
        assert cfg.policy in policy_names() and cfg.data, path


def test_lr_schedule_and_sampler():
    cfg = TrainConfig(data=["x"], steps=100, warmup_steps=10, lr=1.0)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0) and lr_at(100, cfg) == pytest.approx(0.0, abs=1e-9)
    full = list(StepSampler(50, 4, 10, seed=3))
    resumed = list(StepSampler(50, 4, 10, seed=3, start=6))
    assert full[6:] == resumed and full[0] != list(StepSampler(50, 4, 10, seed=4))[0]


def test_train_writes_run_and_evaluates(data, tmp_path):
    out = tmp_path / "run"
    calls = []

    def validate(policy, env_id, env_kwargs, seeds):  # the evaluator, watched
        calls.append((env_id, env_kwargs, list(seeds), validation_success(policy, env_id, env_kwargs, seeds)))
        return calls[-1][-1]

    summary = train(_cfg(data, out, eval_every=4, eval_episodes=2), progress=False, validate=validate)
    assert (out / "best" / "model.safetensors").exists() and (out / "checkpoint" / "train_state.pt").exists()
    assert summary["best"]["step"] in (4, 8) and summary["final_loss"] > 0
    assert [c[:3] for c in calls] == [("vlagym/TabletopTouch-v0", {"image_size": 32}, [VAL_SEED_START,
                                                                                       VAL_SEED_START + 1])] * 2
    # The validation number is the evaluator's on the saved best weights, played from disk in a worker.
    best = evaluate_agent(str(out / "best"), "vlagym/TabletopTouch-v0", calls[0][2], {"image_size": 32}, workers=1)
    assert best.summary["success_rate"] == summary["best"]["success_rate"] == calls[summary["best"]["step"] // 4 - 1][3]
    assert list((out / "tb").glob("events.out.tfevents.*"))
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["policy"] == "bcz" and resolved["resolved_policy"]["horizon"] == 3
    with pytest.raises(FileExistsError, match="--resume"):
        train(_cfg(data, out), progress=False)


def test_validation_without_an_evaluator_is_refused(data, tmp_path):
    # Training sits below the agents layer, so the evaluator is handed in; asking for validation without it
    # fails before the run folder is made.
    with pytest.raises(ValueError, match="eval_every=4 asks for validation in simulation.*validation_success"):
        train(_cfg(data, tmp_path / "run", eval_every=4), progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="eval_episodes must be >= 1 when eval_every > 0"):
        _cfg(data, tmp_path / "run", eval_every=4, eval_episodes=0)


def test_resume_after_kill_matches_uninterrupted(data, tmp_path):
    steps = 60
    reference = tmp_path / "reference"
    train(_cfg(data, reference, steps=steps), progress=False)

    killed = tmp_path / "killed"
    args = [f"{k}={v}" for k, v in dict(data=f"[{data}]", policy="bcz", out=killed, steps=steps, batch_size=4,
                                          num_workers=0, eval_every=0, save_every=4, log_every=2,
                                          warmup_steps=2, threads=1).items()]
    args += [f"policy.{k}={v}" for k, v in TINY_BCZ.items()]
    cmd = [sys.executable, "-m", "vlagym.experiments.cli", "train", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (killed / "checkpoint" / "train_state.pt").exists():
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    step = torch.load(killed / "checkpoint" / "train_state.pt", weights_only=True)["step"]
    assert step < steps, "the kill came too late to test resume"
    res = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    a = load_file(reference / "checkpoint" / "policy" / "model.safetensors")
    b = load_file(killed / "checkpoint" / "policy" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{k} differs after resume")


# --- step 10: resume loads no pickle, refuses another config, and matches an uninterrupted run ----------------
CRAFTED = Path(__file__).parents[1] / "crafted"


def test_resume_never_unpickles_train_state(data, tmp_path, monkeypatch, capsys):
    import shutil

    from vlagym.agents.safe_load import PickleRefusedError

    monkeypatch.chdir(tmp_path)  # where the crafted pickle would write its marker
    monkeypatch.delenv("VLAGYM_TRUST_PICKLE", raising=False)
    out = tmp_path / "run"
    train(_cfg(data, out, steps=4), progress=False)
    state = out / "checkpoint" / "train_state.pt"
    assert torch.load(state, weights_only=True)["step"] == 4  # vlagym's own state needs no pickle
    shutil.copy(CRAFTED / "train_state.pt", state)
    with pytest.raises(PickleRefusedError, match=r"train_state\.pt.*--trust-pickle"):
        train(_cfg(data, out, steps=4), resume=True, progress=False)
    assert not (tmp_path / "vlagym_unpickled_marker").exists()
    with pytest.raises(ValueError, match="parameter group"):  # the flag unpickles it (the file is live); its
        train(_cfg(data, out, steps=4), resume=True, progress=False, trust_pickle=True)  # optimizer is a dummy
    assert (tmp_path / "vlagym_unpickled_marker").exists() and "WARNING: unpickling" in capsys.readouterr().err


def test_resume_refuses_a_changed_config(data, tmp_path):
    out = tmp_path / "run"
    train(_cfg(data, out, steps=4), progress=False)
    before = (out / "config.yaml").read_bytes()
    changed = _cfg(data, out, steps=4, lr=1e-3, batch_size=2,
                   policy_overrides={**TINY_BCZ, "horizon": 5})
    with pytest.raises(ValueError, match=r"batch_size: 4 in the run, 2 now; lr: .*policy_overrides"):
        train(changed, resume=True, progress=False)
    assert (out / "config.yaml").read_bytes() == before
    # Speed and logging settings may change.
    train(_cfg(data, out, steps=4, threads=2, num_workers=1, log_every=1), resume=True, progress=False)


@pytest.fixture(scope="module")
def wrist_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "touch_wrist"
    collect(CollectConfig(env="vlagym/TabletopTouch-v0", episodes=3, out=str(out), workers=1,
                          env_kwargs={"image_size": 32, "wrist_camera": True}))
    return out


def test_resume_in_default_config_matches_uninterrupted(wrist_data, tmp_path, monkeypatch):
    """load_config's defaults (2 DataLoader workers, augmentation, the sentence encoder) with the pipeline's
    BC-Z recipe, dropout on so training draws from torch's RNG, and evaluation in simulation: killed after
    the checkpoint at step 4 and resumed, it ends bit-identical to an uninterrupted run."""
    import vlagym.policies.train as T
    from vlagym.experiments.pipeline import RECIPES

    overrides = [f"data=[{wrist_data}]", "steps=8", "batch_size=4", "save_every=4", "eval_every=4",
                 "eval_episodes=1", "warmup_steps=2", "log_every=2"]
    overrides += [f"policy.{k}={v}" for k, v in {**RECIPES["bcz"], "dropout": 0.1}.items()]

    def cfg(out):
        return load_config(None, [*overrides, f"out={out}"])

    train(cfg(tmp_path / "reference"), progress=False, validate=validation_success)

    class Killed(Exception):
        pass

    save = T.save_checkpoint

    def save_then_die(run, policy, optimizer, step, *args):
        save(run, policy, optimizer, step, *args)
        if step == 4:
            raise Killed

    monkeypatch.setattr(T, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        train(cfg(tmp_path / "killed"), progress=False, validate=validation_success)
    monkeypatch.setattr(T, "save_checkpoint", save)
    train(cfg(tmp_path / "killed"), resume=True, progress=False, validate=validation_success)
    a = load_file(tmp_path / "reference" / "checkpoint" / "policy" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "checkpoint" / "policy" / "model.safetensors")
    assert a.keys() == b.keys() and len(a) > 200
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{k} differs after resume")
