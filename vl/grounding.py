"""Grounding referring expressions: a patch-text similarity map, refined by a small head trained on boxes.

The pre-trained model stays frozen. Each ViT patch token goes through the same final norm and projection
as the pooled image token, so its cosine similarity with a text embedding is a similarity map over the
patch grid (MaskCLIP's trick). The ``GroundingHead`` reads, per patch, the normalised patch embedding, the
text embedding, their product and the similarity, through two 3x3 convolutions, and predicts a match
logit (trained against "the object's mask touches this patch") and the object's box edges relative to the
patch centre (L1, on matching patches). A query's answer is the box at the highest-scoring patch; its
score is that patch's probability.

Queries are the referring expressions of the visible objects plus, as often, expressions naming a colour
and shape that no object in the scene has (the right answer is "nothing"), so detection has false
positives to count.

Metrics: pointing accuracy (the highest patch of the map overlaps the object's box), for the raw
similarity map and for the head, over present queries; detection precision, recall and F1 at IoU 0.5
over all queries, a detection being a box with score >= 0.5.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from vlagym.core.io import atomic_write_text
from vlagym.envs.tabletop.objects import COLORS, SHAPES
from vlagym.vl.data import VLData, load_vl_data
from vlagym.vl.model import VLModel

HEAD_WEIGHTS = "head.safetensors"
HEAD_CONFIG = "grounding.json"


class GroundingHead(nn.Module):
    """Patch embeddings ``(B, N, E)`` on an ``(h, w)`` grid + text ``(B, E)`` -> logits ``(B, h, w)`` and
    box edges ``(B, 4, h, w)`` (x0, y0, x1, y1 minus the patch centre, in patches)."""

    def __init__(self, embed_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.embed_dim, self.hidden = embed_dim, hidden
        self.net = nn.Sequential(
            nn.Conv2d(3 * embed_dim + 1, hidden, 3, padding=1), nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.GELU(),
            nn.Conv2d(hidden, 5, 1),
        )

    def forward(self, patches: torch.Tensor, text: torch.Tensor, grid: tuple[int, int]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        p = F.normalize(patches.float(), dim=-1)
        t = F.normalize(text.float(), dim=-1)[:, None].expand_as(p)
        sim = (p * t).sum(-1, keepdim=True)
        x = torch.cat([p, t, p * t, sim], -1)  # (B, N, 3E + 1)
        b = x.shape[0]
        x = x.transpose(1, 2).reshape(b, -1, *grid)
        out = self.net(x)
        return out[:, 0], out[:, 1:]


def similarity_map(patches: torch.Tensor, text: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Cosine similarity of every patch with the text: ``(B, h, w)``."""
    s = (F.normalize(patches.float(), dim=-1) * F.normalize(text.float(), dim=-1)[:, None]).sum(-1)
    return s.view(-1, *grid)


# --- queries --------------------------------------------------------------------------------------------------
@dataclass
class Query:
    image: int
    text: str
    box: list[int] | None  # x0, y0, x1, y1 in pixels (exclusive); None: nothing in the scene matches
    obj: int | None


def make_queries(data: VLData, seed: int, absent_per_image: int = 1) -> list[Query]:
    """One referring expression per visible object (drawn with ``seed``) and ``absent_per_image`` expressions
    naming no object of the scene."""
    rng = np.random.default_rng([seed, 31])
    out = []
    for i in range(len(data)):
        objs = data.objects(i)
        for key, exprs in sorted(data.meta[i]["referring"].items(), key=lambda kv: int(kv[0])):
            o = objs[int(key)]
            out.append(Query(i, str(exprs[int(rng.integers(len(exprs)))]), o.box, o.index))
        present = {(o.color, o.shape) for o in objs}
        absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
        for k in rng.choice(len(absent), size=min(absent_per_image, len(absent)), replace=False):
            out.append(Query(i, f"the {absent[k][0]} {absent[k][1]}", None, None))
    return out


