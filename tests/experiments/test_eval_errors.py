"""`vlagym eval` and friends: env kwargs reach the env, and every error a user can cause is one line.

In-process through ``main`` (fast); the fault-injection tests that need a process to die are in
test_eval_resume.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vlagym.assets
from vlagym.experiments.cli import main

CHECKPOINT = Path(vlagym.assets.__file__).parent / "checkpoints" / "bcz_pickup_tiny"
PICK, NAV, TOUCH = "vlagym/TabletopPickUp-v0", "vlagym/NavObjectGoal-v0", "vlagym/TabletopTouch-v0"
EVAL = ["eval", "--policy", str(CHECKPOINT), "--env", PICK, "--episodes", "1", "--workers", "1"]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, command: str, *parts: str) -> str:
    lines = [line for line in err.splitlines() if "pybullet build time" not in line and line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"vlagym {command}: error: "), err
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


# --- finding 8: --kwargs reach the env, are recorded, and are checked first ---------------------------------
def test_eval_passes_kwargs_to_the_env_and_records_them(tmp_path, capsys):
    code, out, _ = run(EVAL + ["--kwargs", "level=L3", "--out", str(tmp_path)], capsys)
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["env_kwargs"] == {"image_size": 64, "wrist_camera": True, "level": "L3"}
    for agent in ("policy", "expert"):  # the level reached both agents' envs: L3 draws a novel colour
        assert report["agents"][agent]["episodes"][0]["info"]["generalization_split"] == "L3"
    assert "env kwargs: image_size=64, wrist_camera=True, level='L3'" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("kwargs, parts", [
    ("level=L5", ["vlagym/TabletopPickUp-v0", "no level 'L5'", "supports train, L1, L2, L3, L4"]),
    ("levle=L1", ["unknown env kwarg 'levle' for vlagym/TabletopPickUp-v0", "it takes image_size, level"]),
    ("image_size=32", ["image_size=32 contradict", "trained with (image_size=64", "env_args.json"]),
    ("image_size=64.5", ["image_size must be an int", "got 64.5"]),
    ("image_size=10000", ["image_size must be within 16..512", "got 10000"]),
    ("num_distractors=9", ["num_distractors 9 exceeds the cap of 4"]),
])
def test_eval_refuses_bad_kwargs_before_any_episode(tmp_path, capsys, kwargs, parts):
    code, _, err = run(EVAL + ["--kwargs", kwargs, "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    one_line_error(err, "eval", *parts)
    assert not (tmp_path / "out" / "episodes.jsonl").exists()  # refused before the first episode


def test_regress_check_and_expert_eval_validate_kwargs(capsys):
    code, _, err = run(["regress", "check", "--policy", str(CHECKPOINT), "--env", PICK, "--min-success", "0",
                        "--episodes", "1", "--kwargs", "level=L5"], capsys)
    assert code == 2
    one_line_error(err, "regress", "no level 'L5'")
    code, _, err = run(["expert-eval", "--env", PICK, "--episodes", "1", "--kwargs", "levle=L1"], capsys)
    assert code == 2
    one_line_error(err, "expert-eval", "unknown env kwarg 'levle'")
    code, _, err = run(["expert-eval", "--env", TOUCH, "--episodes", "1", "--workers", "1", "--kwargs",
                        "level=L5"], capsys)
    assert code == 0  # touch defines L5


def test_suite_validates_kwargs_before_any_episode(capsys):
    code, _, err = run(["eval", "--suite", "robustness", "--env", TOUCH, "--episodes", "1", "--workers", "1",
                        "--kwargs", "levle=L1"], capsys)
    assert code == 2
    one_line_error(err, "eval", "unknown env kwarg 'levle' for vlagym/TabletopTouch-v0")


# --- finding 11: errors that name the file, field or value -------------------------------------------------
def test_policy_trained_on_another_env_is_refused_naming_both(capsys):
    code, _, err = run(["eval", "--policy", str(CHECKPOINT), "--env", NAV, "--episodes", "1"], capsys)
    assert code == 2
    one_line_error(err, "eval", f"trained on {PICK} and cannot run on {NAV}")


def _copy_checkpoint(tmp_path: Path) -> Path:
    return Path(shutil.copytree(CHECKPOINT, tmp_path / "policy"))


def test_bad_config_json_names_the_file(tmp_path, capsys):
    policy = _copy_checkpoint(tmp_path)
    (policy / "config.json").write_text('{"type": "bcz", ')
    code, _, err = run(EVAL[:2] + [str(policy)] + EVAL[3:] + ["--no-expert"], capsys)
    assert code == 2
    one_line_error(err, "eval", str(policy / "config.json"), "not valid JSON")


def test_truncated_weights_name_the_file(tmp_path, capsys):
    policy = _copy_checkpoint(tmp_path)
    weights = policy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    code, _, err = run(EVAL[:2] + [str(policy)] + EVAL[3:] + ["--no-expert"], capsys)
    assert code == 2
    one_line_error(err, "eval", str(weights), "truncated or corrupt")


def test_dataset_and_os_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "shard_000.hdf5").write_text("not hdf5")
    code, _, err = run(["dataset", "info", str(tmp_path)], capsys)
    assert code == 2  # DatasetError
    one_line_error(err, "dataset", str(tmp_path / "shard_000.hdf5"), "corrupt or truncated")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, _, err = run(EVAL + ["--out", str(blocker / "out")], capsys)
    assert code == 2  # an OSError (NotADirectoryError), found before the evaluation
    one_line_error(err, "eval", "output folder", str(blocker / "out"), "not writable")


def test_debug_shows_the_traceback():
    cmd = [sys.executable, "-m", "vlagym.experiments.cli", "--debug", "eval", "--policy", "nowhere", "--env", PICK]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "Traceback" in res.stderr and "no policy checkpoint at nowhere" in res.stderr
    res = subprocess.run(cmd[:3] + cmd[4:] + ["--debug"], capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "Traceback" in res.stderr  # after the subcommand too
    res = subprocess.run(cmd[:3] + cmd[4:], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr


# --- finding 13: counts, seeds, the train summary -------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    EVAL[:5] + ["--episodes", "0"], EVAL[:5] + ["--episodes", "-1"], EVAL[:5] + ["--workers", "0"],
    ["expert-eval", "--env", TOUCH, "--episodes", "0"], ["expert-eval", "--env", TOUCH, "--workers", "-2"],
    ["regress", "check", "--policy", "p", "--env", TOUCH, "--min-success", "0", "--episodes", "0"],
    ["collect", "--env", TOUCH, "--episodes", "1", "--out", "x", "--workers", "0"],
    ["pipeline", "--workers", "0"], ["data-efficiency", "--out", "x", "--workers", "0"],
    ["rl", "--env", TOUCH, "--timesteps", "1", "--workers", "0"],
])
def test_counts_below_one_are_refused(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # were a count accepted, what it ran would write here
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "must be >= 1, got" in capsys.readouterr().err


@pytest.mark.parametrize("start, episodes", [(1_000_000, 1), (1_999_999, 2)])
def test_eval_refuses_validation_seeds_without_split_val(start, episodes, capsys):
    code, _, err = run(EVAL[:5] + ["--seed-start", str(start), "--episodes", str(episodes)], capsys)
    assert code == 2
    one_line_error(err, "eval", "not all in the test split", "--split val")


def test_eval_on_validation_seeds_with_split_val(tmp_path, capsys):
    code, _, _ = run(EVAL + ["--seed-start", "1000000", "--split", "val", "--no-expert", "--out", str(tmp_path)],
                     capsys)
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["split"] == "val" and report["agents"]["policy"]["per_task"][PICK]["seeds"] == [1_000_000]
    code, _, err = run(EVAL[:5] + ["--seed-start", "1999999", "--episodes", "2", "--split", "val"], capsys)
    assert code == 2  # straddling val and test is refused either way
    one_line_error(err, "eval", "not all in the val split")


def test_train_summary_without_validation(monkeypatch, capsys):
    import vlagym.policies.train as train
    from vlagym.agents.evaluation import validation_success

    summary = {"run": "runs/x", "best": {"success_rate": -1.0, "step": None}, "final_loss": 0.5,
               "best_policy": "runs/x/best"}
    monkeypatch.setattr(train, "load_config", lambda config, overrides: None)
    validators = []
    monkeypatch.setattr(train, "train", lambda cfg, resume=False, validate=None: validators.append(validate) or summary)
    code, out, _ = run(["train", "steps=1"], capsys)
    assert code == 0
    assert validators == [validation_success]  # `vlagym train` validates through the evaluator
    assert "no validation ran; final policy: runs/x/best" in out and "-100%" not in out


def test_eval_without_env_uses_the_policys_own(tmp_path, capsys):
    code, _, _ = run(["eval", "--policy", str(CHECKPOINT), "--episodes", "1", "--workers", "1", "--no-expert",
                      "--out", str(tmp_path)], capsys)
    assert code == 0
    assert list(json.loads((tmp_path / "report.json").read_text())["agents"]["policy"]["per_task"]) == [PICK]
    bare = tmp_path / "bare"
    shutil.copytree(CHECKPOINT, bare)
    (bare / "env_args.json").unlink()
    code, _, err = run(["eval", "--policy", str(bare), "--episodes", "1"], capsys)
    assert code == 2
    one_line_error(err, "eval", "records no env (no env_args.json beside it); pass --env")
