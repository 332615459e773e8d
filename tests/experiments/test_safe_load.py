"""Every entry point that loads an SB3 zip (eval --policy, record --policy, an rl run folder, rl resume) leaves
a crafted one's pickle unrun: it loads safely or is refused with the file and --trust-pickle named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "crafted"))
sys.path.insert(0, str(Path(__file__).parents[1] / "agents"))
from crafted import MARKER, crafted_sb3_zip  # noqa: E402
from test_safe_load import TOUCH, vlagym_ppo  # noqa: E402

from vlagym.agents.safe_load import PickleRefusedError  # noqa: E402
from vlagym.experiments.rl import RLConfig, train_rl  # noqa: E402


def vlagym(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlagym.experiments.cli", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                                                     "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def zips(tmp_path_factory):
    root = tmp_path_factory.mktemp("crafted")
    clean = vlagym_ppo(root / "clean")
    run = root / "run"  # an rl run folder whose model.zip pickles an entry vlagym rebuilds
    run.mkdir()
    (run / "env_args.json").write_text((root / "clean" / "env_args.json").read_text())
    crafted_sb3_zip(clean, run / "model.zip", data_key="lr_schedule")
    return root, clean, crafted_sb3_zip(clean, root / "evil.zip", data_key="evil"), run


def test_eval_and_record_never_unpickle(zips):
    root, _, evil, run = zips
    res = vlagym(root, "eval", "--policy", str(evil), "--env", TOUCH, "--episodes", "1", "--no-expert",
                 "--workers", "1", "--out", str(root / "eval_evil"))
    assert res.returncode != 0 and "evil.zip" in res.stderr and "--trust-pickle" in res.stderr, res.stderr[-2000:]
    res = vlagym(root, "record", "--policy", str(evil), "--env", TOUCH, "--out", str(root / "r.gif"))
    assert res.returncode != 0 and "refused" in res.stderr and "--trust-pickle" in res.stderr, res.stderr[-2000:]
    assert not (root / MARKER).exists()
    res = vlagym(root, "eval", "--policy", str(run), "--env", TOUCH, "--episodes", "1", "--no-expert",
                 "--workers", "1", "--out", str(root / "eval_run"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert (root / "eval_run" / "report.json").exists() and not (root / MARKER).exists()


def test_rl_resume_never_unpickles(zips, tmp_path, monkeypatch):
    root, clean, _, _ = zips
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VLAGYM_TRUST_PICKLE", raising=False)
    cfg = dict(env=TOUCH, env_kwargs={"obs_mode": "state"}, instruction={"kind": "tokens"}, vec="dummy", n_envs=1,
               n_steps=64, batch_size=32, n_epochs=1, timesteps=64, test_episodes=0)
    for key, ok in (("observation_space", True), ("evil", False)):
        out = tmp_path / key
        (out / "checkpoints").mkdir(parents=True)
        crafted_sb3_zip(clean, out / "checkpoints" / "rl_model_64_steps.zip", data_key=key)
        if ok:  # rebuilt from the vectorised env: resumes (nothing left to train) and writes model.zip
            assert train_rl(RLConfig(out=str(out), **cfg))["model"] == str(out / "model.zip")
        else:
            with pytest.raises(PickleRefusedError, match="rl_model_64_steps.zip.*'evil'.*--trust-pickle"):
                train_rl(RLConfig(out=str(out), **cfg))
        assert not (tmp_path / MARKER).exists()
