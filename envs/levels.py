"""Generalization levels: which side of each split an episode's attributes fall on.

In the spirit of VIMA-Bench's L1-L4 and CALVIN's splits. The split is a fixed, deterministic
function of an episode's attributes, so it never depends on seeds or on the order of draws:

* colour-shape combinations: a family's *novel colours* (tabletop ``pink``, navigation ``cyan``)
  never appear in training (L3); among the other colours, the combination of colour ``i`` and
  shape ``j`` (in the family's ``COLORS``/``SHAPES`` order) is held out when ``(i + j) % 4 == 0``
  (L2). Every trained colour keeps at least two trained shapes and every shape at least four
  trained colours, so each held-out combination is made of a seen colour and a seen shape.
* instruction templates: the last ``HELD_OUT_TEMPLATES`` templates of each template tuple are held
  out (L4); at L4 a shape word is also replaced, half the time, by a synonym training never uses.
* task compositions: defined per task (L5): "touch the X, then the Y" on the touch task, and
  three-goal ``multi_step`` navigation, where training has two goals.

An env's ``level=`` kwarg picks what an episode may draw; ``None`` (the default) draws from the
union, exactly as before levels existed:

======== ==========================================================================================
``train`` every object (named or distractor) has a trained colour-shape combination, a trained
          template, no held-out composition: the only level collection may use for training seeds
``L1``    the same distribution as ``train`` (new poses and distractors come from new seeds)
``L2``    the target (first named object) has a held-out combination of seen colour and shape
``L3``    the target has a novel colour
``L4``    a held-out template (and, half the time, a shape synonym); trained combinations
``L5``    a novel task composition built from trained skills (where the task defines one)
======== ==========================================================================================

``info["generalization_split"]`` says which split an episode's draw belongs to (``train``,
``L2``, ``L3``, ``L4`` or ``L5``; the first that applies in the order L5, L3, L2, L4), whatever
``level`` it was drawn at.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LEVELS = ("train", "L1", "L2", "L3", "L4", "L5")
EVAL_LEVELS = ("L1", "L2", "L3", "L4", "L5")
LEVEL_DESCRIPTIONS = {
    "L1": "placement: new poses and distractors",
    "L2": "combination: unseen colour-shape pairs",
    "L3": "novel colour",
    "L4": "novel phrasing: held-out templates and synonyms",
    "L5": "novel task composition",
}
NOVEL_COLORS = {"tabletop": ("pink",), "nav": ("cyan",)}
HELD_OUT_TEMPLATES = 2
SYNONYMS = {"cube": "block", "cylinder": "tube", "bowl": "dish", "ball": "sphere", "box": "crate", "cone": "pylon"}


def check_level(level: str | None) -> str | None:
    if level is not None and level not in LEVELS:
        raise ValueError(f"level must be None or one of {', '.join(LEVELS)}, got {level!r}")
    return level


def combo_split(family: str, color: str, shape: str, colors: Sequence[str], shapes: Sequence[str]) -> str:
    """``"L3"`` for a novel colour, ``"L2"`` for a held-out combination, else ``"train"``."""
    novel = NOVEL_COLORS[family]
    if color in novel:
        return "L3"
    trained = [c for c in colors if c not in novel]
    if color not in trained or shape not in shapes:
        raise ValueError(f"unknown {family} colour or shape: {color!r}, {shape!r}")
    return "L2" if (trained.index(color) + list(shapes).index(shape)) % 4 == 0 else "train"


def combo_allowed(level: str | None, split: str, target: bool) -> bool:
    """May an object of this combination split be drawn at ``level``? ``target``: the first named object."""
    if level is None:
        return True
    if target and level in ("L2", "L3"):
        return split == level
    return split == "train"


def template_split(index: int, count: int) -> str:
    return "L4" if index >= count - HELD_OUT_TEMPLATES else "train"


def template_choices(level: str | None, count: int) -> list[int]:
    """Template indices ``level`` may draw from a tuple of ``count``."""
    if count <= HELD_OUT_TEMPLATES:
        raise ValueError(f"a template tuple needs more than {HELD_OUT_TEMPLATES} templates to hold some out")
    if level is None:
        return list(range(count))
    want = "L4" if level == "L4" else "train"
    return [i for i in range(count) if template_split(i, count) == want]


def synonymize(rng: np.random.Generator, words: dict[str, str]) -> dict[str, str]:
    """At L4: replace every shape word in one random phrase argument by its synonym, half the time."""
    if rng.random() >= 0.5:
        return words
    keys = [k for k, v in words.items() if any(s in v.split() for s in SYNONYMS)]
    if not keys:
        return words
    key = keys[int(rng.integers(len(keys)))]
    return {**words, key: " ".join(SYNONYMS.get(w, w) for w in words[key].split())}


def episode_split(combo_splits: Sequence[str], template: str, composition: bool) -> str:
    """The split an episode belongs to, from its objects' combination splits and its template's."""
    if composition:
        return "L5"
    for split in ("L3", "L2"):
        if split in combo_splits:
            return split
    return "L4" if template == "L4" else "train"


class Phraser:
    """Template choice at a level; remembers the split of the last template drawn."""

    def __init__(self, level: str | None) -> None:
        self.level = check_level(level)
        self.template_split = "train"
        self.synonyms = False

    def phrase(self, rng: np.random.Generator, templates: Sequence[str], **words: str) -> str:
        self.synonyms = False
        if self.level is None:
            # Exactly the draw made before levels existed, so default episodes stay byte-identical.
            template = str(rng.choice(templates))
            index = list(templates).index(template)
        else:
            choices = template_choices(self.level, len(templates))
            index = choices[int(rng.integers(len(choices)))]
            template = templates[index]
            if self.level == "L4":
                new = synonymize(rng, words)
                self.synonyms = new != words
                words = new
        self.template_split = template_split(index, len(templates))
        return template.format(**words)
