"""Watchdog: is the policy fit to drive? Checks the ages of image, chunk and pose, and the inference deadline.

Every input is a time in seconds passed by the caller (the node converts message stamps to its clock); the
watchdog never reads a clock. Before the first image, chunk or pose arrives, the matching check fails ("no
image yet"), so a policy can never be enabled on nothing.

Stamps are not trusted blindly. A header stamp may be ahead of the receiving clock (a camera clock ahead, one
bad header): kept as "newest", it would never age and the policy would keep driving after the camera died. So
a stamp more than `max_future_stamp` ahead of its arrival time is rejected (not counted as received), a
non-finite one too, and `check` also fails an input whose newest stamp is that far ahead of `now` (callers that
pass no arrival time). Staleness is judged on both the newest header stamp and the last arrival time: either
one older than the limit fails the check.
Thread-safe: subscriptions and the inference worker report, the control timer calls `check`.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
from dataclasses import dataclass

from mole_inference.config.control import WatchdogConfig

logger = logging.getLogger(__name__)


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


class _Latest:
    """One input stream: newest accepted header stamp, last arrival time, and stamps rejected since then."""

    __slots__ = ("ahead", "received", "rejected", "stamp", "what")

    def __init__(self, what: str) -> None:
        self.what = what
        self.stamp: float | None = None
        self.received: float | None = None
        self.rejected = 0  # stamps rejected since the last accepted one
        self.ahead = 0.0  # how far the last rejected stamp was ahead of its arrival (inf: non-finite)

    def update(self, stamp: float, received: float | None, tolerance: float) -> bool:
        """Record `stamp` (arrived at `received`, if known); False when it is rejected."""
        if not math.isfinite(stamp) or (received is not None and stamp - received > tolerance):
            self.ahead = stamp - received if math.isfinite(stamp) and received is not None else math.inf
            if self.rejected == 0:  # once per run of rejections: the check's reason repeats it every tick
                logger.warning("%s stamp %r rejected: %s", self.what, stamp,
                               "not finite" if not math.isfinite(stamp) else
                               f"{self.ahead:.3f} s ahead of its arrival (> {tolerance:.3f} s; clock ahead?)")
            self.rejected += 1
            return False
        self.stamp = stamp if self.stamp is None else max(self.stamp, stamp)
        if received is not None:
            self.received = received if self.received is None else max(self.received, received)
        self.rejected = 0
        return True

    def snapshot(self) -> tuple[float | None, float | None, int, float]:
        return self.stamp, self.received, self.rejected, self.ahead


def _age(faults: list[Fault], reasons: list[str], now: float, latest: tuple[float | None, float | None, int, float],
         limit: float, tolerance: float, missing: Fault, stale: Fault, what: str) -> None:
    """Append `missing` if nothing was accepted, `stale` if the newest stamp or arrival is older than `limit`
    or the newest stamp lies more than `tolerance` in the future."""
    stamp, received, rejected, ahead = latest
    note = ""
    if rejected:
        how = "with a non-finite stamp" if math.isinf(ahead) else f"stamped {ahead:.3f} s ahead of arrival"
        note = f" ({rejected} {what}(s) since rejected, {how})"
    if stamp is None:
        faults.append(missing)
        reasons.append(f"{missing.value}: no {what} received yet{note}")
    elif stamp - now > tolerance:
        faults.append(stale)
        reasons.append(f"{stale.value}: {what} stamped {stamp - now:.3f} s in the future "
                       f"(> {tolerance:.3f} s; clock ahead?){note}")
    elif now - stamp > limit:
        faults.append(stale)
        reasons.append(f"{stale.value}: {what} is {now - stamp:.3f} s old > {limit:.3f} s{note}")
    elif received is not None and now - received > limit:
        faults.append(stale)
        reasons.append(f"{stale.value}: last {what} arrived {now - received:.3f} s ago > {limit:.3f} s{note}")


class Watchdog:
    """Tracks the latest image, chunk, pose and inference timings and reports health against the timeouts."""

    def __init__(self, config: WatchdogConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._image = _Latest("image")
        self._chunk = _Latest("chunk")  # stamped with the image it was computed from
        self._pose = _Latest("pose")
        self._inference_start: float | None = None  # set while an inference call is running
        self.missed_deadlines = 0  # inference calls that finished after the deadline (telemetry)
        self.last_latency: float | None = None  # seconds, last finished inference call

    def image_received(self, stamp: float, received: float | None = None) -> bool:
        """A camera frame taken at `stamp` arrived at `received`; False when the stamp is rejected."""
        return self._update(self._image, stamp, received)

    def pose_received(self, stamp: float, received: float | None = None) -> bool:
        """A measured pose stamped `stamp` arrived at `received`; False when the stamp is rejected."""
        return self._update(self._pose, stamp, received)

    def chunk_received(self, image_stamp: float, received: float | None = None) -> bool:
        """A chunk computed from the image stamped `image_stamp` was handed to the scheduler at `received`."""
        return self._update(self._chunk, image_stamp, received)

    def _update(self, latest: _Latest, stamp: float, received: float | None) -> bool:
        with self._lock:
            return latest.update(float(stamp), received, self.config.max_future_stamp)

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

    def latest_image(self) -> tuple[float | None, float | None]:
        """(stamp, arrival) of the newest accepted image; (None, None) before the first."""
        with self._lock:
            return self._image.stamp, self._image.received

    def reset(self) -> None:
        """Forget everything seen (e.g. on lifecycle deactivate)."""
        with self._lock:
            self._image, self._chunk, self._pose = _Latest("image"), _Latest("chunk"), _Latest("pose")
            self._inference_start = None

    def check(self, now: float) -> Health:
        """Health at time `now`: every timeout is checked, all failing ones are reported."""
        cfg = self.config
        with self._lock:
            image, chunk, pose = self._image.snapshot(), self._chunk.snapshot(), self._pose.snapshot()
            start = self._inference_start
        faults: list[Fault] = []
        reasons: list[str] = []
        tol = cfg.max_future_stamp
        _age(faults, reasons, now, image, cfg.max_image_age, tol, Fault.NO_IMAGE, Fault.STALE_IMAGE, "image")
        _age(faults, reasons, now, chunk, cfg.max_chunk_age, tol, Fault.NO_CHUNK, Fault.STALE_CHUNK, "chunk")
        _age(faults, reasons, now, pose, cfg.max_pose_age, tol, Fault.NO_POSE, Fault.STALE_POSE, "pose")
        if start is not None and now - start > cfg.inference_deadline:
            faults.append(Fault.INFERENCE_OVERDUE)
            reasons.append(f"{Fault.INFERENCE_OVERDUE.value}: inference running for {now - start:.3f} s "
                           f"> deadline {cfg.inference_deadline:.3f} s")
        if not faults:
            return HEALTHY
        return Health(False, tuple(faults), tuple(reasons))
