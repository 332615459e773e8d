"""Contrastive pre-training on vl-data pairs (``vlagym vl-train``) and its held-out evaluation.

Each step draws ``batch_size`` training images; each gets one of its true captions, re-worded with a
random template, and (with ``hard_negatives``) one false variant of that caption that differs in one
colour, shape or relation word or in which colour goes with which shape. The loss is CLIP's symmetric
InfoNCE with open_clip's learned temperature; hard negatives join the image-to-text softmax.

Evaluation (``evaluate``) on held-out scenes: every image against one canonical caption per image
("a red cube, a blue bowl and a green cylinder", objects left to right) for image-to-text and
text-to-image Recall@1/5/10 and MRR — images whose canonical captions are the same string count as
positives of each other — and the attribute-binding probe: how often a true "a red cube and a blue
bowl" outscores its colour-swapped "a blue cube and a red bowl".

With ``itm``/``mlm``, BLIP's image-text matching (hard negatives) and masked language modelling join the
contrastive loss through a small fusion encoder (``vlagym.vl.fusion``); the saved model keeps the towers.

Batches are functions of (seed, step), so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vlagym.core.io import atomic_write_text
from vlagym.core.resume import check_same_settings
from vlagym.core.safe_load import torch_load_weights
from vlagym.envs.tabletop.objects import COLORS, SHAPES
from vlagym.vl.captions import TEMPLATES, Fact, binding_pair, hard_negatives
from vlagym.vl.data import VLData, load_vl_data
from vlagym.vl.metrics import info_nce, retrieval_report
from vlagym.vl.model import DEFAULT_ARCH, DEFAULT_MODEL_CFG, VLModel


@dataclass
class VLTrainConfig:
    """Contrastive pre-training settings (``key=value`` overrides on the command line)."""

    data: str = ""
    """Training vl-data folder."""
    eval_data: str | None = None
    """Held-out vl-data folder (another seed split) for retrieval and the binding probe."""
    out: str = "runs/vl"
    """Run folder: model/ (the pre-trained open_clip model), checkpoint.pt, metrics.json."""
    arch: str = DEFAULT_ARCH
    """open_clip architecture name (open_clip.list_models(), or vlagym-clip-tiny)."""
    model_cfg: dict[str, Any] | None = field(default_factory=lambda: json.loads(json.dumps(DEFAULT_MODEL_CFG)))
    """open_clip config overrides (embed_dim, vision_cfg, text_cfg each replaced whole); None keeps the
    architecture's own. The default is a CPU-sized ViT with 8-px patches."""
    pretrained: str | None = None
    """open_clip pretrained tag or file to fine-tune from (None: random init)."""
    steps: int = 300
    """Optimisation steps."""
    batch_size: int = 64
    """Images per step."""
    hard_negatives: bool = True
    """Add one false variant of each caption to the image-to-text softmax."""
    itm: bool = False
    """Add BLIP's image-text matching loss with hard negatives (``vlagym.vl.fusion``)."""
    mlm: bool = False
    """Add masked language modelling of the captions through the fusion encoder (``vlagym.vl.fusion``)."""
    fusion_weight: float = 1.0
    """Weight of each of the ITM and MLM losses beside the contrastive one."""
    lr: float = 5e-4
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.1
    """AdamW weight decay."""
    warmup: int = 30
    """Linear warm-up steps before the cosine decay."""
    seed: int = 0
    """Seeds the weights and the batches."""
    eval_every: int = 100
    """Evaluate on eval_data every this many steps (and at the start and end)."""
    checkpoint_every: int = 100
    """Write the resumable checkpoint every this many steps."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("vl-train needs data=<vl-data folder>")
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 for a contrastive loss, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# --- batches -----------------------------------------------------------------------------------------------------
def sample_batch(data: VLData, step: int, seed: int, batch_size: int, negatives: bool, details: bool = False):
    """Images ``(B, H, W, 3)``, one true caption each, and hard-negative captions (possibly fewer than B).

    ``details``: a fourth item, ``{"facts", "objects", "negatives", "negative_facts", "owners"}`` — each
    caption's fact, each image's objects, and the hard negatives (text and fact) with the batch row of the
    image each is false of."""
    rng = np.random.default_rng([seed, step])
    idx = rng.choice(len(data), size=batch_size, replace=len(data) < batch_size)
    texts, negs, owners, facts_out, objects, neg_facts = [], [], [], [], [], []
    for row, i in enumerate(idx):
        facts = data.facts(int(i))
        fact = facts[int(rng.integers(len(facts)))]
        fact.template = int(rng.integers(len(TEMPLATES[fact.kind])))
        texts.append(fact.text())
        objs = data.objects(int(i))
        facts_out.append(fact)
        objects.append(objs)
        if negatives:
            cands = hard_negatives(fact, objs, rng, tuple(COLORS), SHAPES)
            if cands:
                neg = cands[int(rng.integers(len(cands)))]
                negs.append(neg.text())
                neg_facts.append(neg)
                owners.append(row)
    if details:
        return data.images[idx], texts, negs, {"facts": facts_out, "objects": objects, "negatives": negs,
                                               "negative_facts": neg_facts, "owners": owners}
    return data.images[idx], texts, negs


# --- evaluation ----------------------------------------------------------------------------------------------------
def canonical_caption(data: VLData, i: int) -> str:
    """The image's object list, left to right, no sizes, first template."""
    objs = sorted((o for o in data.objects(i) if o.visible), key=lambda o: o.x)
    from vlagym.vl.captions import phrase_of

    return Fact("list", [phrase_of(o) for o in objs]).text()


