"""Compression for real-time control (vlagym.policies.compress): quantized, pruned and ONNX policies act
like their float teacher within stated tolerances, save with their provenance and load through
``load_policy``, and wrong inputs are refused by name.

Tolerances (measured on these tiny policies and the shipped checkpoint): ONNX Runtime float agrees with
torch to ~1e-5 on the raw step output and well under 1e-4 on actions; int8 (torch dynamic, ONNX static)
moves actions by up to a few hundredths on the tiny policies (0.044 / 0.018 on the shipped checkpoint).
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import vlagym.assets
from vlagym.agents.policy_agent import PolicyAgent
from vlagym.policies import load_policy
from vlagym.policies.compress import COMPRESSION_NAME, ONNX_NAME, STRUCTURE_NAME, compress_policy, read_record
from vlagym.policies.compress.calibration import rollout_observations, step_inputs_from, teacher_env_kwargs
from vlagym.policies.compress.onnx_backend import OnnxPolicy, example_step_inputs, export_onnx
from vlagym.policies.compress.prune import prune_channels, prune_l1_unstructured, prune_ln_structured
from vlagym.policies.compress.quantize import quantize_dynamic_int8, quantize_onnx_static

sys.path.insert(0, str(Path(__file__).parent))
from policy_helpers import INSTRUCTIONS, observation, tiny_policy  # noqa: E402

CHECKPOINT = Path(vlagym.assets.__file__).parent / "checkpoints" / "bcz_pickup_tiny"
ONNX_TOL = 1e-4


def episode(n: int = 4, instruction: str = INSTRUCTIONS[0]) -> list[dict]:
    return [observation(i, instruction=instruction) for i in range(n)]


def acts(policy, observations) -> np.ndarray:
    policy.reset()
    out = np.stack([np.asarray(policy.act(o), dtype=np.float64) for o in observations])
    policy.reset()
    return out


def raw_outputs(policy, samples) -> list[torch.Tensor]:
    return [policy.run_step({k: torch.from_numpy(v) for k, v in s.items()})[0] for s in samples]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A tiny BC-Z (keypoints: small and quick to export) saved as a policy folder, with env_args.json."""
    path = tmp_path_factory.mktemp("teacher") / "bcz"
    tiny_policy("bcz-keypoints").save_pretrained(path)
    (path / "env_args.json").write_text(json.dumps({"env_name": "vlagym/TabletopTouch-v0", "type": "vlagym",
                                                    "env_kwargs": {"image_size": 64}}))
    return path


# --- the step network ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["bcz-2cam", "rt1", "clip-cross"])
def test_act_is_bookkeeping_around_the_step_module(variant):
    policy = tiny_policy(variant).eval()
    samples = step_inputs_from(policy, [episode(3)])
    assert len(samples) == 3
    step = policy.step_module()
    assert tuple(samples[0]) == step.input_names
    expected = acts(tiny_policy(variant).eval(), episode(3))  # same seed, same weights
    for s, action in zip(samples, expected):
        with torch.no_grad():
            outputs = step(*(torch.from_numpy(v) for v in s.values()))
        assert len(outputs) == len(step.output_names)
        np.testing.assert_array_equal(policy.finish_step(outputs)[0].numpy(), action.astype(np.float32))


# --- quantization -------------------------------------------------------------------------------------------
def test_dynamic_int8_stays_close_and_saves(teacher_dir, tmp_path):
    teacher = load_policy(teacher_dir)
    student = quantize_dynamic_int8(teacher)
    assert student.__dict__["quantized_modules"] and not any(m.startswith("text.") for m in
                                                             student.__dict__["quantized_modules"])
    assert any(type(m).__name__ == "Linear" and "quantized" in type(m).__module__ for m in student.modules())
    samples = step_inputs_from(teacher, [episode()])
    for a, b in zip(raw_outputs(teacher, samples), raw_outputs(student, samples)):
        torch.testing.assert_close(b, a, atol=0.05, rtol=0.0)
    np.testing.assert_allclose(acts(student, episode()), acts(teacher, episode()), atol=0.05)

    out = compress_policy(teacher_dir, "dynamic-int8", tmp_path / "int8", calibration=[episode()])
    loaded = load_policy(out)
    np.testing.assert_array_equal(acts(loaded, episode()), acts(student, episode()))
    record = read_record(out)
    assert record["method"] == "dynamic-int8"
    assert record["teacher"] == str(teacher_dir.resolve())
    assert record["versions"]["torch"] and record["settings"]["modules"] == student.__dict__["quantized_modules"]
    assert (out / "env_args.json").exists()


