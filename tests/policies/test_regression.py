"""Numerical regression in LeRobot's manner: fixed seed and batch -> saved loss, gradients' norm and actions.

A change that alters what a policy computes (initialisation, layer order, normalisation, loss)
fails here. If the change is intended, regenerate the artifact and commit it with the change:

    python tests/policies/test_regression.py --save
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent))
from policy_helpers import VARIANTS, observation, synthetic_batch, tiny_policy  # noqa: E402

# Test fixtures that are tensors live in assets/ with the other binary files.
ARTIFACT = Path(__file__).resolve().parents[2] / "assets" / "regression" / "policy_regression.safetensors"


def compute(variant: str) -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    policy = tiny_policy(variant, seed=0).train()
    batch = synthetic_batch(policy.config, seed=0)
    loss, _ = policy.loss(batch)
    loss.backward()
    grad_norm = torch.stack([p.grad.norm() for p in policy.parameters() if p.grad is not None]).norm()
    policy.eval()
    with torch.no_grad():
        actions = policy.predict(batch)
    acted = torch.stack([torch.from_numpy(policy.act(observation(i))) for i in range(3)])
    return {
        f"{variant}/loss": loss.detach().reshape(1),
        f"{variant}/grad_norm": grad_norm.reshape(1),
        f"{variant}/predict": actions,
        f"{variant}/act": acted,
    }


@pytest.fixture(scope="module")
def saved() -> dict[str, torch.Tensor]:
    if not ARTIFACT.exists():
        pytest.fail(f"{ARTIFACT} is missing; generate it with: python {Path(__file__).as_posix()} --save")
    return load_file(ARTIFACT)


@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_saved_outputs(variant, saved):
    for key, value in compute(variant).items():
        # Loose enough for other CPUs' float rounding, tight enough to catch any real change.
        torch.testing.assert_close(value, saved[key], rtol=1e-4, atol=1e-4, msg=lambda m, k=key: f"{k}: {m}")


if __name__ == "__main__":
    if "--save" not in sys.argv:
        sys.exit(f"usage: python {sys.argv[0]} --save   (overwrites {ARTIFACT})")
    out = {}
    for v in VARIANTS:
        out.update(compute(v))
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, str(ARTIFACT))
    print(f"wrote {len(out)} tensors to {ARTIFACT}")
