"""Visual question answering over vqa-data (``vlagym vqa-train``, ``vlagym vqa-eval``).

An answer classifier on the vl towers (``vlagym.vl.model.VLModel``: the ViT and the text Transformer,
from scratch or from a vl-train model), with one of three fusions:

* ``late``: the pooled image and pooled question embeddings, their product, into an MLP.
* ``early``: the question's word embeddings join the image's patch embeddings at the input of the vision
  tower's Transformer, which runs over both (one stream); its class token goes to the MLP.
* ``cross``: the text tower's word features attend to the vision tower's patch features through
  ``fusion_layers`` Transformer decoder layers (self-attention over the words, cross-attention to the
  patches); the question's end token goes to the MLP.
* ``film``: CLEVR's FiLM model (Perez et al. 2018) at a finer grid than the ViT's patches: a conv stem
  takes the image to a stride-4 feature map (16x16 at 64 px, so a 4-5 px object covers a cell or two),
  computed once per image; a GRU over the question's word embeddings (the text tower's) gives, per
  question, a scale and shift for each of ``fusion_layers`` residual blocks (coordinate maps, 1x1 and 3x3
  convs, batch norm, then the question's FiLM); the map is max- and mean-pooled into the MLP. The vision
  Transformer is not used.

The blind baseline is a question-only prior: the most frequent training answer of the same question
string, else of its family (``QuestionPrior``). Evaluation reports accuracy per family, per level and
overall for both. A step draws ``batch_size`` images and ``questions_per_image`` of each one's questions,
a function of (seed, step), so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from vlagym.core.io import atomic_write_text, read_json
from vlagym.core.resume import check_same_settings
from vlagym.core.safe_load import torch_load_weights
from vlagym.vl.model import DEFAULT_ARCH, VLModel, resolve_model_dir
from vlagym.vl.questions import answer_vocabulary, check_families
from vlagym.vl.vqa_data import VQAData, load_vqa_data

FUSIONS = ("early", "late", "cross", "film")
# Towers small enough to train in a few CPU minutes: a 2-layer ViT of width 64 (8-px patches, an 8x8 grid at
# 64 px) and a 1-layer text Transformer of width 64.
SMALL_TOWERS: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
WEIGHTS = "vqa_model.safetensors"
CONFIG = "vqa_config.json"


@dataclass
class VQAConfig:
    """VQA training settings (``key=value`` overrides on the command line)."""

    data: str = ""
    """Training vqa-data folder."""
    eval_data: str | None = None
    """Held-out vqa-data folder (test-split seeds) for the per-family accuracy."""
    out: str = "runs/vqa"
    """Run folder: model/, checkpoint.pt, metrics.json."""
    fusion: Literal["early", "late", "cross", "film"] = "cross"
    """How image and question meet: early, late, cross or film (see the module docstring)."""
    vl_model: str | None = None
    """vl-train run or model folder to start the towers from (default: random init)."""
    model_cfg: dict[str, Any] | None = field(default_factory=lambda: json.loads(json.dumps(SMALL_TOWERS)))
    """open_clip config of the towers when they start from scratch (default: SMALL_TOWERS)."""
    families: list[str] | None = None
    """Train on these question families only (default: all); evaluation reports every family."""
    fusion_layers: int = 1
    """Cross-attention layers (cross), FiLM residual blocks (film) or the MLP's hidden layers (late, early)."""
    film_width: int = 64
    """Channels of the FiLM model's conv stem and residual blocks (film only)."""
    hidden: int = 256
    """Width of the answer MLP."""
    steps: int = 2000
    """Optimisation steps."""
    batch_size: int = 32
    """Images per step."""
    questions_per_image: int = 4
    """Questions per image per step (the image is encoded once for all of them, except early fusion)."""
    lr: float = 2e-3
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.05
    """AdamW weight decay."""
    warmup: int = 100
    """Linear warm-up steps before the cosine decay."""
    seed: int = 0
    """Seeds the weights and the batches."""
    eval_every: int = 250
    """Evaluate every this many steps (and at the end)."""
    checkpoint_every: int = 250
    """Write the resumable checkpoint every this many steps."""
    threads: int = 1
    """torch CPU threads (0: torch's default; one thread costs several times less CPU per step here)."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("vqa-train needs data=<vqa-data folder>")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        for name in ("steps", "batch_size", "questions_per_image", "eval_every", "checkpoint_every", "hidden",
                     "fusion_layers", "film_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.families is not None:
            self.families = check_families(self.families)


# --- the model ----------------------------------------------------------------------------------------------------
def coord_maps(x: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, C, H, W)`` with two channels appended: the column and row coordinate in [-1, 1]."""
    b, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)[:, None].expand(h, w)
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)[None, :].expand(h, w)
    return torch.cat([x, torch.stack([xs, ys])[None].expand(b, -1, -1, -1)], 1)


