"""Scene facts, their captions, their hard negatives and referring expressions.

A caption is rendered from a ``Fact`` (a structured statement about the objects in one image) and
the same ``Fact`` is what ``holds`` checks against the scene, so a sentence and its truth come from
one source (BabyAI's surface/verify). Facts are stored beside the captions in the dataset, which
lets training draw hard negatives — the fact with one colour, shape or relation word changed,
kept only when ``holds`` says it is false of the whole scene.

Spatial words are as seen from the image's camera: "left of" means left in the picture.
A stated relation needs the two objects' extents to be apart by ``MARGIN`` (metres along the optical
axis for in front of/behind; the same number as a tangent, about 1.5 px at 64 px, for left/right),
so it never depends on a few millimetres or a pixel; a negative is kept only when even the
plain centre-to-centre comparison says it is false.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

MARGIN = 0.02
RELATIONS = ("left of", "right of", "in front of", "behind")
OPPOSITE = {"left of": "right of", "right of": "left of", "in front of": "behind", "behind": "in front of"}
# "In front of"/"behind" need a camera that looks across the table; the wrist camera looks down.
DEPTH_RELATIONS_CAMERAS = ("rgb",)

TEMPLATES: dict[str, tuple[str, ...]] = {
    "object": ("a {a}", "a photo of a {a}", "a {a} on a table", "there is a {a}"),
    "list": ("{items}", "a table with {items}", "a photo of {items}"),
    "rel": ("a {a} {rel} a {b}", "the {a} is {rel} the {b}", "a {a} {rel} the {b}"),
    "in": ("the {a} is in the {b}", "a {a} inside a {b}", "a {a} in the {b}"),
}


@dataclass
class ObjectView:
    """One scene object as one camera sees it (camera-frame metres; box in pixels x0, y0, x1, y1)."""

    index: int
    color: str
    shape: str
    size: str
    x: float  # rightwards in the image: camera-frame x over depth (the tangent of the angle off the axis)
    x_extent: float  # the footprint's half-width in the same units
    depth: float  # distance along the optical axis, metres
    extent: float  # radius of the object's footprint on the table, metres
    pixels: int  # visible pixels in the segmentation mask
    box: list[int] | None
    in_bowl: int | None = None  # index of the bowl holding it
    visible: bool = False

    def words(self, with_size: bool = False) -> str:
        return f"{self.size} {self.color} {self.shape}" if with_size else f"{self.color} {self.shape}"


@dataclass
class Phrase:
    """A noun phrase: colour and shape, and the size when stated."""

    color: str
    shape: str
    size: str | None = None

    def text(self) -> str:
        return " ".join(w for w in (self.size, self.color, self.shape) if w)

    def matches(self, o: ObjectView) -> bool:
        return o.color == self.color and o.shape == self.shape and (self.size is None or o.size == self.size)


@dataclass
class Fact:
    """``kind`` is object, list, rel or in; ``phrases`` are the nouns in order; ``template`` picks wording."""

    kind: str
    phrases: list[Phrase]
    rel: str | None = None
    template: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        return _articles(self._text())

    def _text(self) -> str:
        p = [ph.text() for ph in self.phrases]
        t = TEMPLATES[self.kind][self.template % len(TEMPLATES[self.kind])]
        if self.kind == "list":
            items = ", ".join(f"a {w}" for w in p[:-1]) + f" and a {p[-1]}" if len(p) > 1 else f"a {p[0]}"
            return t.format(items=items)
        if self.kind == "object":
            return t.format(a=p[0])
        return t.format(a=p[0], b=p[1], rel=self.rel)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Fact:
        return cls(d["kind"], [Phrase(**p) for p in d["phrases"]], d.get("rel"), d.get("template", 0),
                   d.get("extra", {}))


def _articles(text: str) -> str:
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


# --- truth -------------------------------------------------------------------------------------------------------
def related(a: ObjectView, b: ObjectView, rel: str, margin: float | None = MARGIN) -> bool:
    """Whether ``a`` is ``rel`` ``b`` in the camera frame. ``margin=None`` compares centres only."""
    if margin is None:
        return {"left of": a.x < b.x, "right of": a.x > b.x, "in front of": a.depth < b.depth,
                "behind": a.depth > b.depth}[rel]
    if rel in ("left of", "right of"):
        lo, hi = (a, b) if rel == "left of" else (b, a)
        return lo.x + lo.x_extent + margin < hi.x - hi.x_extent
    near, far = (a, b) if rel == "in front of" else (b, a)
    return near.depth + near.extent + margin < far.depth - far.extent


def holds(fact: Fact, objects: list[ObjectView], visible_only: bool = True, margin: float | None = MARGIN) -> bool:
    """Whether ``fact`` is true of the objects (each phrase bound to a distinct matching object)."""
    pool = [o for o in objects if o.visible or not visible_only]
    cands = [[o for o in pool if ph.matches(o)] for ph in fact.phrases]
    if any(not c for c in cands):
        return False
    if fact.kind == "object":
        return True
    if fact.kind == "list":
        return _distinct_assignment(cands)
    for a in cands[0]:
        for b in cands[1]:
            if a.index == b.index:
                continue
            if fact.kind == "in" and a.in_bowl == b.index:
                return True
            if fact.kind == "rel" and related(a, b, fact.rel, margin):
                return True
    return False


def _distinct_assignment(cands: list[list[ObjectView]], used: frozenset = frozenset()) -> bool:
    if not cands:
        return True
    return any(_distinct_assignment(cands[1:], used | {o.index}) for o in cands[0] if o.index not in used)


def is_false(fact: Fact, objects: list[ObjectView]) -> bool:
    """False of the whole scene, seen or not, even by the plain centre comparison (safe as a negative)."""
    return not holds(fact, objects, visible_only=False, margin=None)


# --- generation ---------------------------------------------------------------------------------------------------
def phrase_of(o: ObjectView, with_size: bool = False) -> Phrase:
    return Phrase(o.color, o.shape, o.size if with_size else None)


def true_facts(objects: list[ObjectView], camera: str, rng: np.random.Generator, max_rel: int = 4) -> list[Fact]:
    """True facts about the visible objects of one image: each object, the full list (left to right),
    the object-in-bowl facts and up to ``max_rel`` spatial relations."""
    vis = [o for o in objects if o.visible]
    if not vis:
        return []

    def tpl(kind: str) -> int:
        return int(rng.integers(len(TEMPLATES[kind])))

    def ph(o: ObjectView) -> Phrase:
        return phrase_of(o, with_size=bool(rng.random() < 0.3))

    facts = [Fact("list", [ph(o) for o in sorted(vis, key=lambda o: o.x)], template=tpl("list"))]
    facts += [Fact("object", [ph(o)], template=tpl("object")) for o in vis]
    by_index = {o.index: o for o in objects}
    facts += [Fact("in", [ph(o), ph(by_index[o.in_bowl])], template=tpl("in"))
              for o in vis if o.in_bowl is not None and by_index[o.in_bowl].visible]
    rels = RELATIONS if camera in DEPTH_RELATIONS_CAMERAS else RELATIONS[:2]
    pairs = [(a, b, r) for a in vis for b in vis if a.index != b.index for r in rels if related(a, b, r)]
    for k in rng.permutation(len(pairs))[:max_rel]:
        a, b, r = pairs[k]
        facts.append(Fact("rel", [ph(a), ph(b)], rel=r, template=tpl("rel")))
    return facts


def hard_negatives(fact: Fact, objects: list[ObjectView], rng: np.random.Generator,
                   colors: tuple[str, ...], shapes: tuple[str, ...]) -> list[Fact]:
    """Variants of ``fact`` that differ in one colour, one shape, the relation word or the binding of
    colours to shapes, and are false of the scene. The wording template is kept."""
    out: list[Fact] = []

    def variant(**kw) -> Fact:
        d = fact.to_json()
        d.update(kw)
        return Fact.from_json(d)

    for i, p in enumerate(fact.phrases):
        for c in rng.permutation(colors):
            if c != p.color:
                phrases = [asdict(q) for q in fact.phrases]
                phrases[i]["color"] = str(c)
                out.append(variant(phrases=phrases))
                break
        for s in rng.permutation(shapes):
            if s != p.shape and not (fact.kind == "in" and i == 1):
                phrases = [asdict(q) for q in fact.phrases]
                phrases[i]["shape"] = str(s)
                out.append(variant(phrases=phrases))
                break
    if fact.kind == "rel":
        out.append(variant(rel=OPPOSITE[fact.rel]))
    if len(fact.phrases) >= 2:
        a, b = fact.phrases[0], fact.phrases[1]
        if a.color != b.color and a.shape != b.shape:
            phrases = [asdict(q) for q in fact.phrases]
            phrases[0]["color"], phrases[1]["color"] = b.color, a.color
            out.append(variant(phrases=phrases))
    return [f for f in out if is_false(f, objects)]


def binding_pair(objects: list[ObjectView], rng: np.random.Generator) -> tuple[str, str] | None:
    """("a red cube and a blue bowl", "a blue cube and a red bowl"): a true caption and its colour-swapped
    version, which names no pair of objects in the scene; None when no two visible objects differ in both."""
    vis = [o for o in objects if o.visible]
    pairs = [(a, b) for a in vis for b in vis if a.index < b.index and a.color != b.color and a.shape != b.shape]
    for k in rng.permutation(len(pairs)):
        a, b = pairs[k]
        true = Fact("list", [phrase_of(a), phrase_of(b)])
        swapped = Fact("list", [Phrase(b.color, a.shape), Phrase(a.color, b.shape)])
        if holds(true, objects) and is_false(swapped, objects):
            return true.text(), swapped.text()
    return None


def referring_expressions(o: ObjectView, objects: list[ObjectView]) -> list[str]:
    """Phrases that name ``o`` and no other object in the scene (seen or not)."""
    others = [p for p in objects if p.index != o.index]
    out = [f"the {o.color} {o.shape}", f"the {o.size} {o.color} {o.shape}"]
    if all(p.color != o.color for p in others):
        out.append(f"the {o.color} object")
    if all(p.shape != o.shape for p in others):
        out += [f"the {o.shape}", f"the {o.size} {o.shape}"]
    if o.in_bowl is not None:
        bowl = next(p for p in objects if p.index == o.in_bowl)
        out.append(f"the {o.shape} in the {bowl.color} bowl")
    return out
