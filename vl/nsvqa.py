"""Neuro-symbolic VQA (NS-VQA, Yi et al. 2018): read the objects off the image, the program off the words, and
run the program (``vlagym nsvqa-train``; ``vlagym vqa-eval`` answers with it).

Three parts, two of them learned:

* ``SceneParser``: a small fully convolutional net (CenterNet-style, Zhou et al. 2019) at stride 2. A
  heatmap finds each object's centre; heads at that cell give its colour, shape, size, whether it sits in a
  bowl, and its camera-frame ``x`` (the tangent of the angle off the axis) and depth. Bowls and the objects
  that go in them have a heatmap and heads each (``GROUPS``): an object in a bowl shares the bowl's centre.
  It is supervised by what the simulator knows: the per-pixel instance mask and each object's attributes and
  position, as vl-data stores them. Objects with too few pixels to be in the scene graph are neither positives nor
  negatives (questions are only kept when those objects do not change the answer).
* ``ProgramParser``: a GRU encoder-decoder with attention from the question's words to the program's nodes
  in prefix order (a function, its value inputs, then its inputs' subtrees), trained on the training
  questions' programs.
* The executor of ``vlagym.vl.questions`` runs the predicted program on the predicted objects, comparing
  centres (``strict=False``): the answer is whatever the program gives, and a program that cannot run on
  the predicted scene (it names an object the parser did not find, say) counts as wrong.

Test time sees only the image and the question's words. ``evaluate`` also reports each part on its own:
detection and attribute accuracy of the scene parser, exact match of the program parser, and the answers
with either part replaced by the truth.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from vlagym.core.io import atomic_write_text, read_json
from vlagym.core.resume import check_same_settings
from vlagym.core.safe_load import torch_load_weights
from vlagym.vl.captions import ObjectView
from vlagym.vl.questions import COLORS, SHAPES, SIZES, Executor, QuestionError
from vlagym.vl.vqa import QuestionPrior, accuracy_table, read_prior, resolve_device
from vlagym.vl.vqa_data import VQAData, load_vqa_data

CONFIG = "nsvqa_config.json"
SCENE_WEIGHTS = "scene_parser.safetensors"
PROGRAM_WEIGHTS = "program_parser.safetensors"
X_SCALE, DEPTH_MID, DEPTH_SCALE = 0.3, 0.9, 0.15  # camera-frame x and depth to about [-1, 1]
SIGMA = 0.8  # heatmap Gaussian, in output cells


@dataclass
class NSVQAConfig:
    """NS-VQA training settings (``key=value`` overrides on the command line)."""

    data: str = ""
    """Training vqa-data folder (its vl-data images carry the masks and object records)."""
    eval_data: str | None = None
    """Held-out vqa-data folder (test-split seeds), answered at the end."""
    out: str = "runs/nsvqa"
    """Run folder: model/, checkpoint.pt, metrics.json."""
    scene_steps: int = 3000
    """Optimisation steps of the scene parser."""
    program_steps: int = 800
    """Optimisation steps of the program parser."""
    batch_size: int = 32
    """Images per scene-parser step."""
    program_batch: int = 128
    """Questions per program-parser step."""
    width: int = 48
    """Channels of the scene parser."""
    program_width: int = 128
    """Width of the program parser's GRUs."""
    lr: float = 2e-3
    """Peak learning rate of both (AdamW, warm-up then cosine)."""
    threshold: float = 0.3
    """Heatmap peak an object needs to be detected."""
    checkpoint_every: int = 200
    """Write the resumable checkpoint every this many scene-parser steps."""
    seed: int = 0
    """Seeds the weights and the batches."""
    threads: int = 2
    """torch CPU threads (0: torch's default)."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("nsvqa-train needs data=<vqa-data folder>")
        for name in ("scene_steps", "program_steps", "batch_size", "program_batch", "width", "program_width",
                     "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")


# --- the scene parser -----------------------------------------------------------------------------------------------
def _coords(h: int, w: int, device: torch.device) -> torch.Tensor:
    ys = torch.linspace(-1, 1, h, device=device).view(1, 1, h, 1).expand(1, 1, h, w)
    xs = torch.linspace(-1, 1, w, device=device).view(1, 1, 1, w).expand(1, 1, h, w)
    return torch.cat([xs, ys], 1)


class _Res(nn.Module):
    def __init__(self, c: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


HEADS = {"heat": 1, "color": len(COLORS), "shape": len(SHAPES), "size": len(SIZES), "in_bowl": 1, "pos": 2}
# One set of heads per group, as CenterNet keeps one heatmap per class: an object inside a bowl has the bowl's centre,
# so with one heatmap the two would be one peak and one cell would have to name both.
GROUPS = ("object", "bowl")


def group_of(shape: str) -> int:
    return GROUPS.index("bowl" if shape == "bowl" else "object")


class SceneParser(nn.Module):
    """Image (N, H, W, 3) uint8 -> per-group, per-cell maps at stride 2, each (N, groups, channels, h, w): heat (1),
    colour, shape, size and in-bowl logits, and (x, depth) normalised."""

    def __init__(self, width: int = 48) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(5, width // 2, 3, padding=1, bias=False), nn.BatchNorm2d(width // 2),
                                  nn.ReLU(), nn.Conv2d(width // 2, width, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.body = nn.Sequential(*[_Res(width, d) for d in (1, 2, 4, 1)])
        self.head = nn.Conv2d(width + 2, len(GROUPS) * sum(HEADS.values()), 1)
        with torch.no_grad():
            for g in range(len(GROUPS)):
                self.head.bias[g * sum(HEADS.values())] = -2.19  # CenterNet's prior: sigmoid(-2.19) = 0.1

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def forward(self, images) -> dict[str, torch.Tensor]:
        x = torch.as_tensor(np.asarray(images), device=self.device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        n, _, h, w = x.shape
        x = self.body(self.stem(torch.cat([x, _coords(h, w, x.device).expand(n, -1, -1, -1)], 1)))
        out = self.head(torch.cat([x, _coords(*x.shape[-2:], x.device).expand(n, -1, -1, -1)], 1))
        out = out.view(n, len(GROUPS), sum(HEADS.values()), *out.shape[-2:])
        maps, k = {}, 0
        for name, c in HEADS.items():
            maps[name] = out[:, :, k:k + c]
            k += c
        return maps

    @torch.no_grad()
    def parse(self, images, threshold: float = 0.3) -> list[list[ObjectView]]:
        """The objects of each image, as the executor reads them (camera-frame centres; extents unknown)."""
        maps = self(images)
        heat = torch.sigmoid(maps["heat"][:, :, 0])  # (N, G, h, w)
        n, groups, h, w = heat.shape
        peaks = (heat == F.max_pool2d(heat.flatten(0, 1)[:, None], 3, 1, 1)[:, 0].view_as(heat)) & (heat > threshold)
        graspable = [k for k, s in enumerate(SHAPES) if s != "bowl"]
        scenes = []
        for b in range(n):
            objs: list[ObjectView] = []
            p_bowl: list[float] = []
            for g in range(groups):
                for i, j in zip(*(t.tolist() for t in torch.nonzero(peaks[b, g], as_tuple=True))):
                    pos = maps["pos"][b, g, :, i, j].tolist()
                    shape = "bowl" if GROUPS[g] == "bowl" else \
                        SHAPES[graspable[int(maps["shape"][b, g, graspable, i, j].argmax())]]
                    objs.append(ObjectView(
                        index=len(objs), color=COLORS[int(maps["color"][b, g, :, i, j].argmax())], shape=shape,
                        size=SIZES[int(maps["size"][b, g, :, i, j].argmax())],
                        x=pos[0] * X_SCALE, x_extent=0.0, depth=DEPTH_MID + pos[1] * DEPTH_SCALE, extent=0.0,
                        pixels=int(round(float(heat[b, g, i, j]) * 100)), box=[2 * j, 2 * i, 2 * j + 1, 2 * i + 1],
                        in_bowl=None, visible=True))
                    p_bowl.append(float(torch.sigmoid(maps["in_bowl"][b, g, 0, i, j])))
            bowls = [o for o in objs if o.shape == "bowl"]
            for o, p in zip(objs, p_bowl):
                if o.shape != "bowl" and bowls and p > 0.5:
                    o.in_bowl = min(bowls, key=lambda w_: _ground_dist(o, w_)).index
            scenes.append(objs)
        return scenes


def _ground_dist(a: ObjectView, b: ObjectView) -> float:
    return float(np.hypot(a.x * a.depth - b.x * b.depth, a.depth - b.depth))


def _centre_cell(box: list[int], stride: int) -> tuple[float, float]:
    """The visible box's centre in output cells (row, column): cell k covers pixels stride*k .. stride*k+stride-1."""
    x0, y0, x1, y1 = box
    return ((y0 + y1) / 2 + 0.5) / stride - 0.5, ((x0 + x1) / 2 + 0.5) / stride - 0.5


