"""The episode strip: size from rows/cols/tile, frames sampled over time, PNG written."""

from __future__ import annotations

import numpy as np
import pytest


def test_strip_size_and_png(tmp_path):
    cv2 = pytest.importorskip("cv2")
    from mole_inference.sim.strip import CAPTION_H, StripRow, render_strip, save_strip, strip_shape

    big = [np.full((224, 224, 3), v, np.uint8) for v in (0, 100, 200)]
    small = [np.full((64, 64, 3), 50, np.uint8)]
    rows = [StripRow(big, "pick | pick up the red cube | success", True), StripRow(small, "touch | failure", False)]
    image = render_strip(rows, cols=5, tile=32)
    assert image.shape == strip_shape(2, 5, 32) == (2 * (32 + CAPTION_H), 160, 3)
    assert image[CAPTION_H + 5, 2, 0] == 0 and image[CAPTION_H + 5, 4 * 32 + 2, 0] == 200  # first .. last frame
    path = save_strip(tmp_path / "sub" / "strip.png", rows, cols=5, tile=32)
    assert cv2.imread(str(path)).shape == image.shape


def test_strip_rejects_empty_input():
    from mole_inference.errors import InputError
    from mole_inference.sim.strip import StripRow, render_strip

    with pytest.raises(InputError):
        render_strip([])
    with pytest.raises(InputError):
        render_strip([StripRow([], "x")])
