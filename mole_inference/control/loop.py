"""ControlLoop: the scheduler, watchdog, envelope and mux wired together, for a node to drive.

The node's 50 Hz timer calls `tick(now, measured)` and publishes the returned Command (always one: hold is
explicit); subscriptions call `image_received` / `pose_received` / `set_teleop`; the inference worker calls
`inference_started`, then `push_chunk`, then `inference_finished`; services call `takeover` /
`resume_policy` / `request_hold`. All times are monotonic seconds chosen by the caller.
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

    # inputs (any thread)
    def image_received(self, stamp: float) -> None:
        """A camera frame taken at `stamp` arrived."""
        self.watchdog.image_received(stamp)

    def pose_received(self, stamp: float) -> None:
        """A measured pose stamped `stamp` arrived (the node keeps the Pose and passes it to `tick`)."""
        self.watchdog.pose_received(stamp)

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

        Returns False for an out-of-order chunk; raises InputError for a malformed one.
        """
        accepted = self.scheduler.push(chunk, image_stamp, now)
        if accepted:
            self.watchdog.chunk_received(image_stamp)
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
        """One control step at `now` from the latest measured pose: the command to publish."""
        health = self.watchdog.check(now)
        self.last_health = health
        return self.mux.step(now, measured, self.scheduler.next_action(now), health)
