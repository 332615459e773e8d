"""Few-shot VQA in Flamingo's style (``vlagym vqa-fewshot``).

The vl vision tower (``VLModel``'s ViT) gives patch features; a Perceiver resampler turns them into
``latents`` tokens per image; a small causal language model over words reads an interleaved sequence

    <image> question words <answer> ANSWER <eoc> <image> question words <answer> ANSWER <eoc> ... <answer> ?

and, before each of its layers, a tanh-gated cross-attention layer (gates start at 0, so the LM starts
blind) lets each word attend to the latents of the image it follows (Flamingo's per-image masking). An
answer is one token. The model is trained on every family but ``held_out``, on sequences of 0 to
``max_shots`` examples before the query; evaluation asks held-out-family questions about test-split scenes
with 0, 4 and 8 examples of that family (from the training scenes) in context and reports accuracy per
number of shots: the in-context curve, both over every answer token (open) and over the held-out family's
own answers (options, rank classification).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from vlagym.core.io import atomic_write_text
from vlagym.vl.model import VLModel
from vlagym.vl.questions import answer_vocabulary, check_families
from vlagym.vl.vqa import SMALL_TOWERS
from vlagym.vl.vqa_data import VQAData, load_vqa_data

WEIGHTS = "fewshot_model.safetensors"
SPECIALS = ("<pad>", "<unk>", "<image>", "<answer>", "<eoc>")

@dataclass
class FewShotConfig:
    """Few-shot (Flamingo-style) settings (``key=value`` overrides on the command line)."""

    data: str = ""
    """Training vqa-data folder (its questions of the held-out family are the in-context examples)."""
    eval_data: str = ""
    """Held-out vqa-data folder (test-split scenes) whose held-out-family questions are asked."""
    out: str = "runs/fewshot"
    """Run folder: fewshot.json (the curve), config."""
    held_out: str = "query_shape"
    """The question family never trained on."""
    shots: list[int] = field(default_factory=lambda: [0, 4, 8])
    """Numbers of in-context examples to evaluate."""
    max_shots: int = 8
    """Training sequences hold 0 to this many examples before the query."""
    vision_cfg: dict[str, Any] | None = field(default_factory=lambda: json.loads(json.dumps(SMALL_TOWERS)))
    """open_clip config of the vision tower (trained from scratch with the rest)."""
    width: int = 64
    """Width of the resampler and the language model."""
    latents: int = 8
    """Resampler latents per image."""
    layers: int = 2
    """Language-model layers (each with a gated cross-attention layer before it)."""
    steps: int = 600
    """Optimisation steps."""
    batch_size: int = 8
    """Sequences per step."""
    lr: float = 2e-3
    """Peak learning rate (AdamW, cosine)."""
    eval_queries: int = 300
    """Held-out questions asked per number of shots."""
    seed: int = 0
    """Seeds the weights, the sequences and the in-context examples."""
    threads: int = 1
    """torch CPU threads (0: torch's default)."""

    def __post_init__(self) -> None:
        if not self.data or not self.eval_data:
            raise ValueError("vqa-fewshot needs data=<train vqa-data> and eval_data=<held-out vqa-data>")
        check_families([self.held_out])
        if any(s < 0 for s in self.shots) or self.max_shots < 0:
            raise ValueError(f"shots must be >= 0, got {self.shots} (max_shots {self.max_shots})")
        for name in ("width", "latents", "layers", "steps", "batch_size", "eval_queries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


class Vocab:
    """Words of the questions, and every answer as one token."""

    def __init__(self, questions: list[dict[str, Any]]) -> None:
        ws = sorted({w for q in questions for w in words(q["question"])})
        self.answers = answer_vocabulary()
        self.itos = list(SPECIALS) + ws + [f"={a}" for a in self.answers]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.answer_ids = torch.tensor([self.stoi[f"={a}"] for a in self.answers])

    def question(self, text: str) -> list[int]:
        return [self.stoi.get(w, 1) for w in words(text)]

    def answer(self, a: str) -> int:
        return self.stoi[f"={a}"]


# --- the model ----------------------------------------------------------------------------------------------------
class Resampler(nn.Module):
    """Perceiver resampler: ``latents`` learned queries attend to [patches; latents] -> ``(B, latents, D)``."""

    def __init__(self, in_dim: int, width: int, latents: int, depth: int = 2) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, width)
        self.latents = nn.Parameter(torch.randn(latents, width) * 0.02)
        self.attn = nn.ModuleList(nn.MultiheadAttention(width, max(1, width // 32), batch_first=True)
                                  for _ in range(depth))
        self.ff = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(),
                                              nn.Linear(2 * width, width)) for _ in range(depth))
        self.norm_kv = nn.ModuleList(nn.LayerNorm(width) for _ in range(depth))
        self.norm_q = nn.ModuleList(nn.LayerNorm(width) for _ in range(depth))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = self.proj(patches)
        lat = self.latents.expand(len(x), -1, -1)
        for attn, ff, nk, nq in zip(self.attn, self.ff, self.norm_kv, self.norm_q):
            q = nq(lat)
            kv = nk(torch.cat([x, lat], 1))
            lat = lat + attn(q, kv, kv, need_weights=False)[0]
            lat = lat + ff(lat)
        return lat


class GatedCrossAttention(nn.Module):
    """Words attend to image latents; the output enters through tanh gates that start at zero."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, max(1, width // 32), batch_first=True)
        self.ff = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(),
                                nn.Linear(2 * width, width))
        self.gate_attn = nn.Parameter(torch.zeros(1))
        self.gate_ff = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, media: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, D), ``media`` (B, M, D), ``mask`` (B, T, M) True where a word may not look."""
        heads = self.attn.num_heads
        m = mask.repeat_interleave(heads, 0)
        # A word before the first image sees no latent; let it attend to all and zero its output instead.
        blind = mask.all(-1, keepdim=True)
        m = m & ~blind.repeat_interleave(heads, 0)
        y = self.attn(self.norm(x), media, media, attn_mask=m, need_weights=False)[0] * (~blind)
        x = x + torch.tanh(self.gate_attn) * y
        return x + torch.tanh(self.gate_ff) * self.ff(x)


class FewShotModel(nn.Module):
    def __init__(self, vocab: Vocab, cfg: FewShotConfig, image_size: int) -> None:
        super().__init__()
        self.vocab, self.cfg = vocab, cfg
        self.vision = VLModel(model_cfg=cfg.vision_cfg, image_size=image_size)
        embed = cfg.vision_cfg["embed_dim"]
        self.resampler = Resampler(embed, cfg.width, cfg.latents)
        self.embed = nn.Embedding(len(vocab.itos), cfg.width)
        self.pos = nn.Parameter(torch.randn(512, cfg.width) * 0.02)
        self.xattn = nn.ModuleList(GatedCrossAttention(cfg.width) for _ in range(cfg.layers))
        self.lm = nn.ModuleList(nn.TransformerEncoderLayer(cfg.width, max(1, cfg.width // 32), 2 * cfg.width,
                                                           dropout=0.0, batch_first=True, norm_first=True)
                                for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width)

    def forward(self, images: np.ndarray, tokens: torch.Tensor, image_slot: torch.Tensor,
                slot_of_token: torch.Tensor) -> torch.Tensor:
        """``images`` (I, H, W, 3) of all sequences; ``tokens`` (B, T); ``image_slot`` (B, S) -> image row or -1;
        ``slot_of_token`` (B, T): the index of the last image at or before each token (-1: none). -> (B, T, V)."""
        b, t = tokens.shape
        s = image_slot.shape[1]
        _, patches, _ = self.vision.patch_features(images)
        lat = self.resampler(patches)  # (I, L, D)
        n_lat = lat.shape[1]
        media = torch.zeros(b, s, n_lat, lat.shape[2])
        valid = image_slot >= 0
        media[valid] = lat[image_slot[valid]]
        media = media.reshape(b, s * n_lat, -1)
        media_slot = torch.arange(s).repeat_interleave(n_lat)
        mask = slot_of_token[:, :, None] != media_slot[None, None, :]  # each word sees its own image only
        x = self.embed(tokens) + self.pos[:t]
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
        pad = tokens == 0
        for xa, layer in zip(self.xattn, self.lm):
            x = xa(x, media, mask)
            x = layer(x, src_mask=causal, src_key_padding_mask=pad)
        return self.norm(x) @ self.embed.weight.T


# --- sequences ------------------------------------------------------------------------------------------------------
def build_sequences(episodes: list[list[tuple[int, str, str | None]]], vocab: Vocab):
    """Each episode: (image row, question, answer) examples, the last one's answer the target (None: unknown).
    Returns tokens (B, T), image_slot (B, S), slot_of_token (B, T), the query's answer position (B,), rows."""
    rows: list[int] = []
    seqs, slots, slot_tok, query_pos = [], [], [], []
    for ep in episodes:
        toks, st, sl = [], [], []
        for k, (row, q, a) in enumerate(ep):
            sl.append(len(rows))
            rows.append(row)
            part = [vocab.stoi["<image>"], *vocab.question(q), vocab.stoi["<answer>"]]
            toks += part
            st += [k] * len(part)
            if k < len(ep) - 1:
                toks += [vocab.answer(a), vocab.stoi["<eoc>"]]
                st += [k, k]
        query_pos.append(len(toks) - 1)  # predicts the answer from the <answer> token
        seqs.append(toks)
        slots.append(sl)
        slot_tok.append(st)
    t, s = max(map(len, seqs)), max(map(len, slots))
    tokens = torch.zeros(len(seqs), t, dtype=torch.long)
    slot_of_token = torch.full((len(seqs), t), -1, dtype=torch.long)
    image_slot = torch.full((len(seqs), s), -1, dtype=torch.long)
    for i, (tk, st, sl) in enumerate(zip(seqs, slot_tok, slots)):
        tokens[i, :len(tk)] = torch.tensor(tk)
        slot_of_token[i, :len(st)] = torch.tensor(st)
        image_slot[i, :len(sl)] = torch.tensor(sl)
    return tokens, image_slot, slot_of_token, torch.tensor(query_pos), rows


def _answer_logits(model: FewShotModel, data: VQAData, episodes) -> tuple[torch.Tensor, torch.Tensor]:
    tokens, image_slot, slot_of_token, qpos, rows = build_sequences(episodes, model.vocab)
    logits = model(data.images[rows], tokens, image_slot, slot_of_token)
    return logits, qpos


def train_fewshot(cfg: FewShotConfig) -> dict[str, Any]:
    """Train on every family but ``held_out``; then the accuracy on it with each number of shots."""
    from vlagym.core.schedules import warmup_cosine

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    data, test = load_vqa_data(cfg.data), load_vqa_data(cfg.eval_data)
    train_q = [q for q in data.questions if q["family"] != cfg.held_out]
    support = [q for q in data.questions if q["family"] == cfg.held_out]
    queries = [q for q in test.questions if q["family"] == cfg.held_out]
    if not support or not queries:
        raise ValueError(f"no {cfg.held_out!r} questions in {cfg.data if not support else cfg.eval_data}")
    vocab = Vocab(data.questions + test.questions)
    model = FewShotModel(vocab, cfg, int(data.images.shape[1]))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.05)
    by_family: dict[str, list[dict]] = {}
    for q in train_q:
        by_family.setdefault(q["family"], []).append(q)
    fams = sorted(by_family)
    history = []
    t0, cpu0 = time.time(), time.process_time()
    bar = tqdm(range(cfg.steps), desc="vqa-fewshot", dynamic_ncols=True)
    model.train()
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = warmup_cosine(step, cfg.lr, 50, cfg.steps)
        rng = np.random.default_rng([cfg.seed, step, 88])
        episodes = []
        for _ in range(cfg.batch_size):
            pool = by_family[fams[int(rng.integers(len(fams)))]]  # one family per sequence, as at evaluation
            k = int(rng.integers(cfg.max_shots + 1))
            ex = [pool[int(i)] for i in rng.choice(len(pool), size=k + 1, replace=False)]
            episodes.append([(q["image_index"], q["question"], q["answer"]) for q in ex])
        logits, qpos = _answer_logits(model, data, episodes)
        tokens, *_ = build_sequences(episodes, vocab)
        # Loss on every answer in the sequence: the query's and the examples' (each predicted from its <answer>).
        is_ans = tokens == vocab.stoi["<answer>"]
        targets = torch.zeros_like(tokens)
        for i, ep in enumerate(episodes):
            pos = torch.nonzero(is_ans[i]).flatten()
            targets[i, pos] = torch.tensor([vocab.answer(a) for _, _, a in ep])
        loss = nn.functional.cross_entropy(logits[is_ans], targets[is_ans])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % 10 == 0:
            history.append({"step": step + 1, "loss": round(loss.item(), 4)})
    bar.close()
    curve = evaluate_shots(model, data, test, support, queries, cfg)
    res = {"config": asdict(cfg), "held_out": cfg.held_out, "curve": curve, "history": history,
           "train_questions": len(train_q), "train_seconds": round(time.time() - t0, 1),
           "train_cpu_seconds": round(time.process_time() - cpu0, 1),
           "gates": [round(float(torch.tanh(x.gate_attn.detach())), 4) for x in model.xattn]}
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(Path(cfg.out) / WEIGHTS))
    atomic_write_text(Path(cfg.out) / "fewshot.json", json.dumps(res, indent=2))
    return res


