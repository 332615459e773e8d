"""The per-step network in ONNX, run by ONNX Runtime behind the policy's own ``act``.

``export_onnx`` writes a policy's ``StepModule`` with ``torch.onnx.export(dynamo=True)``: the TorchScript
exporter cannot export the fused attention kernels PyTorch picks in eval mode
(``aten::_transformer_encoder_layer_fwd``, ``aten::_native_multi_head_attention``), and on BC-Z it
disagreed with eager PyTorch by 0.16 where the dynamo export agrees to 2e-7.

``OnnxPolicy`` keeps a torch policy for what is not per-step work — the observation checks, the history,
the instruction embedding (computed once per episode) and the decoding of the raw output — and sends each
step's tensors through an ``onnxruntime.InferenceSession`` instead of the torch step network.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlagym.policies.base import Policy

logger = logging.getLogger(__name__)

OPSET = 18


def example_observation(policy: Policy, instruction: str = "pick up the red cube") -> dict[str, Any]:
    """A valid observation for ``policy`` (grey images, zero proprio), for tracing and probing shapes."""
    cfg = policy.config
    obs: dict[str, Any] = {key: np.full((*cfg.image_size, 3), 127, np.uint8) for key in policy.image_keys()}
    obs.update(instruction=instruction, proprio=np.zeros(cfg.proprio_dim, np.float32))
    return obs


@torch.no_grad()
def example_step_inputs(policy: Policy, obs: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """The step network's inputs for ``obs`` (default ``example_observation``) as ``act`` builds them on an
    episode's first step; the policy's history is left empty."""
    policy.reset()
    was_training = policy.training
    policy.eval()
    try:
        frame = policy._parse_obs(obs if obs is not None else example_observation(policy))
        inputs = policy.step_inputs(frame)
    finally:
        policy.reset()
        policy.train(was_training)
    return inputs


def export_onnx(policy: Policy, path: str | Path, inputs: dict[str, torch.Tensor] | None = None,
                opset: int = OPSET) -> Path:
    """Export ``policy.step_module()`` (batch 1, the shapes of ``inputs``) to ``path``; returns the path.

    Raises ``ValueError`` for a model that is not a float torch policy (a dynamically quantized copy has
    no ONNX export: export the float policy and quantize in ONNX Runtime instead)."""
    if not isinstance(policy, Policy):
        raise TypeError(f"export_onnx needs a vlagym Policy, got {type(policy).__name__}")
    if any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in policy.modules()):
        raise ValueError("export_onnx: this policy holds torch-quantized layers; export the float policy and "
                         "quantize the ONNX model (method 'onnx-int8') instead")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    policy = policy.eval()
    inputs = inputs if inputs is not None else example_step_inputs(policy)
    step = policy.step_module()
    if tuple(inputs) != step.input_names:
        raise ValueError(f"export_onnx: inputs are {list(inputs)}, the step network takes {list(step.input_names)}")
    # The exporter prints its progress and warns about each decomposition; keep that out of the user's way.
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(step, tuple(inputs.values()), str(path), input_names=list(step.input_names),
                          output_names=list(step.output_names), dynamo=True, opset_version=opset,
                          external_data=False, verbose=False)
    return path


def make_session(path: str | Path, threads: int = 1):
    """An ONNX Runtime CPU session on ``threads`` intra-op threads (default 1: the control loop's budget is
    one core, and one thread keeps timings comparable with torch on one thread)."""
    import onnxruntime as ort

    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"ONNX model {path} not found")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # warnings about unused initializers are noise here
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def session_runner(session) -> Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, ...]]:
    """A ``Policy.set_step_runner`` runner over ``session``: torch inputs by name -> torch outputs. Inputs
    the exporter found unused (and dropped) are not fed."""
    names = [i.name for i in session.get_inputs()]

    def run(inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ValueError(f"the ONNX step network needs inputs {missing}; the policy gave {sorted(inputs)}")
        feed = {n: inputs[n].detach().cpu().numpy() for n in names}
        return tuple(torch.from_numpy(np.asarray(o)) for o in session.run(None, feed))

    return run


class OnnxPolicy:
    """A policy whose per-step network runs in ONNX Runtime; ``act``/``reset`` as ``Policy``'s.

    Args:
        policy: the float torch policy the ONNX model was exported from (or the same architecture and
            weights): it does the bookkeeping, the instruction embedding and the decoding.
        onnx_path: the exported step network (``export_onnx``), float or int8 (QDQ).
        threads: ONNX Runtime intra-op threads.
    """

    def __init__(self, policy: Policy, onnx_path: str | Path, threads: int = 1) -> None:
        self.policy = policy.eval()
        self.onnx_path = Path(onnx_path)
        self.threads = threads
        self.session = make_session(self.onnx_path, threads)
        self.policy.set_step_runner(session_runner(self.session))

    @property
    def name(self) -> str:
        return self.policy.name

    @property
    def config(self):
        return self.policy.config

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def reset(self) -> None:
        self.policy.reset()

    def act(self, obs: dict[str, Any]) -> np.ndarray | int:
        """As ``Policy.act``: one observation -> the action in env units."""
        return self.policy.act(obs)

    def eval(self) -> OnnxPolicy:
        return self

    def train(self, mode: bool = True) -> OnnxPolicy:
        if mode:
            raise ValueError("an ONNX Runtime policy cannot train; train the torch policy it came from")
        return self

    def to(self, device: str | torch.device) -> OnnxPolicy:
        """ONNX Runtime runs here on the CPU; any other device is refused rather than ignored."""
        if torch.device(device).type != "cpu":
            raise ValueError(f"an ONNX Runtime policy runs on the CPU (CPUExecutionProvider), not {device}")
        return self

    def image_keys(self) -> tuple[str, ...]:
        return self.policy.image_keys()

    def window(self) -> tuple[int, int]:
        return self.policy.window()

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameters of the torch policy behind the session (the step network's are the same numbers)."""
        return self.policy.num_parameters(trainable_only)

    def __repr__(self) -> str:
        return f"OnnxPolicy({self.name}, {self.onnx_path}, threads={self.threads})"
