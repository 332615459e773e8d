"""What every policy shares: the config base class and the ``Policy`` interface.

A policy is an ``nn.Module`` built from a config dataclass. It acts on one env observation at a
time (``act``), keeping its own history and queue of planned actions until ``reset``; it trains on
``DemoWindows`` batches (``loss``); and it saves as ``model.safetensors`` + ``config.json``. The
config carries the env's shapes, action bounds and the normalisation statistics, so a loaded
policy acts in env units with no other file.

Batch format (from ``vlagym.dataio.windows.DemoWindows`` and a default collate):
    ``rgb`` uint8 (B, T, 3, H, W); ``obs_mask`` bool (B, T); ``proprio`` float32 (B, T, P);
    ``actions`` float32 (B, H, A) in env units (discrete actions: (B, H) class labels, never normalised);
    ``action_mask`` bool (B, H); ``instruction`` list[str].
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import math
import typing
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from vlagym.policies.language import DEFAULT_SENTENCE_MODEL, TEXT_ENCODERS, WORD_POOLING, make_text_encoder

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def read_config(path: Path) -> dict[str, Any]:
    """A policy's config.json as a dict; bad JSON is a ``ValueError`` naming the file."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _bad(config: Any, name: str, why: str) -> ValueError:
    return ValueError(f"{type(config).__name__}.{name} {why}, got {getattr(config, name)!r}")


