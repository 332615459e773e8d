"""Visual perturbations: strength 0 is byte-identical, each one changes the image and never the task."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import vlagym  # noqa: F401
from vlagym.envs.perturb import PERTURBATIONS, format_perturb, parse_perturb

# One env per family; the nav one moves its camera every step.
IDS = ["vlagym/TabletopPlace-v0", "vlagym/NavObjectGoal-v0"]
SIZE = 48
STEPS = 12


def _task_facts(info: dict) -> str:
    """``info`` without what depends on the camera: the labels' pixel positions and visibility describe the
    rendered image (a moved camera or an occluder changes them); their 3-D positions and yaws are task state."""
    labels = {k: v for k, v in info.get("labels", {}).items() if k.endswith(("/pos", "/yaw"))}
    return repr(sorted({**info, "labels": labels}.items()))


def _rollout(env_id: str, seed: int, steps: int = STEPS, **kwargs):
    """Expert rollout: images, and everything that is not an image (state, proprio, rewards, info)."""
    env = gym.make(env_id, image_size=SIZE, **kwargs)
    obs, info = env.reset(seed=seed)
    expert = env.unwrapped.task.expert()
    images, facts = [obs["rgb"]], [(obs["instruction"], obs["proprio"].tobytes(),
                                    env.unwrapped.task.state().tobytes(), _task_facts(info))]
    for _ in range(steps):
        obs, reward, term, trunc, info = env.step(expert.act(obs, info))
        images.append(obs["rgb"])
        facts.append((obs["instruction"], obs["proprio"].tobytes(), env.unwrapped.task.state().tobytes(),
                      _task_facts(info), reward, term, trunc))
        if term or trunc:
            break
    env.close()
    return images, facts


@pytest.fixture(scope="module")
def plain():
    return {env_id: _rollout(env_id, seed=7) for env_id in IDS}


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("zero", [0.0, {name: 0.0 for name in PERTURBATIONS}, "light=0,noise=0"])
def test_strength_zero_is_byte_identical(plain, env_id, zero):
    images, facts = _rollout(env_id, seed=7, perturb=zero)
    want_images, want_facts = plain[env_id]
    assert len(images) == len(want_images)
    for t, (a, b) in enumerate(zip(images, want_images)):
        assert a.tobytes() == b.tobytes(), f"step {t}: image differs at strength 0"
    assert facts == want_facts


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_each_perturbation_changes_image_not_state(plain, env_id, name):
    images, facts = _rollout(env_id, seed=7, perturb={name: 1.0})
    want_images, want_facts = plain[env_id]
    assert facts == want_facts, f"{name} changed the task's state, proprio, rewards or info"
    changed = [np.mean(a.astype(int) != b.astype(int)) for a, b in zip(images, want_images)]
    # The nav camera turns away from a ghost distractor it started facing; all else shows in every frame.
    frames = changed[:1] if (name == "distractors" and "Nav" in env_id) else changed
    assert min(frames) > 0.002, f"{name} at strength 1 left a frame unchanged (fraction of pixels {changed})"


def test_perturbations_are_seeded_and_grow_with_strength():
    env_id = IDS[0]
    a, _ = _rollout(env_id, seed=3, steps=2, perturb=1.0)
    b, _ = _rollout(env_id, seed=3, steps=2, perturb=1.0)
    c, _ = _rollout(env_id, seed=4, steps=2, perturb=1.0)
    d, _ = _rollout(env_id, seed=4, steps=2)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b)), "same seed, different perturbed images"
    assert a[0].tobytes() != c[0].tobytes()
    base, _ = _rollout(env_id, seed=4, steps=0)
    diffs = []
    for s in (0.25, 0.5, 1.0):
        img, _ = _rollout(env_id, seed=4, steps=0, perturb={"light": s})
        diffs.append(np.abs(img[0].astype(int) - base[0].astype(int)).mean())
    assert diffs[0] < diffs[1] < diffs[2], f"light change should grow with strength: {diffs}"
    assert d[0].tobytes() == base[0].tobytes()


def test_parse_perturb_errors_and_forms():
    assert parse_perturb(None) == {} and parse_perturb(0) == {}
    assert parse_perturb(0.5) == {name: 0.5 for name in PERTURBATIONS}
    assert parse_perturb("light=0.5, noise=1") == {"light": 0.5, "noise": 1.0}
    assert parse_perturb("0.25") == {name: 0.25 for name in PERTURBATIONS}
    assert format_perturb(parse_perturb("noise=1,light=0.5")) == "light=0.5,noise=1"
    with pytest.raises(ValueError, match="unknown perturbation 'fog'"):
        parse_perturb({"fog": 0.5})
    with pytest.raises(ValueError, match=r"strength for 'light' must be in \[0, 1\], got 1.5"):
        parse_perturb({"light": 1.5})
    with pytest.raises(ValueError, match="must be name=strength"):
        parse_perturb("light")
    with pytest.raises(ValueError, match="must be a number"):
        parse_perturb("light=lots")
    with pytest.raises(ValueError, match="unknown perturbation"):
        gym.make("vlagym/TabletopTouch-v0", perturb="fog=1")


def test_perturbed_env_keeps_the_gym_contract():
    from gymnasium.utils.env_checker import check_env

    env = gym.make("vlagym/TabletopTouch-v0", image_size=32, perturb=1.0)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    assert set(env.unwrapped.perturber.params) >= {"light", "camera", "occluder", "blur_sigma", "texture", "colors"}
