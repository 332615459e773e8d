"""The env contract kit: every registered id passes, and each broken env fails naming its cause."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import vlagym
from vlagym.testing import (
    EnvContractError,
    check_close,
    check_determinism,
    check_pickle,
    check_rollout,
    check_seeds_differ,
    contract_tests,
)

ID = "vlagym/TabletopTouch-v0"

# The one line a project adds to check every registered id.
test_every_registered_id = contract_tests(vlagym.ENV_IDS, steps=10, env_kwargs={"image_size": 32})


def make_small():
    return gym.make(ID, image_size=32)


def test_fixture_from_the_pytest_plugin(vlagym_env_contract):
    vlagym_env_contract(make_small, steps=5, checks=["rollout", "determinism", "pickle"])


class UnseededNoise(gym.ObservationWrapper):
    """Perturbs the image with a generator that ignores the env's seed."""

    def __init__(self, env):
        super().__init__(env)
        self.rng = np.random.default_rng()

    def observation(self, obs):
        rgb = obs["rgb"].astype(np.int16) + self.rng.integers(-2, 3, obs["rgb"].shape)
        return {**obs, "rgb": np.clip(rgb, 0, 255).astype(np.uint8)}


def test_nondeterminism_is_caught():
    with pytest.raises(EnvContractError, match=r"seed 0 step 0: obs\['rgb'\] differs.*non-deterministic"):
        check_determinism(lambda: UnseededNoise(make_small()), steps=3)


class ProprioOutOfSpace(gym.Wrapper):
    """Returns float64 proprioception from the third step on."""

    def step(self, action):
        obs, *rest = self.env.step(action)
        self.t = getattr(self, "t", 0) + 1
        if self.t >= 3:
            obs = {**obs, "proprio": obs["proprio"].astype(np.float64) * 1e6}
        return (obs, *rest)


def test_observation_outside_space_is_caught():
    with pytest.raises(EnvContractError, match=r"step 3: obs\['proprio'\] outside its space"):
        check_rollout(lambda: ProprioOutOfSpace(make_small()), steps=5)


def test_missing_success_info_is_caught():
    class NoSuccess(gym.Wrapper):
        def step(self, action):
            obs, r, term, trunc, info = self.env.step(action)
            return obs, r, term, trunc, {k: v for k, v in info.items() if k != "success"}

    with pytest.raises(EnvContractError, match="'success' key"):
        check_rollout(lambda: NoSuccess(make_small()), steps=2)


def test_leaked_client_is_caught():
    made = []

    class LeakyClose(gym.Wrapper):
        def close(self):
            pass  # forgets to close the simulation

    def make_leaky():
        made.append(LeakyClose(make_small()))
        return made[-1]

    try:
        with pytest.raises(EnvContractError, match=r"still connected after close\(\).*leaks the physics client"):
            check_close(make_leaky, cycles=3)
    finally:
        for env in made:
            env.env.close()


def test_ignored_seed_is_caught():
    class IgnoresSeed(gym.Wrapper):
        def reset(self, *, seed=None, options=None):
            return self.env.reset(seed=0, options=options)

    with pytest.raises(EnvContractError, match="identical first observations"):
        check_seeds_differ(lambda: IgnoresSeed(make_small()))


def test_lambda_factory_does_not_pickle():
    with pytest.raises(EnvContractError, match="not a lambda"):
        check_pickle(lambda: make_small())
    check_pickle(make_small)
    check_pickle(ID)


def test_unregistered_id():
    with pytest.raises(EnvContractError, match="not a registered environment id"):
        check_rollout("vlagym/Nope-v0")


def test_close_default_cycles_do_not_leak():
    check_close(make_small, cycles=20)


@pytest.mark.slow
def test_close_200_cycles_do_not_leak():
    check_close(make_small, cycles=200)


def test_sb3_check_passes_and_catches_an_observation_sb3_cannot_take():
    from vlagym.testing import check_sb3

    check_sb3(make_small)

    class Float64Proprio(gym.ObservationWrapper):
        """Declares float32 proprioception and returns float64 (SB3's check_env refuses the cast)."""

        def observation(self, obs):
            return {**obs, "proprio": obs["proprio"].astype(np.float64)}

    with pytest.raises(EnvContractError, match="stable-baselines3 check_env through SB3Wrapper failed"):
        check_sb3(lambda: Float64Proprio(make_small()))