def patch_targets(data: VLData, queries: list[Query], grid: tuple[int, int]) -> torch.Tensor:
    """``(Q, h, w)``: 1 where the queried object's mask touches the patch."""
    size = data.masks.shape[1:]
    ph, pw = size[0] // grid[0], size[1] // grid[1]
    out = torch.zeros(len(queries), *grid)
    for q, query in enumerate(queries):
        if query.obj is None:
            continue
        m = data.masks[query.image] == query.obj
        out[q] = torch.from_numpy(m.reshape(grid[0], ph, grid[1], pw).any((1, 3)).astype(np.float32))
    return out


def box_targets(queries: list[Query], grid: tuple[int, int], patch: tuple[int, int]) -> torch.Tensor:
    """``(Q, 4, h, w)``: the box edges minus each patch's centre, in patches (zeros for absent queries)."""
    cy = (torch.arange(grid[0]).float() + 0.5)[:, None].expand(grid)
    cx = (torch.arange(grid[1]).float() + 0.5)[None, :].expand(grid)
    out = torch.zeros(len(queries), 4, *grid)
    for q, query in enumerate(queries):
        if query.box is not None:
            x0, y0, x1, y1 = query.box
            out[q] = torch.stack([x0 / patch[1] - cx, y0 / patch[0] - cy, x1 / patch[1] - cx, y1 / patch[0] - cy])
    return out


# --- features ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def image_features(model: VLModel, images: np.ndarray, batch: int = 128) -> tuple[torch.Tensor, tuple[int, int]]:
    feats, grid = [], None
    for i in tqdm(range(0, len(images), batch), desc="patch features", leave=False, dynamic_ncols=True):
        _, tokens, grid = model.patch_features(images[i:i + batch])
        feats.append(tokens.half())
    return torch.cat(feats), grid


@torch.no_grad()
def text_features(model: VLModel, texts: list[str]) -> torch.Tensor:
    unique = sorted(set(texts))
    emb = torch.cat([model.encode_text(unique[i:i + 256]) for i in range(0, len(unique), 256)])
    index = {t: k for k, t in enumerate(unique)}
    return emb[[index[t] for t in texts]]


