"""Questions as functional programs over an image's scene graph (CLEVR's design).

A question is stored with the program that answers it: a list of nodes ``{"function", "inputs",
"value_inputs"}``, each node reading the outputs of the earlier nodes named by ``inputs``, the last
node giving the answer. The same ``Family`` that writes a question's words writes its program, so
generating, answering and balancing come from one source (``vlagym.vl.captions`` does the same for
captions).

The scene graph is the image's ``ObjectView`` list (``vlagym.vl.data``): an object is in the scene
when it is visible in that camera. Spatial words are the picture's, as in ``captions.related``:
"left of" is left in the image, "in front of" nearer the camera (front camera only). A question is
kept only when it is *robust*: its answer is the same when every object the camera renders is
counted, seen well or not, and when relations compare centres instead of needing ``MARGIN`` of
clearance; so no answer hangs on a few pixels or millimetres.

``execute`` raises ``QuestionError`` (a ``ValueError``) naming the problem: a phrase that names no
object or several, an unknown function, a relation too close to call.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlagym.vl.captions import MARGIN, ObjectView, related

COLORS = ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "pink")  # envs.tabletop.objects order
SHAPES = ("cube", "cylinder", "bowl")
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "in front of", "behind")
DEPTH_CAMERAS = ("rgb",)
MAX_COUNT = 6
ATTRIBUTES = {"color": COLORS, "shape": SHAPES, "size": SIZES}


class QuestionError(ValueError):
    """A program that cannot be answered on this scene (the message says why)."""


# --- programs -----------------------------------------------------------------------------------------------------
def node(function: str, inputs: Sequence[int] = (), value_inputs: Sequence[str] = ()) -> dict[str, Any]:
    return {"function": function, "inputs": list(inputs), "value_inputs": list(value_inputs)}


class Program:
    """Builds a program node by node; every method returns the new node's index."""

    def __init__(self) -> None:
        self.nodes: list[dict[str, Any]] = []

    def add(self, function: str, inputs: Sequence[int] = (), value_inputs: Sequence[str] = ()) -> int:
        self.nodes.append(node(function, inputs, value_inputs))
        return len(self.nodes) - 1

    def select(self, desc: dict[str, str]) -> int:
        """``scene`` then one filter per stated attribute (size, colour, shape order)."""
        i = self.add("scene")
        for attr in ("size", "color", "shape"):
            if desc.get(attr):
                i = self.add(f"filter_{attr}", [i], [desc[attr]])
        return i


def describe(desc: dict[str, str], plural: bool = False) -> str:
    """``{"size": "small", "color": "red"}`` -> "small red object" (plural: "small red objects")."""
    words = [desc[a] for a in ("size", "color") if desc.get(a)]
    noun = desc.get("shape") or "object"
    if plural:
        noun = noun + ("es" if noun.endswith("x") else "s")
    return " ".join(words + [noun])


@dataclass
class _Set:
    objects: list[ObjectView]
    desc: dict[str, str]


