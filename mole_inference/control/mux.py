"""Teleop mux: picks who drives the arm each tick (teleop > policy > hold), logs every switch with a reason.

Modes: HOLD (start, or after a request/fallback), POLICY (only entered by an explicit `resume_policy` while
the watchdog is healthy), TELEOP (entered by `takeover`, from a service or a device button, or by automatic
fallback when configured and the teleop device is live). In POLICY mode an unhealthy watchdog or too many
rejected actions in a row switch automatically to the fallback (TELEOP if `fallback="teleop"` and teleop is
live, else HOLD); nothing ever switches back to POLICY automatically.

Teleop input is a (7,) per-tick delta in the same convention as policy actions (gripper absolute, 1 = open);
the latest input is applied every tick while it is younger than `teleop_timeout`, then the arm holds.
Whatever the source, the delta goes through the same SafetyEnvelope, and a missing or stale measured pose
makes every source hold. A hold keeps publishing the pose latched when it began (see `safety`); an explicit
`takeover` or `resume_policy` re-latches it at the next tick (the operator or the policy starts from where the
arm is then), automatic fallbacks and `request_hold` never do.

Thread-safe: service callbacks and the teleop subscription may run beside the control timer. Switch callbacks
run outside the lock, on the thread that caused the switch.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mole_inference.config.control import MuxConfig
from mole_inference.control.safety import Command, SafetyEnvelope, SafetyFlag, Source
from mole_inference.control.transforms import Pose
from mole_inference.control.watchdog import Health

logger = logging.getLogger(__name__)

_REJECTED = SafetyFlag.REJECTED_NON_FINITE | SafetyFlag.REJECTED_SHAPE


class Mode(str, enum.Enum):
    """Who is allowed to drive the arm."""

    HOLD = "hold"
    POLICY = "policy"
    TELEOP = "teleop"


@dataclass(frozen=True)
class SwitchEvent:
    """One mode switch: when, from, to, why, and whether the mux did it on its own."""

    time: float
    previous: Mode
    mode: Mode
    reason: str
    automatic: bool


SwitchCallback = Callable[[SwitchEvent], None]


class TeleopMux:
    """Source arbitration teleop > policy > hold with explicit return to the policy (see module docstring)."""

    def __init__(self, config: MuxConfig, envelope: SafetyEnvelope, on_switch: SwitchCallback | None = None,
                 now: float = 0.0) -> None:
        self.config = config
        self.envelope = envelope
        self.on_switch = on_switch
        self._lock = threading.Lock()
        self._mode = Mode(config.start_mode)
        self._events: deque[SwitchEvent] = deque(maxlen=config.event_log_size)
        self._teleop_delta: np.ndarray | None = None
        self._teleop_time: float | None = None
        self._health: Health | None = None
        self._rejections = 0
        self._relatch = False  # set by explicit takeover/resume, applied by the next step (control thread)
        logger.info("mux starts in %s mode at t=%.3f", self._mode.value, now)

    @property
    def mode(self) -> Mode:
        """The current mode."""
        return self._mode

    @property
    def events(self) -> list[SwitchEvent]:
        """Recent switch events, oldest first (at most `event_log_size`)."""
        with self._lock:
            return list(self._events)

    def set_teleop(self, delta: np.ndarray, now: float) -> None:
        """Latest teleop input: a (7,) per-tick delta received at `now` (validated by the envelope)."""
        d = np.array(delta, dtype=np.float64)
        with self._lock:
            self._teleop_delta = d
            self._teleop_time = now

    def teleop_live(self, now: float) -> bool:
        """True when teleop input arrived within `teleop_timeout` of `now`."""
        with self._lock:
            return self._teleop_live(now)

    def takeover(self, reason: str, now: float) -> None:
        """Operator takes control (service or device button): switch to TELEOP; re-latches the hold pose."""
        with self._lock:
            self._relatch = True
            event = self._switch(Mode.TELEOP, reason, now, automatic=False)
        self._dispatch(event)

    def request_hold(self, reason: str, now: float) -> None:
        """Stop whoever drives and hold (e.g. the operator releases teleop without resuming the policy)."""
        self._dispatch(self._locked_switch(Mode.HOLD, reason, now, automatic=False))

    def fault_hold(self, reason: str, now: float) -> None:
        """A control tick failed: hold (an automatic switch, logged once, not on every failing tick)."""
        with self._lock:
            self._rejections = 0
            event = None if self._mode is Mode.HOLD else self._switch(Mode.HOLD, reason, now, automatic=True)
        self._dispatch(event)

    def reset(self, reason: str, now: float) -> None:
        """Back to the start mode with no teleop input (lifecycle activation): nothing carries over."""
        with self._lock:
            self._teleop_delta = self._teleop_time = None
            self._health = None  # a resume must be judged on a check made after the reset
            self._rejections = 0
            self._relatch = False
            start = Mode(self.config.start_mode)
            event = None if self._mode is start else self._switch(start, reason, now, automatic=False)
        self._dispatch(event)

    def resume_policy(self, reason: str, now: float, health: Health | None = None) -> bool:
        """Explicitly hand control to the policy (a new engage); refused (False, logged) unless `health` is ok.

        `health` defaults to the one seen by the latest `step`. Re-latches the hold pose when accepted.
        """
        with self._lock:
            health = health if health is not None else self._health
            if health is None or not health.ok:
                why = "no health check yet" if health is None else health.reason
                logger.warning("resume_policy (%s) refused at t=%.3f: policy unhealthy: %s", reason, now, why)
                return False
            self._rejections = 0
            self._relatch = True
            event = self._switch(Mode.POLICY, reason, now, automatic=False)
        self._dispatch(event)
        return True

    def step(self, now: float, measured: Pose, policy_action: np.ndarray | None, health: Health) -> Command:
        """One control tick: maybe fall back, pick the source, pass its delta through the envelope."""
        event = None
        with self._lock:
            self._health = health
            if self._mode is Mode.POLICY and not health.ok:
                event = self._fallback(f"policy unhealthy: {health.reason}", now)
            mode = self._mode
            teleop = self._teleop_delta if mode is Mode.TELEOP and self._teleop_live(now) else None
            relatch, self._relatch = self._relatch, False
        self._dispatch(event)
        if relatch:
            self.envelope.relatch_hold()

        if not health.pose_ok:
            return self.envelope.hold(measured, f"measured pose unusable: {health.reason}")
        if mode is Mode.HOLD:
            return self.envelope.hold(measured, "mode hold")
        if mode is Mode.TELEOP:
            if teleop is None:
                return self.envelope.hold(measured, "teleop input stale or absent")
            return self.envelope.apply(measured, teleop, Source.TELEOP)

        command = self.envelope.apply(measured, policy_action, Source.POLICY)
        self._count_rejections(command, now)
        return command

    def _count_rejections(self, command: Command, now: float) -> None:
        limit = self.config.max_consecutive_rejections
        event = None
        with self._lock:
            if command.flags & _REJECTED:
                self._rejections += 1
                if limit and self._rejections >= limit and self._mode is Mode.POLICY:
                    event = self._fallback(f"{self._rejections} policy actions rejected in a row "
                                           f"(last: {command.reason})", now)
            elif command.source is Source.POLICY:
                self._rejections = 0
        self._dispatch(event)

    def _teleop_live(self, now: float) -> bool:
        return self._teleop_time is not None and now - self._teleop_time <= self.config.teleop_timeout

    def _fallback(self, reason: str, now: float) -> SwitchEvent | None:
        target = Mode.TELEOP if self.config.fallback == "teleop" and self._teleop_live(now) else Mode.HOLD
        self._rejections = 0
        return self._switch(target, reason, now, automatic=True)

    def _locked_switch(self, mode: Mode, reason: str, now: float, automatic: bool) -> SwitchEvent | None:
        with self._lock:
            return self._switch(mode, reason, now, automatic)

    def _switch(self, mode: Mode, reason: str, now: float, automatic: bool) -> SwitchEvent | None:
        """Change mode (lock held); returns the event, or None if already in `mode`."""
        previous = self._mode
        if mode is previous:
            logger.info("mux already in %s mode (%s)", mode.value, reason)
            return None
        self._mode = mode
        event = SwitchEvent(now, previous, mode, reason, automatic)
        self._events.append(event)
        log = logger.warning if automatic else logger.info
        log("mux %s -> %s at t=%.3f (%s): %s", previous.value, mode.value, now,
            "automatic" if automatic else "requested", reason)
        return event

    def _dispatch(self, event: SwitchEvent | None) -> None:
        if event is None or self.on_switch is None:
            return
        try:
            self.on_switch(event)
        except Exception:  # a broken listener must not stop the control loop
            logger.exception("switch callback failed for %s", event)