class FiLMBlock(nn.Module):
    """FiLM's residual block: coord maps, 1x1 conv + ReLU, 3x3 conv, batch norm, ``gamma * x + beta``, ReLU."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c + 2, c, 1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(c, affine=False)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(coord_maps(x)))
        y = self.norm(self.conv2(h))
        return h + torch.relu(gamma[:, :, None, None] * y + beta[:, :, None, None])


class FiLMNet(nn.Module):
    """The image at stride 4 (conv stem, once per image) modulated per question by a GRU's FiLM parameters."""

    def __init__(self, word_width: int, channels: int, blocks: int) -> None:
        super().__init__()
        c = channels

        def conv(i: int, o: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

        self.stem = nn.Sequential(*conv(3, c // 2, 2), *conv(c // 2, c, 2), *conv(c, c, 1))
        self.gru = nn.GRU(word_width, 2 * c, batch_first=True)
        self.film = nn.Linear(2 * c, 2 * c * blocks)
        self.blocks = nn.ModuleList(FiLMBlock(c) for _ in range(blocks))
        self.out = nn.Sequential(nn.Conv2d(c + 2, 2 * c, 1), nn.ReLU())
        self.width = 4 * c  # max- and mean-pooled

    def forward(self, pixels: torch.Tensor, words: torch.Tensor, ids: torch.Tensor,
                image_of: torch.Tensor) -> torch.Tensor:
        x = self.stem(pixels)[image_of]
        states, _ = self.gru(words)
        q = states[torch.arange(len(ids), device=ids.device), ids.argmax(-1)]  # at the end token
        params = self.film(q).view(len(ids), len(self.blocks), 2, -1)
        for k, block in enumerate(self.blocks):
            x = block(x, 1 + params[:, k, 0], params[:, k, 1])
        x = self.out(coord_maps(x))
        return torch.cat([x.amax((2, 3)), x.mean((2, 3))], 1)


class VQAModel(nn.Module):
    """Images uint8 ``(B, H, W, 3)`` and questions (strings) -> answer logits ``(B, A)``."""

    def __init__(self, fusion: str = "cross", arch: str = DEFAULT_ARCH, model_cfg: dict[str, Any] | None = None,
                 image_size: int = 64, answers: list[str] | None = None, fusion_layers: int = 2,
                 hidden: int = 256, film_width: int = 64) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.fusion, self.fusion_layers, self.hidden, self.film_width = fusion, fusion_layers, hidden, film_width
        self.answers = list(answers or answer_vocabulary())
        self.vl = VLModel(arch, model_cfg, image_size)
        clip = self.vl.clip
        vw = clip.visual.conv1.out_channels
        tw = clip.token_embedding.embedding_dim
        embed = clip.text_projection.shape[1] if clip.text_projection is not None else tw
        if fusion == "late":
            head_in = 3 * embed
        elif fusion == "film":
            self.filmnet = FiLMNet(tw, film_width, fusion_layers)
            head_in = self.filmnet.width
        elif fusion == "early":
            self.word_in = nn.Linear(tw, vw)
            self.word_type = nn.Parameter(torch.zeros(vw))
            head_in = clip.visual.proj.shape[1] if clip.visual.proj is not None else vw
        else:
            self.patch_in = nn.Linear(embed, tw)
            layer = nn.TransformerDecoderLayer(tw, max(1, tw // 32), 2 * tw, dropout=0.0, batch_first=True,
                                               norm_first=True)
            self.decoder = nn.TransformerDecoder(layer, fusion_layers)
            self.out_norm = nn.LayerNorm(tw)
            head_in = tw
        layers: list[nn.Module] = []
        d = head_in
        for _ in range(1 if fusion in ("cross", "film") else fusion_layers):
            layers += [nn.Linear(d, hidden), nn.GELU()]
            d = hidden
        self.head = nn.Sequential(*layers, nn.Linear(d, len(self.answers)))

    @property
    def device(self) -> torch.device:
        return self.vl.device

    def tokens(self, questions: list[str]) -> torch.Tensor:
        ids = self.vl.tokenizer(list(questions)).to(self.device)
        length = int((ids != 0).sum(1).max())
        return ids[:, :max(length, 2)]

    def text_features(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Word features ``(B, L, W)`` after the text tower and the end token's embedding ``(B, E)``."""
        clip = self.vl.clip
        n = ids.shape[1]
        x = clip.token_embedding(ids) + clip.positional_embedding[:n]
        x = clip.transformer(x, attn_mask=clip.attn_mask[:n, :n])
        x = clip.ln_final(x)
        eot = x[torch.arange(len(ids), device=ids.device), ids.argmax(-1)]
        pooled = eot @ clip.text_projection if clip.text_projection is not None else eot
        return x, pooled

    def forward(self, images, questions: list[str], image_of: torch.Tensor | None = None) -> torch.Tensor:
        """``image_of[k]``: the row of ``images`` question ``k`` is about (default: one image per question)."""
        ids = self.tokens(questions)
        if image_of is None:
            image_of = torch.arange(len(questions), device=self.device)
        if self.fusion == "early":
            return self.head(self._early(self.vl.pixels(images)[image_of], ids))
        if self.fusion == "film":
            words = self.vl.clip.token_embedding(ids)
            return self.head(self.filmnet(self.vl.pixels(images), words, ids, image_of))
        pooled, patches, _ = self.vl.patch_features(images)
        words, q = self.text_features(ids)
        if self.fusion == "late":
            v = pooled[image_of]
            return self.head(torch.cat([v, q, v * q], -1))
        memory = self.patch_in(torch.cat([pooled[:, None], patches], 1))[image_of]
        pad = ids == 0
        pad[:, 0] = False
        causal = self.vl.clip.attn_mask[: ids.shape[1], : ids.shape[1]]
        x = self.decoder(words, memory, tgt_mask=causal, tgt_key_padding_mask=pad, tgt_is_causal=False)
        x = self.out_norm(x[torch.arange(len(ids), device=ids.device), ids.argmax(-1)])
        return self.head(x)

    def _early(self, pixels: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        visual, clip = self.vl.clip.visual, self.vl.clip
        x = visual._embeds(pixels)
        n = ids.shape[1]
        w = self.word_in(clip.token_embedding(ids) + clip.positional_embedding[:n]) + self.word_type
        x = torch.cat([x, w], 1)
        heads = visual.transformer.resblocks[0].attn.num_heads
        mask = torch.zeros(len(ids), x.shape[1], device=x.device)
        mask[:, -n:] = (ids == 0).float() * -1e4
        mask = mask[:, None, None, :].expand(-1, heads, x.shape[1], -1).reshape(-1, x.shape[1], x.shape[1])
        x = visual.transformer(x, attn_mask=mask)
        cls = visual.ln_post(x[:, 0])
        return cls @ visual.proj if visual.proj is not None else cls

    @torch.no_grad()
    def answer(self, images, questions: list[str], image_of=None) -> list[str]:
        logits = self(images, questions, image_of)
        return [self.answers[i] for i in logits.argmax(-1).tolist()]

    # --- saving ---------------------------------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return {"fusion": self.fusion, "arch": self.vl.arch, "model_cfg": self.vl.model_cfg,
                "image_size": self.vl.image_size, "answers": self.answers, "fusion_layers": self.fusion_layers,
                "hidden": self.hidden, "film_width": self.film_width}

    def save(self, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        tmp = out / f".{WEIGHTS}.tmp"
        save_file(state, str(tmp))
        os.replace(tmp, out / WEIGHTS)
        atomic_write_text(out / CONFIG, json.dumps({**self.config_dict(), **(extra or {})}, indent=2))
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> VQAModel:
        directory = Path(directory)
        if (directory / "model" / CONFIG).exists():
            directory = directory / "model"
        if not (directory / CONFIG).exists():
            raise FileNotFoundError(f"{directory} holds no {CONFIG}; pass a vqa-train run or model folder")
        cfg = read_json(directory / CONFIG)
        keys = ("fusion", "arch", "model_cfg", "image_size", "answers", "fusion_layers", "hidden")
        model = cls(**{k: cfg[k] for k in keys}, film_width=cfg.get("film_width", 64))
        model.load_state_dict(load_file(str(directory / WEIGHTS)))
        return model.to(device).eval()


# --- the blind baseline --------------------------------------------------------------------------------------------
class QuestionPrior:
    """The most frequent training answer of the same question string, else of the family, else overall."""

    def __init__(self, questions: list[dict[str, Any]]) -> None:
        by_text: dict[str, Counter] = defaultdict(Counter)
        by_family: dict[str, Counter] = defaultdict(Counter)
        overall: Counter = Counter()
        for q in questions:
            by_text[q["question"]][q["answer"]] += 1
            by_family[q["family"]][q["answer"]] += 1
            overall[q["answer"]] += 1
        self.by_text = {k: _top(c) for k, c in by_text.items()}
        self.by_family = {k: _top(c) for k, c in by_family.items()}
        self.overall = _top(overall) if overall else "yes"

    def answer(self, q: dict[str, Any]) -> str:
        return self.by_text.get(q["question"]) or self.by_family.get(q["family"]) or self.overall


def _top(c: Counter) -> str:
    return sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]


# --- evaluation -----------------------------------------------------------------------------------------------------
def accuracy_table(questions: list[dict[str, Any]], predictions: list[str]) -> dict[str, Any]:
    """Overall accuracy, and accuracy and count per family and per level."""
    right = [p == q["answer"] for q, p in zip(questions, predictions)]
    out: dict[str, Any] = {"accuracy": round(float(np.mean(right)), 4) if right else None, "n": len(right)}
    for key in ("family", "level"):
        groups: dict[str, list[bool]] = defaultdict(list)
        for q, r in zip(questions, right):
            groups[str(q.get(key))].append(r)
        out[f"per_{key}"] = {k: {"accuracy": round(float(np.mean(v)), 4), "n": len(v)}
                             for k, v in sorted(groups.items())}
    return out


@torch.no_grad()
def predict(model: VQAModel, data: VQAData, batch: int = 256) -> list[str]:
    was = model.training
    model.eval()
    preds: list[str] = []
    qs = data.questions
    for s in range(0, len(qs), batch):
        chunk = qs[s:s + batch]
        rows = sorted({q["image_index"] for q in chunk})
        pos = {r: k for k, r in enumerate(rows)}
        image_of = torch.tensor([pos[q["image_index"]] for q in chunk], device=model.device)
        preds += model.answer(data.images[rows], [q["question"] for q in chunk], image_of)
    model.train(was)
    return preds


def evaluate(model: VQAModel, data: VQAData, prior: QuestionPrior | None = None) -> dict[str, Any]:
    out = {"model": accuracy_table(data.questions, predict(model, data))}
    if prior is not None:
        out["blind"] = accuracy_table(data.questions, [prior.answer(q) for q in data.questions])
        out["gap_points"] = round(100 * (out["model"]["accuracy"] - out["blind"]["accuracy"]), 1)
    return out


# --- training -------------------------------------------------------------------------------------------------------
def _by_image(questions: list[dict[str, Any]]) -> tuple[list[int], dict[int, list[int]]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for k, q in enumerate(questions):
        groups[int(q["image_index"])].append(k)
    return sorted(groups), groups


def sample_batch(data: VQAData, rows: list[int], groups: dict[int, list[int]], step: int, cfg: VQAConfig):
    rng = np.random.default_rng([cfg.seed, step, 15])
    imgs = rng.choice(len(rows), size=min(cfg.batch_size, len(rows)), replace=False)
    picked, image_of = [], []
    for k, r in enumerate(imgs):
        qs = groups[rows[r]]
        for j in rng.choice(len(qs), size=min(cfg.questions_per_image, len(qs)), replace=False):
            picked.append(data.questions[qs[j]])
            image_of.append(k)
    return data.images[[rows[r] for r in imgs]], picked, image_of


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build(cfg: VQAConfig, image_size: int) -> VQAModel:
    if cfg.vl_model:
        from vlagym.vl.model import read_vl_config

        d = resolve_model_dir(cfg.vl_model)
        vl = read_vl_config(d)
        model = VQAModel(cfg.fusion, vl["arch"], vl["model_cfg"], vl["image_size"], fusion_layers=cfg.fusion_layers,
                         hidden=cfg.hidden, film_width=cfg.film_width)
        model.vl.clip.load_state_dict(load_file(str(d / "open_clip_model.safetensors")))
        if vl["image_size"] != image_size:
            raise ValueError(f"{d} was trained at {vl['image_size']} px, the data has {image_size} px images")
        return model
    return VQAModel(cfg.fusion, DEFAULT_ARCH, cfg.model_cfg, image_size, fusion_layers=cfg.fusion_layers,
                    hidden=cfg.hidden, film_width=cfg.film_width)


def train_vqa(cfg: VQAConfig, trust_pickle: bool | None = None) -> dict[str, Any]:
    """Train (resuming from ``out/checkpoint.pt`` when the settings match); returns the metrics."""
    from vlagym.core.schedules import warmup_cosine

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = json.loads(json.dumps({k: v for k, v in asdict(cfg).items() if k not in ("out", "device", "threads")}))
    data = load_vqa_data(cfg.data)
    if cfg.families is not None:
        data.questions = [q for q in data.questions if q["family"] in cfg.families]
    if not data.questions:
        raise ValueError(f"{cfg.data} holds no questions of the families {cfg.families}")
    eval_data = load_vqa_data(cfg.eval_data) if cfg.eval_data else None
    prior = QuestionPrior(data.questions)
    model = build(cfg, int(data.images.shape[1])).to(device)
    index = {a: k for k, a in enumerate(model.answers)}
    unknown = sorted({q["answer"] for q in data.questions} - set(index))
    if unknown:
        raise ValueError(f"{cfg.data} has answers outside the model's vocabulary: {unknown[:5]}")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    metrics: dict[str, Any] = {"config": settings, "history": [], "eval": [], "train_questions": len(data.questions)}
    start = 0
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists():
        ckpt = torch_load_weights(ckpt_path, trust_pickle=trust_pickle, map_location=device)
        check_same_settings(out, ckpt["settings"], settings, "use another out= or the same ones")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        metrics, start = ckpt["metrics"], int(ckpt["step"])
    rows, groups = _by_image(data.questions)
    model.train()
    t0, cpu0 = time.time(), time.process_time()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"vqa-train ({cfg.fusion})",
               dynamic_ncols=True)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = warmup_cosine(step, cfg.lr, cfg.warmup, cfg.steps)
        images, qs, image_of = sample_batch(data, rows, groups, step, cfg)
        logits = model(images, [q["question"] for q in qs], torch.tensor(image_of, device=device))
        target = torch.tensor([index[q["answer"]] for q in qs], device=device)
        loss = nn.functional.cross_entropy(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        acc = (logits.argmax(-1) == target).float().mean().item()
        bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc:.2f}")
        if (step + 1) % 10 == 0:
            metrics["history"].append({"step": step + 1, "loss": round(loss.item(), 4), "batch_acc": round(acc, 4)})
        last = step + 1 == cfg.steps
        if eval_data is not None and ((step + 1) % cfg.eval_every == 0 or last):
            res = evaluate(model, eval_data, prior)
            metrics["eval"].append({"step": step + 1, **res})
            bar.write(f"step {step + 1}: accuracy {res['model']['accuracy']}, blind {res['blind']['accuracy']}")
        if (step + 1) % cfg.checkpoint_every == 0 or last:
            tmp = out / ".checkpoint.pt.tmp"
            torch.save({"settings": settings, "model": model.state_dict(), "optimizer": opt.state_dict(),
                        "metrics": metrics, "step": step + 1}, tmp)
            os.replace(tmp, ckpt_path)
    bar.close()
    metrics["train_seconds_this_run"] = round(time.time() - t0, 1)
    metrics["train_cpu_seconds_this_run"] = round(time.process_time() - cpu0, 1)
    if metrics["eval"]:
        metrics["final"] = metrics["eval"][-1]
    model.save(out / "model", extra={"trained_on": str(cfg.data), "steps": cfg.steps})
    atomic_write_text(out / "prior.json", json.dumps({"by_text": prior.by_text, "by_family": prior.by_family,
                                                      "overall": prior.overall}))
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def eval_vqa(model_dir: str | os.PathLike, data_dir: str | os.PathLike, device: str = "auto") -> dict[str, Any]:
    """Per-family accuracy of a vqa-train run on a vqa-data folder, beside its training prior's (blind)."""
    model = VQAModel.load(model_dir, resolve_device(device))
    run = Path(model_dir)
    return evaluate(model, load_vqa_data(data_dir), read_prior(run / "prior.json", run.parent / "prior.json"))


def read_prior(*paths: str | os.PathLike) -> QuestionPrior | None:
    """The blind prior a training run saved (``prior.json``), from the first of ``paths`` that exists."""
    for path in map(Path, paths):
        if path.exists():
            doc = read_json(path)
            prior = QuestionPrior([])
            prior.by_text, prior.by_family, prior.overall = doc["by_text"], doc["by_family"], doc["overall"]
            return prior
    return None


# --- plots ----------------------------------------------------------------------------------------------------------
def read_report(path: str | os.PathLike) -> dict[str, Any]:
    """A ``vqa-eval --out`` report, or the ``final`` evaluation of a vqa-train / nsvqa-train run (its folder or
    its metrics.json)."""
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.json"
    if not p.exists():
        raise FileNotFoundError(f"{path}: no such report (a vqa-eval --out file, or a vqa-train/nsvqa-train run)")
    doc = read_json(p)
    doc = doc.get("final", doc) if isinstance(doc, dict) else doc
    if not isinstance(doc, dict) or "per_family" not in (doc.get("model") or {}):
        raise ValueError(f"{p} holds no per-family VQA accuracy (expected a vqa-eval report or a finished run's "
                         f"metrics.json with an eval_data evaluation)")
    return doc


__all__ = ["FUSIONS", "QuestionPrior", "VQAConfig", "VQAModel", "accuracy_table", "eval_vqa", "evaluate",
           "read_prior", "read_report", "train_vqa"]