class Executor:
    """Runs programs on one image's objects. ``strict``: relations need ``MARGIN`` of clearance and an
    ambiguous one raises; otherwise they compare centres."""

    def __init__(self, objects: Sequence[ObjectView], camera: str = "rgb", visible_only: bool = True,
                 strict: bool = True) -> None:
        self.all = list(objects)
        self.objects = [o for o in self.all if o.visible or not visible_only]
        self.camera = camera
        self.strict = strict
        self.by_index = {o.index: o for o in self.all}

    def _related(self, a: ObjectView, b: ObjectView, rel: str) -> bool:
        if rel not in RELATIONS:
            raise QuestionError(f"unknown relation {rel!r}; known: {', '.join(RELATIONS)}")
        if rel in ("in front of", "behind") and self.camera not in DEPTH_CAMERAS:
            raise QuestionError(f"{rel!r} needs a camera looking across the table ({DEPTH_CAMERAS}), "
                                f"not {self.camera!r}")
        return related(a, b, rel, MARGIN if self.strict else None)

    def run(self, program: Sequence[dict[str, Any]]) -> str:
        """The answer (a string) of ``program`` on this scene."""
        if not program:
            raise QuestionError("empty program")
        out: list[Any] = []
        for k, n in enumerate(program):
            try:
                fn, ins, vals = n["function"], [out[i] for i in n.get("inputs", [])], list(n.get("value_inputs", []))
            except (KeyError, IndexError, TypeError) as e:
                raise QuestionError(f"program node {k} is malformed ({n!r}): {e}") from None
            if any(i >= k for i in n.get("inputs", [])):
                raise QuestionError(f"program node {k} reads a later node: {n!r}")
            out.append(self._apply(fn, ins, vals))
        ans = out[-1]
        if isinstance(ans, bool):
            return "yes" if ans else "no"
        if isinstance(ans, (_Set, ObjectView)):
            raise QuestionError(f"the program ends in {program[-1]['function']!r}, which gives objects, not an answer")
        return str(ans)

    def _apply(self, fn: str, ins: list[Any], vals: list[str]) -> Any:
        if fn == "scene":
            return _Set(list(self.objects), {})
        if fn.startswith("filter_"):
            attr = fn[len("filter_"):]
            if attr not in ATTRIBUTES:
                raise QuestionError(f"unknown function {fn!r}")
            (s,), (v,) = ins, vals
            if v not in ATTRIBUTES[attr]:
                raise QuestionError(f"{fn}: unknown {attr} {v!r}; known: {', '.join(ATTRIBUTES[attr])}")
            return _Set([o for o in s.objects if getattr(o, attr) == v], {**s.desc, attr: v})
        if fn == "unique":
            (s,) = ins
            if len(s.objects) != 1:
                what = describe(s.desc)
                if not s.objects:
                    raise QuestionError(f"the question refers to the {what}, but there is no {what} in the scene")
                raise QuestionError(f"the question refers to the {what}, but {len(s.objects)} objects match it")
            return s.objects[0]
        if fn == "exist":
            return bool(ins[0].objects)
        if fn == "count":
            return len(ins[0].objects)
        if fn.startswith("query_"):
            attr = fn[len("query_"):]
            if attr not in ATTRIBUTES:
                raise QuestionError(f"unknown function {fn!r}")
            return getattr(_one(ins[0], fn), attr)
        if fn.startswith("equal_") and fn[len("equal_"):] in ATTRIBUTES:
            attr = fn[len("equal_"):]
            return getattr(_one(ins[0], fn), attr) == getattr(_one(ins[1], fn), attr)
        if fn in ("greater_than", "less_than", "equal_integer"):
            a, b = ins
            return {"greater_than": a > b, "less_than": a < b, "equal_integer": a == b}[fn]
        if fn == "relate":
            (rel,) = vals
            o = _one(ins[0], fn)
            return _Set([p for p in self.objects if p.index != o.index and self._related(p, o, rel)],
                         {"shape": f"object {rel} the {o.color} {o.shape}"})
        if fn == "related":
            (rel,) = vals
            a, b = _one(ins[0], fn), _one(ins[1], fn)
            if self._related(a, b, rel):
                return True
            if not self.strict or self._related(a, b, OPPOSITE[rel]):
                return False
            raise QuestionError(f"too close to call whether the {a.color} {a.shape} is {rel} the {b.color} {b.shape}")
        if fn == "contents":
            o = _one(ins[0], fn)
            if o.shape != "bowl":
                raise QuestionError(f"contents: the {o.color} {o.shape} is not a bowl")
            return _Set([p for p in self.objects if p.in_bowl == o.index], {"shape": f"object in the {o.color} bowl"})
        if fn == "name":
            s = ins[0]
            if not s.objects:
                return "nothing"
            if len(s.objects) > 1:
                raise QuestionError(f"name: {len(s.objects)} objects match {describe(s.desc)!r}, expected one")
            return f"{s.objects[0].color} {s.objects[0].shape}"
        raise QuestionError(f"unknown function {fn!r}")


