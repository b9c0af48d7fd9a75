"""Per-tick recorded deltas -> actions at the model's `action_dt` (see training/windows.py for the rules).

Pure numpy on arrays, so both the trainer (`training.windows`) and the dataset converters (`data.lerobot`) use
the one resampling without `data` importing `training`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from mole_inference.errors import InputError

log = logging.getLogger(__name__)

SOURCES = ("teleop", "policy", "hold")  # tie-break order of the majority vote
GRIPPER_OPEN = 1.0  # gripper value assumed before any command was recorded


@dataclass
class ActionWindows:
    """Resampled actions for F frames: actions (F, n, 7) robot units, mask (F, n) bool, sources (F, n) str."""

    actions: np.ndarray
    mask: np.ndarray
    sources: np.ndarray


def tick_period_ns(delta_t_ns: np.ndarray) -> int:
    """Median spacing of the recorded deltas (ns); 0 when fewer than two."""
    return int(np.median(np.diff(delta_t_ns))) if len(delta_t_ns) > 1 else 0


def resample_windows(delta_t_ns: np.ndarray, deltas: np.ndarray, delta_sources: np.ndarray,
                     frame_t_ns: np.ndarray, n: int, dt_ns: int) -> ActionWindows:
    """The next `n` actions at `dt_ns` after each frame time, from per-tick deltas (see module docstring).

    delta_t_ns (K,) sorted, deltas (K, 7), delta_sources (K,), frame_t_ns (F,) -> ActionWindows.
    """
    if n <= 0 or dt_ns <= 0:
        raise InputError(f"n and dt_ns must be positive, got n={n}, dt_ns={dt_ns}")
    f, k = len(frame_t_ns), len(delta_t_ns)
    dim = deltas.shape[1] if deltas.ndim == 2 else 7
    actions = np.zeros((f, n, dim))
    mask = np.zeros((f, n), dtype=bool)
    sources = np.full((f, n), "hold", dtype="<U6")
    tick = tick_period_ns(delta_t_ns)
    if tick > dt_ns:
        log.warning("deltas are logged every %.3f s, slower than action_dt %.3f s: windows will have gaps",
                    tick / 1e9, dt_ns / 1e9)
    half = min(tick, dt_ns) // 2
    full = max(1, round(dt_ns / tick)) if tick > 0 else 1  # ticks in a complete window
    src_codes = np.array([SOURCES.index(s) if s in SOURCES else 2 for s in delta_sources], dtype=np.int64)
    for i, t_f in enumerate(frame_t_ns):
        i0 = int(np.searchsorted(delta_t_ns, t_f, side="left"))
        gripper = float(deltas[i0 - 1, -1]) if i0 > 0 else GRIPPER_OPEN
        if i0 < k:
            start = int(delta_t_ns[i0]) - half
            edges = start + dt_ns * np.arange(n + 1)  # (n + 1,)
            idx = np.searchsorted(delta_t_ns, edges, side="left")
            idx[0] = i0  # never reach back before the frame
            for j in range(n):
                lo, hi = idx[j], max(idx[j + 1], idx[j])
                if hi > lo:
                    actions[i, j, :-1] = deltas[lo:hi, :-1].sum(axis=0)
                    gripper = float(deltas[hi - 1, -1])
                    mask[i, j] = hi < k or hi - lo >= full  # a trailing partial window is not a full action
                    votes = np.bincount(src_codes[lo:hi], minlength=len(SOURCES))
                    sources[i, j] = SOURCES[int(np.argmax(votes))]
                actions[i, j, -1] = gripper
        else:
            actions[i, :, -1] = gripper
    return ActionWindows(actions, mask, sources)
