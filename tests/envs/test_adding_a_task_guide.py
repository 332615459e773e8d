"""docs/adding-a-task.md, followed as written: its task file registers an id, passes the contract kit,
and its expert succeeds; a worker process that only has the id builds the env by importing the module."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

from vlagym.envs import registry

GUIDE = "adding-a-task.md"
ENV_ID = "vlagym/TabletopHoldHigh-v0"


@pytest.fixture
def guide_task(tmp_path, monkeypatch, guide_blocks):
    """Write the guide's task file into a folder on sys.path and import it; undo every registration after."""
    files = guide_blocks(GUIDE, "file")
    assert list(files) == ["hold_high.py"], f"the guide's task file blocks: {list(files)}"
    (tmp_path / "hold_high.py").write_text(files["hold_high.py"])
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "IDS", dict(registry.IDS))
    monkeypatch.setattr(registry, "TASKS", {f: dict(t) for f, t in registry.TASKS.items()})
    sys.modules.pop("hold_high", None)
    module = importlib.import_module("hold_high")
    yield tmp_path, module
    gym.registry.pop(ENV_ID, None)
    sys.modules.pop("hold_high", None)


def test_the_guide_names_its_checks(guide_blocks):
    assert set(guide_blocks(GUIDE, "check")) == {"contract", "expert"}


def test_the_example_task_registers_its_id(guide_task):
    _, module = guide_task
    assert registry.IDS[ENV_ID] == ("tabletop", "hold_high")
    assert registry.TASKS["tabletop"]["hold_high"] is module.HoldHighTask
    assert gym.spec(ENV_ID).kwargs == {"task": "hold_high:HoldHighTask"}
    env = gym.make(ENV_ID, image_size=32, level="L1")
    obs, _ = env.reset(seed=3)
    assert obs["rgb"].shape == (32, 32, 3)
    assert any(obs["instruction"].startswith(t.split("{")[0]) for t in module.HoldHighTask.templates)
    env.close()


def test_the_example_task_passes_the_contract_kit(guide_task, guide_blocks):
    exec(compile(guide_blocks(GUIDE, "check")["contract"], "adding-a-task.md: contract", "exec"), {})


def test_the_example_tasks_expert_succeeds(guide_task, guide_blocks):
    exec(compile(guide_blocks(GUIDE, "check")["expert"], "adding-a-task.md: expert", "exec"), {})


def _fresh_python(folder: Path, code: str) -> list[str]:
    """Run ``code`` in a new interpreter with ``folder`` on its path; its lines of output (among pybullet's
    banner lines)."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(folder), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_a_fresh_process_imports_the_task_from_its_id(guide_task):
    """What a spawned worker sees: the id's spec names ``module:Class``, and the env builds it from that."""
    folder, _ = guide_task
    code = (
        "import gymnasium as gym, vlagym\n"
        f"gym.register({ENV_ID!r}, entry_point='vlagym.envs.tabletop.env:TabletopEnv',"
        " kwargs={'task': 'hold_high:HoldHighTask'})\n"
        f"env = gym.make({ENV_ID!r}, obs_mode='state')\n"
        "env.reset(seed=0)\n"
        "print('task', type(env.unwrapped.task).__name__)\n"
    )
    assert "task HoldHighTask" in _fresh_python(folder, code)


def test_an_installed_package_declares_its_task_by_entry_point(guide_task):
    """The guide's "your own package" path: an entry point in the "vlagym.tasks" group, and ``import vlagym``
    registers the id, for the CLI and every worker."""
    folder, _ = guide_task
    info = folder / "my_tasks-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-tasks\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{registry.PLUGIN_GROUP}]\nhold_high = hold_high\n")
    code = ("import vlagym\n"
            f"print('listed', {ENV_ID!r} in vlagym.ENV_IDS)\n")
    assert "listed True" in _fresh_python(folder, code)


def test_a_task_reference_that_does_not_import_is_named():
    with pytest.raises(ValueError, match="task 'no_such_module:Task': cannot import it"):
        registry.task_class("tabletop", "no_such_module:Task")
    with pytest.raises(ValueError, match="unknown tabletop task 'lift_high'; available"):
        registry.task_class("tabletop", "lift_high")
