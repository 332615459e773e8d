"""The answerer of embodied question answering: the last frames of an episode and the question -> the answer.

``vlagym/NavEQA-v0`` asks "what colour is the box in the room with the red door"; whoever navigates, the
answerer reads the last ``frames`` camera images the agent saw and the question, and picks one of
``ANSWERS`` (the navigation colours and shapes). The network: a small CNN over each frame (8x8 feature
grid at 64 px), the question as a mean of learned word embeddings, attention of the question over every
frame's grid cells (which object in view the question is about), and an MLP on the attended feature and the
question. ``blind=True`` drops the frames: the question-only baseline (Das et al. 2018; Anand et al. 2018).

Data (``make_eqa_data``): the EQA expert's episodes on a seed split, keeping each episode's last frames,
question, answer and family, in one ``eqa.npz`` (written atomically). Training (``train_answerer``) reports
accuracy on a held-out data set; a trained answerer is a folder of ``answerer.safetensors`` and
``answerer.json`` (``Answerer.save`` / ``Answerer.load``).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from vlagym.core.io import DatasetError, atomic_write_text
from vlagym.core.splits import SPLIT_SEED_START, split_of
from vlagym.core.stats import wilson_interval
from vlagym.envs.nav.objects import COLORS, SHAPES

ANSWERS: tuple[str, ...] = tuple(COLORS) + tuple(SHAPES)
"""Every answer the answerer can give: the navigation colours, then the shapes."""
WEIGHTS, CONFIG, DATA = "answerer.safetensors", "answerer.json", "eqa.npz"
ENV_ID = "vlagym/NavEQA-v0"


def words(question: str) -> list[str]:
    return re.findall(r"[a-z]+", question.lower())


# --- data ---------------------------------------------------------------------------------------------------
@dataclass
class EQADataConfig:
    """Settings of ``vlagym eqa-data``."""

    out: str
    """Output folder (holds eqa.npz)."""
    episodes: int = 1000
    """Expert episodes to play (failed ones are dropped)."""
    split: str = "train"
    """Seed split the episodes come from (train, val or test)."""
    seed_start: int | None = None
    """First seed (default: the split's first)."""
    frames: int = 4
    """Last frames kept per episode."""
    image_size: int = 64
    """Camera resolution (pixels)."""
    noise: float = 0.1
    """Probability that the expert's move is replaced by a random one (varied approaches and last views)."""
    level: str | None = "train"
    """Generalization level of the episodes (None: all of them)."""

    def __post_init__(self) -> None:
        if self.split not in SPLIT_SEED_START:
            raise ValueError(f"split must be one of {sorted(SPLIT_SEED_START)}, got {self.split!r}")
        if self.episodes < 1 or self.frames < 1:
            raise ValueError(f"episodes and frames must be >= 1, got {self.episodes} and {self.frames}")
        if not 0.0 <= self.noise < 1.0:
            raise ValueError(f"noise must be in [0, 1), got {self.noise}")
        start = SPLIT_SEED_START[self.split] if self.seed_start is None else self.seed_start
        if split_of(start) != self.split or split_of(start + self.episodes - 1) != self.split:
            raise ValueError(f"seeds {start}..{start + self.episodes - 1} are not all in the {self.split} split")
        self.seed_start = start


def last_frames(env, seed: int, agent_for, frames: int) -> tuple[dict[str, Any], list[np.ndarray], dict]:
    """Play one episode with ``agent_for(env)`` (an agent with ``act(obs, info)``); the first observation, the
    last ``frames`` camera images the agent acted on (padded by repeating the first; what an evaluated
    navigator's answerer reads too) and the final info."""
    obs, info = env.reset(seed=seed)
    first = obs
    agent = agent_for(env)
    seen: deque = deque(maxlen=frames)
    done = False
    while not done:
        seen.append(obs["rgb"])
        obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
        done = terminated or truncated
    return first, pad_frames(list(seen), frames), info


def pad_frames(seen: list[np.ndarray], frames: int) -> list[np.ndarray]:
    seen = list(seen)[-frames:]
    return [seen[0]] * (frames - len(seen)) + seen


def make_eqa_data(cfg: EQADataConfig) -> dict[str, Any]:
    """Play the expert over ``cfg``'s seeds and write ``eqa.npz``; a summary of what was written."""
    import gymnasium as gym

    import vlagym  # noqa: F401  (registers the env ids)

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    env = gym.make(ENV_ID, image_size=cfg.image_size, level=cfg.level)
    rows: dict[str, list] = {"frames": [], "question": [], "answer": [], "family": [], "seed": []}
    dropped = 0
    try:
        for seed in tqdm(range(cfg.seed_start, cfg.seed_start + cfg.episodes), desc="eqa-data", unit="ep"):
            first, seen, info = last_frames(env, seed, lambda e, s=seed: e.unwrapped.task.expert(cfg.noise, s),
                                            cfg.frames)
            if not info["success"]:
                dropped += 1
                continue
            rows["frames"].append(np.stack(seen))
            rows["question"].append(first["instruction"])
            rows["answer"].append(ANSWERS.index(info["answer"]))
            rows["family"].append(info["question_family"])
            rows["seed"].append(seed)
    finally:
        env.close()
    tmp = out / f".{DATA}.tmp.npz"
    np.savez_compressed(tmp, frames=np.stack(rows["frames"]), question=np.array(rows["question"]),
                        answer=np.array(rows["answer"], np.int64), family=np.array(rows["family"]),
                        seed=np.array(rows["seed"], np.int64))
    os.replace(tmp, out / DATA)
    summary = {"episodes": len(rows["seed"]), "dropped": dropped, "split": cfg.split,
               "seed_range": [cfg.seed_start, cfg.seed_start + cfg.episodes - 1], "config": asdict(cfg)}
    atomic_write_text(out / "manifest.json", json.dumps(summary, indent=1))
    return summary


def load_eqa_data(root: str | os.PathLike) -> dict[str, np.ndarray]:
    path = Path(root) / DATA
    if not path.is_file():
        raise DatasetError(f"{root}: no {DATA} (make one with `vlagym eqa-data --out {root}`)")
    try:
        with np.load(path) as z:
            data = {k: z[k] for k in ("frames", "question", "answer", "family", "seed")}
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise DatasetError(f"{path}: unreadable EQA data ({type(e).__name__}: {e}); make it again") from e
    return data


# --- the model ----------------------------------------------------------------------------------------------
@dataclass
class AnswererConfig:
    """The answerer's architecture and its vocabulary (saved in answerer.json)."""

    vocab: list[str] = field(default_factory=list)
    """Question words, learned from the training questions; others read as unknown."""
    frames: int = 4
    """Last frames read."""
    image_size: int = 64
    """Frame resolution (pixels) the answerer reads."""
    width: int = 32
    """Channels of the first conv layer (the others have twice as many)."""
    dim: int = 64
    """Width of the question embedding, the attention and the MLP."""
    blind: bool = False
    """Ignore the frames: the question-only baseline."""
    answers: list[str] = field(default_factory=lambda: list(ANSWERS))

    def __post_init__(self) -> None:
        if self.frames < 1 or self.width < 1 or self.dim < 1:
            raise ValueError(f"frames, width and dim must be >= 1, got {self.frames}, {self.width}, {self.dim}")
        if not 16 <= self.image_size <= 512:
            raise ValueError(f"image_size must be within 16..512, got {self.image_size}")
        unknown = [a for a in self.answers if a not in ANSWERS]
        if unknown:
            raise ValueError(f"unknown answers {unknown}; known: {list(ANSWERS)}")


class Answerer(nn.Module):
    """Frames ``(B, K, H, W, 3)`` uint8 and questions -> answer logits ``(B, len(answers))``."""

    def __init__(self, config: AnswererConfig) -> None:
        super().__init__()
        self.config = config
        w, d = config.width, config.dim
        self.index = {word: i + 1 for i, word in enumerate(config.vocab)}  # 0: unknown word
        self.embed = nn.EmbeddingBag(len(config.vocab) + 1, d, mode="mean")
        self.question = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))
        # 4x4 patches, then a stride-2 layer: an 8x8 grid at 64 px, cheap enough to train in CPU minutes.
        self.cnn = nn.Sequential(
            nn.Conv2d(5, w, 4, 4), nn.ReLU(), nn.Conv2d(w, 2 * w, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, 1, 1), nn.ReLU(), nn.Conv2d(2 * w, 2 * d, 1),
        )
        self.head = nn.Sequential(nn.Linear(3 * d, 2 * d), nn.ReLU(), nn.Linear(2 * d, len(config.answers)))

    def encode_questions(self, questions: list[str]) -> torch.Tensor:
        ids, offsets = [], []
        for q in questions:
            offsets.append(len(ids))
            ids.extend(self.index.get(t, 0) for t in words(q)) if words(q) else ids.append(0)
        dev = self.embed.weight.device
        bag = self.embed(torch.tensor(ids, device=dev), torch.tensor(offsets, device=dev))
        return self.question(bag)

    def forward(self, frames: torch.Tensor | np.ndarray, questions: list[str]) -> torch.Tensor:
        q = self.encode_questions(questions)  # (B, d)
        d = self.config.dim
        if self.config.blind:
            att = torch.zeros_like(q)
        else:
            x = torch.as_tensor(np.asarray(frames) if not torch.is_tensor(frames) else frames,
                                device=q.device)
            b, k, h, w, _ = x.shape
            x = x.reshape(b * k, h, w, 3).permute(0, 3, 1, 2).float() / 255.0 - 0.5
            ys = torch.linspace(-1, 1, h, device=q.device).view(1, 1, h, 1).expand(b * k, 1, h, w)
            xs = torch.linspace(-1, 1, w, device=q.device).view(1, 1, 1, w).expand(b * k, 1, h, w)
            f = self.cnn(torch.cat([x, ys, xs], 1))  # (B*K, 2d, h', w')
            f = f.reshape(b, k, 2 * d, -1).permute(0, 1, 3, 2).reshape(b, -1, 2 * d)  # (B, K*cells, 2d)
            keys, values = f[..., :d], f[..., d:]
            weights = torch.softmax((keys @ q.unsqueeze(-1)).squeeze(-1) / d ** 0.5, dim=-1)
            att = (weights.unsqueeze(-1) * values).sum(1)
        return self.head(torch.cat([att, q, att * q], -1))

    @torch.no_grad()
    def answer(self, frames: list[np.ndarray], questions: list[str] | str) -> list[str] | str:
        """The answer to each question from its episode's last frames (one episode: a list of frames)."""
        one = isinstance(questions, str)
        batch = [frames] if one else frames
        x = np.stack([np.stack(pad_frames(f, self.config.frames)) for f in batch])
        self.eval()
        logits = self(x, [questions] if one else list(questions))
        out = [self.config.answers[i] for i in logits.argmax(-1).tolist()]
        return out[0] if one else out

    def save(self, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{WEIGHTS}.tmp"
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(tmp))
        os.replace(tmp, d / WEIGHTS)
        atomic_write_text(d / CONFIG, json.dumps({"config": asdict(self.config), **(extra or {})}, indent=1))
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Answerer:
        """A saved answerer, or a ``ValueError`` saying what is wrong with the folder."""
        d = Path(directory)
        if not d.is_dir():
            raise ValueError(f"no answerer folder at {d} (train one with `vlagym eqa-train`)")
        for name in (CONFIG, WEIGHTS):
            if not (d / name).is_file():
                raise ValueError(f"{d}: not an answerer folder, {name} is missing")
        try:
            meta = json.loads((d / CONFIG).read_text())
            model = cls(AnswererConfig(**meta["config"]))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{d / CONFIG}: corrupt answerer config ({type(e).__name__}: {e})") from e
        try:
            model.load_state_dict(load_file(str(d / WEIGHTS)))
        except Exception as e:  # safetensors raises its own error types for a damaged file
            raise ValueError(f"{d / WEIGHTS}: corrupt answerer weights ({type(e).__name__}: {e})") from e
        model.meta = meta
        return model.eval()


