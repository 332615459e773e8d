"""Per-step latency of a policy at batch 1 on one thread: what a control loop pays for each action.

``step_latency`` times ``act`` (observation checks, history, the step network, decoding; the instruction
embedding is computed once, in the warm-up, as in an episode). ``backend_latencies`` builds the backends of
one saved policy (torch float, torch dynamic int8, ONNX Runtime float, ONNX Runtime static int8) and
times each on the same observations. Figures are for comparison within one run on one machine.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

BACKENDS = {"torch": None, "torch-int8": "dynamic-int8", "onnxruntime": "onnx", "onnxruntime-int8": "onnx-int8"}


def count_parameters(policy) -> int:
    """Parameters, counting the int8 weights a dynamically quantized Linear packs away from ``parameters()``."""
    inner = getattr(policy, "policy", policy)
    n = inner.num_parameters()
    for m in inner.modules():
        if type(m).__module__.startswith("torch.ao.nn.quantized") and callable(getattr(m, "weight", None)):
            w, b = m.weight(), m.bias()
            n += w.numel() + (b.numel() if b is not None else 0)
    return n


def step_latency(policy, observations: list[dict[str, Any]], calls: int = 100, warmup: int = 5,
                 threads: int = 1) -> dict[str, float]:
    """p50/p95/mean milliseconds and Hz (1000 / p50) of ``policy.act`` over ``calls`` calls cycling through
    ``observations`` (one instruction), after ``warmup`` untimed calls, on ``threads`` torch threads."""
    if not observations:
        raise ValueError("step_latency needs at least one observation")
    if calls < 1:
        raise ValueError(f"calls must be >= 1, got {calls}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        policy.reset()
        for i in range(warmup):
            policy.act(observations[i % len(observations)])
        times = []
        with torch.no_grad():
            for i in range(calls):
                obs = observations[(warmup + i) % len(observations)]
                t = time.perf_counter()
                policy.act(obs)
                times.append((time.perf_counter() - t) * 1000.0)
    finally:
        torch.set_num_threads(previous)
        policy.reset()
    p50 = statistics.median(times)
    return {"p50_ms": p50, "p95_ms": float(np.percentile(times, 95)), "mean_ms": statistics.fmean(times),
            "hz": 1000.0 / p50, "calls": calls}


def backend_latencies(teacher: str | Path, observations: list[dict[str, Any]],
                      calibration: list[list[dict[str, Any]]] | None = None,
                      backends: tuple[str, ...] = tuple(BACKENDS), calls: int = 100, threads: int = 1,
                      out: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per backend of the policy at ``teacher``: latency (``step_latency``), parameters, folder
    size, and the largest action difference from the torch float policy on ``observations``.

    ``calibration`` (episodes of observations) is needed for ``onnxruntime-int8``; default: the
    observations themselves as one episode. Compressed folders go under ``out`` (default a temporary
    folder, removed afterwards)."""
    from vlagym.policies.compress.api import check_teacher, compress_policy
    from vlagym.policies.factory import load_policy

    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backends {unknown}; choose from {list(BACKENDS)}")
    teacher = check_teacher(teacher)
    calibration = calibration or [observations]
    reference = load_policy(teacher)
    reference.reset()
    ref_actions = np.stack([np.asarray(reference.act(o), dtype=np.float64) for o in observations])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(out) if out is not None else Path(tmp)
        for backend in backends:
            method = BACKENDS[backend]
            folder = teacher if method is None else compress_policy(teacher, method, root / method,
                                                                    calibration=calibration, threads=threads)
            policy = load_policy(folder)
            if hasattr(policy, "session"):  # ONNX Runtime: the session's own thread count
                from vlagym.policies.compress.onnx_backend import OnnxPolicy

                policy = OnnxPolicy(policy.policy, policy.onnx_path, threads)
            policy.reset()
            actions = np.stack([np.asarray(policy.act(o), dtype=np.float64) for o in observations])
            row = {"backend": backend, "method": method or "float", "threads": threads,
                   **step_latency(policy, observations, calls, threads=threads),
                   "params": count_parameters(policy),
                   "folder_mb": sum(f.stat().st_size for f in Path(folder).iterdir() if f.is_file()) / 2**20,
                   "onnx_mb": (Path(folder) / "step.onnx").stat().st_size / 2**20
                   if (Path(folder) / "step.onnx").exists() else None,
                   "max_action_diff": float(np.abs(actions - ref_actions).max())}
            rows.append(row)
    return rows