@torch.no_grad()
def embed_images(model: VLModel, images: np.ndarray, batch: int = 128) -> torch.Tensor:
    return torch.cat([model.encode_image(images[i:i + batch]) for i in range(0, len(images), batch)])


@torch.no_grad()
def embed_texts(model: VLModel, texts: list[str], batch: int = 256) -> torch.Tensor:
    return torch.cat([model.encode_text(texts[i:i + batch]) for i in range(0, len(texts), batch)])


@torch.no_grad()
def evaluate(model: VLModel, data: VLData, seed: int = 0) -> dict[str, Any]:
    """Retrieval (Recall@1/5/10, MRR, both directions) and the attribute-binding probe on ``data``."""
    was_training = model.training
    model.eval()
    captions = [canonical_caption(data, i) for i in range(len(data))]
    img = torch.nn.functional.normalize(embed_images(model, data.images), dim=-1)
    txt = torch.nn.functional.normalize(embed_texts(model, captions), dim=-1)
    sim = (img @ txt.T).cpu().numpy()
    cap = np.array(captions, dtype=object)
    positive = cap[:, None] == cap[None, :]
    out: dict[str, Any] = {k: round(v, 4) for k, v in retrieval_report(sim, positive).items()}
    out["images"] = len(data)
    out["distinct_captions"] = len(set(captions))
    # Chance levels of the same metrics with these duplicates: a random ranking's expectation.
    out["chance_i2t_R@1"] = round(float(positive.sum(1).mean() / len(data)), 4)
    rng = np.random.default_rng([seed, 77])
    rows, trues, swaps = [], [], []
    for i in range(len(data)):
        pair = binding_pair(data.objects(i), rng)
        if pair:
            rows.append(i)
            trues.append(pair[0])
            swaps.append(pair[1])
    if rows:
        a = torch.nn.functional.normalize(embed_texts(model, trues), dim=-1)
        b = torch.nn.functional.normalize(embed_texts(model, swaps), dim=-1)
        im = img[rows]
        out["binding_acc"] = round(float(((im * a).sum(-1) > (im * b).sum(-1)).float().mean()), 4)
        out["binding_n"] = len(rows)
    model.train(was_training)
    return out


# --- training ------------------------------------------------------------------------------------------------------
def _lr_at(cfg: VLTrainConfig, step: int) -> float:
    from vlagym.core.schedules import warmup_cosine

    return warmup_cosine(step, cfg.lr, cfg.warmup, cfg.steps)


