"""Action-chunk scheduler: steps through the newest chunk at the control rate, swapping chunks without a gap.

Timing model. A chunk is an (N, 7) array `[dx, dy, dz, droll, dpitch, dyaw, gripper]` predicted from an image
stamped `t0`; step k covers the time window [t0 + k*action_dt, t0 + (k+1)*action_dt). At control time `now`
the scheduler picks the step whose window contains `now`. So a chunk that arrives late starts at the step
matching the current time (the steps that already passed are skipped: latency compensation), and a new chunk
replaces the old one on the very next tick (no gap, no restart from step 0).

Resampling. Chunk steps are at the model's rate (`action_dt`, e.g. 0.1 s), ticks at the control rate (e.g.
0.02 s). Motion deltas are rates, so each tick applies the step's delta times control_dt / action_dt (a step
is split evenly over its ticks, and the ticks of one step sum to the step's delta). The gripper is an absolute
command (1 = open, 0 = closed) and is held for the whole step.

Ensemble (optional, ACT / CogACT style). Every kept chunk whose time span contains `now` contributes its step
for `now`; motion deltas are averaged with weights exp(-k * i), i = 0 for the newest chunk, 1 for the one
before, ... (k > 0 favours new predictions, k = 0 is a plain mean). The gripper comes from the newest chunk
only: it is a discrete decision and averaging would delay it.

Gripper vote (optional, `gripper_ensemble`, independent of the motion ensemble). A diffusion head samples the
gripper afresh from new noise for every chunk; near a grasp both modes are likely and single draws flip the hand
open and shut. With the vote, the gripper command is the weighted mean (weights as above) of the gripper of every
kept chunk covering `now`: the fraction of recent draws that say "open", a value in [0, 1] that the safety
envelope's hysteresis band turns into 0 or 1. The motion part is unchanged (newest chunk, or the ensemble).

Gripper read-ahead (optional, `gripper_open_lookahead` = L steps). A chunk's gripper at step k is its most open
value over steps k..k+L. A policy replanned every step that plans "open in 3 steps" says so again from the next
image, and the release never comes; with L >= 3 it is sent now. Closing is not delayed by it: once a chunk closes
at step k and stays closed, its window is all closed from k on. Applies to the newest chunk and to every voter.

Rotation deltas are normalised on arrival (`transforms.normalize_rotation_delta`: angles outside [-pi, pi]
become the equivalent angle inside) before any splitting or averaging: a yaw step of 2*pi - 0.1 is the
rotation -0.1, and a fifth of it per tick must turn the same way, not +1.24 rad per tick the other way round.

When no chunk covers `now` (exhausted, or none yet) `next_action` returns None, which means hold; the last
action is never repeated.

Thread safety: `push` (inference worker) and `next_action` (control timer) share state under one lock.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from mole_inference.config.control import SchedulerConfig
from mole_inference.control.transforms import normalize_rotation_delta
from mole_inference.errors import InputError

logger = logging.getLogger(__name__)

ACTION_DIM = 7
_EPS = 1e-9  # absorbs float error at exact step boundaries (0.3 / 0.1 = 2.9999999999999996)


@dataclass(frozen=True)
class _Chunk:
    actions: np.ndarray  # (N, 7), read-only copy
    start: float  # time at which step 0 begins


class ChunkScheduler:
    """Turns action chunks from the policy into one 7-DoF delta per control tick (see module docstring)."""

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self._scale = config.control_dt / config.action_dt  # fraction of a step's delta per tick
        self._inv_action_dt = 1.0 / config.action_dt
        keep = config.ensemble or config.gripper_ensemble
        self._chunks: deque[_Chunk] = deque(maxlen=config.ensemble_horizon if keep else 1)
        self._weights = [math.exp(-config.ensemble_decay * i) for i in range(config.ensemble_horizon)]
        self._lock = threading.Lock()
        self.last_skipped_steps = 0  # steps of the latest pushed chunk already in the past when it arrived

    def push(self, chunk: np.ndarray, image_stamp: float, now: float) -> bool:
        """Make `chunk` (N, 7), computed from the image at `image_stamp`, the newest; `now` = arrival time.

        Returns False (and keeps the current chunk) if it is older than the newest chunk (out-of-order
        arrival). Raises InputError for a wrong shape or non-finite values: the caller holds and reports.
        """
        actions = np.asarray(chunk, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[0] < 1 or actions.shape[1] != ACTION_DIM:
            raise InputError(f"action chunk must have shape (N, {ACTION_DIM}), N >= 1, got {actions.shape}")
        if not np.isfinite(actions).all():
            raise InputError("action chunk contains NaN or inf; dropped")
        if not math.isfinite(image_stamp):
            raise InputError(f"image_stamp must be finite, got {image_stamp!r}")
        actions = actions.copy()
        rotation = normalize_rotation_delta(actions[:, 3:6])  # (N, 3)
        if not np.array_equal(rotation, actions[:, 3:6]):
            logger.warning("chunk rotation deltas outside [-pi, pi] (largest |angle| %.3f rad) normalised",
                           float(np.abs(actions[:, 3:6]).max()))
            actions[:, 3:6] = rotation
        actions.flags.writeable = False
        start = image_stamp if self.config.latency_compensation else now
        skipped = max(0, math.floor((now - start) * self._inv_action_dt + _EPS))
        with self._lock:
            if self._chunks and start < self._chunks[-1].start:
                logger.warning("dropped an out-of-order chunk (starts %.3f s, newest starts %.3f s)",
                               start, self._chunks[-1].start)
                return False
            self._chunks.append(_Chunk(actions, start))
            self.last_skipped_steps = min(skipped, actions.shape[0])
        if skipped >= actions.shape[0]:
            logger.warning("chunk arrived %.3f s after its image: all %d steps already passed",
                           now - start, actions.shape[0])
        return True

    def next_action(self, now: float) -> np.ndarray | None:
        """The (7,) delta for the tick at `now` (motion scaled per tick, gripper absolute), or None."""
        with self._lock:
            chunks = self._chunks
            if not chunks:
                return None
            if self.config.ensemble:
                out = self._ensemble_at(now)
            else:
                step = self._step_at(chunks[-1], now)
                if step is None:
                    return None
                out = step.copy()  # (7,)
                out[:6] *= self._scale
            if out is not None and self.config.gripper_ensemble:
                out[6] = self._gripper_vote(now)
            elif out is not None and self.config.gripper_open_lookahead:
                out[6] = self._newest_gripper(now)  # without read-ahead out[6] is already the newest step's
            return out

    def _index_at(self, chunk: _Chunk, now: float) -> int | None:
        k = math.floor((now - chunk.start) * self._inv_action_dt + _EPS)
        if k >= chunk.actions.shape[0]:
            return None
        return max(k, 0)  # before the chunk's start (clock skew): its first step

    def _step_at(self, chunk: _Chunk, now: float) -> np.ndarray | None:
        k = self._index_at(chunk, now)
        return None if k is None else chunk.actions[k]

    def _gripper_at(self, chunk: _Chunk, now: float) -> float | None:
        """The chunk's gripper for `now`: its most open value over the read-ahead window (None: not covered)."""
        k = self._index_at(chunk, now)
        if k is None:
            return None
        return float(chunk.actions[k : k + self.config.gripper_open_lookahead + 1, 6].max())

    def _ensemble_at(self, now: float) -> np.ndarray | None:
        out: np.ndarray | None = None
        total = 0.0
        for i, chunk in enumerate(reversed(self._chunks)):  # i = 0: newest
            step = self._step_at(chunk, now)
            if step is None:
                continue
            w = self._weights[i]
            if out is None:
                out = step.copy()
                out[:6] *= w
            else:
                out[:6] += w * step[:6]
            total += w
        if out is None:
            return None
        out[:6] *= self._scale / total  # gripper stays the newest covering chunk's
        return out

    def _newest_gripper(self, now: float) -> float:
        """The newest covering chunk's gripper (the caller only asks when some chunk covers `now`)."""
        return next(g for c in reversed(self._chunks) if (g := self._gripper_at(c, now)) is not None)

    def _gripper_vote(self, now: float) -> float:
        votes = total = 0.0
        for i, chunk in enumerate(reversed(self._chunks)):  # i = 0: newest
            gripper = self._gripper_at(chunk, now)
            if gripper is not None:
                votes += self._weights[i] * gripper
                total += self._weights[i]
        return votes / total  # total > 0: the caller only asks when some chunk covers `now`

    def steps_remaining(self, now: float) -> int:
        """Chunk steps of the newest chunk not yet started at `now` (telemetry; 0 when exhausted or empty)."""
        with self._lock:
            if not self._chunks:
                return 0
            chunk = self._chunks[-1]
            k = math.floor((now - chunk.start) * self._inv_action_dt + _EPS)
            return max(0, chunk.actions.shape[0] - max(k, 0) - 1)

    def clear(self) -> None:
        """Drop every chunk (e.g. the instruction changed): `next_action` returns None until the next push."""
        with self._lock:
            self._chunks.clear()
            self.last_skipped_steps = 0