# --- training -----------------------------------------------------------------------------------------------
@dataclass
class EQATrainConfig:
    """Settings of ``vlagym eqa-train``."""

    data: str
    """Training eqa-data folder (train seeds)."""
    out: str
    """Answerer folder to write."""
    eval_data: str | None = None
    """Held-out eqa-data folder (val or test seeds) to report accuracy on."""
    steps: int = 1500
    """Optimizer steps."""
    batch_size: int = 64
    """Episodes per step."""
    lr: float = 2e-3
    """Peak learning rate (one-cycle schedule, AdamW)."""
    width: int = 32
    """Channels of the first conv layers (AnswererConfig.width)."""
    dim: int = 64
    """Width of the question embedding and the attention (AnswererConfig.dim)."""
    blind: bool = False
    """Train the question-only baseline (no frames)."""
    seed: int = 0
    """Seed of the weights and the batches."""
    threads: int = 1
    """Torch CPU threads."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps} and {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def accuracy(model: Answerer, data: dict[str, np.ndarray], batch: int = 128) -> dict[str, Any]:
    """Answer accuracy with its 95% Wilson interval, overall and per question family."""
    preds: list[str] = []
    for i in range(0, len(data["answer"]), batch):
        preds += model.answer(list(data["frames"][i:i + batch]), [str(q) for q in data["question"][i:i + batch]])
    correct = np.array([p == ANSWERS[a] for p, a in zip(preds, data["answer"])])
    out = {"n": int(len(correct)), "accuracy": float(correct.mean()),
           "ci95": list(wilson_interval(int(correct.sum()), len(correct)))}
    for fam in sorted(set(data["family"].tolist())):
        m = data["family"] == fam
        out[f"accuracy_{fam}"] = float(correct[m].mean())
    return out


def train_answerer(cfg: EQATrainConfig) -> dict[str, Any]:
    """Train an answerer on ``cfg.data``; save it to ``cfg.out``; its training and held-out accuracy."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    data = load_eqa_data(cfg.data)
    held = load_eqa_data(cfg.eval_data) if cfg.eval_data else None
    vocab = sorted({w for q in data["question"] for w in words(str(q))})
    k, size = data["frames"].shape[1], data["frames"].shape[2]
    model = Answerer(AnswererConfig(vocab=vocab, frames=k, image_size=size, width=cfg.width, dim=cfg.dim,
                                    blind=cfg.blind))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    rng = np.random.default_rng(cfg.seed)
    n = len(data["answer"])
    start, cpu0 = time.time(), time.process_time()
    model.train()
    bar = tqdm(range(cfg.steps), desc="eqa-train", unit="step")
    for step in bar:
        idx = rng.integers(n, size=cfg.batch_size)
        frames = data["frames"][idx]
        if rng.random() < 0.5:  # mirror the views: colours and shapes do not change left to right
            frames = frames[:, :, :, ::-1].copy()
        loss = nn.functional.cross_entropy(model(frames, [str(q) for q in data["question"][idx]]),
                                           torch.as_tensor(data["answer"][idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    result: dict[str, Any] = {"steps": cfg.steps, "train_examples": n, "wall_s": round(time.time() - start, 1),
                              "cpu_s": round(time.process_time() - cpu0, 1),
                              "train": accuracy(model, {k: v[:1000] for k, v in data.items()})}
    if held is not None:
        result["eval"] = accuracy(model, held)
    model.save(cfg.out, {"train_config": asdict(cfg), "result": result})
    return result
