"""Rollout videos: frames with the instruction, the step counter and the outcome drawn on them."""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from PIL import Image, ImageDraw, ImageFont

MIN_VIDEO_SIDE = 256  # small observations are upscaled so the caption stays legible


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def annotate(frame: np.ndarray, instruction: str, step: int, outcome: str | None = None) -> np.ndarray:
    """Upscale ``frame`` (H, W, 3 uint8) and draw the instruction, step and outcome on it."""
    h, w = frame.shape[:2]
    scale = max(1, int(np.ceil(MIN_VIDEO_SIDE / min(h, w))))
    img = Image.fromarray(np.repeat(np.repeat(frame, scale, 0), scale, 1))
    draw = ImageDraw.Draw(img)
    size = max(10, img.width // 28)
    font = _font(size)
    band = size + 6
    draw.rectangle([0, 0, img.width, band], fill=(0, 0, 0))
    draw.text((4, 2), instruction, fill=(255, 255, 255), font=font)
    draw.rectangle([0, img.height - band, img.width, img.height], fill=(0, 0, 0))
    draw.text((4, img.height - band + 2), f"step {step}", fill=(255, 255, 255), font=font)
    if outcome is not None:
        colour = (80, 220, 80) if outcome == "success" else (240, 80, 80)
        text_w = draw.textlength(outcome, font=font)
        draw.text((img.width - text_w - 4, img.height - band + 2), outcome, fill=colour, font=font)
    return np.asarray(img)


ROLE_COLOURS = ((255, 60, 40), (40, 140, 255), (60, 220, 80))  # first, second, third role


def overlay_heatmaps(frame: np.ndarray, heatmaps: np.ndarray, points: np.ndarray | None = None,
                     alpha: float = 0.6) -> np.ndarray:
    """Blend a policy's predicted heatmaps over one camera frame, a colour per role, with a cross at each
    predicted pixel position.

    Args:
        frame: uint8 (H, W, 3).
        heatmaps: (R, h, w) probabilities (each map sums to 1) on the feature grid.
        points: (R, 2) predicted positions, (column, row) in [0, 1], or None.
    """
    h, w = frame.shape[:2]
    out = frame.astype(np.float32)
    for r, heat in enumerate(heatmaps):
        m = heat / max(float(heat.max()), 1e-12)
        m = np.asarray(Image.fromarray((m * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)) / 255.0
        colour = np.array(ROLE_COLOURS[r % len(ROLE_COLOURS)], dtype=np.float32)
        a = alpha * m[..., None]
        out = out * (1 - a) + colour * a
    img = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    if points is not None:
        draw = ImageDraw.Draw(img)
        arm = max(2, w // 16)
        for r, (u, v) in enumerate(points):
            x, y = float(u) * w, float(v) * h
            colour = ROLE_COLOURS[r % len(ROLE_COLOURS)]
            draw.line([x - arm, y, x + arm, y], fill=(255, 255, 255), width=1)
            draw.line([x, y - arm, x, y + arm], fill=colour, width=1)
    return np.asarray(img)


def write_video(path: str | os.PathLike, frames: list[np.ndarray], fps: int = 10) -> Path:
    """Write frames to MP4 (or GIF, by suffix) atomically: a killed run leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if path.suffix.lower() == ".gif":
        imageio.mimsave(tmp, frames, duration=1000 / fps, loop=0)
    else:
        # libx264 needs even sizes; macro_block_size=1 keeps ours as they are.
        with imageio.get_writer(tmp, fps=fps, codec="libx264", quality=7, macro_block_size=1,
                                ffmpeg_log_level="error") as writer:
            for f in frames:
                writer.append_data(f)
    os.replace(tmp, path)
    return path


def grid(frames_per_episode: list[list[np.ndarray]], cols: int = 4) -> list[np.ndarray]:
    """Tile several episodes' frames into one video; finished episodes hold their last frame.

    Tiles take the largest frame size among the episodes (tabletop and navigation videos mix);
    smaller frames sit in the top-left corner of their tile.
    """
    if not frames_per_episode:
        raise ValueError("grid() needs at least one episode")
    length = max(len(f) for f in frames_per_episode)
    h = max(ep[0].shape[0] for ep in frames_per_episode)
    w = max(ep[0].shape[1] for ep in frames_per_episode)
    cols = min(cols, len(frames_per_episode))
    rows = -(-len(frames_per_episode) // cols)
    out = []
    for t in range(length):
        canvas = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
        for i, ep in enumerate(frames_per_episode):
            r, c = divmod(i, cols)
            frame = ep[min(t, len(ep) - 1)]
            canvas[r * h:r * h + frame.shape[0], c * w:c * w + frame.shape[1]] = frame
        out.append(canvas)
    return out


def read_video(path: str | os.PathLike) -> list[np.ndarray]:
    """Decode every frame of an MP4 or GIF (``list(reader)`` fails: ffmpeg reports length inf)."""
    with imageio.get_reader(path) as reader:
        return [np.asarray(f)[..., :3] for f in reader]
