"""Gripper output: franka_msgs Grasp/Move action clients when franka_msgs imports, else a Float64 width topic.

Commands are absolute (1 = open, 0 = closed) and sent only when they change: the FR3 hand executes one
action at a time, so re-sending at 50 Hz would abort and restart it. Closing uses Grasp with wide epsilons
(succeeds on any object width); opening uses Move to `open_width`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from rclpy.node import Node
from std_msgs.msg import Float64

from mole_ros import qos
from mole_ros.conversions import gripper_width


def franka_msgs_available() -> bool:
    """True when the franka_msgs Python package (built with franka_ros2) can be imported."""
    return importlib.util.find_spec("franka_msgs") is not None


@dataclass(frozen=True)
class GripperSettings:
    """Where and how to command the gripper."""

    mode: str  # "auto" | "franka" | "topic" | "none"
    topic: str  # Float64 width topic (mode "topic")
    action_ns: str  # franka_gripper action namespace (mode "franka"), e.g. /franka_gripper
    open_width: float  # metres
    speed: float  # m/s
    force: float  # N, for grasping


class GripperOutput:
    """Sends gripper commands on change through the configured channel."""

    def __init__(self, node: Node, settings: GripperSettings) -> None:
        self.node = node
        self.settings = settings
        mode = settings.mode
        if mode == "auto":
            mode = "franka" if franka_msgs_available() else "topic"
        self.mode = mode
        self._last: float | None = None
        self._pub = None
        self._move = self._grasp = None
        if mode == "topic":
            self._pub = node.create_publisher(Float64, settings.topic, qos.RELIABLE)
        elif mode == "franka":
            from franka_msgs.action import Grasp, Move
            from rclpy.action import ActionClient

            self._grasp_type, self._move_type = Grasp, Move
            self._grasp = ActionClient(node, Grasp, f"{settings.action_ns}/grasp")
            self._move = ActionClient(node, Move, f"{settings.action_ns}/move")
        node.get_logger().info(f"gripper output: {self.mode}")

    def send(self, command: float | None) -> bool:
        """Send `command` if it differs from the last one sent; True when something was sent."""
        if command is None or command == self._last or self.mode == "none":
            return False
        self._last = command
        s = self.settings
        if self._pub is not None:
            self._pub.publish(Float64(data=gripper_width(command, s.open_width)))
            return True
        closing = command < 0.5
        client = self._grasp if closing else self._move
        if not client.server_is_ready():
            self.node.get_logger().error(f"gripper action server {s.action_ns} not available; command "
                                         f"{command} not sent", throttle_duration_sec=2.0)
            self._last = None  # retry on the next tick
            return False
        if closing:
            goal = self._grasp_type.Goal(width=0.0, speed=s.speed, force=s.force)
            goal.epsilon.inner = goal.epsilon.outer = s.open_width
        else:
            goal = self._move_type.Goal(width=s.open_width, speed=s.speed)
        client.send_goal_async(goal)
        return True

    def destroy(self) -> None:
        """Release the publisher / action clients."""
        if self._pub is not None:
            self.node.destroy_publisher(self._pub)
        for client in (self._grasp, self._move):
            if client is not None:
                client.destroy()
