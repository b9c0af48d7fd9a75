"""ROS-free core of the sim bridge node: real-time pacing of the physics, and checks on commanded targets.

The bridge steps the simulation off a wall-clock timer. `RealTimePacer` says how many control ticks are due at
each timer callback: one when on time, a few more to catch up after a late callback, and when it is further
behind than `max_catchup` ticks it drops the debt (counts it, re-anchors to now) instead of running the physics
faster than real time for a long while. `check_target` is the controller side's last line of defence, like
the robot's own limits: a NaN/inf pose, a zero quaternion, a target outside the (generous) workspace box or
far from the measured pose is refused and the arm keeps its previous target.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from mole_inference.config.base import check, positive
from mole_inference.control.transforms import quat_to_matrix
from mole_inference.errors import InputError


class RealTimePacer:
    """Ticks due per wall-clock callback at period `dt`, with bounded catch-up (see module docstring)."""

    def __init__(self, dt: float, max_catchup: int = 3, window: float = 2.0) -> None:
        if dt <= 0 or max_catchup < 1:
            raise ValueError(f"RealTimePacer: dt={dt!r} must be > 0 and max_catchup={max_catchup!r} >= 1")
        self.dt = dt
        self.max_catchup = max_catchup
        self.ticks = 0  # ticks run since start
        self.dropped = 0  # ticks skipped because the caller fell too far behind
        self.late = 0  # callbacks that had to catch up
        self._next: float | None = None
        self._start: float | None = None
        self._history: deque[tuple[float, int]] = deque()
        self._window = window

    def due(self, now: float) -> int:
        """How many ticks to run now (monotonic seconds); call `ran(now, n)` afterwards."""
        if self._next is None:
            self._next = self._start = now
        n = 0
        while n < self.max_catchup and now >= self._next - 0.5 * self.dt:  # half a period early is on time
            self._next += self.dt
            n += 1
        if now >= self._next + 0.5 * self.dt:  # still behind after max_catchup ticks: forgive the rest
            missed = int((now - self._next) / self.dt) + 1
            self.dropped += missed
            self._next += missed * self.dt
        if n > 1:
            self.late += 1
        return n

    @property
    def next_due(self) -> float:
        """Monotonic time of the next tick (now, before the first `due`)."""
        return self._next if self._next is not None else time.monotonic()

    def ran(self, now: float, n: int) -> None:
        """Record that `n` ticks were run at `now` (for the rate and real-time factor)."""
        self.ticks += n
        self._history.append((now, self.ticks))
        while self._history and now - self._history[0][0] > self._window:
            self._history.popleft()

    def rate_hz(self) -> float:
        """Ticks per wall-clock second over the recent window (NaN before two samples)."""
        if len(self._history) < 2:
            return float("nan")
        (t0, k0), (t1, k1) = self._history[0], self._history[-1]
        return (k1 - k0) / (t1 - t0) if t1 > t0 else float("nan")

    def real_time_factor(self) -> float:
        """Simulated seconds per wall-clock second over the recent window (1.0 = real time)."""
        return self.rate_hz() * self.dt

    def overall_real_time_factor(self, now: float) -> float:
        """Simulated seconds per wall-clock second since the first tick."""
        if self._start is None or now <= self._start:
            return float("nan")
        return self.ticks * self.dt / (now - self._start)


@dataclass(frozen=True)
class TargetLimits:
    """What the simulated controller accepts as a target pose (base frame, metres)."""

    workspace_min: tuple[float, float, float] = (0.05, -0.7, -0.05)
    workspace_max: tuple[float, float, float] = (0.95, 0.7, 1.0)
    max_distance: float = 0.15  # from the measured TCP position

    def __post_init__(self) -> None:
        positive(self, "max_distance")
        check(all(lo < hi for lo, hi in zip(self.workspace_min, self.workspace_max, strict=True)),
              "workspace_max", self.workspace_max, f"must be > workspace_min={self.workspace_min} on every axis")


def check_target(position: np.ndarray, quaternion: np.ndarray, measured: np.ndarray,
                 limits: TargetLimits) -> tuple[np.ndarray, np.ndarray]:
    """The target as (position (3,), rotation (3, 3)); InputError says why it is refused."""
    p = np.asarray(position, dtype=float)
    q = np.asarray(quaternion, dtype=float)
    if p.shape != (3,) or q.shape != (4,):
        raise InputError(f"target needs position (3,) and quaternion (4,), got {p.shape} and {q.shape}")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
        raise InputError(f"target has NaN/inf: position {p}, quaternion {q}")
    norm = float(np.linalg.norm(q))
    if not 0.5 < norm < 1.5:
        raise InputError(f"target quaternion {q} has norm {norm:.3f}; expected a unit quaternion")
    lo, hi = np.asarray(limits.workspace_min), np.asarray(limits.workspace_max)
    if np.any(p < lo) or np.any(p > hi):
        raise InputError(f"target position {np.round(p, 3)} outside the workspace {tuple(lo)}..{tuple(hi)}")
    distance = float(np.linalg.norm(p - np.asarray(measured, dtype=float)))
    if distance > limits.max_distance:
        raise InputError(f"target {distance:.3f} m from the measured pose (limit {limits.max_distance} m)")
    return p, quat_to_matrix(q / norm)
