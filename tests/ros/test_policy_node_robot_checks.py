"""mole_policy with real rclpy and injected robot backends: the frame check gates all output, a reflex or an
inactive controller drops to hold and refuses resume, /diagnostics reports each check.

The measured pose is published like franka_robot_state_broadcaster's (best effort, depth 1), the reference pose
like CRISP's pose_broadcaster (SystemDefaultsQoS: reliable, volatile). controller_manager_msgs and franka_msgs
have no wheels here: ListControllers answers and FrankaRobotState messages are plain objects with the real field
layout (tests/ros/test_robot_checks.py), injected through `RobotBackends`. No wall-clock bounds: "nothing was
published" is asserted after a counted number of control ticks.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from mole_ros import conversions as conv
from mole_ros import qos
from mole_ros.policy_node import PolicyNode
from mole_ros.robot_monitor import RobotBackends
from rcl_interfaces.msg import Log
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from tests.ros.policy_stack import LOADED_MACHINE, Feeder, node_name, policy_node, resume, subscribe_outputs
from tests.ros.test_robot_checks import FakeErrors, FakeRobotState, list_response

pytestmark = pytest.mark.ros

REFERENCE_TOPIC = "/pose_broadcaster/current_pose"
CONTROLLER = "cartesian_impedance_controller"
SYSTEM_DEFAULTS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)  # rclcpp::SystemDefaultsQoS as rmw resolves it


class FakeRobot:
    """What the robot side would say: controller states for list_controllers, and the robot state stream."""

    def __init__(self) -> None:
        self.controllers = {CONTROLLER: "inactive", "pose_broadcaster": "active"}
        self.state = FakeRobotState()
        self.state_callback: Any = None
        self.requests = 0

    # RobotBackends.controller_lister: a factory (node, service, group) -> lister
    def lister(self, node: Any, service: str, group: Any) -> FakeRobot:
        assert service == "/controller_manager/list_controllers"
        return self

    def request(self, on_response: Any, on_failure: Any) -> None:
        self.requests += 1
        on_response(list_response(**self.controllers))

    # RobotBackends.robot_state_subscriber: (node, topic, callback, group) -> entity
    def subscribe(self, node: Any, topic: str, callback: Any, group: Any) -> Any:
        assert topic == "/franka_robot_state_broadcaster/robot_state"
        self.state_callback = callback
        return SimpleNamespace(destroy=lambda: None)


class RobotFeeder(Feeder):
    """The Feeder's measured pose (published like the robot's) and frames, plus the reference pose and robot state."""

    def __init__(self, ros: Any, msgs: Any, robot: FakeRobot, reference_dz: float) -> None:
        super().__init__(ros, msgs, pose_qos=qos.ROBOT_STATE_PUBLISHER)
        self.robot, self.dz = robot, reference_dz
        self.reference_pub = self.publisher(PoseStamped, REFERENCE_TOPIC, SYSTEM_DEFAULTS)

    def cycle(self, now_ns: int) -> None:
        """The reference pose `reference_dz` above the measured one, and the robot state."""
        home = self.msgs.HOME
        reference = self.msgs.pose(now_ns, (home[0], home[1], home[2] + self.dz))
        reference.header.frame_id = "base"
        self.reference_pub.publish(reference)
        if self.robot.state_callback is not None:
            state = self.robot.state
            self.robot.state_callback(lambda state=state: state)


def make_node(ros: Any, fake_policy: Any, robot: FakeRobot) -> PolicyNode:
    params = {"engage_on_start": False, "diagnostics_period": 0.1, **LOADED_MACHINE,
              "robot.reference_pose_topic": REFERENCE_TOPIC, "robot.require_controller": CONTROLLER,
              "robot.watch_robot_state": "on", "robot.controller_check_period": 0.05,
              "robot.robot_state_period": 0.0,
              # the arm is still: a loaded machine may delay one topic's latest pose against the other's
              "robot.frame_max_skew": 0.5}
    return policy_node(ros, "mole_policy_rc", lambda cfg: fake_policy, params,
                       robot_backends=RobotBackends(controller_lister=robot.lister,
                                                    robot_state_subscriber=robot.subscribe))


@pytest.fixture
def outputs(ros):
    return subscribe_outputs(ros, "targets", "deltas", "source", "diag", "log")


def statuses(out: Any, node: PolicyNode, check: str) -> list[DiagnosticStatus]:
    name = f"{node.get_name()}: {check}"
    return [s for _, m in out["diag"].items for s in m.status if s.name == name]


def ticks(node: PolicyNode) -> int:
    return len(node.telemetry.control.intervals)


def test_disagreeing_frames_publish_nothing_and_refuse_engage(ros, msgs, fake_policy, wait, outputs):
    robot = FakeRobot()
    robot.controllers[CONTROLLER] = "active"
    node = make_node(ros, fake_policy, robot)
    node.trigger_configure()
    node.trigger_activate()
    feeder = RobotFeeder(ros, msgs, robot, reference_dz=-0.1034).start()  # Desk: flange; CRISP: fr3_hand_tcp
    try:
        assert wait(lambda: any(s.level == DiagnosticStatus.ERROR for s in statuses(outputs, node, "frames")), 10.0)
        status = statuses(outputs, node, "frames")[-1]
        assert "103.4 mm" in status.message and "fr3_link0 -> O_T_EE" in status.message
        assert "base -> fr3_hand_tcp" in status.message and REFERENCE_TOPIC in status.message
        logged = [m.msg for _, m in outputs["log"].items if m.name == node.get_name() and m.level >= Log.ERROR]
        assert any("frames disagree" in text and "103.4 mm" in text for text in logged), logged
        answer = resume(ros, node)
        assert not answer.success and "frames" in answer.message
        since = ticks(node)
        assert wait(lambda: ticks(node) >= since + 25, 10.0)  # the control thread ran on, and published nothing
        assert len(outputs["targets"]) == 0 and len(outputs["deltas"]) == 0
        assert node.loop.mux.mode.value == "hold"
    finally:
        feeder.stop()
        ros.remove(node)


def test_reflex_and_inactive_controller_hold_and_refuse_resume_until_ok(ros, msgs, fake_policy, wait, outputs):
    robot = FakeRobot()
    node = make_node(ros, fake_policy, robot)
    node.trigger_configure()
    node.trigger_activate()
    feeder = RobotFeeder(ros, msgs, robot, reference_dz=0.001).start()
    try:
        # frames agree (1 mm): hold targets go out; the controller is still inactive, so no engage
        assert wait(lambda: len(outputs["deltas"]) > 0, 10.0)
        assert statuses(outputs, node, "frames") or wait(lambda: statuses(outputs, node, "frames"), 5.0)
        assert wait(lambda: statuses(outputs, node, "frames")[-1].level == DiagnosticStatus.OK, 5.0)
        answer = resume(ros, node)
        assert not answer.success and f"{CONTROLLER} is inactive" in answer.message
        robot.controllers[CONTROLLER] = "active"
        assert wait(lambda: node.monitor.checks.engage_refusal(node._now()) is None
                    and node.loop.last_health is not None and node.loop.last_health.ok, 10.0)
        assert resume(ros, node).success and node.loop.mux.mode.value == "policy"

        # a reflex: the mux drops to hold with the reason, /diagnostics shows it, resume is refused
        robot.state = FakeRobotState(robot_mode=FakeRobotState.ROBOT_MODE_REFLEX,
                                     current_errors=FakeErrors(cartesian_reflex=True))
        assert wait(lambda: node.loop.mux.mode.value == "hold", 10.0)
        event = node.loop.mux.events[-1]
        assert event.automatic and "robot mode reflex" in event.reason and "cartesian_reflex" in event.reason
        assert wait(lambda: outputs["source"].items and outputs["source"].items[-1][1].data == "hold", 5.0)
        assert wait(lambda: any(s.level == DiagnosticStatus.ERROR and "reflex" in s.message
                                for s in statuses(outputs, node, "robot state")), 5.0)
        answer = resume(ros, node)
        assert not answer.success and "robot mode reflex" in answer.message
        assert conv.ee_delta_from_msg(outputs["deltas"].items[-1][1])[1] == "hold"

        # recovered (the operator ran error_recovery): move mode, resume accepted again
        robot.state = FakeRobotState()
        assert wait(lambda: node.monitor.checks.engage_refusal(node._now()) is None, 10.0)
        assert resume(ros, node).success and node.loop.mux.mode.value == "policy"

        # the controller is deactivated under the policy: hold, with the reason
        robot.controllers[CONTROLLER] = "inactive"
        assert wait(lambda: node.loop.mux.mode.value == "hold", 10.0)
        assert f"{CONTROLLER} is inactive" in node.loop.mux.events[-1].reason
        assert robot.requests >= 2
    finally:
        feeder.stop()
        ros.remove(node)


def test_explicit_checks_without_their_interfaces_fail_configure(ros, fake_policy):
    from mole_ros.robot_monitor import available

    if available("controller_manager_msgs") or available("franka_msgs"):
        pytest.skip("controller_manager_msgs / franka_msgs importable: nothing is missing")
    loaded = []
    for name, value in (("robot.require_controller", CONTROLLER), ("robot.watch_robot_state", "on")):
        node = PolicyNode(node_name("mole_policy_rc"), policy_factory=lambda cfg: loaded.append(cfg),
                          context=ros.context, parameter_overrides=[Parameter(name, value=value)])
        try:
            assert node.trigger_configure() == TransitionCallbackReturn.FAILURE, name
            assert node.cfg is None and not loaded, "fails before the model is loaded"
        finally:
            node.destroy_node()