OPPOSITE = {"left of": "right of", "right of": "left of", "in front of": "behind", "behind": "in front of"}


def _one(v: Any, fn: str) -> ObjectView:
    if not isinstance(v, ObjectView):
        raise QuestionError(f"{fn} needs one object (a unique node) as input, got {type(v).__name__}")
    return v


def execute(program: Sequence[dict[str, Any]], objects: Sequence[ObjectView], camera: str = "rgb") -> str:
    """The answer of ``program`` on the visible objects (strict relations); raises ``QuestionError``."""
    return Executor(objects, camera).run(program)


def robust_answer(program: Sequence[dict[str, Any]], objects: Sequence[ObjectView], camera: str = "rgb") -> str | None:
    """The answer when it is the same on the visible objects with strict relations, on every rendered
    object and with centre comparisons; else None (the question is not asked)."""
    answers = set()
    for visible_only, strict in ((True, True), (False, True), (True, False), (False, False)):
        try:
            answers.add(Executor(objects, camera, visible_only, strict).run(program))
        except QuestionError:
            return None
    return answers.pop() if len(answers) == 1 else None


# --- families -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    text: str
    program: list[dict[str, Any]]


def _descs(vis: list[ObjectView], attrs: tuple[str, ...]) -> list[dict[str, str]]:
    """Attribute descriptions over ``attrs``: every value combination of at most two stated attributes."""
    out: list[dict[str, str]] = [{}]
    for a in attrs:
        out += [{**d, a: v} for d in list(out) for v in ATTRIBUTES[a] if len(d) < 2]
    return out


def _unique_descs(o: ObjectView, vis: list[ObjectView], attrs: tuple[str, ...]) -> list[dict[str, str]]:
    """Descriptions over ``attrs`` (one or two of them) that name ``o`` alone among the visible objects."""
    cands = [{a: getattr(o, a)} for a in attrs] + [{a: getattr(o, a), b: getattr(o, b)}
                                                   for i, a in enumerate(attrs) for b in attrs[i + 1:]]
    return [d for d in cands if [p.index for p in vis if all(getattr(p, k) == v for k, v in d.items())] == [o.index]]


def _the(d: dict[str, str]) -> str:
    return "the " + describe(d)


def _a(d: dict[str, str]) -> str:
    w = describe(d)
    return ("an " if w[0] in "aeiou" else "a ") + w


def gen_exist(vis, camera, rng):
    out = []
    for d in _descs(vis, ("size", "color", "shape")):
        if d:
            p = Program()
            p.add("exist", [p.select(d)])
            out.append(Candidate(f"Is there {_a(d)}?", p.nodes))
    return out


def gen_count(vis, camera, rng):
    out = []
    for d in _descs(vis, ("size", "color", "shape")):
        p = Program()
        p.add("count", [p.select(d)])
        out.append(Candidate(f"How many {describe(d, plural=True)} are there?", p.nodes))
    return out


def _gen_query(attr: str, word: str):
    others = tuple(a for a in ("size", "color", "shape") if a != attr)

    def gen(vis, camera, rng):
        out = []
        for o in vis:
            for d in _unique_descs(o, vis, others):
                p = Program()
                p.add(f"query_{attr}", [p.add("unique", [p.select(d)])])
                out.append(Candidate(f"What {word} is {_the(d)}?", p.nodes))
        return out
    return gen


def _ref(o: ObjectView, vis, rng) -> dict[str, str] | None:
    ds = _unique_descs(o, vis, ("size", "color", "shape"))
    return ds[int(rng.integers(len(ds)))] if ds else None


