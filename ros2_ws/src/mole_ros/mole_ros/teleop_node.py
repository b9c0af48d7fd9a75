"""`mole_teleop`: SpaceMouse (geometry_msgs/Twist) or gamepad (sensor_msgs/Joy) -> per-tick EE deltas.

While the deadman button is held and input is fresh, a timer at `rate_hz` publishes
`[v * max_linear_speed * dt, w * max_angular_speed * dt, gripper]` on `/mole/teleop/delta` (the ee_delta
encoding, source "teleop"), base frame. Releasing the deadman publishes one zero-motion delta at once (the arm
stops now, not after the mux's teleop timeout) and then nothing: the policy node holds. Pressing the deadman
(or the takeover button) calls the policy node's `~/takeover` service; handing back to the policy is always
an explicit `~/resume_policy` by the operator.

Inputs: `twist_topic` (spacenav: /spacenav/twist, values about [-1, 1]) and `joy_topic` (buttons; axes too when
`use_joy_axes`, mapped by `joy_axes` = indices for vx, vy, vz, wx, wy, wz, -1 = unused).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from geometry_msgs.msg import Twist
from rclpy.node import Node
from sensor_msgs.msg import Joy
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from mole_ros import conversions as conv
from mole_ros import qos
from mole_ros.params import declare_config, help_field, read_config

NODE_NAME = "mole_teleop"


@dataclass
class TeleopConfig:
    """Parameters of `mole_teleop`."""

    twist_topic: str = help_field("/spacenav/twist", "geometry_msgs/Twist in (SpaceMouse)")
    joy_topic: str = help_field("/spacenav/joy", "sensor_msgs/Joy in (buttons; axes if use_joy_axes)")
    delta_topic: str = help_field("/mole/teleop/delta", "per-tick deltas out (ee_delta encoding)")
    takeover_service: str = help_field("/mole_policy/takeover", "std_srvs/Trigger called on takeover")
    rate_hz: float = help_field(50.0, "publishing rate while the deadman is held (= control rate)")
    max_linear_speed: float = help_field(0.1, "m/s at full deflection")
    max_angular_speed: float = help_field(0.5, "rad/s at full deflection")
    deadband: float = help_field(0.05, "deflections below this are zero")
    input_timeout: float = help_field(0.2, "seconds; older input counts as zero deflection")
    deadman_button: int = help_field(0, "Joy button that must be held to move (-1 = always armed)")
    takeover_button: int = help_field(-1, "Joy button that calls takeover (-1 = pressing the deadman does)")
    gripper_toggle_button: int = help_field(1, "Joy button toggling open/closed (-1 = none)")
    use_joy_axes: bool = help_field(False, "take motion from Joy axes instead of Twist")
    joy_axes: list = field(default_factory=lambda: [1, 0, 4, -1, -1, 3],
                           metadata={"help": "Joy axis index per [vx, vy, vz, wx, wy, wz], -1 unused"})
    axis_scale: list = field(default_factory=lambda: [1.0] * 6,
                             metadata={"help": "per-axis sign/scale of the deflections"})


class TeleopNode(Node):
    """Maps a 6-DoF input device to per-tick EE deltas with a deadman (see module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        declare_config(self, TeleopConfig())
        self.cfg = cfg = read_config(self, TeleopConfig)
        self.get_logger().info(f"config: {cfg}")
        self._dt = 1.0 / cfg.rate_hz
        self._velocity = np.zeros(6)  # normalized deflections
        self._velocity_time: float | None = None
        self._buttons: list[int] = []
        self._gripper = 1.0  # open
        self._armed = cfg.deadman_button < 0
        self._pub = self.create_publisher(Float64MultiArray, cfg.delta_topic, qos.RELIABLE)
        self.create_subscription(Twist, cfg.twist_topic, self._on_twist, qos.SENSOR)
        self.create_subscription(Joy, cfg.joy_topic, self._on_joy, qos.SENSOR)
        self._takeover = self.create_client(Trigger, cfg.takeover_service)
        self.create_timer(self._dt, self._on_timer)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_twist(self, msg: Twist) -> None:
        if not self.cfg.use_joy_axes:
            self._set_velocity(conv.twist_to_vector(msg.linear, msg.angular))

    def _on_joy(self, msg: Joy) -> None:
        cfg = self.cfg
        buttons = list(msg.buttons)
        pressed = [i for i, b in enumerate(buttons) if b and (i >= len(self._buttons) or not self._buttons[i])]
        self._buttons = buttons
        if cfg.use_joy_axes:
            axes = list(msg.axes)
            self._set_velocity(np.array([axes[i] if 0 <= i < len(axes) else 0.0 for i in cfg.joy_axes]))
        if cfg.gripper_toggle_button in pressed:
            self._gripper = 0.0 if self._gripper >= 0.5 else 1.0
            self.get_logger().info(f"gripper -> {'open' if self._gripper else 'closed'}")
        takeover = cfg.takeover_button if cfg.takeover_button >= 0 else cfg.deadman_button
        if takeover >= 0 and takeover in pressed:
            self._request_takeover()
        if cfg.deadman_button >= 0:
            held = cfg.deadman_button < len(buttons) and bool(buttons[cfg.deadman_button])
            if self._armed and not held:
                self._publish(np.zeros(6))  # stop now
                self.get_logger().info("deadman released: teleop stops")
            self._armed = held

    def _set_velocity(self, v: np.ndarray) -> None:
        v = np.asarray(v, dtype=np.float64) * np.asarray(self.cfg.axis_scale, dtype=np.float64)
        v[np.abs(v) < self.cfg.deadband] = 0.0
        self._velocity = np.clip(v, -1.0, 1.0)
        self._velocity_time = self._now()

    def _request_takeover(self) -> None:
        if not self._takeover.service_is_ready():
            self.get_logger().error(f"takeover service {self.cfg.takeover_service} not available",
                                    throttle_duration_sec=2.0)
            return
        self._takeover.call_async(Trigger.Request())
        self.get_logger().info("takeover requested")

    def _on_timer(self) -> None:
        if not self._armed:
            return
        fresh = self._velocity_time is not None and self._now() - self._velocity_time <= self.cfg.input_timeout
        self._publish(self._velocity if fresh else np.zeros(6))

    def _publish(self, velocity: np.ndarray) -> None:
        cfg = self.cfg
        delta = np.empty(7)
        delta[:3] = velocity[:3] * cfg.max_linear_speed * self._dt
        delta[3:6] = velocity[3:] * cfg.max_angular_speed * self._dt
        delta[6] = self._gripper
        self._pub.publish(conv.ee_delta_to_msg(delta, "teleop"))


def main(args: list[str] | None = None) -> None:
    """Run `mole_teleop` alone."""
    from mole_ros.runner import run_nodes

    run_nodes([TeleopNode], args)


if __name__ == "__main__":
    main()
