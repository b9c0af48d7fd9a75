"""Engage checks against the robot side: one end-effector frame, the controller active, the robot able to move.

Pure logic on plain objects (no rclpy, no *_msgs import): `robot_monitor` feeds it messages, the policy node asks
it whether targets may go out (`output_allowed`), whether something forces hold (`fault`) and whether an engage
may be accepted (`engage_refusal`). Every verdict is a `Check` for /diagnostics.

What the checks read, and where it was read (frankarobotics/franka_ros2 jazzy and humble, utiasDSL/crisp_controllers
main, ros-controls/ros2_control):
- Frames. franka_robot_state_broadcaster's `~/current_pose` is libfranka's O_T_EE (the end effector set in Desk)
  with frame_id the URDF's base link, `fr3_link0` (franka_semantic_components/src/franka_robot_state.cpp). CRISP's
  pose_broadcaster publishes `~/current_pose` (SystemDefaultsQoS) with frame_id its `base_frame` parameter and the
  pose of its `end_effector_frame` computed from the URDF (src/pose_broadcaster.cpp), the same frame the
  cartesian controller servos (`end_effector_frame` of src/cartesian_impedance_controller.yaml). If Desk's
  end effector and that URDF frame differ, a target built from the measured pose moves the arm by the difference:
  the frame check compares the two poses once per activation and blocks all output until they agree.
- Robot mode. franka_msgs/msg/FrankaRobotState (`~/robot_state`, SystemDefaultsQoS, 1 kHz): `uint8 robot_mode`
  with ROBOT_MODE_OTHER=0, IDLE=1, MOVE=2, GUIDING=3, REFLEX=4, USER_STOPPED=5, AUTOMATIC_ERROR_RECOVERY=6, and
  `Errors current_errors` / `Errors last_motion_errors` (franka_msgs/msg/Errors.msg: one bool per libfranka
  error). Only IDLE and MOVE with no current error let the arm be driven. Recovery is the operator's call:
  `/action_server/error_recovery` (franka_msgs/action/ErrorRecovery, empty goal; franka_hardware's ActionServer).
- Controller. controller_manager_msgs/srv/ListControllers: empty request, response `ControllerState[] controller`
  with `string name`, `string state` (unconfigured, inactive, active or finalized).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mole_inference.control.transforms import Pose, quat_angle, quat_conjugate, quat_multiply, quat_normalize
from mole_inference.errors import ConfigError

# franka_msgs/msg/FrankaRobotState.msg constants (the values; tests compare them with franka_msgs when it imports)
ROBOT_MODES = {0: "other", 1: "idle", 2: "move", 3: "guiding", 4: "reflex", 5: "user_stopped",
               6: "automatic_error_recovery"}
DRIVABLE_MODES = (1, 2)  # ROBOT_MODE_IDLE, ROBOT_MODE_MOVE
RECOVERY_HINT = ("clear the stop, then: ros2 action send_goal /action_server/error_recovery "
                 "franka_msgs/action/ErrorRecovery {}")
WATCH_MODES = ("auto", "on", "off")

OK, WARN, ERROR = "ok", "warn", "error"


def _field(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class RobotChecksConfig:
    """Parameters `robot.*` of mole_policy: which robot-side checks run and their tolerances."""

    require_controller: str = _field("", "controller that must be 'active' in controller_manager's "
                                         "list_controllers to engage and to keep driving ('' = not checked)")
    controller_manager: str = _field("/controller_manager", "controller_manager node (its ~/list_controllers)")
    controller_check_period: float = _field(0.5, "seconds between list_controllers calls while active")
    controller_timeout: float = _field(2.0, "seconds without a list_controllers answer before it is a fault")
    watch_robot_state: str = _field("auto", "auto (on if franka_msgs imports) | on | off: hold on a robot "
                                            "mode other than idle/move or on current errors")
    robot_state_topic: str = _field("/franka_robot_state_broadcaster/robot_state",
                                    "franka_msgs/FrankaRobotState in")
    robot_state_period: float = _field(0.02, "seconds between robot states actually decoded (the broadcaster "
                                             "publishes 1 kHz)")
    robot_state_timeout: float = _field(0.5, "seconds without a robot state before it is a fault (watching)")
    reference_pose_topic: str = _field("", "PoseStamped of the controller's end-effector frame (CRISP "
                                           "pose_broadcaster ~/current_pose), compared with the measured pose "
                                           "at activation ('' = frames not checked)")
    reference_ee_frame: str = _field("fr3_hand_tcp", "end_effector_frame of that broadcaster (for messages)")
    measured_ee_frame: str = _field("O_T_EE (Desk end effector)", "end-effector frame of the measured pose "
                                                                  "(for messages)")
    frame_tolerance: float = _field(0.005, "metres the two poses may differ at activation")
    frame_angle_tolerance: float = _field(0.035, "radians the two orientations may differ at activation")
    frame_max_skew: float = _field(0.02, "seconds between the two poses' stamps for a comparison")

    def __post_init__(self) -> None:
        if self.watch_robot_state not in WATCH_MODES:
            raise ConfigError(f"watch_robot_state={self.watch_robot_state!r}: expected auto, on or off")
        for name in ("controller_check_period", "controller_timeout", "robot_state_timeout", "frame_tolerance",
                     "frame_angle_tolerance", "frame_max_skew"):
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"{name}={value!r}: expected > 0")
        if self.robot_state_period < 0 or self.robot_state_period >= self.robot_state_timeout:
            raise ConfigError(f"robot_state_period={self.robot_state_period!r}: expected 0 <= period < "
                              f"robot_state_timeout={self.robot_state_timeout!r}")


@dataclass(frozen=True)
class Check:
    """One verdict for /diagnostics: `level` ok | warn | error, a message, and whether it lets the arm move."""

    name: str
    level: str
    message: str
    values: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True for level ok (a check that is switched off is ok and says so)."""
        return self.level == OK


