"""ControlLoop: the scheduler, watchdog, envelope and mux wired together, for a node to drive.

The node's 50 Hz timer calls `tick(now, measured)` and publishes the returned Command (always one: hold is
explicit); subscriptions call `image_received` / `pose_received` (header stamp and arrival time) /
`set_teleop`; the inference worker calls `inference_started`, then `push_chunk`, then `inference_finished`;
services call `takeover` / `resume_policy` / `request_hold`; lifecycle activation calls `reset`. All times are
seconds on one clock chosen by the caller.

A tick never raises for a fault inside the control stack: it logs (at most once a second), switches to hold
and returns the hold command. The one exception is InputError when no valid measured pose was ever seen:
there is no pose to hold, so nothing safe to publish.
"""

from __future__ import annotations

import logging

import numpy as np

from mole_inference.config.control import ControlConfig
from mole_inference.control.mux import SwitchCallback, TeleopMux
from mole_inference.control.safety import Command, SafetyEnvelope
from mole_inference.control.scheduler import ChunkScheduler
from mole_inference.control.transforms import Pose
from mole_inference.control.watchdog import Health, Watchdog
from mole_inference.errors import InputError

logger = logging.getLogger(__name__)


class ControlLoop:
    """Owns one of each control component and runs them in the right order each tick."""

    def __init__(self, config: ControlConfig, on_switch: SwitchCallback | None = None,
                 now: float = 0.0) -> None:
        self.config = config
        self.scheduler = ChunkScheduler(config.scheduler)
        self.watchdog = Watchdog(config.watchdog)
        self.envelope = SafetyEnvelope(config.safety)
        self.mux = TeleopMux(config.mux, self.envelope, on_switch=on_switch, now=now)
        self.last_health: Health | None = None
        self.failed_ticks = 0  # ticks that raised and were turned into a hold (telemetry)
        self._last_error_log = -float("inf")

    def reset(self, reason: str, now: float) -> None:
        """Start afresh (lifecycle activation): queued actions and input ages forgotten, no previous target or
        hold latch, the mux back in its start mode: a reactivated node never resumes the policy implicitly,
        nor on a chunk from before its deactivation."""
        self.scheduler.clear()
        self.watchdog.reset()
        self.envelope.reset()
        self.mux.reset(reason, now)

    # inputs (any thread)
    def image_received(self, stamp: float, received: float | None = None) -> bool:
        """A camera frame taken at `stamp` arrived at `received`; False (logged) if its stamp is rejected."""
        return self.watchdog.image_received(stamp, received)

    def pose_received(self, stamp: float, received: float | None = None) -> bool:
        """A measured pose stamped `stamp` arrived at `received` (the node keeps the Pose and passes it to
        `tick`); False (logged) if its stamp is rejected."""
        return self.watchdog.pose_received(stamp, received)

    def set_teleop(self, delta: np.ndarray, now: float) -> None:
        """Latest teleop (7,) per-tick delta."""
        self.mux.set_teleop(delta, now)

    def inference_started(self, now: float) -> None:
        """The worker starts an inference call."""
        self.watchdog.inference_started(now)

    def inference_finished(self, now: float) -> None:
        """The worker's inference call ended (also call it when the call raised)."""
        self.watchdog.inference_finished(now)

    def push_chunk(self, chunk: np.ndarray, image_stamp: float, now: float) -> bool:
        """Hand a new (N, 7) chunk computed from the image at `image_stamp` to the scheduler (worker thread).

        Returns False for an out-of-order chunk; raises InputError for a malformed one or one computed from
        an image stamped in the future (it would never age).
        """
        ahead = image_stamp - now
        if ahead > self.config.watchdog.max_future_stamp:
            raise InputError(f"chunk computed from an image stamped {ahead:.3f} s after its arrival "
                             f"(> max_future_stamp={self.config.watchdog.max_future_stamp:g} s): dropped")
        accepted = self.scheduler.push(chunk, image_stamp, now)
        if accepted:
            self.watchdog.chunk_received(image_stamp, now)
        return accepted

    def clear_chunks(self) -> None:
        """Drop queued actions (the instruction changed); the policy holds until a new chunk arrives."""
        self.scheduler.clear()

    # operator requests (service threads)
    def takeover(self, reason: str, now: float) -> None:
        """Operator takes control: teleop mode."""
        self.mux.takeover(reason, now)

    def request_hold(self, reason: str, now: float) -> None:
        """Switch to hold mode."""
        self.mux.request_hold(reason, now)

    def resume_policy(self, reason: str, now: float) -> bool:
        """Explicitly return control to the policy; False (logged) when the watchdog is not healthy now."""
        return self.mux.resume_policy(reason, now, self.watchdog.check(now))

    # control timer
    def tick(self, now: float, measured: Pose) -> Command:
        """One control step at `now` from the latest measured pose: the command to publish.

        Any failure inside becomes a hold (see module docstring); InputError only when no valid measured pose
        was ever seen.
        """
        try:
            health = self.watchdog.check(now)
            self.last_health = health
            return self.mux.step(now, measured, self.scheduler.next_action(now), health)
        except Exception as err:
            return self._fail_safe(err, now, measured)

    def _fail_safe(self, err: Exception, now: float, measured: Pose) -> Command:
        self.failed_ticks += 1
        reason = f"control tick failed ({type(err).__name__}: {err}): holding"
        if now - self._last_error_log >= 1.0:  # 50 Hz of tracebacks would drown the log
            self._last_error_log = now
            logger.error("%s (%d failed ticks so far)", reason, self.failed_ticks,
                         exc_info=None if isinstance(err, InputError) else err)
        self.mux.fault_hold(reason, now)
        try:
            return self.envelope.hold(measured, reason)
        except InputError:
            raise
        except Exception as hold_err:  # e.g. a measured pose of the wrong shape: nothing to hold
            raise InputError(f"{reason}; cannot hold either: {type(hold_err).__name__}: {hold_err}") from hold_err