def test_rt1_dynamic_int8_runs_its_transformer():
    """The quantized Linears inside nn.TransformerEncoderLayer must not break its fused eval path."""
    teacher = tiny_policy("rt1").eval()
    student = quantize_dynamic_int8(teacher)
    assert any("transformer" in m and "linear1" in m for m in student.__dict__["quantized_modules"])
    samples = step_inputs_from(teacher, [episode(3)])
    for a, b in zip(raw_outputs(teacher, samples), raw_outputs(student, samples)):
        torch.testing.assert_close(b, a, atol=0.1, rtol=0.0)  # bin logits


# --- pruning ------------------------------------------------------------------------------------------------
def test_mask_pruning_zeroes_weights_without_shrinking():
    teacher = tiny_policy("bcz-keypoints").eval()
    for prune, kind in ((prune_l1_unstructured, "l1"), (prune_ln_structured, "ln")):
        student, report = prune(teacher, 0.5)
        assert report["masked_only"] and 0.4 < report["sparsity"] < 0.6, (kind, report)
        assert student.num_parameters() == teacher.num_parameters()
        assert not any("weight_orig" in k or "weight_mask" in k for k in student.state_dict())
        assert not any(hasattr(m, "weight_mask") for m in student.modules())
    conv = student.backbone.stages[0][0].conv1.weight
    assert (conv.flatten(1).abs().sum(1) == 0).sum() == conv.shape[0] // 2  # ln: whole output channels zero
    assert float(teacher.backbone.stages[0][0].conv1.weight.detach().abs().min()) > 0  # the teacher is untouched
    with pytest.raises(ValueError, match="fraction in"):
        prune_l1_unstructured(teacher, 1.5)


@pytest.mark.parametrize("variant", ["bcz-keypoints", "rt1-mappos"])
def test_channel_pruning_shrinks_saves_and_loads(variant, tmp_path):
    teacher = tiny_policy(variant).eval()
    student, report = prune_channels(teacher, 0.5)
    assert report["params_after"] == student.num_parameters() < teacher.num_parameters() == report["params_before"]
    assert report["groups_pruned"] > 0
    expected = acts(student, episode())
    assert np.isfinite(expected).all()

    teacher.save_pretrained(tmp_path / "teacher")
    out = compress_policy(tmp_path / "teacher", "prune-channels", tmp_path / "pruned", amount=0.5)
    structure = json.loads((out / STRUCTURE_NAME).read_text())["modules"]
    assert structure == report["structure"]
    loaded = load_policy(out)
    assert loaded.num_parameters() == student.num_parameters()
    np.testing.assert_array_equal(acts(loaded, episode()), expected)
    assert read_record(out)["results"]["params_after"] == student.num_parameters()
    with pytest.raises(ValueError, match="teacher's folder"):
        compress_policy(out, "prune-channels", out)


def test_channel_pruning_twice_records_every_resized_layer(teacher_dir, tmp_path):
    once = compress_policy(teacher_dir, "prune-channels", tmp_path / "once", amount=0.25)
    twice = compress_policy(once, "prune-channels", tmp_path / "twice", amount=0.25)
    a, b = load_policy(once), load_policy(twice)
    assert b.num_parameters() < a.num_parameters()
    assert set(json.loads((once / STRUCTURE_NAME).read_text())["modules"]) <= \
        set(json.loads((twice / STRUCTURE_NAME).read_text())["modules"])


# --- ONNX ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def onnx_dir(teacher_dir, tmp_path_factory):
    return compress_policy(teacher_dir, "onnx", tmp_path_factory.mktemp("onnx") / "float",
                           calibration=[episode()])


def test_onnx_float_matches_torch(teacher_dir, onnx_dir):
    teacher = load_policy(teacher_dir)
    student = load_policy(onnx_dir)
    assert isinstance(student, OnnxPolicy) and student.threads == 1
    assert student.session.get_session_options().intra_op_num_threads == 1
    samples = step_inputs_from(teacher, [episode(), episode(3, INSTRUCTIONS[1])])
    for a, b in zip(raw_outputs(teacher, samples), raw_outputs(student.policy, samples)):
        torch.testing.assert_close(b, a, atol=ONNX_TOL, rtol=0.0)
    np.testing.assert_allclose(acts(student, episode()), acts(teacher, episode()), atol=ONNX_TOL)
    assert read_record(onnx_dir)["results"]["agreement"]["raw_max_abs_diff"] < ONNX_TOL
    agent = PolicyAgent.load(onnx_dir)  # what vlagym eval --policy DIR does
    agent.reset()
    assert np.asarray(agent.act(observation(0))).shape == (5,)
    with pytest.raises(ValueError, match="CPU"):
        student.to("cuda")


