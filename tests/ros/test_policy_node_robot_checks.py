"""mole_policy with real rclpy and injected robot backends: the frame check gates all output, a reflex or an
inactive controller drops to hold and refuses resume, /diagnostics reports each check.

The measured pose is published like franka_robot_state_broadcaster's (best effort, depth 1), the reference pose
like CRISP's pose_broadcaster (SystemDefaultsQoS: reliable, volatile). controller_manager_msgs and franka_msgs
have no wheels here: ListControllers answers and FrankaRobotState messages are plain objects with the real field
layout (tests/ros/test_robot_checks.py), injected through `RobotBackends`. No wall-clock bounds: "nothing was
published" is asserted after a counted number of control ticks.
"""

from __future__ import annotations

import itertools
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from mole_ros import conversions as conv
from mole_ros import qos
from mole_ros.policy_node import PolicyNode
from mole_ros.robot_monitor import RobotBackends
from rcl_interfaces.msg import Log
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger

from mole_inference.data import schema
from tests.ros.test_robot_checks import FakeErrors, FakeRobotState, list_response

pytestmark = pytest.mark.ros

REFERENCE_TOPIC = "/pose_broadcaster/current_pose"
CONTROLLER = "cartesian_impedance_controller"
SYSTEM_DEFAULTS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)  # rclcpp::SystemDefaultsQoS as rmw resolves it
NODE_IDS = itertools.count()


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


class Feeder:
    """Measured pose, reference pose, robot state and frames from a thread, like the robot at a low rate."""

    def __init__(self, ros: Any, msgs: Any, robot: FakeRobot, reference_dz: float) -> None:
        self.ros, self.msgs, self.robot, self.dz = ros, msgs, robot, reference_dz
        node = ros.client
        self.pose_pub = node.create_publisher(PoseStamped, schema.MEASURED_POSE_TOPIC, qos.ROBOT_STATE_PUBLISHER)
        self.reference_pub = node.create_publisher(PoseStamped, REFERENCE_TOPIC, SYSTEM_DEFAULTS)
        self.image_pub = node.create_publisher(Image, schema.IMAGE_TOPIC, qos.SENSOR)
        self.instruction_pub = node.create_publisher(String, schema.INSTRUCTION_TOPIC, qos.LATCHED)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Feeder:
        self.instruction_pub.publish(String(data="pick up the red block"))
        self._thread.start()
        return self

    def _run(self) -> None:
        i = 0
        home = self.msgs.HOME
        while not self._stop.is_set():
            now = self.ros.now_ns()
            self.pose_pub.publish(self.msgs.pose(now))
            reference = self.msgs.pose(now, (home[0], home[1], home[2] + self.dz))
            reference.header.frame_id = "base"
            self.reference_pub.publish(reference)
            if self.robot.state_callback is not None:
                state = self.robot.state
                self.robot.state_callback(lambda state=state: state)
            if i % 5 == 0:
                self.image_pub.publish(self.msgs.image(now))
            i += 1
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for pub in (self.pose_pub, self.reference_pub, self.image_pub, self.instruction_pub):
            self.ros.client.destroy_publisher(pub)


def make_node(ros: Any, fake_policy: Any, robot: FakeRobot) -> PolicyNode:
    params = {"engage_on_start": False, "diagnostics_period": 0.1,
              "control.watchdog.max_pose_age": 0.3,  # the feeder thread shares 2 loaded cores with the node
              "robot.reference_pose_topic": REFERENCE_TOPIC, "robot.require_controller": CONTROLLER,
              "robot.watch_robot_state": "on", "robot.controller_check_period": 0.05,
              "robot.robot_state_period": 0.0,
              # the arm is still: a loaded machine may delay one topic's latest pose against the other's
              "robot.frame_max_skew": 0.5}
    node = PolicyNode(f"mole_policy_rc_{next(NODE_IDS)}", policy_factory=lambda cfg: fake_policy,
                      robot_backends=RobotBackends(controller_lister=robot.lister,
                                                   robot_state_subscriber=robot.subscribe),
                      context=ros.context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    return ros.add(node)


@pytest.fixture
def outputs(ros):
    return {
        "targets": ros.subscribe(PoseStamped, schema.TARGET_POSE_TOPIC, qos.RELIABLE),
        "deltas": ros.subscribe(Float64MultiArray, schema.EE_DELTA_TOPIC, qos.RELIABLE),
        "source": ros.subscribe(String, schema.ACTIVE_SOURCE_TOPIC, qos.LATCHED),
        "diag": ros.subscribe(DiagnosticArray, "/diagnostics", qos.DIAGNOSTICS),
        "log": ros.subscribe(Log, "/rosout", qos.RELIABLE),
    }


def statuses(out: Any, node: PolicyNode, check: str) -> list[DiagnosticStatus]:
    name = f"{node.get_name()}: {check}"
    return [s for _, m in out["diag"].items for s in m.status if s.name == name]


def ticks(node: PolicyNode) -> int:
    return len(node.telemetry.control.intervals)


def resume(ros: Any, node: PolicyNode) -> Trigger.Response:
    return ros.call(Trigger, f"/{node.get_name()}/resume_policy")


def test_disagreeing_frames_publish_nothing_and_refuse_engage(ros, msgs, fake_policy, wait, outputs):
    robot = FakeRobot()
    robot.controllers[CONTROLLER] = "active"
    node = make_node(ros, fake_policy, robot)
    node.trigger_configure()
    node.trigger_activate()
    feeder = Feeder(ros, msgs, robot, reference_dz=-0.1034).start()  # Desk: flange; CRISP: fr3_hand_tcp
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
    feeder = Feeder(ros, msgs, robot, reference_dz=0.001).start()
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
        node = PolicyNode(f"mole_policy_rc_{next(NODE_IDS)}", policy_factory=lambda cfg: loaded.append(cfg),
                          context=ros.context, parameter_overrides=[Parameter(name, value=value)])
        try:
            assert node.trigger_configure() == TransitionCallbackReturn.FAILURE, name
            assert node.cfg is None and not loaded, "fails before the model is loaded"
        finally:
            node.destroy_node()