def gen_compare_attribute(vis, camera, rng):
    out = []
    words = {"color": "colour", "shape": "shape", "size": "size"}
    for a in vis:
        for b in vis:
            if a.index >= b.index:
                continue
            for attr, w in words.items():
                # The phrases never state the compared attribute, or the words alone would give the answer.
                others = tuple(x for x in ("size", "color", "shape") if x != attr)
                da, db = _unique_descs(a, vis, others), _unique_descs(b, vis, others)
                if not da or not db:
                    continue
                da, db = da[int(rng.integers(len(da)))], db[int(rng.integers(len(db)))]
                p = Program()
                ua = p.add("unique", [p.select(da)])
                ub = p.add("unique", [p.select(db)])
                p.add(f"equal_{attr}", [ua, ub])
                out.append(Candidate(f"Does {_the(da)} have the same {w} as {_the(db)}?", p.nodes))
    return out


def gen_compare_count(vis, camera, rng):
    out = []
    ds = [d for d in _descs(vis, ("color", "shape")) if len(d) == 1]
    phrasing = {"greater_than": "Are there more {a} than {b}?", "less_than": "Are there fewer {a} than {b}?",
                "equal_integer": "Are there as many {a} as {b}?"}
    for i, da in enumerate(ds):
        for db in ds[i + 1:]:
            if set(da) != set(db):
                continue
            for fn, t in phrasing.items():
                p = Program()
                ca = p.add("count", [p.select(da)])
                cb = p.add("count", [p.select(db)])
                p.add(fn, [ca, cb])
                out.append(Candidate(t.format(a=describe(da, True), b=describe(db, True)), p.nodes))
    return out


def _relations(camera: str) -> tuple[str, ...]:
    return RELATIONS if camera in DEPTH_CAMERAS else RELATIONS[:2]


def gen_spatial(vis, camera, rng):
    out = []
    for a in vis:
        for b in vis:
            if a.index == b.index:
                continue
            da, db = _ref(a, vis, rng), _ref(b, vis, rng)
            if da is None or db is None:
                continue
            for rel in _relations(camera):
                p = Program()
                ua = p.add("unique", [p.select(da)])
                ub = p.add("unique", [p.select(db)])
                p.add("related", [ua, ub], [rel])
                out.append(Candidate(f"Is {_the(da)} {rel} {_the(db)}?", p.nodes))
    return out


def gen_relate_count(vis, camera, rng):
    out = []
    for b in vis:
        db = _ref(b, vis, rng)
        if db is None:
            continue
        for rel in _relations(camera):
            p = Program()
            p.add("count", [p.add("relate", [p.add("unique", [p.select(db)])], [rel])])
            out.append(Candidate(f"How many objects are {rel} {_the(db)}?", p.nodes))
    return out


def gen_in_bowl(vis, camera, rng):
    out = []
    for b in vis:
        if b.shape != "bowl":
            continue
        for d in _unique_descs(b, vis, ("size", "color", "shape")):
            if "shape" not in d:
                continue
            p = Program()
            p.add("name", [p.add("contents", [p.add("unique", [p.select(d)])])])
            out.append(Candidate(f"What is in {_the(d)}?", p.nodes))
    return out


@dataclass(frozen=True)
class Family:
    name: str
    generate: Callable[[list[ObjectView], str, np.random.Generator], list[Candidate]]
    description: str


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("exist", gen_exist, "is there a <size/colour/shape>?"),
    Family("count", gen_count, "how many <...> are there?"),
    Family("query_color", _gen_query("color", "colour"), "what colour is the <unique object>?"),
    Family("query_shape", _gen_query("shape", "shape"), "what shape is the <unique object>?"),
    Family("query_size", _gen_query("size", "size"), "what size is the <unique object>?"),
    Family("compare_attribute", gen_compare_attribute, "does the A have the same colour/shape/size as the B?"),
    Family("compare_count", gen_compare_count, "are there more/fewer/as many A as B?"),
    Family("spatial", gen_spatial, "is the A left of/right of/in front of/behind the B? (as the camera sees)"),
    Family("relate_count", gen_relate_count, "how many objects are left of/... the B?"),
    Family("in_bowl", gen_in_bowl, "what is in the <bowl>? (an object or nothing)"),
)}


