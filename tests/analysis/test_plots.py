"""Figures: files are PNGs, the raster is the matrix it claims, bad layer indices are refused."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="matplotlib not installed (pip install -e '.[plot]')")

from mole_inference.analysis import plots
from mole_inference.errors import InputError

PNG = b"\x89PNG\r\n\x1a\n"


def is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG and path.stat().st_size > 1000


def test_routing_png_writes_the_raster_it_is_given(tmp_path):
    steps = [[0, 2], [1, 2], [], [3]]
    grid = plots.routing_matrix(steps, 4)
    assert grid.shape == (4, 4)
    assert grid[:, 0].tolist() == [1, 0, 1, 0] and grid[:, 2].sum() == 0 and grid[3, 3] == 1
    path = plots.routing_png(steps, 4, tmp_path / "sub" / "routing.png", "episode 0")
    assert path == tmp_path / "sub" / "routing.png" and is_png(path)


def test_routing_png_refuses_layers_outside_the_model(tmp_path):
    with pytest.raises(InputError, match="layer 4 outside"):
        plots.routing_png([[0, 4]], 4, tmp_path / "r.png")
    with pytest.raises(InputError, match="num_layers"):
        plots.routing_png([[0]], 0, tmp_path / "r.png")


def test_routing_png_with_no_steps(tmp_path):
    assert is_png(plots.routing_png([], 8, tmp_path / "empty.png"))


def test_other_figures_are_written(tmp_path):
    rng = np.random.default_rng(0)
    usage = {"task0": rng.uniform(size=6), "task1": rng.uniform(size=6)}
    assert is_png(plots.layer_usage_png(usage, tmp_path / "u.png"))
    assert is_png(plots.entropy_png({"a": rng.uniform(0, 1.7, 50)}, 6, tmp_path / "e.png"))
    assert is_png(plots.cosine_png(rng.uniform(0.5, 1, 6), [0.9, np.nan, 0.8, np.nan, 0.7, 0.95], tmp_path / "c.png"))
    samples = {"tiny": rng.gamma(2.0, 0.3, 500), "small": np.append(rng.gamma(2.0, 0.5, 500), np.nan)}
    assert is_png(plots.histogram_png(samples, tmp_path / "h.png", "control jitter", "ms"))