def test_onnx_rt1_logits_match_torch(tmp_path):
    teacher = tiny_policy("rt1-mappos").eval()  # history 2: past tokens and the frame mask are inputs
    path = export_onnx(teacher, tmp_path / ONNX_NAME)
    student = OnnxPolicy(tiny_policy("rt1-mappos"), path, threads=2)
    assert student.session.get_session_options().intra_op_num_threads == 2
    samples = step_inputs_from(teacher, [episode(3)])
    assert "past_tokens" in samples[0] and not samples[0]["mask"].all()  # the first step's padded slot
    for a, b in zip(raw_outputs(teacher, samples), raw_outputs(student.policy, samples)):
        torch.testing.assert_close(b, a, atol=ONNX_TOL, rtol=0.0)


def test_onnx_int8_is_calibrated_and_close(teacher_dir, tmp_path):
    out = compress_policy(teacher_dir, "onnx-int8", tmp_path / "int8", calibration=[episode(), episode(3)])
    record = read_record(out)
    assert record["settings"]["calibration_samples"] == 7 and record["settings"]["op_types"] == ["Conv"]
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / ONNX_NAME)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    np.testing.assert_allclose(acts(load_policy(out), episode()), acts(load_policy(teacher_dir), episode()),
                               atol=0.05)


def test_shipped_checkpoint_onnx_rollout_matches_torch(tmp_path):
    """On the real checkpoint in a real env, ONNX Runtime chooses the same actions as torch at every step."""
    import gymnasium as gym

    out = compress_policy(CHECKPOINT, "onnx", tmp_path / "onnx")
    torch_policy, onnx_policy = load_policy(CHECKPOINT), load_policy(out)
    env = gym.make("vlagym/TabletopPickUp-v0", **teacher_env_kwargs(CHECKPOINT))
    obs, _ = env.reset(seed=1_000_000)
    torch_policy.reset()
    onnx_policy.reset()
    for _ in range(12):
        a, b = torch_policy.act(obs), onnx_policy.act(obs)
        np.testing.assert_allclose(b, a, atol=ONNX_TOL)
        obs, _, term, trunc, _ = env.step(a)
        if term or trunc:
            break
    env.close()


def test_calibration_from_env_rollouts():
    episodes = rollout_observations("vlagym/TabletopTouch-v0", episodes=1, max_steps=3, env_kwargs={"image_size": 64})
    assert len(episodes) == 1 and 1 <= len(episodes[0]) <= 3
    policy = tiny_policy("bcz-keypoints").eval()
    samples = step_inputs_from(policy, episodes)
    assert samples[0]["image"].shape == (1, 3, 64, 64) and samples[0]["image"].dtype == np.uint8


# --- clear errors -------------------------------------------------------------------------------------------
def test_errors_name_the_problem(teacher_dir, tmp_path):
    zip_path = tmp_path / "ppo.zip"
    with zipfile.ZipFile(zip_path, "w") as z:
        z.writestr("data", "{}")
    with pytest.raises(ValueError, match="stable-baselines3"):
        compress_policy(zip_path, "onnx", tmp_path / "out")
    rl_run = tmp_path / "rl_run"
    rl_run.mkdir()
    (rl_run / "model.zip").write_bytes(zip_path.read_bytes())
    with pytest.raises(ValueError, match="stable-baselines3"):
        compress_policy(rl_run, "dynamic-int8", tmp_path / "out")
    with pytest.raises(ValueError, match="unknown compression method 'fp4'"):
        compress_policy(teacher_dir, "fp4", tmp_path / "out")
    with pytest.raises(ValueError, match="calibration set"):
        compress_policy(teacher_dir, "onnx-int8", tmp_path / "out")
    with pytest.raises(ValueError, match="calibration set"):
        quantize_onnx_static(tmp_path / "none.onnx", tmp_path / "q.onnx", [])
    with pytest.raises(FileNotFoundError, match="no vlagym policy"):
        compress_policy(tmp_path, "onnx", tmp_path / "out")
    bad = tmp_path / "bad"
    bad.mkdir()
    tiny_policy("bcz-keypoints").save_pretrained(bad)
    (bad / COMPRESSION_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_policy(bad)


def test_example_inputs_leave_the_policy_fresh():
    policy = tiny_policy("bcz", history=2).eval()
    inputs = example_step_inputs(policy)
    assert tuple(inputs) == ("image", "cond", "proprio", "past_features")
    assert not policy._frames and policy._cond is None
