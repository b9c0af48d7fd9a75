"""The robot state a `vision.state_input` model reads with each frame: the measured end-effector pose at the frame.

    state = [x, y, z, qx, qy, qz, qw]   metres, robot base frame, quaternion xyzw (model/state_input.py)

The pose is the measured pose the node already follows (`pose_topic`, franka_robot_state_broadcaster
`~/current_pose`: libfranka's O_T_EE in `fr3_link0`, up to 1 kHz), the same topic the recorder writes and training
reads. For a frame stamped t the state is the newest pose stamped at or before t; when every buffered pose is newer
(a frame older than the history) the oldest of them, the nearest in time. A pose further than `max_age` from t
(the watchdog's `max_pose_age`), or no pose at all, refuses the frame with an InputError that says what is missing:
the inference thread then holds instead of inferring, and /diagnostics says why.

Poses are kept for `span` seconds (the watchdog's max_image_age plus max_age: an older frame is held anyway), so a
camera whose frames arrive 0.6 s after capture (GoPro webcam mode) still finds the pose at capture rather than the
newest one. A stamp going backwards (a restarted or simulated clock) starts the history afresh.

Pure Python (no rclpy): the policy node feeds it, the inference thread asks it, tests drive it with plain numbers.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from mole_inference.control.transforms import Pose
from mole_inference.errors import InputError
from mole_inference.policy.state import make_state
from mole_ros.robot_checks import ERROR, OK, WARN, Check

# two conversions of one header stamp (sec + nanosec * 1e-9 vs ns * 1e-9) differ in the last bits: within this
# they are the same instant
SAME_INSTANT = 1e-6  # s


def state_from_pose(pose: Pose) -> np.ndarray:
    """The (7,) state a `vision.state_input` model reads: position (m) then quaternion xyzw, base frame."""
    return make_state(pose.position, pose.quaternion)


@dataclass(frozen=True)
class Lookup:
    """The last frame's lookup: its stamp, the pose's offset before it (s; negative: after), the refusal if any."""

    stamp: float
    offset: float | None
    refusal: str


class StateInput:
    """The measured pose at each frame's stamp (see module docstring); thread-safe: the pose callback adds, the
    inference thread looks up, the diagnostics timer reads `check`."""

    def __init__(self, max_age: float, span: float, pose_topic: str) -> None:
        if not max_age > 0 or not span >= max_age:
            raise ValueError(f"max_age={max_age}, span={span}: expected 0 < max_age <= span")
        self.max_age, self.span, self.pose_topic = max_age, span, pose_topic
        self._poses: deque[tuple[float, Pose]] = deque()
        self._lock = threading.Lock()
        self.lookups = 0
        self.refused = 0
        self._last: Lookup | None = None

    def add_pose(self, stamp: float, pose: Pose) -> None:
        """Remember the measured `pose` stamped `stamp` (s); forget poses older than `span` before it."""
        with self._lock:
            poses = self._poses
            if poses and stamp < poses[-1][0] - SAME_INSTANT:
                poses.clear()  # the clock went back: older stamps mean nothing now
            poses.append((stamp, pose))
            while poses[0][0] < stamp - self.span:
                poses.popleft()

    def at(self, stamp: float) -> np.ndarray:
        """The (7,) state for a frame stamped `stamp`; InputError saying what is missing or too old."""
        with self._lock:
            found = self._nearest(stamp)
        offset = None if found is None else stamp - found[0]
        if found is None:
            refusal = f"no measured pose received on {self.pose_topic}"
        elif abs(offset) > self.max_age:
            refusal = (f"the measured pose nearest the frame ({self.pose_topic}) is {abs(offset) * 1e3:.0f} ms "
                       f"{'older' if offset > 0 else 'newer'} than it (limit {self.max_age * 1e3:.0f} ms, "
                       "control.watchdog.max_pose_age)")
        else:
            refusal = ""
        with self._lock:
            self.lookups += 1
            self.refused += bool(refusal)
            self._last = Lookup(stamp, offset, refusal)
        if refusal:
            raise InputError(f"the model reads the robot state, and {refusal}")
        return state_from_pose(found[1])

    def _nearest(self, stamp: float) -> tuple[float, Pose] | None:
        """The newest pose at or before `stamp`, else the oldest after it, else None; the caller holds the lock."""
        after = None
        for item in reversed(self._poses):  # frames are recent: the scan stops within their latency
            if item[0] <= stamp + SAME_INSTANT:
                return item
            after = item
        return after

    def check(self) -> Check:
        """The last lookup as a /diagnostics verdict: ok (pose found), error (refused, with why) or warn (none yet)."""
        with self._lock:
            last, buffered = self._last, len(self._poses)
            values = {"lookups": str(self.lookups), "refused": str(self.refused), "poses_buffered": str(buffered)}
        if last is None:
            return Check("state input", WARN, f"no frame yet; reads the measured pose on {self.pose_topic}", values)
        if last.offset is not None:
            values["pose_before_frame_ms"] = f"{last.offset * 1e3:.1f}"
        if last.refusal:
            return Check("state input", ERROR, f"holding: {last.refusal}", values)
        return Check("state input", OK, f"measured pose at the frame ({self.pose_topic})", values)
