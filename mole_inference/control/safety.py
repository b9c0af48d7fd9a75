"""Safety envelope: the one place where any proposed delta becomes the target pose actually sent to the robot.

Conventions. Deltas are `[dx, dy, dz, droll, dpitch, dyaw, gripper]` for one control tick, in the robot base
frame. The translation is added to the reference position; the rotation (fixed-axis roll, pitch, yaw, see
`transforms`) is applied on the left: R_target = R_delta @ R_reference. The reference is the previous target
(`integrate_from="target"`, the default; the leash below keeps it near the robot) or the measured pose
(`"measured"`). Under an impedance controller the measured pose lags the target, so integrating from it makes
the arm crawl at a fraction (about K*dt/D) of the commanded speed. The first delta, and the first after a
`reset`, starts from the measured pose; after a hold, from the latched hold target. The gripper value is an
absolute command: 1 = open, 0 = closed (OXE / CogACT convention), not a delta.

Order of operations, each recorded in `Command.flags`:
1. reject a delta of wrong shape or with NaN/inf -> hold;
2. clamp the translation norm to `max_step_translation` and the rotation angle to `max_step_rotation`
   (the direction is kept). The rotation angles are first normalised into [-pi, pi] (the same rotation), so
   the step direction is that of the rotation the delta describes: a `dyaw` of 2*pi - 0.3 is the rotation
   -0.3 and clamps to -max_step_rotation; the clamp only shortens the rotation vector, never reverses it;
3. clamp the target position into the workspace box; per axis, a reference already outside the box may move
   back towards it but not further out (so the clamp never adds motion);
4. leash: pull the target back along the line to the measured pose until it is within `max_target_distance`
   and `max_target_angle` of it (this can only reduce the impedance force).

Hold means: the first hold command after a non-hold one latches the measured pose of that moment, its position
clamped into the workspace box (but never more than `max_target_distance` from the measured position, so an arm
far outside the box is not yanked back), and every hold command after it publishes that same latched pose,
whatever the measured pose does. Republishing the current measured pose instead would leave the impedance
controller without spring force: a load or a push would make the arm sag or drift. The latch is dropped when a
delta is applied (the hold ended) and, explicitly, by `relatch_hold` (takeover, resume, a new engage) or
`reset`. The gripper command in hold is the last one sent (None before any). A hold always returns a Command:
the output never goes silent. Not thread-safe: call it from the control timer only.
"""

from __future__ import annotations

import enum
import logging
import math
from dataclasses import dataclass

import numpy as np

from mole_inference.config.control import SafetyConfig
from mole_inference.control.transforms import (
    Pose,
    normalize_rotation_delta,
    quat_conjugate,
    quat_from_rotvec,
    quat_from_rpy,
    quat_multiply,
    quat_normalize,
    quat_to_rotvec,
    quat_to_rpy,
)
from mole_inference.errors import InputError

logger = logging.getLogger(__name__)


class SafetyFlag(enum.Flag):
    """What the envelope changed or why it rejected the proposed delta."""

    NONE = 0
    TRANSLATION_CLAMPED = enum.auto()
    ROTATION_CLAMPED = enum.auto()
    WORKSPACE_CLAMPED = enum.auto()
    DISTANCE_CLAMPED = enum.auto()  # position leashed to the measured pose
    ANGLE_CLAMPED = enum.auto()  # orientation leashed to the measured pose
    GRIPPER_CLAMPED = enum.auto()  # gripper outside [0, 1]
    REJECTED_NON_FINITE = enum.auto()
    REJECTED_SHAPE = enum.auto()
    INVALID_POSE = enum.auto()  # measured pose unusable: held at the last valid one


NEVER = 2**62  # a gripper age meaning "no switch yet"


class Source(str, enum.Enum):
    """Where a command came from (published with every command)."""

    POLICY = "policy"
    TELEOP = "teleop"
    HOLD = "hold"


_FLAG_MEMBERS = tuple(f for f in SafetyFlag if f.value)


def describe(flags: SafetyFlag) -> str:
    """Flag names joined by '|' (e.g. 'TRANSLATION_CLAMPED|WORKSPACE_CLAMPED'), '' for none."""
    return "|".join(str(f.name) for f in _FLAG_MEMBERS if f & flags)


@dataclass(frozen=True)
class Command:
    """What goes to the robot this tick: target pose, gripper, and the delta actually applied."""

    position: np.ndarray  # (3,) target position, base frame
    quaternion: np.ndarray  # (4,) target orientation, xyzw
    gripper: float | None  # absolute, 1 = open, 0 = closed; None = leave the gripper as it is
    delta: np.ndarray  # (7,) applied w.r.t. the reference pose, rpy rotation; [6] = gripper (NaN if None)
    source: Source  # HOLD whenever the target is the latched hold pose
    flags: SafetyFlag
    reason: str  # why hold / what was clamped; "" when the delta passed untouched

    @property
    def is_hold(self) -> bool:
        """True when this command holds the latched pose."""
        return self.source is Source.HOLD

    @property
    def pose(self) -> Pose:
        """The target as a Pose."""
        return Pose(self.position, self.quaternion)


