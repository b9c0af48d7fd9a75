"""robot_checks without ROS: frame agreement, robot mode/errors, controller state, and what each one blocks.

Fakes carry the field layout of the real interfaces (read in frankarobotics/franka_ros2 franka_msgs/msg/
FrankaRobotState.msg and Errors.msg, ros-controls/ros2_control controller_manager_msgs/srv/ListControllers.srv and
msg/ControllerState.msg); where franka_msgs imports, the constants are compared with it. Times are injected.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from mole_ros.robot_checks import (
    DRIVABLE_MODES,
    ROBOT_MODES,
    RobotChecks,
    RobotChecksConfig,
    active_errors,
    controller_check,
    resolve_watch,
    robot_state_check,
)

from mole_inference.control.transforms import Pose, quat_from_rpy, quat_multiply
from mole_inference.errors import ConfigError

MEASURED_TOPIC = "/franka_robot_state_broadcaster/current_pose"
REFERENCE_TOPIC = "/pose_broadcaster/current_pose"
HOME = Pose.from_arrays([0.5, 0.0, 0.4], [1.0, 0.0, 0.0, 0.0])
CONFIG_DIR = Path(__file__).resolve().parents[2] / "launch" / "config"


@dataclass
class FakeErrors:
    """franka_msgs/Errors: one bool per libfranka error (a subset of its real field names)."""

    joint_position_limits_violation: bool = False
    joint_reflex: bool = False
    cartesian_reflex: bool = False
    communication_constraints_violation: bool = False
    power_limit_violation: bool = False


@dataclass
class FakeRobotState:
    """franka_msgs/FrankaRobotState: the fields and constants the checks read, named as in the .msg."""

    ROBOT_MODE_OTHER = 0
    ROBOT_MODE_IDLE = 1
    ROBOT_MODE_MOVE = 2
    ROBOT_MODE_GUIDING = 3
    ROBOT_MODE_REFLEX = 4
    ROBOT_MODE_USER_STOPPED = 5
    ROBOT_MODE_AUTOMATIC_ERROR_RECOVERY = 6

    robot_mode: int = 2
    current_errors: FakeErrors = field(default_factory=FakeErrors)
    last_motion_errors: FakeErrors = field(default_factory=FakeErrors)


def list_response(**states: str) -> SimpleNamespace:
    """A ListControllers response: `.controller` of ControllerState-like objects (name, state, type)."""
    return SimpleNamespace(controller=[SimpleNamespace(name=n, state=s, type="crisp_controllers/X")
                                       for n, s in states.items()], controller_group=[])


def checks(**overrides) -> RobotChecks:
    cfg = RobotChecksConfig(**{"reference_pose_topic": REFERENCE_TOPIC,
                               "require_controller": "cartesian_impedance_controller", **overrides})
    return RobotChecks(cfg, MEASURED_TOPIC, controllers=bool(cfg.require_controller), robot_state=True)


def shifted(dz: float = 0.0, dyaw: float = 0.0) -> Pose:
    return Pose.from_arrays(HOME.position + np.array([0.0, 0.0, dz]), quat_multiply(quat_from_rpy(0.0, 0.0, dyaw),
                                                                         HOME.quaternion))


# ---------------------------------------------------------------- robot mode and errors
def test_mode_constants_are_those_of_franka_msgs():
    assert {v: k for k, v in ROBOT_MODES.items()} == {
        n[len("ROBOT_MODE_"):].lower(): getattr(FakeRobotState, n) for n in dir(FakeRobotState)
        if n.startswith("ROBOT_MODE_")}
    assert DRIVABLE_MODES == (FakeRobotState.ROBOT_MODE_IDLE, FakeRobotState.ROBOT_MODE_MOVE)
    if importlib.util.find_spec("franka_msgs") is None:
        pytest.skip("franka_msgs not importable here: constants checked against the .msg text only")
    from franka_msgs.msg import Errors, FrankaRobotState

    for value, name in ROBOT_MODES.items():
        assert getattr(FrankaRobotState, f"ROBOT_MODE_{name.upper()}") == value
    assert set(FakeErrors.__dataclass_fields__) <= set(Errors.get_fields_and_field_types())


@pytest.mark.parametrize("mode", [FakeRobotState.ROBOT_MODE_IDLE, FakeRobotState.ROBOT_MODE_MOVE])
def test_idle_and_move_without_errors_may_drive(mode):
    check = robot_state_check(FakeRobotState(robot_mode=mode))
    assert check.ok and check.values["current_errors"] == ""


@pytest.mark.parametrize("mode,name", [(FakeRobotState.ROBOT_MODE_REFLEX, "reflex"),
                                       (FakeRobotState.ROBOT_MODE_USER_STOPPED, "user_stopped"),
                                       (FakeRobotState.ROBOT_MODE_GUIDING, "guiding"),
                                       (FakeRobotState.ROBOT_MODE_OTHER, "other"),
                                       (FakeRobotState.ROBOT_MODE_AUTOMATIC_ERROR_RECOVERY,
                                        "automatic_error_recovery")])
def test_other_modes_hold_and_say_how_to_recover(mode, name):
    check = robot_state_check(FakeRobotState(robot_mode=mode))
    assert not check.ok and check.level == "error"
    assert f"robot mode {name}" in check.message and "/action_server/error_recovery" in check.message


def test_current_errors_hold_even_in_move_and_are_named():
    state = FakeRobotState(current_errors=FakeErrors(joint_reflex=True, power_limit_violation=True),
                           last_motion_errors=FakeErrors(cartesian_reflex=True))
    check = robot_state_check(state)
    assert not check.ok
    assert "current errors: joint_reflex, power_limit_violation" in check.message
    assert "last motion errors: cartesian_reflex" in check.message
    assert active_errors(FakeErrors()) == []


def test_last_motion_errors_alone_do_not_block():
    assert robot_state_check(FakeRobotState(last_motion_errors=FakeErrors(joint_reflex=True))).ok


# ---------------------------------------------------------------- controller
def test_controller_must_be_listed_active():
    name = "cartesian_impedance_controller"
    assert controller_check(list_response(cartesian_impedance_controller="active"), name).ok
    inactive = controller_check(list_response(cartesian_impedance_controller="inactive"), name)
    assert not inactive.ok and inactive.message == f"{name} is inactive, not active"
    missing = controller_check(list_response(joint_state_broadcaster="active"), name)
    assert not missing.ok and "not loaded" in missing.message and "joint_state_broadcaster" in missing.message


# ---------------------------------------------------------------- frames
def test_nothing_goes_out_until_both_poses_were_compared():
    c = checks()
    c.reset(0.0)
    assert not c.output_allowed()
    assert c.measured_pose(HOME, "fr3_link0", 1.000) is None
    assert not c.output_allowed() and REFERENCE_TOPIC in c.status(1.0)[0].message
    assert c.reference_pose(HOME, "base", 1.5) is None  # 0.5 s apart: the arm may have moved in between
    assert not c.output_allowed() and "apart" in c.status(1.5)[0].message
    verdict = c.measured_pose(shifted(dz=0.002), "fr3_link0", 1.505)
    assert verdict is not None and verdict.ok and c.output_allowed()
    assert verdict.values["distance_mm"] == "2.0"


def test_disagreeing_frames_block_output_and_name_frames_and_difference():
    c = checks()
    c.reset(0.0)
    c.measured_pose(HOME, "fr3_link0", 1.0)
    verdict = c.reference_pose(shifted(dz=-0.1034), "base", 1.001)  # Desk's tool point = flange, CRISP's = TCP
    assert verdict is not None and verdict.level == "error"
    for part in (MEASURED_TOPIC, "fr3_link0", "O_T_EE", REFERENCE_TOPIC, "base -> fr3_hand_tcp", "103.4 mm",
                 "0.0000 rad"):
        assert part in verdict.message, part
    assert not c.output_allowed()
    # later agreeing poses change nothing: the check is made once per activation
    assert c.reference_pose(HOME, "base", 1.002) is None and not c.output_allowed()
    assert "frames" in c.engage_refusal(2.0)
    c.reset(3.0)  # next activation: checked afresh
    c.measured_pose(HOME, "fr3_link0", 3.0)
    assert c.reference_pose(HOME, "base", 3.0).ok and c.output_allowed()


def test_rotation_beyond_tolerance_disagrees():
    c = checks(frame_angle_tolerance=0.035)
    c.reset(0.0)
    c.measured_pose(HOME, "fr3_link0", 1.0)
    verdict = c.reference_pose(shifted(dyaw=0.785), "base", 1.0)  # fr3_hand is rotated -45 deg about z
    assert verdict.level == "error" and "0.7850 rad" in verdict.message


# ---------------------------------------------------------------- faults and engage
def test_reflex_forces_hold_and_refuses_engage_until_the_mode_is_ok_again():
    c = checks()
    c.reset(0.0)
    c.measured_pose(HOME, "fr3_link0", 0.0)
    c.reference_pose(HOME, "base", 0.0)
    c.controllers_listed(list_response(cartesian_impedance_controller="active"), 0.0)
    assert c.fault(0.0) is not None and "no robot state" in c.fault(0.0)  # none seen since activation
    assert c.robot_state(FakeRobotState(), 0.1).ok
    assert c.fault(0.1) is None and c.engage_refusal(0.1) is None
    reflex = FakeRobotState(robot_mode=FakeRobotState.ROBOT_MODE_REFLEX,
                            current_errors=FakeErrors(cartesian_reflex=True))
    change = c.robot_state(reflex, 0.2)
    assert change is not None and "reflex" in change.message
    assert c.robot_state(reflex, 0.21) is None  # unchanged: logged once
    assert "robot state: robot mode reflex" in c.fault(0.21) and "cartesian_reflex" in c.engage_refusal(0.21)
    assert c.robot_state(FakeRobotState(robot_mode=FakeRobotState.ROBOT_MODE_IDLE), 0.3).ok
    assert c.fault(0.3) is None and c.engage_refusal(0.3) is None


def test_silent_robot_state_and_controller_are_faults():
    c = checks(robot_state_timeout=0.5, controller_timeout=2.0)
    c.reset(0.0)
    c.controllers_listed(list_response(cartesian_impedance_controller="active"), 0.0)
    c.robot_state(FakeRobotState(), 0.0)
    assert c.fault(0.5) is None
    assert "no robot state on /franka_robot_state_broadcaster/robot_state" in c.fault(0.51)
    c.robot_state(FakeRobotState(), 1.9)
    assert c.fault(2.0) is None
    assert "no list_controllers answer" in c.fault(2.01)


def test_controller_deactivated_or_unreachable_is_a_fault():
    c = checks()
    c.reset(0.0)
    c.robot_state(FakeRobotState(), 0.0)
    assert "waiting for list_controllers (/controller_manager/list_controllers)" in c.fault(0.0)
    c.controllers_listed(list_response(cartesian_impedance_controller="active"), 0.0)
    assert c.fault(0.0) is None
    change = c.controllers_listed(list_response(cartesian_impedance_controller="inactive"), 0.1)
    assert change is not None and "controller: cartesian_impedance_controller is inactive" in c.fault(0.1)
    c.controllers_unavailable("service /controller_manager/list_controllers not available", 0.2)
    assert "not available" in c.fault(0.2)


def test_checks_that_are_off_never_block_and_are_listed():
    cfg = RobotChecksConfig(watch_robot_state="auto")
    c = RobotChecks(cfg, MEASURED_TOPIC, controllers=False, robot_state=False)
    c.reset(0.0)
    assert c.output_allowed() and c.fault(100.0) is None and c.engage_refusal(100.0) is None
    assert all(s.ok and s.message.startswith("not checked") for s in c.status(100.0))
    lines = c.not_checked()
    assert len(lines) == 3 and "franka_msgs absent" in lines[2]


def test_watch_mode_and_config_validation():
    assert resolve_watch("auto", True) and not resolve_watch("auto", False)
    assert not resolve_watch("off", True) and resolve_watch("on", True)
    with pytest.raises(ConfigError, match="franka_msgs does not import"):
        resolve_watch("on", False)
    with pytest.raises(ConfigError, match="watch_robot_state='yes'"):
        RobotChecksConfig(watch_robot_state="yes")
    with pytest.raises(ConfigError, match="frame_tolerance=0"):
        RobotChecksConfig(frame_tolerance=0.0)
    with pytest.raises(ConfigError, match="robot_state_period"):
        RobotChecksConfig(robot_state_period=1.0, robot_state_timeout=0.5)


def test_robot_config_checks_the_controller_and_frame_it_drives():
    policy = yaml.safe_load((CONFIG_DIR / "robot.yaml").read_text())["mole_policy"]["ros__parameters"]
    manager = yaml.safe_load((CONFIG_DIR / "controllers" / "fr3.yaml").read_text())["/**"]
    robot = policy["robot"]
    controller = policy["target_pose_topic"].strip("/").split("/")[0]
    assert robot["require_controller"] == controller
    assert robot["watch_robot_state"] == "on"
    broadcaster = robot["reference_pose_topic"].strip("/").split("/")[0]
    assert robot["reference_pose_topic"] == f"/{broadcaster}/current_pose"  # CRISP: relative "current_pose"
    types = manager["controller_manager"]["ros__parameters"]
    assert types[broadcaster]["type"] == "crisp_controllers/PoseBroadcaster"
    ee = manager[broadcaster]["ros__parameters"]["end_effector_frame"]
    assert robot["reference_ee_frame"] == ee == manager[controller]["ros__parameters"]["end_effector_frame"]
    RobotChecksConfig(**robot)  # every key is a field, every value valid
    sim = yaml.safe_load((CONFIG_DIR / "sim.yaml").read_text())["mole_policy"]["ros__parameters"]
    assert sim["robot"]["watch_robot_state"] == "off"  # the sim publishes no FrankaRobotState
