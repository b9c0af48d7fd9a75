"""The ROS side of `robot_checks`: reference-pose and robot-state subscriptions, the list_controllers poll.

franka_msgs and controller_manager_msgs are imported only when their check runs (neither has a PyPI wheel): a
check that is asked for explicitly (`robot.require_controller: <name>`, `robot.watch_robot_state: on`) without its
package is a ConfigError at configure; `watch_robot_state: auto` without franka_msgs, an empty
`require_controller` or an empty `reference_pose_topic` are logged once as "not checked". Tests inject the two
message-bound parts (`RobotBackends`) with fakes that have the real field layout.

QoS, as the publishers offer it: CRISP's pose_broadcaster `~/current_pose` and franka_robot_state_broadcaster's
`~/robot_state` are created with rclcpp::SystemDefaultsQoS() (reliable, volatile; utiasDSL/crisp_controllers
src/pose_broadcaster.cpp, frankarobotics/franka_ros2 franka_robot_state_broadcaster.cpp). Both are subscribed
BEST_EFFORT, which matches a reliable and a best-effort publisher alike (franka's convenience topics are best
effort); robot states are taken raw and decoded at most every `robot_state_period` (the broadcaster sends 1 kHz
and a full FrankaRobotState decoded in Python at that rate would compete with the control thread for the GIL).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import CallbackGroup, MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from mole_inference.errors import ConfigError
from mole_ros import conversions as conv
from mole_ros import qos
from mole_ros.robot_checks import ERROR, Check, RobotChecks, RobotChecksConfig, resolve_watch

# keep last 1: only the newest state matters; best effort: matches the broadcaster's reliable publisher
ROBOT_STATE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                             durability=DurabilityPolicy.VOLATILE)


class ControllerLister(Protocol):
    """Asks controller_manager for its controllers; answers through the callbacks (any thread)."""

    def request(self, on_response: Callable[[Any], None], on_failure: Callable[[str], None]) -> None:
        """Start one list_controllers call (or report why none can be made)."""


ListerFactory = Callable[[Node, str, CallbackGroup], ControllerLister]
StateSubscriber = Callable[[Node, str, Callable[[Any], None], CallbackGroup], Any]


class ServiceControllerLister:
    """controller_manager_msgs/srv/ListControllers over an rclpy client (imported here, on first use)."""

    def __init__(self, node: Node, service: str, group: CallbackGroup) -> None:
        from controller_manager_msgs.srv import ListControllers

        self._srv = ListControllers
        self._node = node
        self.service = service
        self.client = node.create_client(ListControllers, service, callback_group=group)
        self._pending: Any = None

    def request(self, on_response: Callable[[Any], None], on_failure: Callable[[str], None]) -> None:
        """One call; skipped while the previous one is unanswered (the checks time it out)."""
        if self._pending is not None and not self._pending.done():
            return
        if not self.client.service_is_ready():
            on_failure(f"service {self.service} not available")
            return

        def done(future: Any) -> None:
            err = future.exception()
            if err is not None:
                on_failure(f"{self.service} failed: {err}")
            else:
                on_response(future.result())

        self._pending = self.client.call_async(self._srv.Request())
        self._pending.add_done_callback(done)

    def destroy(self) -> None:
        """Destroy the client."""
        self._node.destroy_client(self.client)


def subscribe_franka_robot_state(node: Node, topic: str, callback: Callable[[Any], None],
                                 group: CallbackGroup) -> Any:
    """Subscribe franka_msgs/FrankaRobotState raw; `callback(decode)` gets a function that decodes the bytes."""
    from franka_msgs.msg import FrankaRobotState
    from rclpy.serialization import deserialize_message

    def on_raw(data: bytes) -> None:
        callback(lambda: deserialize_message(data, FrankaRobotState))

    return node.create_subscription(FrankaRobotState, topic, on_raw, ROBOT_STATE_QOS, callback_group=group,
                                    raw=True)


def available(package: str) -> bool:
    """True when the Python package of a ROS interface package imports (sourced workspace)."""
    return importlib.util.find_spec(package) is not None


@dataclass(frozen=True)
class RobotBackends:
    """The message-bound parts of the monitor; None = the real ones (controller_manager_msgs, franka_msgs)."""

    controller_lister: ListerFactory | None = None
    robot_state_subscriber: StateSubscriber | None = None


class RobotMonitor:
    """Creates what the checks need on `node`, feeds `self.checks`, logs every change of a verdict once."""

    def __init__(self, node: Node, config: RobotChecksConfig, measured_topic: str, group: CallbackGroup,
                 backends: RobotBackends | None = None) -> None:
        backends = backends or RobotBackends()
        self.node, self.config = node, config
        watch = self.check_config(config, backends)
        lister_factory = backends.controller_lister or ServiceControllerLister
        subscriber = backends.robot_state_subscriber
        self.checks = RobotChecks(config, measured_topic, controllers=bool(config.require_controller),
                                  robot_state=watch)
        self._group = group
        self._entities: list[Any] = []
        self._lister: ControllerLister | None = None
        self._timer: Any = None
        self._last_decode = -float("inf")
        self._active = False
        if config.require_controller:
            self._lister = lister_factory(node, f"{config.controller_manager}/list_controllers", group)
        if watch:
            self._entities.append((subscriber or subscribe_franka_robot_state)(
                node, config.robot_state_topic, self._on_robot_state, group))
        if config.reference_pose_topic:
            # CRISP pose_broadcaster: SystemDefaultsQoS (reliable); best effort subscribes to it compatibly
            self._entities.append(node.create_subscription(PoseStamped, config.reference_pose_topic,
                                                           self._on_reference_pose, qos.ROBOT_STATE,
                                                           callback_group=group))
        missing = self.checks.not_checked()
        if missing:
            node.get_logger().warning(f"robot checks off: {'; '.join(missing)}")

    @staticmethod
    def check_config(config: RobotChecksConfig, backends: RobotBackends | None = None) -> bool:
        """ConfigError for a check asked for explicitly whose interface package does not import; returns
        whether robot states are watched."""
        backends = backends or RobotBackends()
        if (config.require_controller and backends.controller_lister is None
                and not available("controller_manager_msgs")):
            raise ConfigError(f"robot.require_controller={config.require_controller!r} but "
                              "controller_manager_msgs does not import: source the ROS 2 workspace with "
                              "ros2_control (or set robot.require_controller: '' explicitly)")
        return resolve_watch(config.watch_robot_state,
                             backends.robot_state_subscriber is not None or available("franka_msgs"))

    def _now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Activation: checks afresh, poll the controller list from now on."""
        self.checks.reset(self._now())
        self._last_decode = -float("inf")
        self._active = True
        if self._lister is not None:
            self._poll()
            # a group of its own: a poll never waits behind the pose and state subscriptions
            self._timer = self.node.create_timer(self.config.controller_check_period, self._poll,
                                                 callback_group=MutuallyExclusiveCallbackGroup())

    def stop(self) -> None:
        """Deactivation: stop polling."""
        self._active = False
        if self._timer is not None:
            self.node.destroy_timer(self._timer)
            self._timer = None

    def destroy(self) -> None:
        """Cleanup: destroy every subscription and the client."""
        self.stop()
        for entity in self._entities:
            entity.destroy()
        self._entities = []
        if isinstance(self._lister, ServiceControllerLister):
            self._lister.destroy()
        self._lister = None

    # ------------------------------------------------------------------ inputs
    def measured_pose(self, pose: Any, frame_id: str, stamp: float) -> None:
        """The node's measured-pose callback passes each pose on (only while the frame check is open)."""
        if self._active:
            self._report(self.checks.measured_pose(pose, frame_id, stamp))

    def _on_reference_pose(self, msg: PoseStamped) -> None:
        if self._active:
            stamp = conv.stamp_to_sec(msg.header.stamp) or self._now()
            self._report(self.checks.reference_pose(conv.pose_from_msg(msg), msg.header.frame_id, stamp))

    def _on_robot_state(self, decode: Callable[[], Any]) -> None:
        now = self._now()
        if now - self._last_decode < self.config.robot_state_period:
            return
        self._last_decode = now
        self._report(self.checks.robot_state(decode(), now))

    def _poll(self) -> None:
        self._lister.request(lambda response: self._report(self.checks.controllers_listed(response, self._now())),
                             lambda reason: self._report(self.checks.controllers_unavailable(reason,
                                                                                             self._now())))

    def _report(self, check: Check | None) -> None:
        if check is None:
            return
        text = f"{check.name}: {check.message}"
        if check.level == ERROR:
            self.node.get_logger().error(text)
        else:
            self.node.get_logger().info(text)