@torch.no_grad()
def evaluate_shots(model: FewShotModel, data: VQAData, test: VQAData, support, queries, cfg: FewShotConfig
                   ) -> list[dict[str, Any]]:
    """Accuracy on ``queries`` (test images) with k support examples (training images) before each."""
    model.eval()
    rng = np.random.default_rng([cfg.seed, 99])
    asked = [queries[int(i)] for i in rng.choice(len(queries), size=min(cfg.eval_queries, len(queries)),
                                                 replace=False)]
    offset = len(data.images)
    images = np.concatenate([data.images, test.images])
    joined = VQAData(images, [], [], [], data.root)
    # Open: the argmax over every answer token. Options: over the held-out family's own answers only
    # (rank classification, as few-shot benchmarks score a closed set); chance is 1 / len(options).
    options = sorted({q["answer"] for q in support})
    opt_ids = torch.tensor([model.vocab.answers.index(a) for a in options])
    out = []
    for k in cfg.shots:
        right, right_opt, chunk = [], [], 32
        for s in range(0, len(asked), chunk):
            episodes = []
            for q in asked[s:s + chunk]:
                ex = [support[int(i)] for i in rng.choice(len(support), size=min(k, len(support)), replace=False)]
                episodes.append([(e["image_index"], e["question"], e["answer"]) for e in ex]
                                + [(offset + q["image_index"], q["question"], None)])
            logits, qpos = _answer_logits(model, joined, episodes)
            last = logits[torch.arange(len(episodes)), qpos][:, model.vocab.answer_ids]
            pred = [model.vocab.answers[i] for i in last.argmax(-1).tolist()]
            right += [p == q["answer"] for p, q in zip(pred, asked[s:s + chunk])]
            pred_opt = [options[i] for i in last[:, opt_ids].argmax(-1).tolist()]
            right_opt += [p == q["answer"] for p, q in zip(pred_opt, asked[s:s + chunk])]
        out.append({"shots": k, "accuracy": round(float(np.mean(right)), 4),
                    "accuracy_options": round(float(np.mean(right_opt)), 4), "options": options,
                    "chance_options": round(1 / len(options), 4), "n": len(right)})
    model.train()
    return out
