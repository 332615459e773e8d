"""Tasks register where they are defined: ``@register_task`` records the class and its Gymnasium id."""

from __future__ import annotations

import gymnasium as gym
import pytest

import vlagym
from vlagym.envs import registry
from vlagym.envs.tabletop.tasks.touch import TouchTask


def test_every_task_file_registered_its_id():
    assert set(vlagym.ENV_IDS) == set(registry.IDS)
    assert registry.IDS["vlagym/TabletopPickUp-v0"] == ("tabletop", "pick_up")
    assert set(registry.TASKS["nav"]) == {"object_goal", "relational_goal", "multi_step", "eqa"}
    for env_id in vlagym.ENV_IDS:
        family, task = registry.IDS[env_id]
        assert gym.spec(env_id).kwargs == {"task": task}
        assert gym.spec(env_id).max_episode_steps == registry.TASKS[family][task].max_steps


def test_a_new_task_registers_with_its_decorator(monkeypatch):
    monkeypatch.setattr(registry, "IDS", dict(registry.IDS))
    monkeypatch.setattr(registry, "TASKS", {f: dict(t) for f, t in registry.TASKS.items()})

    @registry.register_task("tabletop", "Poke")
    class PokeTask(TouchTask):
        name = "poke"

    try:
        assert registry.IDS["vlagym/TabletopPoke-v0"] == ("tabletop", "poke")
        assert registry.TASKS["tabletop"]["poke"] is PokeTask
        # Defined outside vlagym, so its id names the class by module path for worker processes.
        assert gym.spec("vlagym/TabletopPoke-v0").kwargs == {"task": f"{__name__}:{PokeTask.__qualname__}"}
        assert gym.spec("vlagym/TabletopPoke-v0").max_episode_steps == TouchTask.max_steps
    finally:
        gym.registry.pop("vlagym/TabletopPoke-v0", None)


@pytest.mark.parametrize("family, suffix, name, message", [
    ("kitchen", "Poke", "poke", "unknown task family 'kitchen'"),
    ("tabletop", "PickUp", "poke", "vlagym/TabletopPickUp-v0 is taken by the tabletop task 'pick_up'"),
    ("tabletop", "Poke", "pick_up", "task name 'pick_up' is taken by PickUpTask"),
    ("tabletop", "Poke", "", "needs a class attribute `name`"),
])
def test_clashes_and_bad_registrations_are_refused(monkeypatch, family, suffix, name, message):
    monkeypatch.setattr(registry, "IDS", dict(registry.IDS))
    monkeypatch.setattr(registry, "TASKS", {f: dict(t) for f, t in registry.TASKS.items()})
    with pytest.raises(ValueError, match=message):
        registry.register_task(family, suffix)(type("Bad", (TouchTask,), {"name": name}))
