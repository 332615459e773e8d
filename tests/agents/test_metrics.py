"""Navigation metrics on hand-built episodes."""

from __future__ import annotations

import numpy as np
import pytest

from vlagym.agents.metrics import (
    final_distance_to_goal,
    navigation_metrics,
    spl,
    spl_per_episode,
    success_rate,
)


def test_spl_hand_built():
    # optimal success, a detour twice the shortest path, a failure on the shortest path
    success, shortest, taken = [1, 1, 0], [10.0, 10.0, 5.0], [10.0, 20.0, 5.0]
    np.testing.assert_allclose(spl_per_episode(success, shortest, taken), [1.0, 0.5, 0.0])
    assert spl(success, shortest, taken) == pytest.approx(0.5)


def test_spl_caps_at_one_and_handles_zero_length():
    # a path shorter than the grid's "shortest" counts as optimal, not better than optimal
    assert spl([1], [4.0], [3.5]) == pytest.approx(1.0)
    # starting on the goal: nothing to weigh, success counts fully
    assert spl([True, False], [0.0, 0.0], [0.0, 1.0]) == pytest.approx(0.5)


def test_success_rate_and_final_distance():
    assert success_rate([True, False, True, True]) == pytest.approx(0.75)
    assert final_distance_to_goal([0.2, 0.4, 3.0]) == pytest.approx(1.2)
    assert success_rate([]) == 0.0 and spl([], [], []) == 0.0
    assert np.isnan(final_distance_to_goal([]))


def test_from_final_infos():
    infos = [
        {"success": True, "shortest_path_length": 4.0, "path_length": 5.0, "distance_to_goal": 0.3},
        {"success": False, "shortest_path_length": 6.0, "path_length": 2.0, "distance_to_goal": 4.0},
    ]
    m = navigation_metrics(infos)
    assert m == pytest.approx(
        {"episodes": 2, "success_rate": 0.5, "spl": 0.4, "final_distance_to_goal": 2.15}
    )
    with pytest.raises(ValueError, match="path_length"):
        navigation_metrics([{"success": True, "shortest_path_length": 1.0, "distance_to_goal": 0.0}])


@pytest.mark.parametrize(
    "args, match",
    [
        (([1, 0], [1.0], [1.0, 1.0]), "episodes"),
        (([1], [-1.0], [1.0]), "non-negative"),
        (([1], [1.0], [np.nan]), "NaN"),
        (([2], [1.0], [1.0]), "0/1"),
        (([[1]], [[1.0]], [[1.0]]), "1-D"),
    ],
)
def test_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        spl(*args)