def train_vl(cfg: VLTrainConfig, trust_pickle: bool | None = None) -> dict[str, Any]:
    """Train (resuming from ``out/checkpoint.pt`` when its settings match); returns the metrics.

    The checkpoint holds tensors, numbers and strings only and loads with ``torch.load(weights_only=True)``;
    one that needs unpickling is refused unless ``trust_pickle`` (``--trust-pickle``)."""
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = json.loads(json.dumps({k: v for k, v in asdict(cfg).items() if k not in ("out", "device")}))
    if not (cfg.itm or cfg.mlm):  # runs from before these objectives existed resume with the same settings
        for k in ("itm", "mlm", "fusion_weight"):
            settings.pop(k)
    data = load_vl_data(cfg.data)
    eval_data = load_vl_data(cfg.eval_data) if cfg.eval_data else None
    size = int(data.images.shape[1])
    patch = (cfg.model_cfg or {}).get("vision_cfg", {}).get("patch_size")
    if patch and size % int(patch):
        raise ValueError(f"{cfg.data} has {size} px images, not a multiple of the ViT patch size {patch}; "
                         f"set model_cfg.vision_cfg.patch_size or render another --image-size")
    model = VLModel(cfg.arch, cfg.model_cfg, size, cfg.pretrained).to(device)
    fusion = None
    named = list(model.clip.named_parameters())
    if cfg.itm or cfg.mlm:
        from vlagym.vl.fusion import FusionEncoder, caption_vocab

        words = [c for m in data.meta for c in m["captions"]] + list(COLORS) + list(SHAPES)
        fusion = FusionEncoder(int(model.clip.transformer.width), int(model.clip.visual.output_dim),
                               caption_vocab(model, words)).to(device)
        named += [(f"fusion.{n}", p) for n, p in fusion.named_parameters()]
    decay = [p for n, p in named if p.ndim >= 2 and "embedding" not in n]
    other = [p for n, p in named if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=cfg.lr)
    metrics: dict[str, Any] = {"config": settings, "history": [], "eval": []}
    start = 0
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists():
        ckpt = torch_load_weights(ckpt_path, trust_pickle=trust_pickle, map_location=device)
        check_same_settings(out, ckpt["settings"], settings, "use another out= or the same ones")
        model.clip.load_state_dict(ckpt["model"])
        if fusion is not None:
            fusion.load_state_dict(ckpt["fusion"])
        opt.load_state_dict(ckpt["optimizer"])
        metrics, start = ckpt["metrics"], int(ckpt["step"])
    elif eval_data is not None:
        metrics["zero_shot"] = {"step": 0, **evaluate(model, eval_data, cfg.seed)}
        metrics["eval"].append(metrics["zero_shot"])

    def save_checkpoint(step: int) -> None:
        tmp = out / ".checkpoint.pt.tmp"
        state = {"settings": settings, "model": model.clip.state_dict(), "optimizer": opt.state_dict(),
                 "metrics": metrics, "step": step}
        if fusion is not None:
            state["fusion"] = fusion.state_dict()
        torch.save(state, tmp)
        os.replace(tmp, ckpt_path)

    model.train()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="vl-train", dynamic_ncols=True)
    t0 = time.time()
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = _lr_at(cfg, step)
        images, texts, negs, details = sample_batch(data, step, cfg.seed, cfg.batch_size,
                                                    cfg.hard_negatives or cfg.itm, details=True)
        if cfg.itm and not cfg.hard_negatives:  # ITM uses the hard negatives; the contrastive loss does not
            negs = []
        if fusion is not None:  # one vision pass gives the pooled embedding and the patches the fusion reads
            img, patches, _ = model.patch_features(images)
        else:
            img = model.encode_image(images)
        txt = model.encode_text(texts + negs)
        loss = info_nce(img, txt[: len(texts)], model.logit_scale, txt[len(texts):] if negs else None)
        logs = {"contrastive": loss.item()}
        if fusion is not None:
            from vlagym.vl.fusion import itm_mlm_losses

            extra = itm_mlm_losses(model, fusion, patches, texts, details, img, txt,
                                   np.random.default_rng([cfg.seed, step, 3]), cfg.itm, cfg.mlm)
            for k in ("itm", "mlm"):
                if k in extra:
                    loss = loss + cfg.fusion_weight * extra[k]
            logs.update({k: v.item() for k, v in extra.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in named], 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        bar.set_postfix(loss=f"{loss.item():.3f}", T=f"{1 / model.logit_scale.exp().item():.3f}")
        if (step + 1) % 10 == 0:
            metrics["history"].append({"step": step + 1, "loss": round(loss.item(), 4),
                                       "temperature": round(1 / model.logit_scale.exp().item(), 4),
                                       **({k: round(v, 4) for k, v in logs.items()} if fusion is not None else {})})
        last = step + 1 == cfg.steps
        if eval_data is not None and ((step + 1) % cfg.eval_every == 0 or last):
            metrics["eval"].append({"step": step + 1, **evaluate(model, eval_data, cfg.seed)})
            bar.write(f"step {step + 1}: " + ", ".join(f"{k}={v}" for k, v in metrics["eval"][-1].items()
                                                       if k.startswith(("i2t", "t2i", "binding_acc"))))
        if (step + 1) % cfg.checkpoint_every == 0 or last:
            save_checkpoint(step + 1)
    bar.close()
    metrics["train_seconds_this_run"] = round(time.time() - t0, 1)
    if metrics["eval"]:
        metrics["final"] = metrics["eval"][-1]
    model.save(out / "model", extra={"trained_on": str(cfg.data), "steps": cfg.steps,
                                     "hard_negatives": cfg.hard_negatives, "itm": cfg.itm, "mlm": cfg.mlm})
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs, values parsed as YAML; dotted keys (model_cfg.vision_cfg.width=96) nest."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"overrides are key=value pairs, got {item!r}")
        key, value = item.split("=", 1)
        parts = key.split(".")
        if parts[0] not in VLTrainConfig.__dataclass_fields__:
            raise ValueError(f"unknown vl-train setting {parts[0]!r}; known: "
                             f"{', '.join(VLTrainConfig.__dataclass_fields__)}")
        node = out
        if len(parts) > 1 and parts[0] not in out:
            out[parts[0]] = json.loads(json.dumps(DEFAULT_MODEL_CFG)) if parts[0] == "model_cfg" else {}
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out
