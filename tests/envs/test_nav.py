"""Navigation environments: Gymnasium's contract, determinism, reachability, experts, bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import vlagym
from vlagym.envs import NAV_IDS, register_envs
from vlagym.envs.nav.task import SUCCESS_DIST

MODES = ["discrete", "continuous"]
TASK_OF = {
    "vlagym/NavObjectGoal-v0": "object_goal",
    "vlagym/NavRelationalGoal-v0": "relational_goal",
    "vlagym/NavMultiStep-v0": "multi_step",
    "vlagym/NavEQA-v0": "eqa",
}


def test_ids_registered_and_idempotent():
    assert set(NAV_IDS) == set(TASK_OF)
    assert set(NAV_IDS) <= set(vlagym.ENV_IDS)
    register_envs()
    register_envs()
    for env_id in NAV_IDS:
        assert gym.spec(env_id).max_episode_steps >= 300


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("env_id", NAV_IDS)
def test_check_env(env_id, mode):
    env = gym.make(env_id, action_mode=mode, image_size=64, top_down_map=True)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=3)
    assert obs["rgb"].shape == (64, 64, 3) and obs["rgb"].dtype == np.uint8
    assert obs["rgb_map"].shape == (64, 64, 3)
    assert obs["proprio"].shape == (6,) and obs["proprio"].dtype == np.float32
    assert info["task"] == TASK_OF[env_id]
    for key in ("success", "distance_to_goal", "shortest_path_length", "path_length"):
        assert key in info
    env.action_space.seed(0)
    for _ in range(5):
        obs, reward, term, trunc, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
        if term or trunc:
            break
    env.close()


def test_spaces_per_mode():
    d = gym.make("vlagym/NavObjectGoal-v0", obs_mode="state")
    c = gym.make("vlagym/NavObjectGoal-v0", obs_mode="state", action_mode="continuous")
    assert d.action_space == gym.spaces.Discrete(4)
    assert c.action_space.shape == (2,) and c.action_space.low.min() == -1 and c.action_space.high.max() == 1
    obs, _ = d.reset(seed=0)
    assert set(obs) == {"state", "instruction", "proprio"} and obs["state"].dtype == np.float32
    assert obs["state"].shape == d.unwrapped.observation_space["state"].shape
    with pytest.raises(ValueError, match="action_mode"):
        gym.make("vlagym/NavObjectGoal-v0", action_mode="teleport")


def _rollout(seed, mode, steps=6):
    env = gym.make("vlagym/NavMultiStep-v0", action_mode=mode, image_size=48, top_down_map=True)
    obs, info = env.reset(seed=seed)
    out = [obs]
    for t in range(steps):
        action = [1, 2, 1, 3, 1, 1][t] if mode == "discrete" else np.array([0.8, 0.3 * (-1) ** t], np.float32)
        obs, *_ = env.step(action)
        out.append(obs)
    env.close()
    return out


@pytest.mark.parametrize("mode", MODES)
def test_same_seed_same_observations(mode):
    a, b = _rollout(11, mode), _rollout(11, mode)
    for oa, ob in zip(a, b, strict=True):
        assert oa["instruction"] == ob["instruction"]
        assert oa["rgb"].tobytes() == ob["rgb"].tobytes()
        assert oa["rgb_map"].tobytes() == ob["rgb_map"].tobytes()
        assert oa["proprio"].tobytes() == ob["proprio"].tobytes()


def test_different_seeds_differ():
    env = gym.make("vlagym/NavObjectGoal-v0", image_size=48, top_down_map=True)
    seen = set()
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        seen.add((obs["instruction"], obs["rgb_map"].tobytes()))
    assert len(seen) == 4
    assert len({env.reset(seed=s)[0]["rgb"].tobytes() for s in range(4)}) == 4


def test_every_goal_reachable_and_unique():
    """100 seeds across the tasks: the planner reaches every goal in order, no start is already
    at a goal, and every instruction picks out exactly one object."""
    envs = {t: gym.make(i, obs_mode="state") for i, t in TASK_OF.items()}
    names = list(envs)
    for seed in range(100):
        env = envs[names[seed % 3]]
        obs, info = env.reset(seed=seed)
        task = env.unwrapped.task
        assert np.isfinite(info["geodesic_distance_to_goal"]) and info["geodesic_distance_to_goal"] > 0
        assert info["shortest_path_length"] > 0 and info["distance_to_goal"] > SUCCESS_DIST
        landmarks = env.unwrapped.scene.landmarks
        for goal in task.goals:
            assert goal.words() in obs["instruction"]
        if task.name == "relational_goal":
            assert [lm for lm in landmarks if task.matches(lm)] == task.goals
        else:
            for goal in task.goals:
                assert [lm.key for lm in landmarks].count(goal.key) == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("env_id", NAV_IDS)
def test_expert_succeeds(env_id, mode):
    env = gym.make(env_id, obs_mode="state", action_mode=mode)
    for seed in (0, 1, 2):
        obs, info = env.reset(seed=seed)
        expert = env.unwrapped.task.expert()
        done = False
        while not done:
            obs, reward, term, trunc, info = env.step(expert.act(obs, info))
            done = term or trunc
        assert info["success"] and term and not trunc, (env_id, mode, seed, info)
        assert reward == 1.0
        assert info["path_length"] >= 0.8 * info["shortest_path_length"]
        assert info["subgoals_reached"] == info["num_subgoals"]


def test_discrete_stop_ends_episode_and_needs_the_goal():
    env = gym.make("vlagym/NavObjectGoal-v0", obs_mode="state")
    env.reset(seed=5)
    obs, reward, term, trunc, info = env.step(0)
    assert term and not info["success"] and reward == 0.0
    # At the goal, only stop succeeds in discrete mode.
    env.reset(seed=5)
    u = env.unwrapped
    _teleport_next_to(u, u.task.goals[0])
    _, _, term, _, info = env.step(2)
    assert not term and not info["success"]
    _, _, term, _, info = env.step(0)
    assert term and info["success"]


def test_continuous_arrival_succeeds_and_order_matters():
    env = gym.make("vlagym/NavMultiStep-v0", obs_mode="state", action_mode="continuous")
    env.reset(seed=2)
    u = env.unwrapped
    first, second = u.task.goals
    _teleport_next_to(u, second)  # the second subgoal before the first does not count
    _, _, term, _, info = env.step(np.zeros(2, np.float32))
    assert not term and info["subgoals_reached"] == 0
    _teleport_next_to(u, first)
    _, _, term, _, info = env.step(np.zeros(2, np.float32))
    assert not term and info["subgoals_reached"] == 1
    _teleport_next_to(u, second)
    _, _, term, _, info = env.step(np.zeros(2, np.float32))
    assert term and info["success"]


def _teleport_next_to(env, goal):
    """Put the robot on a free cell within the success distance of ``goal`` (test-only shortcut)."""
    scene = env.scene
    cells = scene.region(goal, SUCCESS_DIST - 0.1)
    env.robot.xy = scene.grid.centers.reshape(-1, 2)[cells[0]].copy()


@pytest.mark.parametrize("mode", MODES)
def test_bad_actions_are_clear_errors(mode):
    env = gym.make("vlagym/NavObjectGoal-v0", obs_mode="state", action_mode=mode)
    env.reset(seed=0)
    if mode == "discrete":
        bad = [
            (4, "outside Discrete"),
            (-1, "outside Discrete"),
            (np.array([1, 2]), "scalar"),
            (float("nan"), "integer"),
            (1.5, "integer"),
        ]
    else:
        bad = [(np.zeros(3), "shape"), (np.array([np.nan, 0.0]), "NaN"), (0.5, "shape")]
    for action, match in bad:
        with pytest.raises(ValueError, match=match):
            env.step(action)


def test_vector_env_and_render():
    # shared_memory=False: Gymnasium's shared-memory path returns Text observations frozen at
    # construction ("aaa..."), for every env with an instruction.
    envs = gym.vector.AsyncVectorEnv(
        [lambda: gym.make("vlagym/NavObjectGoal-v0", obs_mode="state", action_mode="continuous")] * 2,
        shared_memory=False,
    )
    obs, _ = envs.reset(seed=[0, 1])
    obs, *_ = envs.step(np.zeros((2, 2), np.float32))
    assert obs["state"].shape[0] == 2
    assert all(text.split()[-1] in ("cube", "ball", "cone", "cylinder", "box") for text in obs["instruction"])
    envs.close()
    env = gym.make("vlagym/NavRelationalGoal-v0", render_mode="rgb_array", image_size=32)
    env.reset(seed=0)
    assert env.render().shape == (32, 32, 3)
