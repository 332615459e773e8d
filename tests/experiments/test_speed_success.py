"""vlagym speed-success: evaluated policies timed in one run, beside their success, as a table and a plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlagym.experiments.cli import main
from vlagym.experiments.evaluate import evaluate
from vlagym.experiments.speed_success import SpeedSuccessConfig, pareto_front, speed_success, to_markdown
from vlagym.policies.compress import compress_policy

SHIPPED = Path(__file__).resolve().parents[2] / "assets" / "checkpoints" / "bcz_pickup_tiny"
ENV = "vlagym/TabletopPickUp-v0"


@pytest.fixture(scope="module")
def evals(tmp_path_factory):
    """The shipped BC-Z and its ONNX export, each evaluated on the same 2 test seeds."""
    root = tmp_path_factory.mktemp("speed")
    onnx = compress_policy(SHIPPED, "onnx", root / "bcz_onnx")
    folders = []
    for name, policy in (("float", SHIPPED), ("onnx", onnx)):
        evaluate(str(policy), [ENV], episodes=2, workers=1, expert=False, out=str(root / f"eval_{name}"))
        folders.append(str(root / f"eval_{name}"))
    return root, folders


def test_rows_pair_each_evaluations_success_with_its_timing(evals):
    root, folders = evals
    rows = speed_success(SpeedSuccessConfig(evals=folders, out=str(root / "ss"), calls=3, episodes=1, steps=4))
    reports = [json.loads((Path(f) / "report.json").read_text())["agents"]["policy"]["overall"] for f in folders]
    assert [r["method"] for r in rows] == ["float", "onnx"] and [r["family"] for r in rows] == ["bcz", "bcz"]
    for row, report in zip(rows, reports, strict=True):
        assert row["success_rate"] == report["success_rate"] and row["success_ci95"] == report["success_ci95"]
        assert row["calls"] == 3 and row["p50_ms"] > 0 and row["hz"] == pytest.approx(1000 / row["p50_ms"])
        assert row["parameters"] == rows[0]["parameters"]  # the export keeps the network
    table = to_markdown(rows)
    assert table.count("\n") == 4 and "| bcz | bcz_onnx | onnx |" in table and "| 1.0 |" in table


def test_the_command_writes_the_table_json_and_plot(evals, capsys):
    root, folders = evals
    out = root / "cli"
    assert main(["speed-success", *folders, "--labels", "float", "ONNX", "--families", "BC-Z", "BC-Z",
                 "--calls", "3", "--episodes", "1", "--steps", "4", "--out", str(out)]) == 0
    assert "| BC-Z | ONNX | onnx |" in capsys.readouterr().out
    rows = json.loads((out / "speed_success.json").read_text())
    assert [r["label"] for r in rows] == ["float", "ONNX"]
    assert (out / "speed_success.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "speed_success.md").read_text() == to_markdown(rows)


def test_the_pareto_front_keeps_only_undominated_points():
    rows = [{"hz": 100, "success_rate": 0.9}, {"hz": 1000, "success_rate": 0.85}, {"hz": 500, "success_rate": 0.8},
            {"hz": 1000, "success_rate": 0.7}]
    assert pareto_front(rows) == [rows[1], rows[0]]


def test_bad_input_is_named(evals, tmp_path):
    _, folders = evals
    with pytest.raises(ValueError, match="--labels gives 1 names for 2 evaluations"):
        speed_success(SpeedSuccessConfig(evals=folders, out=str(tmp_path), labels=["one"]))
    with pytest.raises(FileNotFoundError, match="is .* a vlagym eval --out folder"):
        speed_success(SpeedSuccessConfig(evals=[str(tmp_path)], out=str(tmp_path)))
    (tmp_path / "expert_only").mkdir()
    (tmp_path / "expert_only" / "report.json").write_text(json.dumps({"policy": None, "agents": {}}))
    with pytest.raises(ValueError, match="names no evaluated policy"):
        speed_success(SpeedSuccessConfig(evals=[str(tmp_path / "expert_only")], out=str(tmp_path)))
