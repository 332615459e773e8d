"""Golden rollouts: the shipped files replay exactly, and a physics change is caught at its first step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import vlagym
import vlagym.envs.sim as sim
from vlagym.experiments.cli import main
from vlagym.testing import EnvContractError, check_golden, record_golden

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
FILES = sorted(GOLDEN.glob("*.json"))


def test_every_registered_id_has_a_golden_file():
    covered = {json.loads(p.read_text())["env_id"] for p in FILES}
    assert covered == set(vlagym.ENV_IDS), f"ids without a golden file: {set(vlagym.ENV_IDS) - covered}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_golden_rollout_unchanged(path):
    check_golden(path)


def test_physics_change_is_caught(tmp_path, monkeypatch):
    path = tmp_path / "touch.json"
    record_golden("vlagym/TabletopTouch-v0", [3], 5, path, env_kwargs={"image_size": 32})
    check_golden(path)
    monkeypatch.setattr(sim, "SOLVER_ITERATIONS", 5)
    with pytest.raises(EnvContractError, match=r"seed 3 step \d+: obs\['\w+'\] differs from the golden rollout"):
        check_golden(path)


def test_changed_hash_names_step_and_key(tmp_path):
    path = tmp_path / "touch.json"
    golden = record_golden("vlagym/TabletopTouch-v0", [1], 4, path, env_kwargs={"image_size": 32})
    golden["seeds"]["1"]["obs"][2]["rgb"] = "0" * 64
    path.write_text(json.dumps(golden))
    with pytest.raises(EnvContractError, match=r"seed 1 step 2: obs\['rgb'\] differs"):
        check_golden(path)


def test_cli_record_and_check(tmp_path, monkeypatch, capsys):
    path = tmp_path / "nav.json"
    assert main(["regress", "record-golden", "--env", "vlagym/NavObjectGoal-v0", "--seeds", "0", "--steps", "3",
                 "--out", str(path)]) == 0
    assert main(["regress", "check-golden", str(path)]) == 0
    golden = json.loads(path.read_text())
    golden["seeds"]["0"]["rewards"][1] = 7.0
    path.write_text(json.dumps(golden))
    capsys.readouterr()
    assert main(["regress", "check-golden", str(path)]) == 1
    assert "seed 0 step 2: reward 0.0 != golden 7.0" in capsys.readouterr().out
