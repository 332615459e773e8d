"""Image captioning on the vl towers (``vlagym caption-train``): a small Transformer decoder over ViT patches.

The decoder cross-attends to the vision tower's pooled and patch embeddings (``VLModel.patch_features``, in
the joint space) and predicts the caption word by word over a word vocabulary built from the training captions
(``vlagym.vl.parser.words_of``: lower-case words and punctuation). The vision tower comes from a vl-train model
(``vl_model=``), frozen by default (its features are computed once), or is trained from scratch with the decoder.

Targets: ``list`` trains on each image's object-list caption ("a table with a red cube, a blue bowl and a
green cylinder"), the one fact that names every visible object; ``all`` draws any of the image's captions.
Evaluation decodes greedily on held-out scenes and scores against all of each image's true captions (every
caption vl-data rendered for it is a reference): BLEU-4, ROUGE-L and CIDEr-D (``vlagym.vl.text_metrics``).
The blind baseline beside it is the template prior: the training set's most frequent caption, given to every
image.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from vlagym.core.io import atomic_write_text, read_json
from vlagym.vl.data import VLData, load_vl_data
from vlagym.vl.model import VLModel, resolve_model_dir
from vlagym.vl.parser import words_of
from vlagym.vl.text_metrics import caption_report

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
WEIGHTS = "captioner.safetensors"
CONFIG = "captioner.json"
TARGETS = ("list", "all")


@dataclass
class CaptionTrainConfig:
    """Settings of ``vlagym caption-train``."""

    data: str = ""
    """Training vl-data folder."""
    eval_data: str | None = None
    """Held-out vl-data folder (test split) for BLEU-4, ROUGE-L and CIDEr-D."""
    out: str = "runs/captioner"
    """Run folder: captioner.safetensors, captioner.json, vision/ (when the tower trains), report.json."""
    vl_model: str | None = None
    """vl-train run or model folder whose vision tower to use (None: a fresh tower trained with the decoder)."""
    freeze_vision: bool = True
    """Keep a vl_model's vision tower fixed (features computed once); ignored without vl_model."""
    targets: str = "list"
    """list: each image's object-list caption; all: any of its captions."""
    steps: int = 1500
    """Optimisation steps."""
    batch_size: int = 64
    """Images per step."""
    lr: float = 1e-3
    """Peak learning rate (AdamW, warm-up then cosine)."""
    layers: int = 2
    """Decoder layers."""
    heads: int = 4
    """Attention heads."""
    max_words: int = 28
    """Longest caption, in words and punctuation, with the end token."""
    seed: int = 0
    """Seeds the weights and the batches."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("caption-train needs data=<vl-data folder>")
        if self.targets not in TARGETS:
            raise ValueError(f"targets must be one of {TARGETS}, got {self.targets!r}")
        for name in ("steps", "batch_size", "layers", "heads", "max_words"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


class Vocab:
    def __init__(self, words: list[str]) -> None:
        self.itos = [PAD, BOS, EOS, UNK] + [w for w in words if w not in (PAD, BOS, EOS, UNK)]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, captions: list[str]) -> Vocab:
        if not captions:
            raise ValueError("the caption set is empty: nothing to build a vocabulary from")
        counts = Counter(w for c in captions for w in words_of(c))
        return cls(sorted(counts))

    def encode(self, text: str, max_words: int) -> list[int]:
        ids = [self.stoi.get(w, self.stoi[UNK]) for w in words_of(text)][: max_words - 1]
        return [self.stoi[BOS]] + ids + [self.stoi[EOS]]

    def decode(self, ids: list[int]) -> str:
        words = []
        for i in ids:
            if i == self.stoi[EOS]:
                break
            if i not in (self.stoi[PAD], self.stoi[BOS]):
                words.append(self.itos[i])
        return " ".join(words).replace(" ,", ",").replace(" .", ".")


class CaptionDecoder(nn.Module):
    """Word ids ``(B, T)`` and image memory ``(B, M, E)`` -> next-word logits ``(B, T, V)``."""

    def __init__(self, vocab_size: int, embed_dim: int, layers: int = 2, heads: int = 4, max_len: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.pos = nn.Parameter(torch.zeros(max_len + 1, embed_dim))
        self.memory_pos = nn.Parameter(torch.zeros(128, embed_dim))
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.memory_pos, std=0.02)
        layer = nn.TransformerDecoderLayer(embed_dim, heads, 4 * embed_dim, dropout=0.1, batch_first=True,
                                           norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.norm = nn.LayerNorm(embed_dim)
        self.out = nn.Linear(embed_dim, vocab_size)

    def forward(self, ids: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        x = self.embed(ids) + self.pos[:t]
        mem = memory + self.memory_pos[: memory.shape[1]]
        causal = torch.triu(torch.full((t, t), float("-inf"), device=ids.device), 1)
        return self.out(self.norm(self.decoder(x, mem, tgt_mask=causal)))


def image_memory(vl: VLModel, images) -> torch.Tensor:
    """The pooled embedding followed by the patch embeddings: ``(B, 1 + N, E)``."""
    pooled, tokens, _ = vl.patch_features(images)
    return torch.cat([pooled[:, None], tokens], 1)


class Captioner(nn.Module):
    """A vision tower (``VLModel``) and a ``CaptionDecoder``: ``caption(images) -> list[str]``."""

    def __init__(self, vl: VLModel, vocab: Vocab, layers: int = 2, heads: int = 4, max_words: int = 28) -> None:
        super().__init__()
        self.vl, self.vocab, self.max_words = vl, vocab, max_words
        dim = int(vl.clip.visual.output_dim)
        self.decoder = CaptionDecoder(len(vocab.itos), dim, layers, heads, max_words + 1)

    def loss(self, memory: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(ids[:, :-1], memory)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                               ignore_index=self.vocab.stoi[PAD])

    @torch.no_grad()
    def generate(self, memory: torch.Tensor) -> list[str]:
        """Greedy decoding."""
        was = self.training
        self.eval()
        ids = torch.full((len(memory), 1), self.vocab.stoi[BOS], dtype=torch.long, device=memory.device)
        done = torch.zeros(len(memory), dtype=torch.bool, device=memory.device)
        for _ in range(self.max_words):
            nxt = self.decoder(ids, memory)[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, self.vocab.stoi[PAD]), nxt)
            ids = torch.cat([ids, nxt[:, None]], 1)
            done |= nxt == self.vocab.stoi[EOS]
            if done.all():
                break
        self.train(was)
        return [self.vocab.decode(row[1:].tolist()) for row in ids.cpu()]

    @torch.no_grad()
    def caption(self, images: np.ndarray, batch: int = 128) -> list[str]:
        out = []
        for i in range(0, len(images), batch):
            out += self.generate(image_memory(self.vl, images[i:i + batch]))
        return out


# --- targets and baselines -----------------------------------------------------------------------------------------
def target_captions(data: VLData, targets: str) -> list[list[str]]:
    """Per image, the captions training may draw."""
    out = []
    for m in data.meta:
        if targets == "list":
            out.append([c for f, c in zip(m["facts"], m["captions"]) if f["kind"] == "list"] or m["captions"])
        else:
            out.append(list(m["captions"]))
    return out


def template_prior(data: VLData) -> str:
    """The blind baseline: the most frequent training caption (ties broken alphabetically)."""
    counts = Counter(c for m in data.meta for c in m["captions"])
    if not counts:
        raise ValueError("the caption set is empty: no training captions for the template prior")
    return min(counts, key=lambda c: (-counts[c], c))


def references(data: VLData) -> list[list[str]]:
    refs = [list(m["captions"]) for m in data.meta]
    if not refs or any(not r for r in refs):
        raise ValueError("the caption set is empty: held-out images need at least one caption each")
    return refs


def evaluate_captioner(captioner: Captioner, data: VLData, prior: str) -> dict[str, Any]:
    """Captioner and template prior, BLEU-4 / ROUGE-L / CIDEr-D against every true caption of each image."""
    refs = references(data)
    hyps = captioner.caption(data.images)
    return {"captioner": caption_report(hyps, refs), "template_prior": caption_report([prior] * len(refs), refs),
            "prior_caption": prior,
            "examples": [{"caption": h, "references": r[:3]} for h, r in zip(hyps[:8], refs[:8])]}


# --- training ---------------------------------------------------------------------------------------------------
def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _pad(rows: list[list[int]]) -> torch.Tensor:
    t = max(len(r) for r in rows)
    return torch.tensor([r + [0] * (t - len(r)) for r in rows])


def train_captioner(cfg: CaptionTrainConfig) -> dict[str, Any]:
    """Train the decoder (and a fresh or unfrozen tower); evaluate; write the run folder; return the report."""
    torch.manual_seed(cfg.seed)
    device = _resolve_device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t_cpu = time.process_time()
    data = load_vl_data(cfg.data)
    eval_data = load_vl_data(cfg.eval_data) if cfg.eval_data else None
    if len(data) == 0:
        raise ValueError(f"{cfg.data} holds no images: the caption set is empty")
    targets = target_captions(data, cfg.targets)
    vocab = Vocab.build([c for caps in targets for c in caps] + [c for m in data.meta for c in m["captions"]])
    if cfg.vl_model:
        vl = VLModel.load(resolve_model_dir(cfg.vl_model))
        frozen = cfg.freeze_vision
    else:
        from vlagym.vl.model import DEFAULT_ARCH, DEFAULT_MODEL_CFG

        vl = VLModel(DEFAULT_ARCH, json.loads(json.dumps(DEFAULT_MODEL_CFG)), int(data.images.shape[1]))
        frozen = False
    if int(data.images.shape[1]) != vl.image_size:
        raise ValueError(f"{cfg.data} has {data.images.shape[1]} px images; the vision tower takes {vl.image_size}")
    model = Captioner(vl, vocab, cfg.layers, cfg.heads, cfg.max_words).to(device)
    for p in model.vl.parameters():
        p.requires_grad_(not frozen)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    cached = None
    if frozen:
        model.vl.eval()
        with torch.no_grad():
            cached = torch.cat([image_memory(model.vl, data.images[i:i + 256]) for i in range(0, len(data), 256)])
    warmup = max(1, cfg.steps // 20)
    history = []
    bar = tqdm(range(cfg.steps), desc="caption-train", dynamic_ncols=True)
    for step in bar:
        lr = cfg.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        rng = np.random.default_rng([cfg.seed, step])
        idx = rng.choice(len(data), size=cfg.batch_size, replace=len(data) < cfg.batch_size)
        ids = _pad([vocab.encode(targets[i][int(rng.integers(len(targets[i])))], cfg.max_words) for i in idx])
        memory = cached[idx].to(device) if cached is not None else image_memory(model.vl, data.images[idx])
        loss = model.loss(memory, ids.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % 50 == 0 or step == 0:
            history.append({"step": step + 1, "loss": round(loss.item(), 4)})
    bar.close()
    model.eval()
    report: dict[str, Any] = {"config": asdict(cfg), "vocab_size": len(vocab.itos), "train_images": len(data),
                              "frozen_vision": frozen, "history": history}
    if eval_data is not None:
        report["eval"] = evaluate_captioner(model, eval_data, template_prior(data))
        report["eval_images"] = len(eval_data)
    report["cpu_seconds"] = round(time.process_time() - t_cpu, 1)
    save_captioner(model, out, {"vl_model": str(resolve_model_dir(cfg.vl_model)) if cfg.vl_model and frozen
                                else None})
    atomic_write_text(out / "report.json", json.dumps(report, indent=2))
    return report


def save_captioner(model: Captioner, out: Path, extra: dict[str, Any]) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.decoder.state_dict().items()}
    tmp = out / f".{WEIGHTS}.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, out / WEIGHTS)
    if extra.get("vl_model") is None:  # the tower trained here: save it beside the decoder
        model.vl.save(out / "vision")
        extra = {**extra, "vl_model": "vision"}
    layers = len(model.decoder.decoder.layers)
    heads = model.decoder.decoder.layers[0].self_attn.num_heads
    atomic_write_text(out / CONFIG, json.dumps({"vocab": model.vocab.itos, "layers": layers, "heads": heads,
                                                 "max_words": model.max_words, **extra}, indent=2))


def load_captioner(directory: str | os.PathLike, device: str = "cpu") -> Captioner:
    directory = Path(directory)
    if not (directory / CONFIG).exists():
        raise FileNotFoundError(f"{directory} holds no {CONFIG}; pass a caption-train run folder")
    cfg = read_json(directory / CONFIG)
    vl_dir = Path(cfg["vl_model"])
    vl = VLModel.load(vl_dir if vl_dir.is_absolute() else directory / vl_dir)
    vocab = Vocab(cfg["vocab"][4:])
    model = Captioner(vl, vocab, cfg["layers"], cfg["heads"], cfg["max_words"])
    model.decoder.load_state_dict(load_file(str(directory / WEIGHTS)))
    return model.to(device).eval()