def field_names(msg: Any) -> list[str]:
    """Field names of a ROS message (`get_fields_and_field_types`) or of a plain object with the same layout."""
    getter = getattr(msg, "get_fields_and_field_types", None)
    if getter is not None:
        return list(getter())
    return [k for k in vars(msg) if not k.startswith("_")]


def active_errors(errors: Any) -> list[str]:
    """Names of the true flags of a franka_msgs/Errors (or an object with the same bool fields)."""
    return [name for name in field_names(errors) if getattr(errors, name) is True]


def robot_state_check(msg: Any) -> Check:
    """The verdict on one FrankaRobotState: ok in idle/move without current errors, else error with the why."""
    mode = int(msg.robot_mode)
    mode_name = ROBOT_MODES.get(mode, f"unknown ({mode})")
    current = active_errors(msg.current_errors)
    last = active_errors(msg.last_motion_errors)
    values = {"robot_mode": mode_name, "current_errors": ",".join(current),
              "last_motion_errors": ",".join(last)}
    if mode in DRIVABLE_MODES and not current:
        return Check("robot state", OK, f"robot mode {mode_name}", values)
    why = f"robot mode {mode_name}"
    if current:
        why += f", current errors: {', '.join(current)}"
    if last:
        why += f" (last motion errors: {', '.join(last)})"
    return Check("robot state", ERROR, f"{why}: holding; {RECOVERY_HINT}", values)


def controller_check(response: Any, required: str) -> Check:
    """The verdict on a ListControllers response (`.controller`: objects with `name`, `state`) for `required`."""
    states = {c.name: c.state for c in response.controller}
    state = states.get(required)
    values = {"controllers": ", ".join(f"{n}:{s}" for n, s in sorted(states.items()))}
    if state == "active":
        return Check("controller", OK, f"{required} active", values)
    if state is None:
        loaded = ", ".join(sorted(states)) or "none"
        return Check("controller", ERROR, f"{required} is not loaded in controller_manager (loaded: {loaded})",
                     values)
    return Check("controller", ERROR, f"{required} is {state}, not active", values)


def pose_difference(a: Pose, b: Pose) -> tuple[float, float]:
    """(distance in metres, rotation angle in radians) between two poses."""
    distance = float(np.linalg.norm(np.asarray(a.position) - np.asarray(b.position)))
    relative = quat_multiply(quat_normalize(a.quaternion), quat_conjugate(quat_normalize(b.quaternion)))
    return distance, quat_angle(relative)


