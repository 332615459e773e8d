"""Compression for real-time control: int8 quantization, pruning and an ONNX Runtime backend, each over the
policy's per-step network (``Policy.step_module``), each saved with its provenance (``compression.json``).

``compress_policy(teacher_dir, method, out)`` writes a compressed folder; ``vlagym.policies.load_policy``
(and so ``PolicyAgent.load`` and ``vlagym eval --policy``) loads it. ``step_latency`` and
``backend_latencies`` time a policy per step. Heavy libraries (onnx, onnxruntime, torch-pruning) load when a
method needs them.
"""

from vlagym.policies.compress.api import (
    METHODS,
    agreement,
    check_method,
    check_teacher,
    compress_policy,
    load_any,
    load_compressed,
)
from vlagym.policies.compress.record import COMPRESSION_NAME, ONNX_NAME, STRUCTURE_NAME, read_record

__all__ = [
    "COMPRESSION_NAME",
    "METHODS",
    "ONNX_NAME",
    "STRUCTURE_NAME",
    "agreement",
    "check_method",
    "check_teacher",
    "compress_policy",
    "load_any",
    "load_compressed",
    "read_record",
]
