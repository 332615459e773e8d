"""Questions as programs: the executor on hand-checked scenes, robustness, generation and balancing."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from vlagym.vl.captions import ObjectView
from vlagym.vl.questions import (
    FAMILIES,
    Program,
    QuestionError,
    answer_vocabulary,
    balance,
    execute,
    image_questions,
    robust_answer,
)


def obj(index, color, shape, size, x, depth, in_bowl=None, visible=True, ext=0.02):
    return ObjectView(index, color, shape, size, x, ext, depth, ext, 50 if visible else 1, [0, 0, 2, 2], in_bowl,
                      visible)


# Seen from the front camera, left to right: small red cube (near), large blue cylinder (far), large green
# bowl holding the small yellow cylinder (middle depth), and an occluded pink cube the camera barely sees.
SCENE = [
    obj(0, "red", "cube", "small", -0.30, 1.00),
    obj(1, "blue", "cylinder", "large", -0.05, 1.40),
    obj(2, "green", "bowl", "large", 0.25, 1.20, ext=0.09),
    obj(3, "yellow", "cylinder", "small", 0.25, 1.20, in_bowl=2),
]


def ask(build) -> str:
    p = Program()
    build(p)
    return execute(p.nodes, SCENE)


def unique(p, **desc):
    return p.add("unique", [p.select(desc)])


def test_exist_and_count():
    assert ask(lambda p: p.add("exist", [p.select({"color": "red"})])) == "yes"
    assert ask(lambda p: p.add("exist", [p.select({"color": "red", "shape": "cylinder"})])) == "no"
    assert ask(lambda p: p.add("count", [p.select({})])) == "4"
    assert ask(lambda p: p.add("count", [p.select({"shape": "cylinder"})])) == "2"
    assert ask(lambda p: p.add("count", [p.select({"size": "large"})])) == "2"
    assert ask(lambda p: p.add("count", [p.select({"shape": "bowl", "color": "red"})])) == "0"


def test_queries_and_comparisons():
    assert ask(lambda p: p.add("query_color", [unique(p, shape="bowl")])) == "green"
    assert ask(lambda p: p.add("query_shape", [unique(p, color="blue")])) == "cylinder"
    assert ask(lambda p: p.add("query_size", [unique(p, color="yellow", shape="cylinder")])) == "small"
    assert ask(lambda p: p.add("equal_shape", [unique(p, color="blue"), unique(p, color="yellow")])) == "yes"
    assert ask(lambda p: p.add("equal_size", [unique(p, color="blue"), unique(p, color="yellow")])) == "no"
    assert ask(lambda p: p.add("greater_than", [p.add("count", [p.select({"shape": "cylinder"})]),
                                                p.add("count", [p.select({"shape": "cube"})])])) == "yes"
    assert ask(lambda p: p.add("equal_integer", [p.add("count", [p.select({"shape": "bowl"})]),
                                                 p.add("count", [p.select({"shape": "cube"})])])) == "yes"


def test_spatial_relations_as_seen_from_the_camera():
    def rel(a, b, r):
        return ask(lambda p: p.add("related", [unique(p, color=a), unique(p, color=b)], [r]))

    assert rel("red", "blue", "left of") == "yes"
    assert rel("red", "blue", "right of") == "no"
    assert rel("red", "blue", "in front of") == "yes"  # nearer the camera
    assert rel("blue", "green", "behind") == "yes"
    assert rel("green", "red", "right of") == "yes"
    # Objects right of the blue cylinder: the bowl and the yellow cylinder; in front of it: all three others.
    assert ask(lambda p: p.add("count", [p.add("relate", [unique(p, color="blue")], ["right of"])])) == "2"
    assert ask(lambda p: p.add("count", [p.add("relate", [unique(p, color="blue")], ["in front of"])])) == "3"
    # The bowl and the cylinder in it are at the same place: too close to call, so it raises.
    with pytest.raises(QuestionError, match="too close to call"):
        rel("yellow", "green", "left of")


def test_what_is_in_the_bowl():
    assert ask(lambda p: p.add("name", [p.add("contents", [unique(p, shape="bowl")])])) == "yellow cylinder"
    empty = [o for o in SCENE if o.index != 3]
    p = Program()
    p.add("name", [p.add("contents", [unique(p, shape="bowl")])])
    assert execute(p.nodes, empty) == "nothing"
    p = Program()
    p.add("contents", [unique(p, color="red")])
    with pytest.raises(QuestionError, match="not a bowl"):
        execute(p.nodes + [{"function": "name", "inputs": [2], "value_inputs": []}], SCENE)


def test_an_object_that_is_not_in_the_scene_is_a_clear_error():
    with pytest.raises(QuestionError, match="there is no purple cube in the scene"):
        ask(lambda p: p.add("query_size", [unique(p, color="purple", shape="cube")]))
    with pytest.raises(QuestionError, match="2 objects match"):
        ask(lambda p: p.add("query_color", [unique(p, shape="cylinder")]))
    with pytest.raises(QuestionError, match="unknown colour|unknown color"):
        ask(lambda p: p.add("exist", [p.select({"color": "mauve"})]))
    with pytest.raises(QuestionError, match="unknown function"):
        execute([{"function": "scene", "inputs": [], "value_inputs": []},
                 {"function": "teleport", "inputs": [0], "value_inputs": []}], SCENE)
    with pytest.raises(QuestionError, match="malformed"):
        execute([{"inputs": []}], SCENE)


def test_robust_answer_drops_questions_that_hang_on_an_occluded_object():
    scene = SCENE + [obj(4, "pink", "cube", "small", 0.0, 1.0, visible=False)]
    p = Program()
    p.add("exist", [p.select({"color": "pink"})])
    assert execute(p.nodes, scene) == "no"  # the camera does not see it ...
    assert robust_answer(p.nodes, scene) is None  # ... but it is there, so the question is not asked
    q = Program()
    q.add("exist", [q.select({"color": "red"})])
    assert robust_answer(q.nodes, scene) == "yes"


def test_generated_questions_answer_from_their_programs_and_are_balanced():
    rng = np.random.default_rng(0)
    scenes = []
    colors, shapes = ("red", "green", "blue", "yellow"), ("cube", "cylinder", "bowl")
    for s in range(60):
        r = np.random.default_rng(s)
        n = int(r.integers(2, 5))
        combos = r.permutation([(c, sh) for c in colors for sh in shapes])[:n]
        scenes.append([obj(k, str(c), str(sh), str(r.choice(["small", "large"])), float(r.uniform(-0.4, 0.4)),
                           float(r.uniform(0.8, 1.6))) for k, (c, sh) in enumerate(combos)])
    counts = {f: Counter() for f in FAMILIES}
    qs = []
    for objects in scenes:
        for q in image_questions(objects, "rgb", rng, counts, list(FAMILIES)):
            assert execute(q["program"], objects) == q["answer"]
            assert q["answer"] in answer_vocabulary()
            qs.append(q)
    assert {q["family"] for q in qs} >= {"exist", "count", "query_color", "spatial", "compare_count"}
    bal = balance(qs, rng)
    by = {f: Counter(q["answer"] for q in bal if q["family"] == f) for f in FAMILIES}
    for fam in ("exist", "spatial", "compare_attribute", "compare_count"):
        assert by[fam]["yes"] == by[fam]["no"] > 0, (fam, by[fam])


def test_wrist_camera_questions_have_no_depth_relations():
    rng = np.random.default_rng(1)
    counts = {f: Counter() for f in FAMILIES}
    qs = image_questions(SCENE[:2], "rgb_wrist", rng, counts, ["spatial", "relate_count"], per_family=20)
    assert qs and not any("front" in q["question"] or "behind" in q["question"] for q in qs)


def test_comparisons_never_state_the_compared_attribute():
    rng = np.random.default_rng(2)
    counts = {f: Counter() for f in FAMILIES}
    qs = image_questions(SCENE, "rgb", rng, counts, ["compare_attribute"], per_family=30)
    assert qs
    for q in qs:
        attr = q["program"][-1]["function"][len("equal_"):]
        stated = [n for n in q["program"] if n["function"] == f"filter_{attr}"]
        assert not stated, q["question"]


def _blind_accuracy(text_balance: bool) -> float:
    from vlagym.vl.vqa import QuestionPrior

    rng = np.random.default_rng(3)
    colors, shapes = ("red", "green", "blue", "yellow"), ("cube", "cylinder", "bowl")
    counts, text_counts, qs = {f: Counter() for f in FAMILIES}, Counter(), []
    for s in range(120):
        r = np.random.default_rng(s)
        combos = r.permutation([(c, sh) for c in colors for sh in shapes])[:int(r.integers(2, 5))]
        scene = [obj(k, str(c), str(sh), "small", float(r.uniform(-0.4, 0.4)), float(r.uniform(0.8, 1.6)))
                 for k, (c, sh) in enumerate(combos)]
        qs += image_questions(scene, "rgb", rng, counts, ["exist", "compare_count"], 1,
                              text_counts if text_balance else None)
    train, test = qs[: len(qs) // 2], qs[len(qs) // 2:]
    prior = QuestionPrior(train)
    return float(np.mean([prior.answer(q) == q["answer"] for q in test]))


def test_spreading_the_words_over_answers_weakens_the_question_only_prior():
    with_balance, without = _blind_accuracy(True), _blind_accuracy(False)
    assert with_balance < without and with_balance < 0.62, (with_balance, without)