def answer_vocabulary() -> list[str]:
    """Every answer any family can give, in a fixed order."""
    words = ["yes", "no", *[str(i) for i in range(MAX_COUNT + 1)], *COLORS, *SHAPES, *SIZES, "nothing"]
    return words + [f"{c} {s}" for c in COLORS for s in SHAPES if s != "bowl"]


def check_families(names: Sequence[str] | None) -> list[str]:
    if names is None:
        return list(FAMILIES)
    bad = [n for n in names if n not in FAMILIES]
    if bad:
        raise ValueError(f"unknown question families {bad}; known: {', '.join(FAMILIES)}")
    return list(names)


# --- generation and balancing ---------------------------------------------------------------------------------------
def image_questions(objects: Sequence[ObjectView], camera: str, rng: np.random.Generator,
                    counts: dict[str, Counter], families: Sequence[str], per_family: int = 1,
                    text_counts: Counter | None = None) -> list[dict[str, Any]]:
    """Up to ``per_family`` robust questions per family for one image, each time taking an answer that the
    family has given least so far (``counts``, updated), ties broken at random (CLEVR's rejection, greedily).
    Among that answer's questions it takes one whose words have had that answer least often so far
    (``text_counts``, keyed (question, answer), updated), so that the words alone predict the answer less."""
    text_counts = Counter() if text_counts is None else text_counts
    vis = [o for o in objects if o.visible]
    out = []
    for fam in families:
        by_answer: dict[str, list[Candidate]] = {}
        for c in FAMILIES[fam].generate(vis, camera, rng):
            a = robust_answer(c.program, objects, camera)
            if a is not None:
                by_answer.setdefault(a, []).append(c)
        for _ in range(per_family):
            if not by_answer:
                break
            answers = sorted(by_answer)
            low = min(counts[fam][a] for a in answers)
            choices = [a for a in answers if counts[fam][a] == low]
            a = choices[int(rng.integers(len(choices)))]
            pool = by_answer.pop(a)
            least = min(text_counts[(c.text, a)] for c in pool)
            pool = [c for c in pool if text_counts[(c.text, a)] == least]
            c = pool[int(rng.integers(len(pool)))]
            counts[fam][a] += 1
            text_counts[(c.text, a)] += 1
            out.append({"question": c.text, "program": c.program, "answer": a, "family": fam})
    return out


def balance(questions: list[dict[str, Any]], rng: np.random.Generator, floor: float = 0.25) -> list[dict[str, Any]]:
    """Within each family, cut every answer down to the count of the rarest *common* answer (one with at
    least ``floor`` of a uniform share); rarer answers keep all their questions. Order is kept."""
    keep = np.ones(len(questions), dtype=bool)
    by_fam: dict[str, dict[str, list[int]]] = {}
    for i, q in enumerate(questions):
        by_fam.setdefault(q["family"], {}).setdefault(q["answer"], []).append(i)
    for answers in by_fam.values():
        total = sum(len(v) for v in answers.values())
        common = [len(v) for v in answers.values() if len(v) >= floor * total / len(answers)]
        cap = min(common)
        for idx in answers.values():
            if len(idx) > cap:
                keep[rng.choice(idx, size=len(idx) - cap, replace=False)] = False
    return [q for q, k in zip(questions, keep) if k]


def answer_table(questions: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per family, answer -> number of questions."""
    out: dict[str, Counter] = {}
    for q in questions:
        out.setdefault(q["family"], Counter())[q["answer"]] += 1
    return {f: dict(sorted(c.items())) for f, c in out.items()}


def program_text(program: Sequence[dict[str, Any]]) -> str:
    """A compact one-line form, e.g. ``scene() filter_color[red](0) exist(1)``."""
    return " ".join(f"{n['function']}{'[' + ','.join(n['value_inputs']) + ']' if n['value_inputs'] else ''}"
                    f"({','.join(map(str, n['inputs']))})" for n in program)


def dumps_program(program: Sequence[dict[str, Any]]) -> str:
    return json.dumps(list(program), separators=(",", ":"))
