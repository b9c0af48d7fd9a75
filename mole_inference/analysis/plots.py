"""Figures as PNG files, drawn with matplotlib's Agg canvas (no display, no pyplot global state).

Each function takes the numbers it draws and a path, writes the file (creating its folder) and returns the
path, so callers keep the numbers next to the picture (report.md, JSON). `routing_png` is the one sim eval and
the demo call per episode:

    from mole_inference.analysis.plots import routing_png
    routing_png([chunk.routing.layers for chunk in chunks], policy.num_layers, out / "routing.png", "episode 3")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mole_inference.errors import BackendUnavailableError, InputError

DPI = 110
COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


def new_figure(width: float = 7.0, height: float = 3.6) -> Any:
    """A matplotlib Figure on the Agg canvas (BackendUnavailableError when matplotlib is missing)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise BackendUnavailableError("figures need matplotlib: pip install 'mole-inference[plot]'") from None
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save(fig: Any, path: str | Path) -> Path:
    """Write `fig` as PNG to `path` (folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def routing_matrix(layers_per_step: Sequence[Sequence[int]], num_layers: int) -> np.ndarray:
    """(K, steps) uint8 raster: 1 where layer k ran at that step; InputError on an index outside [0, K)."""
    if num_layers < 1:
        raise InputError(f"num_layers must be >= 1, got {num_layers}")
    grid = np.zeros((num_layers, len(layers_per_step)), dtype=np.uint8)
    for step, layers in enumerate(layers_per_step):
        for k in layers:
            if not 0 <= int(k) < num_layers:
                raise InputError(f"step {step}: layer {k} outside [0, {num_layers})")
            grid[int(k), step] = 1
    return grid


def routing_png(layers_per_step: Sequence[Sequence[int]], num_layers: int, path: str | Path,
                title: str = "layers run per step") -> Path:
    """Raster of the LLM layers run at each step (rows = layers, columns = steps; filled = ran)."""
    grid = routing_matrix(layers_per_step, num_layers)
    steps = grid.shape[1]
    fig = new_figure(max(6.0, min(12.0, 2.5 + steps * 0.06)), max(2.6, min(8.0, 1.4 + num_layers * 0.18)))
    ax = fig.add_subplot()
    ax.xaxis.get_major_locator().set_params(integer=True)
    if steps:
        ax.imshow(grid, aspect="auto", origin="lower", cmap="Purples", vmin=0, vmax=1.25, interpolation="nearest",
                  extent=(-0.5, steps - 0.5, -0.5, num_layers - 0.5))
    ax.set_xlim(-0.5, max(steps, 1) - 0.5)
    ax.set_ylim(-0.5, num_layers - 0.5)
    ax.set_xlabel("step (inference)")
    ax.set_ylabel("LLM layer")
    ax.set_yticks(range(0, num_layers, max(1, num_layers // 8)))
    mean = float(grid.sum(axis=0).mean()) if steps else 0.0
    ax.set_title(f"{title}\n{steps} steps, {mean:.1f} of {num_layers} layers per step on average", fontsize=10)
    return save(fig, path)


def layer_usage_png(usage: Mapping[str, Sequence[float]], path: str | Path,
                    title: str = "layer usage per task") -> Path:
    """Grouped bars: for each task, the fraction of its frames in which each layer ran."""
    if not usage:
        raise InputError("layer_usage_png: no tasks")
    tasks = list(usage)
    k = len(next(iter(usage.values())))
    fig = new_figure(max(6.0, min(14.0, 2.0 + k * 0.35)), 3.6)
    ax = fig.add_subplot()
    width = 0.8 / len(tasks)
    x = np.arange(k)
    for i, task in enumerate(tasks):
        ax.bar(x - 0.4 + width * (i + 0.5), np.asarray(usage[task], dtype=float), width, label=task,
               color=COLORS[i % len(COLORS)])
    ax.set_xticks(x)
    ax.set_xlabel("LLM layer")
    ax.set_ylabel("fraction of frames run")
    ax.set_ylim(0, 1.2)  # room for the legend above full bars
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncols=min(4, len(tasks)), loc="upper center")
    return save(fig, path)


def entropy_png(entropy: Mapping[str, Sequence[float]], num_layers: int, path: str | Path,
                title: str = "router entropy per frame") -> Path:
    """Histogram of the router's per-frame entropy (nats) per task, with the uniform maximum ln K marked.

    The bins span the data up to ln K, so a router that is nearly uniform still shows its spread."""
    fig = new_figure()
    ax = fig.add_subplot()
    top = float(np.log(num_layers))
    values = [np.asarray(v, dtype=float) for v in entropy.values()]
    lo = min((float(v.min()) for v in values if v.size), default=0.0)
    lo = min(lo, top - 1e-4)
    bins = np.linspace(lo - 0.02 * (top - lo), top + 0.02 * (top - lo), 31)
    for i, (task, values) in enumerate(entropy.items()):
        ax.hist(np.asarray(values, dtype=float), bins=bins, alpha=0.6, label=task, color=COLORS[i % len(COLORS)])
    ax.axvline(top, color="black", linestyle="--", linewidth=1, label=f"uniform: ln {num_layers} = {top:.2f}")
    ax.set_xlabel("entropy of the router's layer distribution (nats)")
    ax.set_ylabel("frames")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return save(fig, path)


def cosine_png(full: Sequence[float], routed: Sequence[float], path: str | Path,
               title: str = "cosine similarity of consecutive layer outputs") -> Path:
    """Paper Fig. 1B: cos(h_in, h_out) per layer with all layers run, and for the layers MoLe ran (NaN = never)."""
    full_arr, routed_arr = np.asarray(full, dtype=float), np.asarray(routed, dtype=float)
    k = np.arange(len(full_arr))
    fig = new_figure()
    ax = fig.add_subplot()
    ax.plot(k, full_arr, "o-", color=COLORS[0], label="all layers (no MoLe)")
    ax.plot(k, routed_arr, "s", color=COLORS[1], markersize=7, label="layers MoLe ran (mean where run)")
    ax.set_xticks(k)
    ax.set_xlabel("LLM layer k: cos(input of k, output of k)")
    ax.set_ylabel("cosine similarity")
    lo = np.nanmin(np.concatenate([full_arr, routed_arr])) if len(k) else 0.0
    ax.set_ylim(min(0.0, float(lo)) if np.isfinite(lo) else 0.0, 1.02)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    return save(fig, path)


def histogram_png(samples: Mapping[str, Sequence[float]], path: str | Path, title: str, xlabel: str,
                  bins: int = 40) -> Path:
    """Overlaid histograms (one per series) with each series' p50 and p99 marked; for latency and jitter."""
    fig = new_figure()
    ax = fig.add_subplot()
    finite = {name: np.asarray(v, dtype=float)[np.isfinite(np.asarray(v, dtype=float))] for name, v in samples.items()}
    allv = np.concatenate([v for v in finite.values() if v.size] or [np.zeros(1)])
    edges = np.linspace(float(allv.min()), float(allv.max()) + 1e-9, bins + 1)
    for i, (name, values) in enumerate(finite.items()):
        color = COLORS[i % len(COLORS)]
        if not values.size:
            continue
        p50, p99 = np.percentile(values, [50, 99])
        ax.hist(values, bins=edges, alpha=0.55, color=color, label=f"{name}: p50 {p50:.2f}, p99 {p99:.2f}")
        ax.axvline(p50, color=color, linewidth=1)
        ax.axvline(p99, color=color, linewidth=1, linestyle="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(f"{title} (solid: p50, dashed: p99)", fontsize=10)
    ax.legend(fontsize=8)
    return save(fig, path)