# --- boxes and metrics -------------------------------------------------------------------------------------------
def decode(logits: torch.Tensor, edges: torch.Tensor, patch: tuple[int, int]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best patch ``(B, 2)`` (row, col), its score ``(B,)`` and box ``(B, 4)`` in pixels."""
    b, h, w = logits.shape
    flat = logits.reshape(b, -1)
    k = flat.argmax(1)
    r, c = k // w, k % w
    e = edges[torch.arange(b), :, r, c]  # (B, 4)
    centre = torch.stack([(c + 0.5), (r + 0.5), (c + 0.5), (r + 0.5)], 1).float()
    scale = torch.tensor([patch[1], patch[0], patch[1], patch[0]], dtype=torch.float32)
    box = (e + centre) * scale
    return torch.stack([r, c], 1).numpy(), torch.sigmoid(flat.max(1).values).numpy(), box.numpy()


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def patch_hits(cells: np.ndarray, boxes: list, patch: tuple[int, int]) -> np.ndarray:
    """Whether each pointed patch ``(row, col)`` overlaps its box."""
    hits = []
    for (r, c), box in zip(cells, boxes):
        x0, y0 = c * patch[1], r * patch[0]
        hits.append(x0 < box[2] and x0 + patch[1] > box[0] and y0 < box[3] and y0 + patch[0] > box[1])
    return np.array(hits, dtype=bool)


def detection_scores(scores: np.ndarray, boxes: np.ndarray, queries: list[Query], threshold: float = 0.5,
                     iou_threshold: float = 0.5) -> dict[str, float]:
    tp = fp = fn = 0
    for s, box, q in zip(scores, boxes, queries):
        detected = s >= threshold
        good = q.box is not None and iou(box, q.box) >= iou_threshold
        tp += detected and good
        fp += detected and not good
        fn += q.box is not None and not (detected and good)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


# --- train and evaluate ------------------------------------------------------------------------------------------
@dataclass
class GroundingConfig:
    """Training settings of the grounding head (``vlagym vl-ground``)."""

    steps: int = 1500
    """Head training steps."""
    batch_size: int = 256
    """Queries per step."""
    lr: float = 2e-3
    """Peak learning rate (AdamW, one-cycle schedule)."""
    hidden: int = 64
    """Hidden channels of the head."""
    box_weight: float = 1.0
    """Weight of the box regression loss beside the match-map loss."""
    seed: int = 0
    """Seeds the head's weights, the queries and the batches."""


def _patch(model: VLModel) -> tuple[int, int]:
    p = model.clip.visual.patch_size
    return (p, p) if isinstance(p, int) else tuple(p)


def train_grounding(model_dir: str | os.PathLike, data_dir: str, eval_dir: str | None, out: str | os.PathLike,
                    cfg: GroundingConfig | None = None) -> dict[str, Any]:
    """Train the head on ``data_dir`` over the frozen model in ``model_dir``; evaluate on ``eval_dir``;
    write ``out/head.safetensors``, ``out/grounding.json`` (with the metrics)."""
    cfg = cfg or GroundingConfig()
    torch.manual_seed(cfg.seed)
    model = VLModel.load(model_dir).eval()
    patch = _patch(model)
    data = load_vl_data(data_dir)
    feats, grid = image_features(model, data.images)
    queries = make_queries(data, cfg.seed)
    texts = text_features(model, [q.text for q in queries])
    targets, edges = patch_targets(data, queries, grid), box_targets(queries, grid, patch)
    head = GroundingHead(texts.shape[1], cfg.hidden)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    image_of = torch.tensor([q.image for q in queries])
    gen = torch.Generator().manual_seed(cfg.seed)
    bar = tqdm(range(cfg.steps), desc="grounding head", dynamic_ncols=True)
    for _ in bar:
        idx = torch.randint(len(queries), (cfg.batch_size,), generator=gen)
        logits, pred = head(feats[image_of[idx]], texts[idx], grid)
        t = targets[idx]
        # Positive patches are rare (an object covers one to four of 64): weight them up.
        pos_weight = torch.tensor(float((t.numel() - t.sum()) / t.sum().clamp(min=1))).clamp(max=20)
        loss = F.binary_cross_entropy_with_logits(logits, t, pos_weight=pos_weight)
        m = t[:, None].expand_as(pred)
        box_loss = (F.l1_loss(pred, edges[idx], reduction="none") * m).sum() / m.sum().clamp(min=1)
        total = loss + cfg.box_weight * box_loss
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        sched.step()
        bar.set_postfix(bce=f"{loss.item():.3f}", box=f"{box_loss.item():.3f}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{HEAD_WEIGHTS}.tmp"
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(tmp))
    os.replace(tmp, out / HEAD_WEIGHTS)
    result: dict[str, Any] = {"model": os.path.relpath(Path(model_dir).resolve(), out.resolve()),
                              "embed_dim": int(texts.shape[1]), "hidden": cfg.hidden, "config": cfg.__dict__,
                              "train_queries": len(queries)}
    if eval_dir:
        result["eval"] = evaluate_grounding(model, head, load_vl_data(eval_dir), cfg.seed)
    atomic_write_text(out / HEAD_CONFIG, json.dumps(result, indent=2))
    return result


@torch.no_grad()
def evaluate_grounding(model: VLModel, head: GroundingHead | None, data: VLData, seed: int = 0) -> dict[str, Any]:
    """Pointing accuracy of the raw similarity map (and of the head), detection P/R/F1 at IoU 0.5."""
    patch = _patch(model)
    feats, grid = image_features(model, data.images)
    queries = make_queries(data, seed + 1)
    texts = text_features(model, [q.text for q in queries])
    image_of = torch.tensor([q.image for q in queries])
    present = np.array([q.box is not None for q in queries])
    boxes = [q.box for q in queries if q.box is not None]
    sims = similarity_map(feats[image_of], texts, grid)
    cells, _, _ = decode(sims, torch.zeros(len(queries), 4, *grid), patch)
    out: dict[str, Any] = {"queries": len(queries), "present": int(present.sum()),
                           "pointing_similarity_map": round(float(patch_hits(cells[present], boxes, patch).mean()), 4)}
    # Chance: the share of patches a random pick would put on the object.
    out["pointing_chance"] = round(float(np.mean([
        patch_hits(np.array([[r, c] for r in range(grid[0]) for c in range(grid[1])]), [b] * (grid[0] * grid[1]),
                   patch).mean() for b in boxes])), 4)
    if head is not None:
        logits, edges = [], []
        for i in range(0, len(queries), 512):
            lg, ed = head(feats[image_of[i:i + 512]], texts[i:i + 512], grid)
            logits.append(lg)
            edges.append(ed)
        cells, scores, pred = decode(torch.cat(logits), torch.cat(edges), patch)
        out["pointing_head"] = round(float(patch_hits(cells[present], boxes, patch).mean()), 4)
        out["detection@0.5"] = detection_scores(scores, pred, queries)
        out["mean_iou_present"] = round(float(np.mean([iou(p, q.box) for p, q in zip(pred, queries) if q.box])), 4)
    return out


# --- one image, one query ------------------------------------------------------------------------------------------
class Grounder:
    """A model folder and (optionally) a trained head: ``locate(image, query)``."""

    def __init__(self, run_or_model: str | os.PathLike) -> None:
        path = Path(run_or_model)
        head_dir = path / "grounding" if (path / "grounding" / HEAD_CONFIG).exists() else None
        if (path / HEAD_CONFIG).exists():
            head_dir = path
        if head_dir is not None:
            info = json.loads((head_dir / HEAD_CONFIG).read_text())
            model_dir = (head_dir / info["model"]).resolve()
        else:
            model_dir = path / "model" if (path / "model").is_dir() else path
        self.model = VLModel.load(model_dir).eval()
        self.head = None
        if head_dir is not None:
            self.head = GroundingHead(info["embed_dim"], info["hidden"])
            self.head.load_state_dict(load_file(str(head_dir / HEAD_WEIGHTS)))
            self.head.eval()

    @torch.no_grad()
    def locate(self, image: np.ndarray, query: str) -> dict[str, Any]:
        """``image`` uint8 (H, W, 3) of any size -> heat map (h, w) in [0, 1], box in the image's pixels, score."""
        from PIL import Image

        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
        size = self.model.image_size
        small = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
        _, tokens, grid = self.model.patch_features(small[None])
        text = self.model.encode_text([query])
        patch = _patch(self.model)
        sx, sy = image.shape[1] / size, image.shape[0] / size
        if self.head is None:
            heat = similarity_map(tokens, text, grid)[0]
            _, score, _ = decode(heat[None], torch.zeros(1, 4, *grid), patch)
            heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp(min=1e-6)
            return {"heat": heat.numpy(), "box": None, "score": None}
        logits, edges = self.head(tokens, text, grid)
        _, score, box = decode(logits, edges, patch)
        b = box[0] * np.array([sx, sy, sx, sy])
        return {"heat": torch.sigmoid(logits[0]).numpy(), "box": b.tolist(), "score": float(score[0])}


def draw(image: np.ndarray, result: dict[str, Any], query: str, scale: int = 4):
    """The image (upscaled ``scale`` times) with the heat map blended over it and the box drawn; a PIL image."""
    from PIL import Image, ImageDraw

    h, w = image.shape[:2]
    base = Image.fromarray(image).resize((w * scale, h * scale), Image.NEAREST)
    heat = Image.fromarray((result["heat"] * 255).astype(np.uint8)).resize(base.size, Image.BILINEAR)
    v = np.asarray(heat, dtype=np.float32) / 255.0
    colour = np.stack([np.clip(1.5 - abs(4 * v - 3), 0, 1), np.clip(1.5 - abs(4 * v - 2), 0, 1),
                       np.clip(1.5 - abs(4 * v - 1), 0, 1)], -1)  # a jet-like colour ramp
    blended = (0.55 * np.asarray(base, dtype=np.float32) + 0.45 * 255 * colour).astype(np.uint8)
    out = Image.fromarray(blended)
    d = ImageDraw.Draw(out)
    label = query
    if result.get("box") is not None:
        x0, y0, x1, y1 = (v * scale for v in result["box"])
        d.rectangle([x0, y0, x1, y1], outline=(255, 255, 255), width=2)
        label += f"  (score {result['score']:.2f})"
    d.text((4, 4), label, fill=(255, 255, 255))
    return out
