"""Wrappers that make vlagym envs fit other libraries: ``SB3Wrapper`` for stable-baselines3.

SB3 cannot take a ``spaces.Text`` observation nor (for ``CnnPolicy``/``MultiInputPolicy`` without
transposing) channel-last images. ``SB3Wrapper`` turns a vlagym observation into a flat ``spaces.Dict``
of Boxes that SB3's ``check_env`` accepts:

* ``"instruction"`` becomes a fixed-size vector, by ``InstructionEncoder``:
  - ``kind="sentence"``: a frozen sentence embedding from ``vlagym.policies.language`` (all-MiniLM-L6-v2,
    384-d, L2-normalised so inside ``Box(-1, 1)``), computed once per distinct string;
  - ``kind="tokens"``: hashed word ids (crc32 of each lower-cased word modulo ``buckets``, the ids
    ``HashTextEncoder`` uses), padded with ``buckets`` to ``max_tokens`` words: an int64 ``Box``
    (not ``MultiDiscrete``, which SB3 would one-hot into ``max_tokens * (buckets + 1)`` floats);
  - ``kind="clip"``: the token ids of an open_clip model's own tokenizer (``model`` is the open_clip
    architecture, ``max_tokens`` its text context length; start and end tokens, zero-padded, cut at the
    context length with the end token kept): an int64 ``Box(0, vocab_size - 1, (max_tokens,))``. This is
    what ``vlagym rl --vl-model DIR`` uses, so the VL model's text tower reads the instruction
    (``vlagym.policies.rl.VLFeaturesExtractor``); the tokenizer is built lazily, once per process.
* images (``"rgb"``, ``"rgb_wrist"``, ``"rgb_map"``) stay uint8 and become channel-first ``(3, H, W)``;
* ``"state"`` and ``"proprio"`` pass through unchanged.

The same ``SB3ObsTransform`` converts single observations at evaluation time (``vlagym eval`` on an SB3
model), so a trained model sees exactly what it saw in training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from vlagym.policies.language import hash_word_ids

INSTRUCTION_KINDS = ("sentence", "tokens", "clip")
SENTENCE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
IMAGE_KEYS = ("rgb", "rgb_wrist", "rgb_map")


@dataclass(frozen=True)
class InstructionEncoder:
    """Instruction string -> fixed-size numpy vector, cached per distinct string.

    Args:
        kind: ``"sentence"`` (frozen pretrained embedding), ``"tokens"`` (hashed word ids) or ``"clip"``
            (an open_clip tokenizer's ids).
        model: sentence encoder name or local directory (``kind="sentence"``); the open_clip architecture
            whose tokenizer to use (``kind="clip"``, required there, e.g. ``"vlagym-clip-tiny"``).
        buckets: hash buckets (``kind="tokens"``); id ``buckets`` is padding.
        max_tokens: words kept (``kind="tokens"``), longer instructions are cut; the text context length
            (``kind="clip"``: the VL model's, so its text tower reads every position).
    """

    kind: str = "sentence"
    model: str = SENTENCE_MODEL
    buckets: int = 4096
    max_tokens: int = 24

    def __post_init__(self) -> None:
        if self.kind not in INSTRUCTION_KINDS:
            raise ValueError(f"InstructionEncoder.kind must be one of {INSTRUCTION_KINDS}, got {self.kind!r}")
        if self.kind == "clip" and self.model == SENTENCE_MODEL:
            raise ValueError("InstructionEncoder(kind='clip') needs model=<open_clip architecture> (the VL model's "
                             f"arch, e.g. 'vlagym-clip-tiny'), got the sentence encoder {self.model!r}")
        if self.buckets < 2 or self.max_tokens < 1:
            raise ValueError(f"InstructionEncoder needs buckets >= 2 and max_tokens >= 1, got "
                             f"buckets={self.buckets}, max_tokens={self.max_tokens}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> InstructionEncoder:
        data = dict(data or {})
        unknown = sorted(set(data) - {"kind", "model", "buckets", "max_tokens"})
        if unknown:
            raise ValueError(f"InstructionEncoder has no fields {unknown}")
        return cls(**data)

    # The text encoder and tokenizer load lazily (a worker process loads its own) and are not part of the dataclass.
    def _tokenizer(self):
        tok = _ENCODERS.get(self)
        if tok is None:
            import open_clip

            from vlagym.vl.model import register_configs

            register_configs()
            if self.model not in open_clip.list_models():
                raise ValueError(f"InstructionEncoder(kind='clip'): unknown open_clip architecture {self.model!r}")
            tok = _ENCODERS[self] = open_clip.get_tokenizer(self.model, context_length=self.max_tokens)
        return tok

    def _text_encoder(self):
        cache = _ENCODERS.get(self)
        if cache is None:
            import torch

            from vlagym.policies.language import make_text_encoder

            torch.set_num_threads(1)  # workers of a vectorised env share the machine
            cache = _ENCODERS[self] = make_text_encoder("sentence", self.model, freeze=True)
        return cache

    @property
    def space(self) -> spaces.Space:
        if self.kind == "tokens":
            return spaces.Box(0, self.buckets, (self.max_tokens,), np.int64)
        if self.kind == "clip":
            return spaces.Box(0, self.vocab_size - 1, (self.max_tokens,), np.int64)
        return spaces.Box(-1.0, 1.0, (self.dim,), np.float32)

    @property
    def dim(self) -> int:
        return self.max_tokens if self.kind in ("tokens", "clip") else int(self._text_encoder().dim)

    @property
    def vocab_size(self) -> int:
        """Size of the open_clip tokenizer's vocabulary (``kind="clip"``)."""
        if self.kind != "clip":
            raise ValueError(f"vocab_size is defined for kind='clip', not {self.kind!r}")
        tok = self._tokenizer()
        size = getattr(tok, "vocab_size", None)
        if size is None and hasattr(tok, "tokenizer"):  # open_clip's HFTokenizer wraps a transformers one
            size = len(tok.tokenizer)
        if size is None:
            raise ValueError(f"cannot tell the vocabulary size of {type(tok).__name__} ({self.model!r})")
        return int(size)

    def __call__(self, text: str) -> np.ndarray:
        key = (self, text)
        out = _VECTORS.get(key)
        if out is None:
            if self.kind == "tokens":
                ids = hash_word_ids(text, self.buckets)[: self.max_tokens]
                out = np.full(self.max_tokens, self.buckets, dtype=np.int64)
                out[: len(ids)] = ids
            elif self.kind == "clip":
                out = self._tokenizer()([text])[0].numpy().astype(np.int64)
            else:
                import torch

                with torch.inference_mode():
                    emb = self._text_encoder()([text])[0].float().cpu().numpy()
                # L2-normalised, so inside [-1, 1] up to rounding.
                out = np.clip(emb, -1.0, 1.0).astype(np.float32)
            _VECTORS[key] = out
        return out.copy()  # callers (SB3 buffers, torch.as_tensor) may write to it


_ENCODERS: dict[InstructionEncoder, Any] = {}
_VECTORS: dict[tuple[InstructionEncoder, str], np.ndarray] = {}


class SB3ObsTransform:
    """A vlagym observation space (and observations) -> the SB3-ready ``spaces.Dict`` (see module doc)."""

    def __init__(self, observation_space: spaces.Dict, instruction: InstructionEncoder) -> None:
        if not isinstance(observation_space, spaces.Dict) or "instruction" not in observation_space.spaces:
            raise ValueError(f"SB3 wrapping needs a vlagym Dict observation space with 'instruction', got "
                             f"{observation_space}")
        self.instruction = instruction
        out: dict[str, spaces.Space] = {}
        for key, space in observation_space.spaces.items():
            if key == "instruction":
                out[key] = instruction.space
            elif key in IMAGE_KEYS:
                h, w, c = space.shape
                out[key] = spaces.Box(0, 255, (c, h, w), np.uint8)
            elif isinstance(space, spaces.Box):
                out[key] = space
            else:
                raise ValueError(f"observation {key!r} has space {space}, which SB3 wrapping does not handle")
        self.observation_space = spaces.Dict(out)

    def __call__(self, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        return sb3_observation(obs, self.observation_space, self.instruction)


def sb3_observation(obs: dict[str, Any], space: spaces.Dict, instruction: InstructionEncoder) -> dict[str, np.ndarray]:
    """One vlagym observation -> the SB3 observation for ``space`` (a ``SB3ObsTransform`` space)."""
    missing = [k for k in space.spaces if k not in obs]
    if missing:
        raise KeyError(f"observation lacks {missing} (has {sorted(obs)}); make the env with the kwargs the "
                       "model was trained with (obs_mode, image_size, ...)")
    out: dict[str, np.ndarray] = {}
    for key in space.spaces:
        value = obs[key]
        if key == "instruction":
            out[key] = instruction(value)
        elif key in IMAGE_KEYS:
            out[key] = np.ascontiguousarray(np.transpose(value, (2, 0, 1)))
        else:
            out[key] = value
    return out


class SB3Wrapper(gym.ObservationWrapper):
    """Makes a vlagym env a valid stable-baselines3 env (passes SB3's ``check_env``).

    Args:
        env: a vlagym env (``gym.make("vlagym/...")``).
        instruction: an ``InstructionEncoder`` or its fields as a dict (default: the sentence encoder);
            ``{"kind": "clip", "model": ARCH, "max_tokens": CONTEXT_LENGTH}`` gives the instruction as an
            open_clip model's token ids, for ``VLFeaturesExtractor`` (see the module docstring).

    The action space, rewards, ``terminated``/``truncated`` and ``info`` (``"success"`` every step) are
    the env's own.
    """

    def __init__(self, env: gym.Env, instruction: InstructionEncoder | dict | None = None) -> None:
        super().__init__(env)
        if not isinstance(instruction, InstructionEncoder):
            instruction = InstructionEncoder.from_dict(instruction)
        self.transform = SB3ObsTransform(env.observation_space, instruction)
        self.observation_space = self.transform.observation_space

    def observation(self, observation: dict[str, Any]) -> dict[str, np.ndarray]:
        return self.transform(observation)


def make_sb3_env(env_id: str, instruction: InstructionEncoder | dict | None = None, seed: int | None = None,
                 **env_kwargs) -> gym.Env:
    """``gym.make(env_id, **env_kwargs)`` wrapped for SB3 (with SB3's ``Monitor`` left to the caller)."""
    from vlagym.envs import check_env_id

    env = SB3Wrapper(gym.make(check_env_id(env_id), **env_kwargs), instruction)
    if seed is not None:
        env.action_space.seed(seed)
    return env


__all__ = ["INSTRUCTION_KINDS", "SENTENCE_MODEL", "InstructionEncoder", "SB3ObsTransform", "SB3Wrapper",
           "hash_word_ids", "make_sb3_env", "sb3_observation"]
