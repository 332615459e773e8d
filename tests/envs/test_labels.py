"""Privileged labels (``info["labels"]``): where the instruction's roles are, per camera and in the robot frame."""

import gymnasium as gym
import numpy as np
import pytest

import vlagym
from vlagym.envs.labels import in_frame, label_keys, pixel

TABLETOP = [e for e in vlagym.ENV_IDS if "Tabletop" in e]
NAV = [e for e in vlagym.ENV_IDS if "/Nav" in e]


def _expert_frames(env, seeds):
    """(labels, views, env) after every reset and step of expert episodes on ``seeds``."""
    u = env.unwrapped
    for seed in seeds:
        obs, info = env.reset(seed=seed)
        expert = u.task.expert()
        yield info["labels"], dict(u._views)
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(expert.act(obs, info))
            done = term or trunc
            yield info["labels"], dict(u._views)


@pytest.mark.parametrize("env_id", ["vlagym/TabletopPickUp-v0", "vlagym/TabletopPlace-v0"])
def test_projected_label_lands_on_the_objects_pixels(env_id):
    env = gym.make(env_id, image_size=64, wrist_camera=True)
    u = env.unwrapped
    hits = total = 0
    for labels, views in _expert_frames(env, range(2_000_000, 2_000_004)):
        for cam, view in views.items():
            if labels[f"object/{cam}/visible"]:
                total += 1
                hits += int(view.seg[pixel(view, labels[f"object/{cam}/uv"])]) == u.sim.bodies["obj0"]
    env.close()
    # The centre's pixel shows the object unless a finger covers that one pixel while the rest shows.
    assert total > 50 and hits / total > 0.9, (hits, total)


def test_every_task_reports_its_roles_with_fixed_keys():
    for env_id in TABLETOP + NAV:
        kwargs = {"image_size": 32, **({"wrist_camera": True} if env_id in TABLETOP else {})}
        env = gym.make(env_id, **kwargs)
        u = env.unwrapped
        obs, info = env.reset(seed=0)
        cameras = tuple(k for k in obs if k.startswith("rgb") and k != "rgb_map")
        expected = label_keys(u.task.label_roles, cameras)
        assert list(info["labels"]) == expected, env_id
        _, _, _, _, info = env.step(env.action_space.sample())
        assert list(info["labels"]) == expected, env_id
        for key, value in info["labels"].items():
            assert np.all(np.isfinite(value)), (env_id, key, value)
        env.close()
    assert {"object", "destination"} <= set(gym.make("vlagym/TabletopPlace-v0", image_size=32).unwrapped.task
                                            .label_roles)


def test_not_visible_out_of_frame():
    """At the end of a pick-up the object sits between the fingers, outside the wrist camera's view."""
    env = gym.make("vlagym/TabletopPickUp-v0", image_size=64, wrist_camera=True)
    out = [labels["object/rgb_wrist/visible"] for labels, _ in _expert_frames(env, [2_000_000, 2_000_001])
           if not in_frame(labels["object/rgb_wrist/uv"])]
    env.close()
    assert out and not any(out)


def test_not_visible_behind_the_arm():
    """The object held (massless) just behind the forearm as the front camera sees it: in frame, hidden."""
    env = gym.make("vlagym/TabletopPickUp-v0", image_size=64, num_distractors=0)
    u = env.unwrapped
    env.reset(seed=0)
    c, robot, obj = u.sim.client, u.sim.bodies["robot"], u.sim.bodies["obj0"]
    link = np.asarray(c.getLinkState(robot, 5)[0])
    eye = np.asarray(u.cameras["rgb"].eye)
    ray = (link - eye) / np.linalg.norm(link - eye)
    c.changeDynamics(obj, -1, mass=0)
    c.resetBasePositionAndOrientation(obj, (link + 0.15 * ray).tolist(), [0, 0, 0, 1])
    _, _, _, _, info = env.step(np.zeros(5, dtype=np.float32))
    uv, view = info["labels"]["object/rgb/uv"], u._views["rgb"]
    assert in_frame(uv)
    assert int(view.seg[pixel(view, uv)]) == robot
    assert not info["labels"]["object/rgb/visible"]
    # Visible again once it stands in the open.
    c.resetBasePositionAndOrientation(obj, [0.5, 0.0, 0.03], [0, 0, 0, 1])
    _, _, _, _, info = env.step(np.zeros(5, dtype=np.float32))
    assert info["labels"]["object/rgb/visible"]
    env.close()