def _clamp_norm(v: np.ndarray, limit: float) -> tuple[np.ndarray, bool]:
    n = math.sqrt(float(np.dot(v, v)))
    if n > limit:
        return v * (limit / n), True
    return v, False


class SafetyEnvelope:
    """Clamps and checks every delta from any source; returns the Command actually sent (see module doc)."""

    def __init__(self, config: SafetyConfig) -> None:
        self.config = config
        self._lo = np.array(config.workspace_min, dtype=np.float64)
        self._hi = np.array(config.workspace_max, dtype=np.float64)
        self._last_measured: Pose | None = None
        self._last_target: Pose | None = None  # reference when integrate_from == "target"
        self._latched: Pose | None = None  # the hold target while holding; None when not holding
        self._gripper: float | None = None
        self._gripper_age = NEVER  # ticks since the gripper command last changed (sticky gripper)
        self._gripper_asks = 0  # consecutive policy ticks asking for the other gripper state (debounce)
        self._forget_gripper = False  # `forget_gripper` asked (from another thread): applied at the next command

    @property
    def last_gripper(self) -> float | None:
        """The last gripper command sent (None before any)."""
        return self._gripper

    @property
    def latched(self) -> Pose | None:
        """The pose hold publishes while holding (None when not holding)."""
        return self._latched

    def reset(self) -> None:
        """Forget the previous target, the hold latch and the gripper command (e.g. on controller restart)."""
        self._last_measured = None
        self._last_target = None
        self._latched = None
        self._clear_gripper()

    def _clear_gripper(self) -> None:
        self._gripper = None
        self._gripper_age = NEVER
        self._gripper_asks = 0

    def forget_gripper(self) -> None:
        """Forget the gripper command from the next command on (safe to call from any thread): the next policy
        command is binarized afresh and not debounced against a state the hand may no longer be in (a new task
        starts; the scene or the hand may have been reset since the last command)."""
        self._forget_gripper = True

    def _apply_forget(self) -> None:
        if self._forget_gripper:
            self._forget_gripper = False
            self._clear_gripper()

    def relatch_hold(self) -> None:
        """Drop the hold latch: the next hold latches the measured pose of that moment (explicit events only)."""
        self._latched = None

    def hold(self, measured: Pose, reason: str, flags: SafetyFlag = SafetyFlag.NONE) -> Command:
        """Hold command: the latched pose (latched now if not holding yet), gripper unchanged. Never silence."""
        self._apply_forget()
        measured, flags = self._usable(measured, flags)
        if self._latched is None:
            self._latched, flags = self._latch(measured, flags)
        latched = self._latched
        self._gripper_age += 1
        self._gripper_asks = 0  # a hold breaks a run of asks
        self._last_target = latched  # integration resumes from the pose the arm was held at
        gripper = self._gripper
        delta = np.zeros(7)
        delta[6] = gripper if gripper is not None else math.nan
        return Command(latched.position.copy(), latched.quaternion.copy(), gripper, delta, Source.HOLD,
                       flags, reason)

    def _latch(self, measured: Pose, flags: SafetyFlag) -> tuple[Pose, SafetyFlag]:
        """The hold target for `measured`: clamped into the workspace box, then leashed to `measured`."""
        position = np.clip(measured.position, self._lo, self._hi)
        if not np.array_equal(position, measured.position):
            flags |= SafetyFlag.WORKSPACE_CLAMPED
            offset, clamped = _clamp_norm(position - measured.position, self.config.max_target_distance)
            if clamped:  # far outside the box: pull back towards it by at most the leash, never a jump
                flags |= SafetyFlag.DISTANCE_CLAMPED
                position = measured.position + offset
        return Pose(position, measured.quaternion.copy()), flags

    def apply(self, measured: Pose, delta: np.ndarray | None, source: Source) -> Command:
        """Turn a proposed (7,) delta from `source` into the command sent; None or bad delta -> hold."""
        if delta is None:
            return self.hold(measured, f"no {source.value} action")
        self._apply_forget()
        measured, flags = self._usable(measured, SafetyFlag.NONE)
        if flags & SafetyFlag.INVALID_POSE:
            return self.hold(measured, "measured pose invalid: holding the last valid one", flags)
        d = np.array(delta, dtype=np.float64)  # a copy: the rotation is normalised in place below
        if d.shape != (7,):
            logger.warning("%s delta of shape %s rejected (expected (7,)): hold", source.value, d.shape)
            return self.hold(measured, f"{source.value} delta has shape {d.shape}, expected (7,)",
                             SafetyFlag.REJECTED_SHAPE)
        if not np.isfinite(d).all():
            logger.warning("%s delta with NaN/inf rejected: hold", source.value)
            return self.hold(measured, f"{source.value} delta contains NaN or inf",
                             SafetyFlag.REJECTED_NON_FINITE)

        cfg = self.config
        from_target = cfg.integrate_from == "target" and self._last_target is not None
        ref = self._last_target if from_target else measured

        trans, clamped = _clamp_norm(d[:3], cfg.max_step_translation)
        if clamped:
            flags |= SafetyFlag.TRANSLATION_CLAMPED
        d[3:6] = normalize_rotation_delta(d[3:6])
        rotvec, clamped = _clamp_norm(quat_to_rotvec(quat_from_rpy(d[3], d[4], d[5])), cfg.max_step_rotation)
        if clamped:
            flags |= SafetyFlag.ROTATION_CLAMPED

        position = ref.position + trans
        lo = np.minimum(self._lo, ref.position)  # a reference outside the box may not go further out
        hi = np.maximum(self._hi, ref.position)
        boxed = np.clip(position, lo, hi)
        if not np.array_equal(boxed, position):
            flags |= SafetyFlag.WORKSPACE_CLAMPED
            position = boxed
        quaternion = quat_normalize(quat_multiply(quat_from_rotvec(rotvec), ref.quaternion))

        offset, clamped = _clamp_norm(position - measured.position, cfg.max_target_distance)
        if clamped:
            flags |= SafetyFlag.DISTANCE_CLAMPED
            position = measured.position + offset
        rel = quat_to_rotvec(quat_multiply(quaternion, quat_conjugate(measured.quaternion)))
        rel, clamped = _clamp_norm(rel, cfg.max_target_angle)
        if clamped:
            flags |= SafetyFlag.ANGLE_CLAMPED
            quaternion = quat_normalize(quat_multiply(quat_from_rotvec(rel), measured.quaternion))

        gripper = float(d[6])
        if not 0.0 <= gripper <= 1.0:
            flags |= SafetyFlag.GRIPPER_CLAMPED
            gripper = min(1.0, max(0.0, gripper))
        if cfg.gripper_binarize:  # with hysteresis: a command hovering near 0.5 cannot make the hand chatter
            if self._gripper is None:
                gripper = 1.0 if gripper >= 0.5 else 0.0
            elif self._gripper >= 0.5:
                gripper = 0.0 if gripper < cfg.gripper_close_below else 1.0
            else:
                gripper = 1.0 if gripper > cfg.gripper_open_above else 0.0
            sticky = source == Source.POLICY and self._gripper_age < cfg.gripper_min_hold_ticks
            if self._gripper is not None and gripper != self._gripper and sticky:
                gripper = self._gripper  # too soon after the last switch: keep it (see SafetyConfig)
            asked = self._gripper is not None and gripper != self._gripper and source == Source.POLICY
            self._gripper_asks = self._gripper_asks + 1 if asked else 0
            if asked and self._gripper_asks < cfg.gripper_confirm_ticks:
                gripper = self._gripper  # not asked for long enough yet (debounce, see SafetyConfig)
        switched = self._gripper is not None and gripper != self._gripper
        self._gripper_age = 0 if switched else self._gripper_age + 1
        if switched:
            self._gripper_asks = 0

        applied = np.empty(7)
        applied[:3] = position - ref.position
        applied[3:6] = quat_to_rpy(quat_multiply(quaternion, quat_conjugate(ref.quaternion)))
        applied[6] = gripper
        self._last_target = Pose(position, quaternion)
        self._latched = None  # a delta was applied: the hold (if any) ended
        self._gripper = gripper
        reason = f"clamped: {describe(flags)}" if flags else ""
        return Command(position, quaternion, gripper, applied, source, flags, reason)

    def _usable(self, measured: Pose, flags: SafetyFlag) -> tuple[Pose, SafetyFlag]:
        """The measured pose normalized, or the last valid one flagged INVALID_POSE; InputError if none."""
        if measured.is_valid():
            pose = Pose(np.asarray(measured.position, dtype=np.float64), quat_normalize(measured.quaternion))
            self._last_measured = pose
            return pose, flags
        if self._last_measured is None:
            raise InputError("measured pose has NaN/inf or a non-unit quaternion, and no valid one was seen")
        logger.warning("measured pose invalid (%s, %s): using the last valid one", measured.position,
                       measured.quaternion)
        return self._last_measured, flags | SafetyFlag.INVALID_POSE
