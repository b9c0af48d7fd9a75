"""Filmstrip of episodes: one row per episode, wrist frames sampled evenly over time, a caption band per row.

    rows = [StripRow(frames, "pick | pick up the red cube | success")]
    save_strip("strip.png", rows)   # (rows * (tile + CAPTION_H), cols * tile, 3)

Frames are RGB uint8 (H, W, 3); the PNG is written with OpenCV (imported when used).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mole_inference.errors import InputError

log = logging.getLogger(__name__)

CAPTION_H = 22  # px of caption band above each row
SUCCESS_RGB = (40, 160, 60)
FAILURE_RGB = (190, 50, 40)


@dataclass
class StripRow:
    """One episode in the strip: its frames over time (RGB uint8), a caption, and the outcome (band colour)."""

    frames: list[np.ndarray]
    caption: str
    success: bool | None = None


def strip_shape(rows: int, cols: int, tile: int) -> tuple[int, int, int]:
    """(height, width, 3) of the strip image for `rows` episodes of `cols` frames of `tile` px."""
    return rows * (tile + CAPTION_H), cols * tile, 3


def sample_frames(frames: list[np.ndarray], cols: int) -> list[np.ndarray]:
    """`cols` frames evenly spaced from first to last (repeats when the episode is shorter than `cols`)."""
    if not frames:
        raise InputError("a strip row needs at least one frame")
    idx = np.linspace(0, len(frames) - 1, cols).round().astype(int)
    return [frames[i] for i in idx]


def render_strip(rows: list[StripRow], cols: int = 8, tile: int = 128) -> np.ndarray:
    """The strip as an RGB uint8 array of `strip_shape(len(rows), cols, tile)`."""
    import cv2

    if not rows:
        raise InputError("render_strip: no episodes to draw")
    if cols < 1 or tile < 16:
        raise InputError(f"render_strip: cols={cols} must be >= 1 and tile={tile} >= 16")
    out = np.full(strip_shape(len(rows), cols, tile), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        y0 = r * (tile + CAPTION_H)
        colour = {True: SUCCESS_RGB, False: FAILURE_RGB}.get(row.success, (90, 90, 90))  # type: ignore[arg-type]
        out[y0:y0 + CAPTION_H] = colour
        cv2.putText(out, row.caption[: max(8, cols * tile // 8)], (4, y0 + CAPTION_H - 7), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, (255, 255, 255), 1, cv2.LINE_AA)
        for c, frame in enumerate(sample_frames(row.frames, cols)):
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise InputError(f"strip frames must be uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
            y, x = y0 + CAPTION_H, c * tile
            out[y:y + tile, x:x + tile] = cv2.resize(frame, (tile, tile), interpolation=cv2.INTER_AREA)
    return out


def save_strip(path: str | Path, rows: list[StripRow], cols: int = 8, tile: int = 128) -> Path:
    """Render the strip and write it as a PNG at `path` (parent folders created); returns the path."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = render_strip(rows, cols, tile)
    if not cv2.imwrite(str(path), image[:, :, ::-1]):
        raise InputError(f"could not write the strip PNG to {path}")
    log.info("wrote strip %s (%d episodes x %d frames)", path, len(rows), cols)
    return path
