"""Watchdog: is the policy fit to drive? Checks the ages of image, chunk and pose, and the inference deadline.

Every input is a time in monotonic seconds passed by the caller (the node converts message stamps to its
monotonic clock); the watchdog never reads a clock. Before the first image, chunk or pose arrives, the
matching check fails ("no image yet"), so a policy can never be enabled on nothing.
Thread-safe: subscriptions and the inference worker report, the control timer calls `check`.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass

from mole_inference.config.control import WatchdogConfig


class Fault(str, enum.Enum):
    """One reason the policy is unhealthy."""

    NO_IMAGE = "no_image"
    STALE_IMAGE = "stale_image"
    NO_CHUNK = "no_chunk"
    STALE_CHUNK = "stale_chunk"
    INFERENCE_OVERDUE = "inference_overdue"
    NO_POSE = "no_pose"
    STALE_POSE = "stale_pose"


POSE_FAULTS = frozenset({Fault.NO_POSE, Fault.STALE_POSE})


@dataclass(frozen=True)
class Health:
    """Result of one watchdog check: `ok`, the faults, and one readable line per fault."""

    ok: bool
    faults: tuple[Fault, ...] = ()
    reasons: tuple[str, ...] = ()

    @property
    def pose_ok(self) -> bool:
        """False when the measured pose is missing or stale (no source may move the arm)."""
        return not any(f in POSE_FAULTS for f in self.faults)

    @property
    def reason(self) -> str:
        """All reasons in one line ('' when healthy)."""
        return "; ".join(self.reasons)


HEALTHY = Health(True)


def _age(faults: list[Fault], reasons: list[str], now: float, stamp: float | None, limit: float,
         missing: Fault, stale: Fault, what: str) -> None:
    """Append `missing` if nothing was seen, `stale` if the newest is older than `limit`."""
    if stamp is None:
        faults.append(missing)
        reasons.append(f"{missing.value}: no {what} received yet")
    elif now - stamp > limit:
        faults.append(stale)
        reasons.append(f"{stale.value}: {what} is {now - stamp:.3f} s old > {limit:.3f} s")


class Watchdog:
    """Tracks the latest image, chunk, pose and inference timings and reports health against the timeouts."""

    def __init__(self, config: WatchdogConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._image: float | None = None
        self._chunk: float | None = None  # image stamp of the newest chunk
        self._pose: float | None = None
        self._inference_start: float | None = None  # set while an inference call is running
        self.missed_deadlines = 0  # inference calls that finished after the deadline (telemetry)
        self.last_latency: float | None = None  # seconds, last finished inference call

    def image_received(self, stamp: float) -> None:
        """A camera frame taken at `stamp` arrived."""
        with self._lock:
            self._image = stamp if self._image is None else max(self._image, stamp)

    def pose_received(self, stamp: float) -> None:
        """A measured pose stamped `stamp` arrived."""
        with self._lock:
            self._pose = stamp if self._pose is None else max(self._pose, stamp)

    def chunk_received(self, image_stamp: float) -> None:
        """A chunk computed from the image stamped `image_stamp` was handed to the scheduler."""
        with self._lock:
            self._chunk = image_stamp if self._chunk is None else max(self._chunk, image_stamp)

    def inference_started(self, now: float) -> None:
        """The worker started an inference call at `now`."""
        with self._lock:
            self._inference_start = now

    def inference_finished(self, now: float) -> None:
        """The worker's inference call ended at `now` (successfully or not)."""
        with self._lock:
            if self._inference_start is not None:
                self.last_latency = now - self._inference_start
                if self.last_latency > self.config.inference_deadline:
                    self.missed_deadlines += 1
            self._inference_start = None

    def reset(self) -> None:
        """Forget everything seen (e.g. on lifecycle deactivate)."""
        with self._lock:
            self._image = self._chunk = self._pose = self._inference_start = None

    def check(self, now: float) -> Health:
        """Health at time `now`: every timeout is checked, all failing ones are reported."""
        cfg = self.config
        with self._lock:
            image, chunk, pose, start = self._image, self._chunk, self._pose, self._inference_start
        faults: list[Fault] = []
        reasons: list[str] = []
        _age(faults, reasons, now, image, cfg.max_image_age, Fault.NO_IMAGE, Fault.STALE_IMAGE, "image")
        _age(faults, reasons, now, chunk, cfg.max_chunk_age, Fault.NO_CHUNK, Fault.STALE_CHUNK, "chunk")
        _age(faults, reasons, now, pose, cfg.max_pose_age, Fault.NO_POSE, Fault.STALE_POSE, "pose")
        if start is not None and now - start > cfg.inference_deadline:
            faults.append(Fault.INFERENCE_OVERDUE)
            reasons.append(f"{Fault.INFERENCE_OVERDUE.value}: inference running for {now - start:.3f} s "
                           f"> deadline {cfg.inference_deadline:.3f} s")
        if not faults:
            return HEALTHY
        return Health(False, tuple(faults), tuple(reasons))