@dataclass
class PolicyConfig:
    """Fields every policy has: the env's shapes, the action bounds and the normalisation statistics.

    ``make_policy`` fills the shapes and bounds from the env's spaces; build configs by hand only
    for tests or tools.
    """

    type: ClassVar[str] = ""
    """The policy's registered name (config.json's ``type``), set by ``@register_policy`` on its policy."""

    image_size: tuple[int, int] = (128, 128)
    """Camera resolution (height, width). Must equal the env's: images are never resized."""
    image_key: str = "rgb"
    """Observation key of the camera the policy reads."""
    extra_image_keys: tuple[str, ...] = ()
    """More cameras of the same size, e.g. ``("rgb_wrist",)`` with the env's ``wrist_camera=True``
    (BC-Z encodes each camera separately and joins the features; RT-1 and CLIP read one camera)."""
    proprio_dim: int = 6
    """Length of ``obs["proprio"]``."""
    action_dim: int = 5
    """Length of the action vector (1 with ``action_classes``)."""
    action_classes: int = 0
    """n for a ``Discrete(n)`` action space (navigation's stop/forward/left/right), 0 for a ``Box``. The
    policy then predicts one class per step with a categorical head trained by cross-entropy on the
    dataset's integer actions (never normalised), and ``act`` returns the argmax as a Python int.
    ``action_low``/``action_high`` hold the first and last action, ``(start,)`` and ``(start + n - 1,)``."""
    action_low: tuple[float, ...] | None = None
    """Action space lower bounds (default -1 everywhere); predictions are clipped to them."""
    action_high: tuple[float, ...] | None = None
    """Action space upper bounds (default +1 everywhere)."""
    gripper_dims: tuple[int, ...] = (4,)
    """Action dimensions that are binary open/close commands (the tabletop Panda's last one)."""
    gripper_threshold: float = 0.0
    """A gripper value >= this means "closed" (the tabletop env closes at >= 0)."""
    history: int = 1
    """Observations per decision, ending at the current step (``DemoWindows(history=...)``)."""
    horizon: int = 1
    """Actions predicted per decision, starting at the current step (``DemoWindows(horizon=...)``)."""
    n_action_steps: int = 1
    """Of each predicted chunk, how many actions ``act`` executes before predicting again."""
    stats: dict[str, dict[str, list[float]]] | None = None
    """``{"actions": {mean, std, min, max}, "proprio": {mean, std}}`` per dimension (a dataset's
    stats.json). Missing parts are derived from the bounds: mean = centre, std = half-range."""
    heatmap_weight: float = 0.0
    """Weight of the grounding heatmap loss (``vlagym.policies.grounding``): a heatmap per role on each
    camera's language-conditioned feature map, trained on the dataset's privileged pixel labels; 0 builds
    no heatmap head."""
    position_weight: float = 0.0
    """Weight of the regression of each role's 3-D position in the robot frame; 0 builds no position head."""
    yaw_weight: float = 0.0
    """Weight of the regression of each role's yaw relative to the hand, folded by its symmetry
    (``labels/<role>/yaw``); 0 builds no yaw head."""
    roles: tuple[str, ...] = ()
    """Roles the grounding heads locate (``object``, ``destination``, ``goal``: ``Task.label_roles``);
    ``vlagym train`` fills them from the data when a grounding weight is set."""
    feed_location: bool = False
    """Hand the predicted pixel positions, visibilities and 3-D positions to the action head."""

    @classmethod
    def tiny_variants(cls) -> dict[str, dict[str, Any]]:
        """Variant suffix (``""`` for the plain one) -> field overrides that shrink this policy to test size
        with every architectural part kept. The policy tests, the regression artifact and the benchmark's
        smoke test build every registered policy from these (``"<name>"``, ``"<name>-<suffix>"``), so a new
        policy is tested once it declares them; the policy tests fail naming one that declares none."""
        return {}

    def __post_init__(self) -> None:
        if isinstance(self.image_size, int):
            self.image_size = (self.image_size, self.image_size)
        self.image_size = tuple(int(s) for s in self.image_size)
        if len(self.image_size) != 2 or min(self.image_size) < 16:
            raise _bad(self, "image_size", "must be (height, width) with both >= 16")
        for name in ("proprio_dim", "action_dim", "history", "horizon", "n_action_steps"):
            value = getattr(self, name)
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or value < (0 if name == "proprio_dim" else 1)
            ):
                raise _bad(self, name, "must be a positive integer")
        if self.n_action_steps > self.horizon:
            raise _bad(self, "n_action_steps", f"must be <= horizon ({self.horizon})")
        self.extra_image_keys = tuple(self.extra_image_keys)
        keys = (self.image_key, *self.extra_image_keys)
        if len(set(keys)) != len(keys):
            raise _bad(self, "extra_image_keys", f"must not repeat a camera (image_key is {self.image_key!r})")
        a, n = self.action_dim, self.action_classes
        if not isinstance(n, int) or isinstance(n, bool) or n < 0 or n == 1:
            raise _bad(self, "action_classes", "must be 0 (a Box action space) or n >= 2 (Discrete(n))")
        if n:
            if a != 1:
                raise _bad(self, "action_dim", f"must be 1 with discrete actions (action_classes={n})")
            if self.gripper_dims:
                raise _bad(self, "gripper_dims", "must be () with discrete actions")
            if self.action_low is None:
                self.action_low = (0.0,) if self.action_high is None else (float(self.action_high[0]) - n + 1,)
            if self.action_high is None:
                self.action_high = (float(self.action_low[0]) + n - 1,)
        self.action_low = tuple(
            float(v) for v in (self.action_low if self.action_low is not None else [-1.0] * a)
        )
        self.action_high = tuple(
            float(v) for v in (self.action_high if self.action_high is not None else [1.0] * a)
        )
        for name in ("action_low", "action_high"):
            values = getattr(self, name)
            if len(values) != a or not all(math.isfinite(v) for v in values):
                raise _bad(self, name, f"must be {a} finite numbers")
        if any(lo >= hi for lo, hi in zip(self.action_low, self.action_high, strict=True)):
            raise _bad(self, "action_high", f"must exceed action_low {self.action_low} everywhere")
        if n and (not float(self.action_low[0]).is_integer() or self.action_high[0] - self.action_low[0] != n - 1):
            raise _bad(self, "action_high", f"must be action_low + {n - 1} with {n} discrete actions starting at an "
                                            f"integer (action_low={self.action_low})")
        dims = tuple(int(d) % a if -a <= int(d) < a else int(d) for d in self.gripper_dims)
        if any(not 0 <= d < a for d in dims) or len(set(dims)) != len(dims):
            raise _bad(self, "gripper_dims", f"must be distinct indices into {a} action dimensions")
        self.gripper_dims = tuple(sorted(dims))
        self.stats = self._complete_stats(self.stats)
        self.roles = tuple(self.roles)
        for name in ("heatmap_weight", "position_weight", "yaw_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise _bad(self, name, "must be a number >= 0")
        if self.grounded and not self.roles:
            raise _bad(self, "roles", "must name the roles to locate (e.g. ('object',)) when a grounding weight "
                                      "is set")
        if self.feed_location and not self.grounded:
            raise _bad(self, "feed_location", "needs heatmap_weight, position_weight or yaw_weight > 0")
        if len(set(self.roles)) != len(self.roles):
            raise _bad(self, "roles", "must not repeat a role")

    @property
    def grounded(self) -> bool:
        """Whether the policy has grounding heads."""
        return self.heatmap_weight > 0 or self.position_weight > 0 or self.yaw_weight > 0

    def _complete_stats(self, stats: dict | None) -> dict[str, dict[str, list[float]]]:
        stats = dict(stats or {})
        if "mean" in stats:  # a bare action-stats dict, as DemoWindows.action_stats() returns
            stats = {"actions": stats}
        lo, hi = np.array(self.action_low), np.array(self.action_high)
        out: dict[str, dict[str, list[float]]] = {}
        actions = stats.get("actions") or {"mean": (lo + hi) / 2, "std": (hi - lo) / 2, "min": lo, "max": hi}
        proprio = stats.get("proprio") or {"mean": [0.0] * self.proprio_dim, "std": [1.0] * self.proprio_dim}
        for key, src, want, dim in (
            ("actions", actions, ("mean", "std", "min", "max"), self.action_dim),
            ("proprio", proprio, ("mean", "std"), self.proprio_dim),
        ):
            out[key] = {}
            for k in want:
                if k not in src:
                    raise ValueError(f"{type(self).__name__}.stats[{key!r}] lacks {k!r}; has {sorted(src)}")
                values = [float(v) for v in np.asarray(src[k], dtype=np.float64).reshape(-1)]
                if len(values) != dim or not all(math.isfinite(v) for v in values):
                    raise ValueError(
                        f"{type(self).__name__}.stats[{key!r}][{k!r}] must be {dim} finite numbers, "
                        f"got {values!r}"
                    )
                out[key][k] = values
        if any(s < 0 for s in out["actions"]["std"] + out["proprio"]["std"]):
            raise ValueError(f"{type(self).__name__}.stats has a negative std: {out!r}")
        return out

    # --- serialisation --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyConfig:
        data = {k: v for k, v in data.items() if k != "type" and not k.startswith("_")}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{cls.__name__} has no fields {unknown}; fields are {sorted(names)}")
        hints = typing.get_type_hints(cls)
        for k, v in data.items():  # JSON turns tuples into lists
            if isinstance(v, list) and "tuple" in str(hints.get(k, "")):
                data[k] = tuple(v)
        return cls(**data)


@dataclass
class LanguageConditionedConfig(PolicyConfig):
    """A policy conditioned on an instruction embedding from ``vlagym.policies.language``."""

    text_encoder: str = "sentence"
    """``"sentence"`` (Hugging Face, default all-MiniLM-L6-v2), ``"clip"`` (open_clip text tower, needs
    ``text_pretrained``), or ``"hash"``/``"random"`` (a small trainable embedding for tests)."""
    text_model: str = DEFAULT_SENTENCE_MODEL
    """Hugging Face name or local directory (sentence), or open_clip architecture (clip)."""
    text_pretrained: str | None = None
    """open_clip pretrained tag or file (clip only)."""
    text_dim: int = 64
    """Embedding size of the hash and word encoders (the pretrained encoders have their own)."""
    vocab: tuple[str, ...] = ()
    """The word encoder's vocabulary (``"words"``, ``"sentence+words"``); ``vlagym train`` builds it from
    the training instructions. Words outside it share one learned "unknown" embedding."""
    word_pooling: str = "gru"
    """How the word encoder pools its word embeddings: ``"gru"`` (last state) or ``"mean"``."""
    freeze_text: bool = True
    """Keep a pretrained text encoder fixed; its embeddings are then cached per instruction."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.text_encoder not in TEXT_ENCODERS:
            raise _bad(self, "text_encoder", f"must be one of {TEXT_ENCODERS}")
        if self.text_dim < 1:
            raise _bad(self, "text_dim", "must be >= 1")
        self.vocab = tuple(self.vocab)
        if "words" in self.text_encoder and not self.vocab:
            raise _bad(self, "vocab", f"must list the words of the training instructions for text_encoder="
                                      f"{self.text_encoder!r} (vlagym train fills it)")
        if self.word_pooling not in WORD_POOLING:
            raise _bad(self, "word_pooling", f"must be one of {WORD_POOLING}")


@dataclass
class _Frame:
    """One parsed observation."""

    image: torch.Tensor  # uint8 (3, H, W)
    proprio: torch.Tensor  # float32 (P,)
    instruction: str
    extra_images: tuple[torch.Tensor, ...] = ()  # config.extra_image_keys, each uint8 (3, H, W)


class StepModule(nn.Module):
    """One decision's network as a pure function of tensors: what ``act`` runs each step between its
    bookkeeping, and what export, quantization and other backends take.

    ``forward(*inputs)`` takes the tensors named ``input_names`` in order (batch 1 when acting) and returns
    the tuple named ``output_names``. The policy is held as a child module, so the step module shares its
    weights (a copy of the policy gives a step module over the copy).
    """

    def __init__(self, policy: Policy, input_names: tuple[str, ...], output_names: tuple[str, ...]) -> None:
        super().__init__()
        self.policy = policy
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)


class Policy(nn.Module, abc.ABC):
    """Base class: observation checks, action queue, stats, save/load. Subclasses implement
    ``loss(batch)``, ``predict(batch)`` and the per-step network (``step_module``, ``step_inputs``,
    ``finish_step``), which ``_plan`` joins."""

    name: ClassVar[str] = ""
    """Set by ``@register_policy(name)`` (``vlagym.policies.registry``)."""
    config_class: ClassVar[type[PolicyConfig]] = PolicyConfig

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config
        self._queue: deque[np.ndarray] = deque()
        self._instruction: str | None = None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # --- acting ---------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the episode: history, cached tokens and planned actions."""
        self._queue.clear()
        self._instruction = None

    @torch.no_grad()
    def act(self, obs: dict[str, Any]) -> np.ndarray | int:
        """One env observation (``rgb`` uint8 HxWx3, ``instruction`` str, ``proprio`` float32) ->
        float32 action in env units, or with ``action_classes`` the discrete action as a Python int.
        A new instruction starts a new history."""
        frame = self._parse_obs(obs)
        if frame.instruction != self._instruction:
            self.reset()
            self._instruction = frame.instruction
        if not self._queue:
            was_training = self.training
            if was_training:  # BatchNorm and dropout must not act as in training on one frame
                self.eval()
            try:
                chunk = self._plan(frame)  # (horizon, A) env units
            finally:
                if was_training:
                    self.train()
            self._queue.extend(chunk[: self.config.n_action_steps].float().cpu().numpy())
        action = self._queue.popleft()
        if self.config.action_classes:
            return int(round(float(action[0])))
        return action.astype(np.float32)

    def _plan(self, frame: _Frame) -> torch.Tensor:
        """Predict the action chunk ``(horizon, A)`` in env units from the current frame: the step's
        tensors from the history, the step network on them, the raw output decoded."""
        return self.finish_step(self.run_step(self.step_inputs(frame)))

    # --- the per-step network -------------------------------------------------------------------------------
    # ``act`` is history bookkeeping (``step_inputs``, ``finish_step``) around one pure network
    # (``step_module``), so an exported or quantized copy of that network can stand in for it
    # (``set_step_runner``) while the bookkeeping, the once-per-episode instruction encoding and the
    # decoding stay the policy's own.
    def step_module(self) -> StepModule:
        """The per-step network over the step's tensors (``step_inputs``), sharing this policy's weights.

        Optional: a policy that overrides ``_plan`` itself acts without one, but cannot be exported to ONNX,
        quantized or pruned (``vlagym.policies.compress`` asks for it)."""
        raise NotImplementedError(self._no_step_network("step_module"))

    def step_inputs(self, frame: _Frame) -> dict[str, torch.Tensor]:
        """The current frame and what ``act`` remembers (instruction embedding, past frames' features) as
        the step network's inputs, batch 1, keyed by ``StepModule.input_names``."""
        raise NotImplementedError(self._no_step_network("step_inputs"))

    def finish_step(self, outputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The step network's outputs -> the action chunk ``(horizon, A)`` in env units; remembers what
        the next step needs (this frame's features)."""
        raise NotImplementedError(self._no_step_network("finish_step"))

    def _no_step_network(self, method: str) -> str:
        return (f"{type(self).__name__} ({self.name!r}) defines no {method}(): it plans with its own _plan, "
                "and has no per-step network to export, quantize or prune (docs/adding-a-policy.md)")

    def set_step_runner(self, runner: Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, ...]] | None
                        ) -> None:
        """Run the step network with ``runner`` (inputs by name -> outputs in ``output_names`` order), e.g.
        an ONNX Runtime session; None goes back to ``step_module``."""
        self.__dict__["_step_runner"] = runner

    def run_step(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The step network's outputs on ``inputs`` (through the runner when one is set)."""
        runner = self.__dict__.get("_step_runner")
        if runner is not None:
            return tuple(runner(inputs))
        step = self.__dict__.get("_step_module")
        if step is None or step.policy is not self:  # kept outside _modules: no cycle in state_dict
            step = self.__dict__["_step_module"] = self.step_module()
        return tuple(step(*inputs.values()))

    @abc.abstractmethod
    def predict(self, batch: dict[str, Any]) -> torch.Tensor:
        """Batched inference on a window batch -> ``(B, horizon, A)`` actions in env units."""

    @abc.abstractmethod
    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss on a window batch -> (scalar loss, floats to log)."""

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss(batch)

    # --- input checks ---------------------------------------------------------------------------------------
    def _parse_obs(self, obs: dict[str, Any]) -> _Frame:
        cfg = self.config
        if not hasattr(obs, "keys"):
            raise TypeError(f"{self.name}.act expects an observation dict, got {type(obs).__name__}")
        missing = [k for k in (*self.image_keys(), "instruction", "proprio") if k not in obs]
        if missing:
            raise KeyError(f"{self.name}.act: observation lacks {missing}; it has {sorted(obs.keys())}")
        image, *extras = (self._obs_image(obs, key) for key in self.image_keys())
        proprio = np.asarray(obs["proprio"], dtype=np.float32).reshape(-1)
        if proprio.shape != (cfg.proprio_dim,):
            raise ValueError(
                f"{self.name}.act: obs['proprio'] has {proprio.size} values, expected {cfg.proprio_dim}"
            )
        instruction = obs["instruction"]
        if not isinstance(instruction, str):
            raise TypeError(
                f"{self.name}.act: obs['instruction'] must be a str, got {type(instruction).__name__}"
            )
        return _Frame(image, torch.from_numpy(proprio).to(self.device), instruction, tuple(extras))

    def _obs_image(self, obs: dict[str, Any], key: str) -> torch.Tensor:
        cfg = self.config
        image = np.asarray(obs[key])
        want = (*cfg.image_size, 3)
        if image.shape != want:
            raise ValueError(
                f"{self.name}.act: obs[{key!r}] has shape {image.shape}, expected {want} "
                f"(config.image_size={cfg.image_size}); make the env with image_size matching the "
                "policy, images are not resized"
            )
        if image.dtype != np.uint8:
            raise ValueError(f"{self.name}.act: obs[{key!r}] must be uint8, got {image.dtype}")
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).to(self.device)

    def _batch_images(self, batch: dict[str, Any], key: str | None = None) -> torch.Tensor:
        """``batch[key]`` (default ``config.image_key``) checked and on device: uint8 (B, T, 3, H, W)."""
        cfg = self.config
        key = key or cfg.image_key
        if key not in batch:
            raise KeyError(f"{self.name}: batch lacks {key!r}; it has {sorted(batch)}")
        images = batch[key]
        if images.dim() != 5 or images.shape[2] != 3 or tuple(images.shape[-2:]) != cfg.image_size:
            raise ValueError(
                f"{self.name}: batch[{key!r}] has shape {tuple(images.shape)}, expected "
                f"(B, T, 3, {cfg.image_size[0]}, {cfg.image_size[1]}) (config.image_size)"
            )
        if images.dtype != torch.uint8:
            raise ValueError(f"{self.name}: batch[{key!r}] must be uint8, got {images.dtype}")
        return images.to(self.device)

    def _batch_actions(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``horizon`` actions and their mask: (B, horizon, A), bool (B, horizon).

        Discrete actions are stored one number per step, so their windows come as (B, horizon): they gain
        the A = 1 axis here."""
        actions = batch["actions"]
        if actions.dim() == 2 and self.config.action_dim == 1:
            actions = actions.unsqueeze(-1)
        mask = batch.get("action_mask")
        if mask is None:
            mask = torch.ones(actions.shape[:2], dtype=torch.bool)
        h, a = self.config.horizon, self.config.action_dim
        if actions.dim() != 3 or actions.shape[1] < h or actions.shape[2] != a:
            raise ValueError(
                f"{self.name}: batch['actions'] has shape {tuple(actions.shape)}, expected (B, >= {h}, "
                f"{a}); build DemoWindows with horizon={h}"
            )
        dev = self.device
        return actions[:, :h].to(dev, torch.float32), mask[:, :h].to(dev)

    # --- save / load ----------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` and ``config.json`` (with the normalisation statistics)."""
        from vlagym.core.provenance import VERSION as __version__

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_model(self, str(directory / WEIGHTS_NAME), metadata={"type": self.name})
        data = {**self.config.to_dict(), "_vlagym_version": __version__}
        (directory / CONFIG_NAME).write_text(json.dumps(data, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> Policy:
        """Load a policy saved by ``save_pretrained`` (in eval mode)."""
        directory = Path(directory)
        path = directory / CONFIG_NAME
        if not path.exists():
            raise FileNotFoundError(f"{path} not found; is {directory} a policy saved with save_pretrained?")
        data = read_config(path)
        if data.get("type") != cls.name:
            raise ValueError(
                f"{path} holds a {data.get('type')!r} policy, not {cls.name!r}; use "
                "vlagym.policies.load_policy to load any type"
            )
        try:
            policy = cls(cls.config_class.from_dict(data), load_pretrained=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from e
        weights = directory / WEIGHTS_NAME
        if not weights.exists():
            raise FileNotFoundError(f"{weights} not found; is {directory} a policy saved with save_pretrained?")
        try:
            load_model(policy, str(weights), strict=True, device=str(device))
        except SafetensorError as e:  # truncated or not a safetensors file at all
            raise ValueError(f"{weights}: cannot read the weights ({e}); the file is truncated or corrupt") from e
        except RuntimeError as e:  # missing or unexpected tensors, wrong shapes
            raise ValueError(f"{weights} does not match {path}: {e}") from e
        return policy.to(device).eval()

    # --- what a trainer needs to know -----------------------------------------------------------------------
    def window(self) -> tuple[int, int]:
        """``(history, horizon)`` for ``DemoWindows``."""
        return self.config.history, self.config.horizon

    def image_keys(self) -> tuple[str, ...]:
        """Image observations the policy reads (``DemoWindows(image_keys=...)``)."""
        return (self.config.image_key, *self.config.extra_image_keys)

    def label_keys(self) -> tuple[str, ...]:
        """Privileged labels the grounding heads train on (``DemoWindows(label_keys=...)``)."""
        from vlagym.policies.grounding import role_label_keys

        cfg = self.config
        return role_label_keys(cfg.roles, self.image_keys(), cfg.heatmap_weight > 0, cfg.position_weight > 0,
                               cfg.yaw_weight > 0)

    def config_dict(self) -> dict[str, Any]:
        """The config as JSON-able data, with its ``type``."""
        return self.config.to_dict()

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def text_encoder_from_config(cfg: LanguageConditionedConfig):
    return make_text_encoder(
        cfg.text_encoder, cfg.text_model, cfg.text_pretrained, cfg.text_dim, cfg.freeze_text, cfg.vocab,
        cfg.word_pooling,
    )


def mlp(in_dim: int, hidden: int, layers: int, dropout: float = 0.0) -> nn.Sequential:
    """``layers`` x (Linear, ReLU[, Dropout]) from ``in_dim`` to ``hidden``."""
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(in_dim if i == 0 else hidden, hidden), nn.ReLU()]
        if dropout:
            mods.append(nn.Dropout(dropout))
    return nn.Sequential(*mods)


__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "LanguageConditionedConfig",
    "Policy",
    "PolicyConfig",
    "StepModule",
    "mlp",
    "text_encoder_from_config",
]
