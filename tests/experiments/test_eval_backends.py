"""``vlagym eval --backend onnxruntime`` and ``--latency``, and ``vlagym bench policy --policy-dir --backends``.

The ONNX export's actions match torch's to 1e-4, so on the same seeds the episodes must come out the same.
No speed is asserted anywhere: the machine is shared.
"""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import vlagym.assets
from vlagym.agents.evaluation import Cell, evaluate_cells
from vlagym.experiments.cli import main

CHECKPOINT = Path(vlagym.assets.__file__).parent / "checkpoints" / "bcz_pickup_tiny"
PICK, TOUCH = "vlagym/TabletopPickUp-v0", "vlagym/TabletopTouch-v0"
EVAL = ["eval", "--policy", str(CHECKPOINT), "--env", PICK, "--episodes", "3", "--no-expert"]
OLD_SETTINGS = {"agents", "env_ids", "episodes", "seed_start", "env_kwargs"}
"""The episode log header's keys before --backend and --latency: such logs must still resume."""


def report_of(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def outcomes(report: dict) -> list[tuple[int, bool, int]]:
    return [(e["seed"], e["success"], e["steps"]) for e in report["agents"]["policy"]["episodes"]]


def header(out: Path) -> dict:
    return json.loads((out / "episodes.jsonl").read_text().splitlines()[0])["settings"]


def test_onnxruntime_backend_plays_the_same_episodes_as_torch(tmp_path, capsys):
    from vlagym.agents.policy_agent import policy_env_kwargs
    from vlagym.experiments.evaluate import onnx_policy
    from vlagym.policies import load_policy
    from vlagym.policies.compress.onnx_backend import OnnxPolicy

    assert main([*EVAL, "--workers", "1", "--out", str(tmp_path / "torch")]) == 0
    assert main([*EVAL, "--workers", "1", "--backend", "onnxruntime", "--out", str(tmp_path / "ort")]) == 0
    assert "exporting" in capsys.readouterr().out
    torch_report, ort_report = report_of(tmp_path / "torch"), report_of(tmp_path / "ort")
    assert outcomes(ort_report) == outcomes(torch_report)
    assert set(ort_report) == set(torch_report) | {"backend_policy"}
    assert (torch_report["backend"], torch_report["latency_ms"]) == ("torch", 0)
    assert (ort_report["backend"], ort_report["latency_ms"]) == ("onnxruntime", 0)
    assert ort_report["policy"] == torch_report["policy"] == str(CHECKPOINT)
    exported = Path(ort_report["backend_policy"])
    assert exported.parent == tmp_path / "ort" / "onnx"
    assert json.loads((exported / "compression.json").read_text())["method"] == "onnx"
    assert "policy backend: onnxruntime" in (tmp_path / "ort" / "report.md").read_text()
    # The torch run's log reads as before; the ONNX run's says which backend played.
    assert set(header(tmp_path / "torch")) == OLD_SETTINGS
    assert header(tmp_path / "ort")["backend"] == "onnxruntime"

    # Same actions to 1e-4 on real observations, and an ONNX folder evaluates as it is.
    torch_policy, ort_policy = load_policy(CHECKPOINT), load_policy(exported)
    assert isinstance(ort_policy, OnnxPolicy)
    env = gym.make(PICK, **policy_env_kwargs(CHECKPOINT))
    obs, info = env.reset(seed=2_000_000)
    expert = env.unwrapped.task.expert()
    for _ in range(5):
        np.testing.assert_allclose(ort_policy.act(obs), torch_policy.act(obs), atol=1e-4)
        obs, *_, info = env.step(expert.act(obs, info))
    env.close()
    assert onnx_policy(exported, tmp_path / "unused") == str(exported)

    # A rerun resumes from the log and reuses the export.
    assert main([*EVAL, "--workers", "1", "--backend", "onnxruntime", "--out", str(tmp_path / "ort")]) == 0
    out = capsys.readouterr().out
    assert "3 of 3 episodes already finished" in out and "exporting" not in out
    assert outcomes(report_of(tmp_path / "ort")) == outcomes(torch_report)


def test_latency_runs_in_the_worker_pool_and_is_recorded(tmp_path, capsys):
    out = tmp_path / "late"
    assert main([*EVAL[:-2], "2", "--no-expert", "--workers", "2", "--latency", "300", "--out", str(out)]) == 0
    report = report_of(out)
    assert (report["backend"], report["latency_ms"]) == ("torch", 300.0)
    assert "latency: 300 ms per decision" in (out / "report.md").read_text()
    assert header(out)["latency"] == 300.0 and "backend" not in header(out)
    for ep in report["agents"]["policy"]["episodes"]:
        assert ep["info"]["delay_steps_mean"] == 3.0  # 300 ms at the 10 Hz control rate
        assert ep["info"]["decisions"] == -(-ep["steps"] // 3)  # one decision every third step
    # Another latency into the same folder is another evaluation: refused, naming it.
    assert main([*EVAL[:-2], "2", "--no-expert", "--workers", "1", "--out", str(out)]) == 2
    assert "differing: latency" in capsys.readouterr().err


def test_latency_zero_is_the_bare_agent(tmp_path):
    out = tmp_path / "zero"
    assert main([*EVAL[:-2], "1", "--no-expert", "--workers", "1", "--latency", "0", "--out", str(out)]) == 0
    assert set(header(out)) == OLD_SETTINGS
    assert "decisions" not in report_of(out)["agents"]["policy"]["episodes"][0]["info"]


class CountingAgent:
    """Zero actions; counts its calls."""

    def __init__(self, space) -> None:
        self.action, self.calls = np.zeros(space.shape, dtype=np.float32), 0

    def act(self, obs, info):
        self.calls += 1
        return self.action


def test_a_live_agent_with_latency_decides_every_few_steps():
    env = gym.make(TOUCH, image_size=32)
    agent = CountingAgent(env.action_space)
    env.close()
    ev = evaluate_cells([Cell(agent, TOUCH, [2_000_000], {"image_size": 32}, latency=250)])[0]
    steps = ev.episodes[0].steps
    assert agent.calls == -(-steps // 3) == ev.episodes[0].info["decisions"]  # 250 ms at 10 Hz: 3 steps


@pytest.mark.parametrize("value", ["fast", "-5", "nan"])
def test_bad_latency_is_a_clear_error(value, capsys):
    with pytest.raises(SystemExit) as e:
        main([*EVAL, "--latency", value])
    assert e.value.code == 2
    assert f"argument --latency: latency {value!r} is not a number of milliseconds >= 0 or 'measured'" in \
        capsys.readouterr().err


def test_bad_latency_or_backend_elsewhere(capsys):
    from vlagym.experiments.evaluate import evaluate

    assert main([*EVAL, "--set", "latency=soon"]) == 2
    assert "latency=soon: latency 'soon' is not a number" in capsys.readouterr().err
    assert main(["eval", "--suite", "robustness", "--env", PICK, "--latency", "100"]) == 2
    assert "--backend and --latency apply to a plain eval, not to --suite" in capsys.readouterr().err
    with pytest.raises(ValueError, match="backend must be one of torch, onnxruntime, got 'tensorrt'"):
        evaluate(str(CHECKPOINT), [PICK], 1, backend="tensorrt")
    with pytest.raises(ValueError, match="latency -1 is not a number of milliseconds"):
        Cell("expert", PICK, [2_000_000], latency=-1)


def test_bench_policy_backends_names():
    from vlagym.experiments.bench import backend_names

    assert backend_names(["torch,onnx", "onnx-int8"]) == ("torch", "onnxruntime", "onnxruntime-int8")
    assert backend_names(["torch-int8", "onnxruntime"]) == ("torch-int8", "onnxruntime")
    assert backend_names(None) is None
    with pytest.raises(ValueError, match=r"unknown backends \['tensorrt'\]; choose from torch, torch-int8"):
        backend_names(["torch,tensorrt"])


def test_bench_policy_backends_smoke(tmp_path, capsys):
    assert main(["bench", "policy", "--backends", "torch"]) == 2
    assert "--backends times one saved policy's backends: give it --policy-dir DIR" in capsys.readouterr().err
    path = tmp_path / "rows.json"
    assert main(["bench", "policy", "--policy-dir", str(CHECKPOINT), "--backends", "torch,onnx", "--calls", "3",
                 "--episodes", "1", "--steps", "4", "--json", str(path)]) == 0
    assert "| backend | params (M) |" in capsys.readouterr().out
    rows = json.loads(path.read_text())
    assert [r["backend"] for r in rows] == ["torch", "onnxruntime"]
    assert all(r["env"] == PICK and r["policy"] == str(CHECKPOINT) for r in rows)
    assert rows[1]["max_action_diff"] < 1e-4
