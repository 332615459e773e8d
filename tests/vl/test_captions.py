"""Captions are true of the simulator state; hard negatives and the binding probe are false of it."""

from __future__ import annotations

import re

import numpy as np
import pytest

from vlagym.envs import TABLETOP_IDS
from vlagym.envs.tabletop.objects import COLORS, SHAPES
from vlagym.vl.captions import Fact, ObjectView, Phrase, binding_pair, hard_negatives, holds, is_false
from vlagym.vl.data import CAMERAS, make_scene_env, render_scene

NOUN = re.compile(r"(?:(small|large) )?(" + "|".join(COLORS) + r") (" + "|".join(SHAPES) + r")")
RELATION = re.compile(r"(left of|right of|in front of|behind|inside|in the)")


def _scene_truth(env, rec):
    """Facts about the scene straight from PyBullet, independent of the caption code."""
    task, sim = env.task, env.sim
    cam = env.all_cameras()[rec["meta"]["camera"]]
    view = np.asarray(cam._view).reshape(4, 4).T
    proj = np.asarray(cam._proj).reshape(4, 4).T
    objs = []
    for i, spec in enumerate(task.objects):
        p = sim.position(task.name_of(i))
        clip = proj @ view @ np.array([*p, 1.0])
        objs.append({"spec": spec, "name": task.name_of(i), "pos": p, "u": clip[0] / clip[3],
                     "seen": bool((rec["mask"] == i).any())})
    return objs


def _check_caption(text, objs, env):
    nouns = [(m.group(1), m.group(2), m.group(3)) for m in NOUN.finditer(text)]
    assert nouns, text

    def matches(n):
        size, color, shape = n
        return [o for o in objs if o["seen"] and o["spec"].color == color and o["spec"].shape == shape
                and (size is None or o["spec"].size == size)]

    for n in nouns:
        assert matches(n), f"{text!r}: no visible {n} in the scene"
    rel = RELATION.search(text[NOUN.search(text).end():])
    if rel is None or len(nouns) != 2 or "," in text or " and " in text:
        return
    a, b = matches(nouns[0])[0], matches(nouns[1])[0]
    word = rel.group(1)
    if word == "left of":
        assert a["u"] < b["u"], text
    elif word == "right of":
        assert a["u"] > b["u"], text
    elif word == "in front of":  # nearer the front camera, which stands at large x
        assert a["pos"][0] > b["pos"][0], text
    elif word == "behind":
        assert a["pos"][0] < b["pos"][0], text
    else:  # in the bowl
        assert b["spec"].shape == "bowl", text
        assert np.linalg.norm(a["pos"][:2] - b["pos"][:2]) < b["spec"].half, text
        assert env.sim.in_contact(a["name"], b["name"]), text


def test_captions_never_state_a_false_relation():
    """Many seeds over every tabletop env, both cameras, checked against PyBullet state."""
    stated = {"left of": 0, "right of": 0, "in front of": 0, "behind": 0, "in": 0}
    for env_id in TABLETOP_IDS:
        env = make_scene_env(env_id, 48, CAMERAS)
        for seed in range(24):
            for rec in render_scene(env, seed, env_id, CAMERAS, min_pixels=4, p_in_bowl=0.8):
                objs = _scene_truth(env, rec)
                for text in rec["meta"]["captions"]:
                    _check_caption(text, objs, env)
                    for word in stated:
                        stated[word] += f" {word} " in f" {text} "
                for exprs in rec["meta"]["referring"].values():
                    assert exprs and all(e.startswith("the ") for e in exprs)
        env.close()
    assert all(v > 5 for v in stated.values()), stated  # every relation was exercised


def _view(i, color, shape, x, depth=1.0, in_bowl=None):
    return ObjectView(i, color, shape, "small", x, 0.02, depth, 0.02, 30, [0, 0, 4, 4], in_bowl, True)


def test_hard_negatives_differ_in_one_word_and_are_false():
    objs = [_view(0, "red", "cube", -0.2), _view(1, "blue", "bowl", 0.2), _view(2, "green", "cylinder", 0.0)]
    fact = Fact("rel", [Phrase("red", "cube"), Phrase("blue", "bowl")], rel="left of")
    assert holds(fact, objs)
    negs = hard_negatives(fact, objs, np.random.default_rng(0), tuple(COLORS), SHAPES)
    texts = {n.text() for n in negs}
    assert "a red cube right of a blue bowl" in texts
    assert "a blue cube left of a red bowl" in texts  # the binding swap
    for n in negs:
        assert is_false(n, objs)
        diff = [w for w, v in zip(n.text().split(), fact.text().split()) if w != v]
        assert 1 <= len(diff) <= 2  # one word, or the two colours of the binding swap


def test_negative_that_is_true_elsewhere_is_dropped():
    # a green cube also exists, left of the bowl: "a green cube left of a blue bowl" is true, not a negative
    objs = [_view(0, "red", "cube", -0.2), _view(1, "blue", "bowl", 0.2), _view(2, "green", "cube", -0.1)]
    fact = Fact("rel", [Phrase("red", "cube"), Phrase("blue", "bowl")], rel="left of")
    negs = hard_negatives(fact, objs, np.random.default_rng(0), ("red", "green"), SHAPES)
    assert all(n.phrases[0].color != "green" or n.phrases[0].shape != "cube" for n in negs)


def test_binding_pair_swaps_colours():
    objs = [_view(0, "red", "cube", -0.2), _view(1, "blue", "bowl", 0.2)]
    assert binding_pair(objs, np.random.default_rng(0)) == ("a red cube and a blue bowl", "a blue cube and a red bowl")
    assert binding_pair(objs[:1], np.random.default_rng(0)) is None


@pytest.mark.parametrize("kind", ["object", "list", "rel", "in"])
def test_fact_json_round_trip(kind):
    f = Fact(kind, [Phrase("red", "cube", "small"), Phrase("orange", "bowl")], rel="behind", template=1)
    assert Fact.from_json(f.to_json()) == f
    assert " a orange" not in f.text()