def test_positions_are_in_the_robot_frame():
    env = gym.make("vlagym/TabletopPickUp-v0", image_size=32)
    u = env.unwrapped
    _, info = env.reset(seed=1)
    origin, rot = u.robot.label_frame()
    world = origin + rot @ info["labels"]["object/pos"]
    np.testing.assert_allclose(world, u.sim.position("obj0"), atol=1e-5)
    env.close()
    env = gym.make("vlagym/NavObjectGoal-v0", image_size=32)
    u = env.unwrapped
    _, info = env.reset(seed=1)
    goal = u.task.goals[0]
    x, y, _ = info["labels"]["goal/pos"]
    assert np.hypot(x, y) == pytest.approx(np.hypot(*(np.asarray(goal.xy) - u.robot.xy)), abs=1e-5)
    heading = np.array([np.cos(u.robot.yaw), np.sin(u.robot.yaw)])
    assert x == pytest.approx(float(heading @ (np.asarray(goal.xy) - u.robot.xy)), abs=1e-5)
    env.close()


def test_labels_are_deterministic_and_leave_images_unchanged():
    def run(**kw):
        env = gym.make("vlagym/TabletopPlace-v0", image_size=32, wrist_camera=True, **kw)
        env.action_space.seed(5)
        obs, info = env.reset(seed=7)
        out = [(obs, info)]
        for _ in range(5):
            obs, _, _, _, info = env.step(env.action_space.sample())
            out.append((obs, info))
        env.close()
        return out

    a, b, plain = run(), run(), run(privileged_labels=False)
    for (oa, ia), (_, ib), (op, ip) in zip(a, b, plain):
        for k in ia["labels"]:
            np.testing.assert_array_equal(ia["labels"][k], ib["labels"][k])
        for k in ("rgb", "rgb_wrist", "proprio"):
            np.testing.assert_array_equal(oa[k], op[k])  # the mask rides on the same render
        assert "labels" not in ip


def test_state_mode_reports_positions_only():
    env = gym.make("vlagym/TabletopStack-v0", obs_mode="state")
    _, info = env.reset(seed=0)
    assert set(info["labels"]) == {"object/pos", "object/yaw", "destination/pos", "destination/yaw"}
    env.close()


def test_yaw_is_relative_to_the_hand_and_folded_by_symmetry():
    env = gym.make("vlagym/TabletopPickUp-v0", obs_mode="state")
    u = env.unwrapped
    seen = set()
    for seed in range(20):
        _, info = env.reset(seed=seed)
        spec = u.task.objects[0]
        seen.add(spec.shape)
        d = u.sim.yaw("obj0") - u.robot.ee_pose()[1]
        want = [np.sin(4 * d), np.cos(4 * d)] if spec.shape == "cube" else [0.0, 1.0]
        np.testing.assert_allclose(info["labels"]["object/yaw"], want, atol=1e-5)
    assert seen == {"cube", "cylinder"}
    env.close()


def test_labels_follow_a_perturbed_camera():
    """A jittered camera moves the pixel labels with the image: they still land on the object."""
    plain = gym.make("vlagym/TabletopPickUp-v0", image_size=64)
    moved = gym.make("vlagym/TabletopPickUp-v0", image_size=64, perturb={"camera": 1.0})
    hits = 0
    for seed in range(2_000_000, 2_000_005):
        _, a = plain.reset(seed=seed)
        _, b = moved.reset(seed=seed)
        np.testing.assert_array_equal(a["labels"]["object/pos"], b["labels"]["object/pos"])
        assert not np.allclose(a["labels"]["object/rgb/uv"], b["labels"]["object/rgb/uv"])
        view = moved.unwrapped._views["rgb"]
        hits += int(view.seg[pixel(view, b["labels"]["object/rgb/uv"])]) == moved.unwrapped.sim.bodies["obj0"]
    plain.close()
    moved.close()
    assert hits >= 4
