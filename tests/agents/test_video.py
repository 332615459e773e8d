"""Rollout videos: captions, grids of mixed sizes, atomic writes that decode."""

from __future__ import annotations

import numpy as np
import pytest

from vlagym.agents.video import annotate, grid, read_video, write_video


def test_annotate_upscales_and_draws():
    frame = np.full((64, 64, 3), 128, np.uint8)
    out = annotate(frame, "pick up the red cube", 3, "success")
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    assert (out[:10] != 128).any() and (out[-10:] != 128).any()  # caption bands top and bottom


def test_grid_mixes_sizes_and_holds_last_frame():
    short = [np.full((4, 4, 3), 1, np.uint8)] * 3
    wide = [np.full((4, 8, 3), 2, np.uint8)] * 2
    frames = grid([short, wide], cols=2)
    assert len(frames) == 3 and frames[0].shape == (4, 16, 3)
    assert frames[-1][0, :4, 0].tolist() == [1] * 4 and frames[-1][0, 8:, 0].tolist() == [2] * 8
    with pytest.raises(ValueError, match="at least one episode"):
        grid([])


@pytest.mark.parametrize("suffix", ["mp4", "gif"])
def test_write_is_atomic_and_decodes(tmp_path, suffix):
    frames = [np.full((32, 32, 3), i * 20, np.uint8) for i in range(5)]
    path = write_video(tmp_path / f"v.{suffix}", frames)
    assert [p.name for p in tmp_path.iterdir()] == [f"v.{suffix}"]  # no temporary file left behind
    back = read_video(path)
    assert len(back) == 5 and back[0].shape == (32, 32, 3)


def test_recorded_tabletop_frames_show_the_wrist_view_beside_the_front_one():
    import gymnasium as gym

    from vlagym.agents.rollout import run_episode

    plain = run_episode(gym.make("vlagym/TabletopTouch-v0", image_size=32), seed=3, record=True)
    wrist = run_episode(gym.make("vlagym/TabletopTouch-v0", image_size=32, wrist_camera=True), seed=3, record=True)
    h, w = plain.frames[0].shape[:2]
    assert wrist.frames[0].shape[:2] == (h, 2 * w) and wrist.success == plain.success


def test_overlay_heatmaps_tints_the_peak_in_the_roles_colour():
    from vlagym.agents.video import ROLE_COLOURS, overlay_heatmaps

    frame = np.full((32, 32, 3), 128, dtype=np.uint8)
    heat = np.zeros((2, 4, 4))
    heat[0, 0, 3] = 1.0  # role 0 top-right
    heat[1, 3, 0] = 1.0  # role 1 bottom-left
    out = overlay_heatmaps(frame, heat, np.array([[0.875, 0.125], [0.125, 0.875]]))
    assert out.shape == frame.shape and out.dtype == np.uint8
    top_right, bottom_left, centre = out[2, 28].astype(int), out[29, 2].astype(int), out[16, 16].astype(int)
    assert top_right[0] > 180 and top_right[2] < 110  # red: ROLE_COLOURS[0]
    assert bottom_left[2] > 180 and bottom_left[0] < 110  # blue: ROLE_COLOURS[1]
    assert np.abs(centre - 128).max() < 10
    assert ROLE_COLOURS[0][0] > ROLE_COLOURS[0][2]