@dataclass(frozen=True)
class StampedPose:
    """A pose with its header frame and stamp (seconds)."""

    pose: Pose
    frame_id: str
    stamp: float


class RobotChecks:
    """The latest verdicts of the frame, controller and robot-state checks (thread-safe; see module docstring).

    `controllers` / `robot_state` say whether those checks run at all (the node resolves them from the config
    and what imports); a check that does not run is reported ok with "not checked" and never blocks.
    """

    def __init__(self, config: RobotChecksConfig, measured_topic: str, *, controllers: bool,
                 robot_state: bool) -> None:
        self.config = config
        self.measured_topic = measured_topic
        self.controllers = controllers
        self.watch_robot_state = robot_state
        self._lock = threading.Lock()
        self.reset(0.0)

    # ------------------------------------------------------------------ lifecycle
    def reset(self, now: float) -> None:
        """Activation: the frame check runs again, controller and robot state must be seen again after `now`."""
        with self._lock:
            self._since = now
            self._measured: StampedPose | None = None
            self._reference: StampedPose | None = None
            self._frames: Check | None = None if self.config.reference_pose_topic else self._off(
                "frames", "reference_pose_topic is ''")
            self._controller: Check | None = None
            self._controller_time: float | None = None
            self._robot: Check | None = None
            self._robot_time: float | None = None

    def not_checked(self) -> list[str]:
        """One line per check that does not run, for a single log line at configure."""
        cfg, lines = self.config, []
        if not cfg.reference_pose_topic:
            lines.append("end-effector frames (robot.reference_pose_topic is '')")
        if not self.controllers:
            lines.append("controller state (robot.require_controller is '')")
        if not self.watch_robot_state:
            lines.append(f"robot mode/errors (robot.watch_robot_state={cfg.watch_robot_state!r}"
                         f"{', franka_msgs absent' if cfg.watch_robot_state == 'auto' else ''})")
        return lines

    # ------------------------------------------------------------------ inputs (any thread)
    def measured_pose(self, pose: Pose, frame_id: str, stamp: float) -> Check | None:
        """The measured pose arrived; returns the frame verdict when this pose decided it, else None."""
        with self._lock:
            if self._frames is not None:
                return None
            self._measured = StampedPose(pose, frame_id, stamp)
            return self._compare()

    def reference_pose(self, pose: Pose, frame_id: str, stamp: float) -> Check | None:
        """The controller's end-effector pose arrived; returns the frame verdict when this decided it."""
        with self._lock:
            if self._frames is not None:
                return None
            self._reference = StampedPose(pose, frame_id, stamp)
            return self._compare()

    def controllers_listed(self, response: Any, now: float) -> Check | None:
        """A ListControllers response; returns the new verdict when it changed, else None."""
        check = controller_check(response, self.config.require_controller)
        with self._lock:
            self._controller_time = now
            return self._update("_controller", check)

    def controllers_unavailable(self, reason: str, now: float) -> Check | None:
        """The list_controllers call could not be made or failed; the new verdict when it changed."""
        check = Check("controller", ERROR, f"cannot check {self.config.require_controller}: {reason}")
        with self._lock:
            return self._update("_controller", check)

    def robot_state(self, msg: Any, now: float) -> Check | None:
        """A FrankaRobotState (or an object with its fields); returns the new verdict when it changed."""
        check = robot_state_check(msg)
        with self._lock:
            self._robot_time = now
            return self._update("_robot", check)

    # ------------------------------------------------------------------ decisions (control thread)
    def output_allowed(self) -> bool:
        """True once the frame check passed (or is off): before that no target may be published at all."""
        with self._lock:
            return self._frames is not None and self._frames.ok

    def fault(self, now: float) -> str | None:
        """Why the arm must hold now (controller not active, robot stopped, state silent), or None."""
        checks = [c for c in self._robot_side(now) if not c.ok]
        return "; ".join(f"{c.name}: {c.message}" for c in checks) or None

    def engage_refusal(self, now: float) -> str | None:
        """Why an engage (resume or takeover) is refused now, or None when every check passes."""
        return "; ".join(f"{c.name}: {c.message}" for c in self.status(now) if not c.ok) or None

    def status(self, now: float) -> list[Check]:
        """Every check's verdict now (frames, controller, robot state), for /diagnostics."""
        with self._lock:
            frames = self._frames or self._frames_pending()
        return [frames, *self._robot_side(now)]

    # ------------------------------------------------------------------ internals
    def _robot_side(self, now: float) -> list[Check]:
        cfg = self.config
        with self._lock:
            if not self.controllers:
                controller = self._off("controller", "robot.require_controller is ''")
            elif self._controller is None:
                controller = Check("controller", ERROR, f"waiting for list_controllers "
                                                        f"({cfg.controller_manager}/list_controllers)")
            elif self._controller.ok and self._stale(self._controller_time, now, cfg.controller_timeout):
                controller = Check("controller", ERROR, f"no list_controllers answer for more than "
                                                        f"{cfg.controller_timeout:g} s")
            else:
                controller = self._controller
            if not self.watch_robot_state:
                robot = self._off("robot state", f"robot.watch_robot_state={cfg.watch_robot_state!r}")
            elif self._robot is None or self._stale(self._robot_time, now, cfg.robot_state_timeout):
                robot = Check("robot state", ERROR, f"no robot state on {cfg.robot_state_topic} for more than "
                                                    f"{cfg.robot_state_timeout:g} s: holding")
            else:
                robot = self._robot
        return [controller, robot]

    def _stale(self, seen: float | None, now: float, timeout: float) -> bool:
        return seen is None or now - seen > timeout

    def _update(self, slot: str, check: Check) -> Check | None:
        previous = getattr(self, slot)
        setattr(self, slot, check)
        changed = previous is None or (previous.level, previous.message) != (check.level, check.message)
        return check if changed else None

    def _frames_pending(self) -> Check:
        cfg = self.config
        missing = [t for t, p in ((self.measured_topic, self._measured), (cfg.reference_pose_topic,
                                                                           self._reference)) if p is None]
        what = (f"no pose yet on {' and '.join(missing)}" if missing
                else f"the two poses are more than {cfg.frame_max_skew:g} s apart")
        return Check("frames", WARN, f"frame check pending ({what}): nothing is published")

    def _compare(self) -> Check | None:
        """Decide the frame check if both poses are there and close enough in time (lock held)."""
        m, r, cfg = self._measured, self._reference, self.config
        if m is None or r is None or abs(m.stamp - r.stamp) > cfg.frame_max_skew:
            return None
        if not (m.pose.is_valid() and r.pose.is_valid()):
            return None
        distance, angle = pose_difference(m.pose, r.pose)
        values = {"distance_mm": f"{distance * 1e3:.1f}", "angle_rad": f"{angle:.4f}",
                  "measured": f"{self.measured_topic} ({m.frame_id} -> {cfg.measured_ee_frame})",
                  "reference": f"{cfg.reference_pose_topic} ({r.frame_id} -> {cfg.reference_ee_frame})"}
        text = (f"measured pose {values['measured']} and controller pose {values['reference']} differ by "
                f"{distance * 1e3:.1f} mm and {angle:.4f} rad (tolerance {cfg.frame_tolerance * 1e3:g} mm, "
                f"{cfg.frame_angle_tolerance:g} rad)")
        if distance <= cfg.frame_tolerance and angle <= cfg.frame_angle_tolerance:
            self._frames = Check("frames", OK, f"frames agree: {text}", values)
        else:
            self._frames = Check("frames", ERROR, f"end-effector frames disagree, refusing to engage and "
                                                  f"publishing nothing until the next activation: {text}; set "
                                                  f"Desk's end effector to match {cfg.reference_ee_frame} (or "
                                                  f"end_effector_frame to match Desk)", values)
        return self._frames

    @staticmethod
    def _off(name: str, why: str) -> Check:
        return Check(name, OK, f"not checked ({why})")


def resolve_watch(mode: str, available: bool) -> bool:
    """Whether robot states are watched for `watch_robot_state=mode`; ConfigError for `on` without franka_msgs."""
    if mode not in WATCH_MODES:
        raise ConfigError(f"watch_robot_state={mode!r}: expected auto, on or off")
    if mode == "on" and not available:
        raise ConfigError("robot.watch_robot_state='on' but franka_msgs does not import: source the franka_ros2 "
                          "workspace (or set robot.watch_robot_state: off explicitly)")
    return available if mode == "auto" else mode == "on"