def _nearest(c: float, n: int) -> int:
    return int(np.clip(np.floor(c + 0.5), 0, n - 1))


def scene_targets(meta: dict[str, Any], mask: np.ndarray, stride: int = 2) -> dict[str, np.ndarray]:
    """Training targets of one image at the parser's output grid, one set per group (``GROUPS``).

    ``heat`` (G, h, w): a Gaussian at each scene-graph object's visible-box centre, exactly 1 at its centre cell;
    ``heat_weight`` 0 near an object too faint to be in the scene graph; ``cls`` (G, 4, h, w): colour, shape, size
    and in-bowl index of the object a cell shows (-1 for none: the cells the instance mask gives to it, and its
    centre cell); ``pos`` (G, 2, h, w): its normalised (x, depth)."""
    H, W = mask.shape
    h, w, G = H // stride, W // stride, len(GROUPS)
    ii, jj = np.mgrid[0:h, 0:w].astype(np.float32)
    heat = np.zeros((G, h, w), np.float32)
    weight = np.ones((G, h, w), np.float32)
    cls = np.full((G, 4, h, w), -1, np.int64)
    pos = np.zeros((G, 2, h, w), np.float32)
    small = mask[stride // 2::stride, stride // 2::stride][:h, :w]
    for o in meta["objects"]:
        if o["pixels"] <= 0 or o["box"] is None:
            continue
        g = group_of(o["shape"])
        ci, cj = _centre_cell(o["box"], stride)
        d2 = (ii - ci) ** 2 + (jj - cj) ** 2
        if not o["visible"]:
            weight[g][d2 <= 2.25] = 0.0
            continue
        heat[g] = np.maximum(heat[g], np.exp(-d2 / (2 * SIGMA ** 2)))
        cells = small == o["index"]
        cells[_nearest(ci, h), _nearest(cj, w)] = True
        lab = (COLORS.index(o["color"]), SHAPES.index(o["shape"]), SIZES.index(o["size"]),
               -1 if o["shape"] == "bowl" else int(o.get("in_bowl") is not None))
        for k, v in enumerate(lab):
            cls[g, k][cells] = v
        pos[g, 0][cells] = o["x"] / X_SCALE
        pos[g, 1][cells] = (o["depth"] - DEPTH_MID) / DEPTH_SCALE
    for o in meta["objects"]:
        if o["visible"] and o["pixels"] > 0 and o["box"] is not None:
            ci, cj = _centre_cell(o["box"], stride)
            heat[group_of(o["shape"]), _nearest(ci, h), _nearest(cj, w)] = 1.0
    return {"heat": heat, "heat_weight": weight, "cls": cls, "pos": pos}


def scene_loss(maps: dict[str, torch.Tensor], t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CenterNet's penalty-reduced focal loss on the heatmaps; cross-entropy and smooth L1 on labelled cells."""
    p = torch.sigmoid(maps["heat"][:, :, 0]).clamp(1e-4, 1 - 1e-4)
    gt, wt = t["heat"], t["heat_weight"]
    pos = gt.eq(1).float()
    pos_l = -torch.log(p) * (1 - p) ** 2 * pos
    neg_l = -torch.log(1 - p) * p ** 2 * (1 - gt) ** 4 * (1 - pos) * wt
    heat = (pos_l.sum() + neg_l.sum()) / pos.sum().clamp(min=1)
    m = {k: v.flatten(0, 1) for k, v in maps.items()}  # groups into the batch
    cls, target_pos = t["cls"].flatten(0, 1), t["pos"].flatten(0, 1)
    losses = {"heat": heat}
    for k, name in enumerate(("color", "shape", "size")):
        losses[name] = F.cross_entropy(m[name], cls[:, k], ignore_index=-1) if (cls[:, k] >= 0).any() \
            else m[name].sum() * 0
    bowl = cls[:, 3] >= 0
    losses["in_bowl"] = (F.binary_cross_entropy_with_logits(m["in_bowl"][:, 0][bowl], cls[:, 3][bowl].float())
                         if bowl.any() else m["in_bowl"].sum() * 0)
    lab = (cls[:, 0] >= 0).unsqueeze(1).expand_as(m["pos"])
    losses["pos"] = F.smooth_l1_loss(m["pos"][lab], target_pos[lab], beta=0.1) if lab.any() \
        else m["pos"].sum() * 0
    losses["total"] = heat + losses["color"] + losses["shape"] + losses["size"] + 0.5 * losses["in_bowl"] \
        + 5.0 * losses["pos"]
    return losses


# --- the program parser --------------------------------------------------------------------------------------------
PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"


def words(question: str) -> list[str]:
    return re.findall(r"[a-z]+|\d+", question.lower())


def to_prefix(program: list[dict[str, Any]]) -> list[str]:
    """The program as tokens in prefix order from its answer node: function, value inputs, then each input."""
    def emit(i: int) -> list[str]:
        n = program[i]
        toks = [n["function"], *n.get("value_inputs", [])]
        for j in n.get("inputs", []):
            toks += emit(j)
        return toks
    return emit(len(program) - 1)


def from_prefix(tokens: list[str], signature: dict[str, tuple[int, int]]) -> list[dict[str, Any]]:
    """Inverse of ``to_prefix`` given each function's (inputs, value inputs); ``QuestionError`` when the tokens
    do not spell one whole program."""
    nodes: list[dict[str, Any]] = []
    pos = 0

    def parse() -> int:
        nonlocal pos
        if pos >= len(tokens):
            raise QuestionError("the program parser's output ends in the middle of a program")
        fn = tokens[pos]
        if fn not in signature:
            raise QuestionError(f"the program parser gave {fn!r} where a function belongs")
        n_in, n_val = signature[fn]
        vals = tokens[pos + 1:pos + 1 + n_val]
        if len(vals) < n_val or any(v in signature for v in vals):
            raise QuestionError(f"{fn} lacks its value inputs in the program parser's output")
        pos += 1 + n_val
        ins = [parse() for _ in range(n_in)]
        nodes.append({"function": fn, "inputs": ins, "value_inputs": vals})
        return len(nodes) - 1

    parse()
    if pos != len(tokens):
        raise QuestionError("the program parser's output goes on after a whole program")
    return nodes


class ProgramParser(nn.Module):
    """Words -> program tokens: a bidirectional GRU encoder, a GRU decoder with dot-product attention over the
    encoder's states (Luong et al. 2015)."""

    def __init__(self, in_vocab: list[str], out_vocab: list[str], width: int = 128, max_len: int = 48) -> None:
        super().__init__()
        self.in_vocab, self.out_vocab, self.max_len = list(in_vocab), list(out_vocab), max_len
        self.in_index = {w: k for k, w in enumerate(self.in_vocab)}
        self.out_index = {w: k for k, w in enumerate(self.out_vocab)}
        self.embed_in = nn.Embedding(len(in_vocab), width, padding_idx=0)
        self.encoder = nn.GRU(width, width, batch_first=True, bidirectional=True)
        self.keys = nn.Linear(2 * width, width)
        self.bridge = nn.Linear(2 * width, width)
        self.embed_out = nn.Embedding(len(out_vocab), width)
        self.decoder = nn.GRU(width, width, batch_first=True)
        self.mix = nn.Linear(3 * width, width)
        self.out = nn.Linear(width, len(out_vocab))

    @property
    def device(self) -> torch.device:
        return self.out.weight.device

    def encode_words(self, questions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        seqs = [[self.in_index.get(w, 1) for w in words(q)] or [1] for q in questions]
        n = max(map(len, seqs))
        ids = torch.tensor([s + [0] * (n - len(s)) for s in seqs], device=self.device)
        return ids, ids != 0

    def _encode(self, ids: torch.Tensor, valid: torch.Tensor):
        states, _ = self.encoder(self.embed_in(ids))
        mean = (states * valid.unsqueeze(-1)).sum(1) / valid.sum(1, keepdim=True)
        return states, torch.tanh(self.bridge(mean)).unsqueeze(0)

    def _step_logits(self, dec: torch.Tensor, states: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        scores = torch.einsum("btw,bsw->bts", dec, self.keys(states)).masked_fill(~valid.unsqueeze(1), -1e9)
        ctx = torch.einsum("bts,bsw->btw", scores.softmax(-1), states)
        return self.out(torch.tanh(self.mix(torch.cat([dec, ctx], -1))))

    def loss(self, questions: list[str], programs: list[list[str]]) -> tuple[torch.Tensor, float]:
        ids, valid = self.encode_words(questions)
        states, h0 = self._encode(ids, valid)
        tgt = [[self.out_index[t] for t in p] + [self.out_index[EOS]] for p in programs]
        n = max(map(len, tgt))
        y = torch.tensor([t + [0] * (n - len(t)) for t in tgt], device=self.device)
        x = torch.cat([torch.full_like(y[:, :1], self.out_index[BOS]), y[:, :-1]], 1)
        dec, _ = self.decoder(self.embed_out(x), h0)
        logits = self._step_logits(dec, states, valid)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=0)
        exact = ((logits.argmax(-1) == y) | (y == 0)).all(1).float().mean().item()
        return loss, exact

    @torch.no_grad()
    def decode(self, questions: list[str]) -> list[list[str]]:
        """Greedy decoding, one token list per question."""
        ids, valid = self.encode_words(questions)
        states, h = self._encode(ids, valid)
        tok = torch.full((len(questions), 1), self.out_index[BOS], device=self.device)
        out = [[] for _ in questions]
        done = torch.zeros(len(questions), dtype=torch.bool, device=self.device)
        for _ in range(self.max_len):
            dec, h = self.decoder(self.embed_out(tok), h)
            tok = self._step_logits(dec, states, valid).argmax(-1)
            for b, t in enumerate(tok[:, 0].tolist()):
                if not done[b] and t != self.out_index[EOS]:
                    out[b].append(self.out_vocab[t])
            done |= tok[:, 0] == self.out_index[EOS]
            if done.all():
                break
        return out


def program_signature(questions: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Each function's (inputs, value inputs), which must be the same wherever it appears."""
    sig: dict[str, tuple[int, int]] = {}
    for q in questions:
        for n in q["program"]:
            s = (len(n.get("inputs", [])), len(n.get("value_inputs", [])))
            if sig.setdefault(n["function"], s) != s:
                raise ValueError(f"function {n['function']!r} takes {sig[n['function']]} and {s} (inputs, values)")
    return sig


# --- the whole model ------------------------------------------------------------------------------------------------
class NSVQA:
    """A scene parser, a program parser and the executor."""

    def __init__(self, scene: SceneParser, program: ProgramParser, signature: dict[str, tuple[int, int]],
                 threshold: float = 0.3) -> None:
        self.scene, self.program, self.signature, self.threshold = scene, program, signature, threshold

    def programs(self, questions: list[str], batch: int = 512) -> dict[str, list[dict[str, Any]] | str]:
        """Each distinct question string's program, or the reason it did not parse."""
        self.program.eval()
        texts = sorted(set(questions))
        out: dict[str, Any] = {}
        for s in range(0, len(texts), batch):
            chunk = texts[s:s + batch]
            for q, toks in zip(chunk, self.program.decode(chunk)):
                try:
                    out[q] = from_prefix(toks, self.signature)
                except QuestionError as e:
                    out[q] = str(e)
        return out

    def scenes(self, images: np.ndarray, batch: int = 128) -> list[list[ObjectView]]:
        self.scene.eval()
        return [s for k in range(0, len(images), batch) for s in self.scene.parse(images[k:k + batch], self.threshold)]

    def save(self, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.scene.state_dict().items()}, str(d / SCENE_WEIGHTS))
        save_file({k: v.contiguous() for k, v in self.program.state_dict().items()}, str(d / PROGRAM_WEIGHTS))
        cfg = {"scene_width": self.scene.stem[3].out_channels, "program_width": self.program.out.in_features,
               "in_vocab": self.program.in_vocab, "out_vocab": self.program.out_vocab,
               "signature": {k: list(v) for k, v in self.signature.items()}, "threshold": self.threshold,
               **(extra or {})}
        atomic_write_text(d / CONFIG, json.dumps(cfg, indent=2))
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> NSVQA:
        d = resolve_nsvqa_dir(directory)
        cfg = read_json(d / CONFIG)
        scene = SceneParser(cfg["scene_width"])
        scene.load_state_dict(load_file(str(d / SCENE_WEIGHTS)))
        program = ProgramParser(cfg["in_vocab"], cfg["out_vocab"], cfg["program_width"])
        program.load_state_dict(load_file(str(d / PROGRAM_WEIGHTS)))
        sig = {k: (int(v[0]), int(v[1])) for k, v in cfg["signature"].items()}
        return cls(scene.to(device).eval(), program.to(device).eval(), sig, float(cfg["threshold"]))


def resolve_nsvqa_dir(directory: str | os.PathLike) -> Path:
    d = Path(directory)
    for cand in (d, d / "model"):
        if (cand / CONFIG).exists():
            return cand
    raise FileNotFoundError(f"{d} holds no {CONFIG}; is it an nsvqa-train run folder?")


def is_nsvqa(directory: str | os.PathLike) -> bool:
    d = Path(directory)
    return (d / CONFIG).exists() or (d / "model" / CONFIG).exists()


def _execute(objects: list[ObjectView], program: Any, camera: str) -> str:
    if isinstance(program, str):
        return "<no program>"
    try:
        return Executor(objects, camera=camera, strict=False).run(program)
    except QuestionError:
        return "<no answer>"


def _truth_objects(meta: dict[str, Any]) -> list[ObjectView]:
    return [ObjectView(**o) for o in meta["objects"]]


def scene_parse_metrics(pred: list[list[ObjectView]], metas: list[dict[str, Any]], tol: float = 3.0) -> dict:
    """Detection of the scene-graph objects (a prediction within ``tol`` px of a visible box centre, matched
    greedily) and the attributes of the matched ones; ``scene_exact``: every object found with every attribute
    right and nothing extra."""
    tp = fp = fn = 0
    right = {"color": 0, "shape": 0, "size": 0}
    exact = 0
    for objs, meta in zip(pred, metas):
        truth = [o for o in meta["objects"] if o["visible"]]
        faint = [o for o in meta["objects"] if not o["visible"] and o["pixels"] > 0 and o["box"]]
        used: set[int] = set()
        ok = True
        for t in truth:
            cx, cy = (t["box"][0] + t["box"][2]) / 2, (t["box"][1] + t["box"][3]) / 2
            best, bd = None, tol
            for k, o in enumerate(objs):
                d = float(np.hypot(o.box[0] + 0.5 - cx, o.box[1] + 0.5 - cy))
                if k not in used and d <= bd:
                    best, bd = k, d
            if best is None:
                fn += 1
                ok = False
                continue
            used.add(best)
            tp += 1
            for a in right:
                same = getattr(objs[best], a) == t[a]
                right[a] += same
                ok &= same
        for k, o in enumerate(objs):
            if k in used:
                continue
            near_faint = any(np.hypot(o.box[0] + 0.5 - (f["box"][0] + f["box"][2]) / 2,
                                      o.box[1] + 0.5 - (f["box"][1] + f["box"][3]) / 2) <= tol for f in faint)
            if not near_faint:
                fp += 1
                ok = False
        exact += ok
    return {"precision": round(tp / max(tp + fp, 1), 4), "recall": round(tp / max(tp + fn, 1), 4),
            **{f"{a}_accuracy": round(v / max(tp, 1), 4) for a, v in right.items()},
            "scene_exact": round(exact / max(len(pred), 1), 4), "images": len(pred)}


def evaluate(model: NSVQA, data: VQAData, prior: QuestionPrior | None = None) -> dict[str, Any]:
    """Answers of the whole model, per family and level, beside the blind prior; and each part on its own."""
    qs = data.questions
    rows = sorted({int(q["image_index"]) for q in qs})
    parsed = dict(zip(rows, model.scenes(data.images[rows])))
    programs = model.programs([q["question"] for q in qs])
    preds = [_execute(parsed[int(q["image_index"])], programs[q["question"]], q.get("camera", "rgb")) for q in qs]
    truth_scene = [_execute(_truth_objects(data.meta[int(q["image_index"])]), programs[q["question"]],
                            q.get("camera", "rgb")) for q in qs]
    truth_program = [_execute(parsed[int(q["image_index"])], q["program"], q.get("camera", "rgb")) for q in qs]
    exact = [not isinstance(p, str) and to_prefix(p) == to_prefix(q["program"])
             for q, p in ((q, programs[q["question"]]) for q in qs)]
    out: dict[str, Any] = {"model": accuracy_table(qs, preds)}
    if prior is not None:
        out["blind"] = accuracy_table(qs, [prior.answer(q) for q in qs])
        out["gap_points"] = round(100 * (out["model"]["accuracy"] - out["blind"]["accuracy"]), 1)
    out["parts"] = {
        "scene_parser": scene_parse_metrics([parsed[r] for r in rows], [data.meta[r] for r in rows]),
        "program_exact_match": round(float(np.mean(exact)), 4) if exact else None,
        "answers_with_true_scene": accuracy_table(qs, truth_scene)["accuracy"],
        "answers_with_true_program": accuracy_table(qs, truth_program)["accuracy"],
    }
    return out


# --- training -------------------------------------------------------------------------------------------------------
def _batch_targets(data_meta: list[dict], masks: np.ndarray, idx: np.ndarray, device) -> dict[str, torch.Tensor]:
    ts = [scene_targets(data_meta[i], masks[i]) for i in idx]
    return {k: torch.as_tensor(np.stack([t[k] for t in ts]), device=device) for k in ts[0]}


def _lr(step: int, peak: float, total: int, warmup: int) -> float:
    from vlagym.core.schedules import warmup_cosine

    return warmup_cosine(step, peak, warmup, total)


def train_program_parser(cfg: NSVQAConfig, questions: list[dict[str, Any]], device) -> tuple[ProgramParser, dict]:
    pairs = sorted({q["question"]: to_prefix(q["program"]) for q in questions}.items())
    seen: dict[str, list[str]] = {}
    for q in questions:
        p = to_prefix(q["program"])
        if seen.setdefault(q["question"], p) != p:
            raise ValueError(f"the question {q['question']!r} has two programs in the training data")
    in_vocab = [PAD, UNK] + sorted({w for q, _ in pairs for w in words(q)})
    out_vocab = [PAD, BOS, EOS] + sorted({t for _, p in pairs for t in p})
    torch.manual_seed(cfg.seed)
    model = ProgramParser(in_vocab, out_vocab, cfg.program_width).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr * 1.5, weight_decay=0.01)
    rng = np.random.default_rng([cfg.seed, 7])
    bar = tqdm(range(cfg.program_steps), desc="nsvqa-train (program parser)", dynamic_ncols=True)
    history = []
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg.lr * 1.5, cfg.program_steps, 50)
        pick = rng.choice(len(pairs), size=min(cfg.program_batch, len(pairs)), replace=False)
        loss, exact = model.loss([pairs[i][0] for i in pick], [pairs[i][1] for i in pick])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", exact=f"{exact:.2f}")
        if (step + 1) % 10 == 0:
            history.append({"step": step + 1, "loss": round(loss.item(), 4), "batch_exact": round(exact, 4)})
    return model.eval(), {"pairs": len(pairs), "history": history}


def train_nsvqa(cfg: NSVQAConfig, trust_pickle: bool | None = None) -> dict[str, Any]:
    """Train both parsers (the scene parser resuming from ``out/checkpoint.pt``); returns the metrics."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = json.loads(json.dumps({k: v for k, v in asdict(cfg).items()
                                      if k not in ("out", "device", "threads", "eval_data")}))
    data = load_vqa_data(cfg.data)
    if data.masks is None:
        raise ValueError(f"{cfg.data}: its images carry no instance masks, which the scene parser learns from")
    signature = program_signature(data.questions)
    t0, cpu0 = time.time(), time.process_time()
    ckpt_path = out / "checkpoint.pt"
    ckpt = torch_load_weights(ckpt_path, trust_pickle=trust_pickle, map_location=device) if ckpt_path.exists() else None
    if ckpt is not None:
        check_same_settings(out, ckpt["settings"], settings, "use another out= or the same ones")
    # The program parser trains in a minute; its weights ride in the checkpoint so a resume does not redo it.
    if ckpt is not None:
        program = ProgramParser(ckpt["in_vocab"], ckpt["out_vocab"], cfg.program_width).to(device)
        program.load_state_dict(ckpt["program"])
        metrics = ckpt["metrics"]
    else:
        program, pm = train_program_parser(cfg, data.questions, device)
        metrics = {"config": settings, "program_parser": pm, "scene_history": []}
    torch.manual_seed(cfg.seed)
    scene = SceneParser(cfg.width).to(device)
    opt = torch.optim.AdamW(scene.parameters(), lr=cfg.lr, weight_decay=1e-4)
    start = 0
    if ckpt is not None and "scene" in ckpt:
        scene.load_state_dict(ckpt["scene"])
        opt.load_state_dict(ckpt["optimizer"])
        start = int(ckpt["step"])
    scene.train()
    n = len(data.images)
    bar = tqdm(range(start, cfg.scene_steps), initial=start, total=cfg.scene_steps,
               desc="nsvqa-train (scene parser)", dynamic_ncols=True)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg.lr, cfg.scene_steps, 100)
        idx = np.random.default_rng([cfg.seed, step, 11]).choice(n, size=min(cfg.batch_size, n), replace=False)
        losses = scene_loss(scene(data.images[idx]), _batch_targets(data.meta, data.masks, idx, device))
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        nn.utils.clip_grad_norm_(scene.parameters(), 5.0)
        opt.step()
        bar.set_postfix({k: f"{v.item():.3f}" for k, v in losses.items() if k in ("heat", "color", "shape", "pos")})
        if (step + 1) % 10 == 0:
            metrics["scene_history"].append({"step": step + 1, **{k: round(v.item(), 4) for k, v in losses.items()}})
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.scene_steps:
            tmp = out / ".checkpoint.pt.tmp"
            torch.save({"settings": settings, "program": program.state_dict(), "in_vocab": program.in_vocab,
                        "out_vocab": program.out_vocab, "scene": scene.state_dict(), "optimizer": opt.state_dict(),
                        "metrics": metrics, "step": step + 1}, tmp)
            os.replace(tmp, ckpt_path)
    bar.close()
    model = NSVQA(scene.eval(), program.eval(), signature, cfg.threshold)
    metrics["train_seconds_this_run"] = round(time.time() - t0, 1)
    metrics["train_cpu_seconds_this_run"] = round(time.process_time() - cpu0, 1)
    prior = QuestionPrior(data.questions)
    model.save(out / "model", extra={"trained_on": str(cfg.data)})
    atomic_write_text(out / "prior.json", json.dumps({"by_text": prior.by_text, "by_family": prior.by_family,
                                                      "overall": prior.overall}))
    if cfg.eval_data:
        metrics["final"] = evaluate(model, load_vqa_data(cfg.eval_data), prior)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def eval_nsvqa(model_dir: str | os.PathLike, data_dir: str | os.PathLike, device: str = "auto") -> dict[str, Any]:
    """``evaluate`` of an nsvqa-train run on a vqa-data folder, beside its training prior (blind)."""
    model = NSVQA.load(model_dir, resolve_device(device))
    prior = read_prior(Path(model_dir) / "prior.json", resolve_nsvqa_dir(model_dir).parent / "prior.json")
    return evaluate(model, load_vqa_data(data_dir), prior)


__all__ = ["NSVQA", "NSVQAConfig", "ProgramParser", "SceneParser", "eval_nsvqa", "evaluate", "from_prefix", "is_nsvqa",
           "scene_targets", "to_prefix", "train_nsvqa"]
