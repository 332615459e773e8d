"""Generalization levels: the splits are disjoint and each level draws only its own side."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest

import vlagym
from vlagym.envs.levels import (
    HELD_OUT_TEMPLATES,
    NOVEL_COLORS,
    SYNONYMS,
    check_level,
    combo_split,
    template_split,
)
from vlagym.envs.nav import objects as nav_objects
from vlagym.envs.tabletop import objects as tt_objects
from vlagym.envs.tabletop.objects import GRASPABLE
from vlagym.envs.tabletop.tasks import TASKS as TABLETOP_TASKS

FAMILIES = {"tabletop": (tuple(tt_objects.COLORS), tt_objects.SHAPES),
            "nav": (tuple(nav_objects.COLORS), tuple(nav_objects.SHAPES))}


def _template_regex(template: str) -> re.Pattern:
    return re.compile("^" + re.sub(r"\\\{\w+\\\}", ".+", re.escape(template)) + "$")


def _held_out_templates(task) -> list[re.Pattern]:
    groups = [task.next_to_templates, task.in_room_templates] if hasattr(task, "next_to_templates") \
        else [task.templates]
    return [_template_regex(t) for g in groups for t in g[-HELD_OUT_TEMPLATES:]]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_split_function_keeps_every_held_out_combination_made_of_seen_parts(family):
    colors, shapes = FAMILIES[family]
    table = {(c, s): combo_split(family, c, s, colors, shapes) for c in colors for s in shapes}
    trained = {k for k, v in table.items() if v == "train"}
    assert {k for k, v in table.items() if v == "L3"} == {(c, s) for c in NOVEL_COLORS[family] for s in shapes}
    held = {k for k, v in table.items() if v == "L2"}
    assert held and not held & trained
    for c in colors:
        if c not in NOVEL_COLORS[family]:
            assert sum((c, s) in trained for s in shapes) >= 2, f"{c} has under two trained shapes"
    for s in shapes:
        assert sum((c, s) in trained for c in colors) >= 4, f"{s} has under four trained colours"
    for c, s in held:  # each held-out pair joins a colour and a shape that training sees elsewhere
        assert any(k[0] == c for k in trained) and any(k[1] == s for k in trained)
    assert [template_split(i, 6) for i in range(6)] == ["train"] * 4 + ["L4"] * 2
    with pytest.raises(ValueError, match="level must be None or one of"):
        check_level("L9")


@pytest.mark.parametrize("name", sorted(TABLETOP_TASKS))
def test_tabletop_training_draws_never_touch_a_held_out_split(name):
    """Thousands of draws (the task's own objects, distractors and wording) without a simulator."""
    colors, shapes = FAMILIES["tabletop"]
    task = TABLETOP_TASKS[name](level="train")
    held_out = _held_out_templates(task)
    for seed in range(1500):
        rng = np.random.default_rng(seed)
        own, text = task.sample(rng)
        if name == "push":
            text = task.phrase(rng, obj=own[0].words(), side="left")
        specs = list(own)
        for _ in range(3):
            specs.append(task.random_spec(rng, shapes=GRASPABLE + ("bowl",), exclude=specs))
        for spec in specs:
            assert combo_split("tabletop", spec.color, spec.shape, colors, shapes) == "train", (seed, spec)
        assert not any(p.match(text) for p in held_out), f"seed {seed}: held-out template in {text!r}"
        assert not set(text.split()) & set(SYNONYMS.values()), text
        assert task.phraser.template_split == "train"


@pytest.mark.parametrize("name", sorted(TABLETOP_TASKS))
def test_tabletop_held_out_levels_draw_only_held_out(name):
    colors, shapes = FAMILIES["tabletop"]
    for level in ("L2", "L3", "L4"):
        task = TABLETOP_TASKS[name](level=level)
        held_out = _held_out_templates(task)
        synonyms = 0
        for seed in range(300):
            rng = np.random.default_rng(seed)
            own, text = task.sample(rng)
            if name == "push":
                text = task.phrase(rng, obj=own[0].words(), side="left")
            target = combo_split("tabletop", own[0].color, own[0].shape, colors, shapes)
            others = [combo_split("tabletop", s.color, s.shape, colors, shapes) for s in own[1:]]
            if level in ("L2", "L3"):
                assert target == level and set(others) <= {"train"}, (seed, own)
                assert not any(p.match(text) for p in held_out)
            else:
                assert {target, *others} == {"train"}
                assert any(p.match(text) for p in held_out), f"L4 drew a trained template: {text!r}"
                synonyms += bool(set(text.split()) & set(SYNONYMS.values()))
        if level == "L4":
            assert 60 < synonyms < 240, f"synonyms in {synonyms}/300 L4 instructions (expected about half)"


def _episode_keys(env) -> list[tuple[str, str]]:
    task = env.unwrapped.task
    if hasattr(task, "landmark_keys"):
        return task.landmark_keys
    return [(o.color, o.shape) for o in task.objects]


@pytest.mark.parametrize("env_id", vlagym.ENV_IDS)
def test_envs_report_and_respect_the_level(env_id):
    family = "nav" if "Nav" in env_id else "tabletop"
    colors, shapes = FAMILIES[family]
    seeds = range(6) if family == "nav" else range(12)
    for level, want in (("train", "train"), ("L2", "L2"), ("L3", "L3"), ("L4", "L4")):
        env = gym.make(env_id, obs_mode="state", level=level)
        for seed in seeds:
            obs, info = env.reset(seed=seed)
            assert info["generalization_split"] == want, (level, seed, obs["instruction"])
            splits = [combo_split(family, c, s, colors, shapes) for c, s in _episode_keys(env)]
            if want == "train" or want == "L4":
                assert set(splits) == {"train"}, (seed, _episode_keys(env))
        env.close()


def test_default_level_draws_the_union_and_labels_it():
    env = gym.make("vlagym/TabletopTouch-v0", obs_mode="state")
    seen = set()
    for seed in range(80):
        _, info = env.reset(seed=seed)
        seen.add(info["generalization_split"])
    assert seen == {"train", "L2", "L3", "L4"}


def test_l5_compositions():
    env = gym.make("vlagym/NavMultiStep-v0", obs_mode="state", level="L5")
    obs, info = env.reset(seed=0)
    assert info["num_subgoals"] == 3 and info["generalization_split"] == "L5"
    assert obs["instruction"].count(", then ") == 2
    env = gym.make("vlagym/NavMultiStep-v0", obs_mode="state", level="train")
    _, info = env.reset(seed=0)
    assert info["num_subgoals"] == 2 and info["generalization_split"] == "train"
    with pytest.raises(ValueError, match="multi_step at level train has 2 goals, got num_goals=3"):
        gym.make("vlagym/NavMultiStep-v0", level="train", num_goals=3)
    with pytest.raises(ValueError, match="task 'object_goal' has no level 'L5'"):
        gym.make("vlagym/NavObjectGoal-v0", level="L5")


def test_touch_then_touch_composition_and_its_expert():
    env = gym.make("vlagym/TabletopTouch-v0", obs_mode="state", level="L5")
    for seed in range(2_000_000, 2_000_006):
        obs, info = env.reset(seed=seed)
        task = env.unwrapped.task
        assert ", then" in obs["instruction"] or "after that" in obs["instruction"]
        assert info["generalization_split"] == "L5" and len(info["objects"]) >= 2
        expert, done, touched_first = task.expert(), False, False
        while not done:
            obs, _, term, trunc, info = env.step(expert.act(obs, info))
            touched_first |= task.touching(0)
            assert not info["success"] or touched_first, "succeeded without touching the first object"
            done = term or trunc
        assert info["success"], f"seed {seed}: {obs['instruction']}"


@pytest.mark.slow
@pytest.mark.parametrize("env_id", vlagym.ENV_IDS)
def test_training_level_over_many_seeds(env_id):
    """The env path end to end (distractors, relational decoys, push wording) over 300 seeds."""
    family = "nav" if "Nav" in env_id else "tabletop"
    colors, shapes = FAMILIES[family]
    env = gym.make(env_id, obs_mode="state", level="train")
    held_out = _held_out_templates(env.unwrapped.task)
    for seed in range(300):
        obs, info = env.reset(seed=seed)
        assert info["generalization_split"] == "train"
        assert {combo_split(family, c, s, colors, shapes) for c, s in _episode_keys(env)} == {"train"}
        assert not any(p.match(obs["instruction"]) for p in held_out), obs["instruction"]
