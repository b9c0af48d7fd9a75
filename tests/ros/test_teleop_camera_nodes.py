"""mole_teleop (deadman, takeover, gripper toggle) and mole_camera (fake device: stamps, dropouts, reconnect)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist, Vector3
from mole_ros import conversions as conv
from mole_ros import qos
from mole_ros.camera_node import CameraNode
from mole_ros.teleop_node import TeleopNode
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, Joy
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

pytestmark = pytest.mark.ros


def test_teleop_deadman_takeover_and_gripper(ros, wait):
    calls = []
    ros.client.create_service(Trigger, "/mole_policy/takeover",
                              lambda req, res: (calls.append(time.monotonic()), setattr(res, "success", True), res)[2])
    node = ros.add(TeleopNode(context=ros.context, parameter_overrides=[Parameter("max_linear_speed", value=0.1)]))
    deltas = ros.subscribe(Float64MultiArray, "/mole/teleop/delta", qos.RELIABLE)
    twist_pub = ros.client.create_publisher(Twist, "/spacenav/twist", qos.SENSOR)
    joy_pub = ros.client.create_publisher(Joy, "/spacenav/joy", qos.SENSOR)
    assert wait(lambda: node.count_subscribers("/mole/teleop/delta") > 0 and twist_pub.get_subscription_count() > 0
                and joy_pub.get_subscription_count() > 0, 3.0)
    stop = threading.Event()
    buttons = [0, 0]  # like a real SpaceMouse, Joy streams its button state (best effort: one message may drop)

    def push_twist() -> None:
        while not stop.is_set():
            twist_pub.publish(Twist(linear=Vector3(x=1.0)))
            joy_pub.publish(Joy(buttons=list(buttons)))
            time.sleep(0.02)

    pusher = threading.Thread(target=push_twist, daemon=True)
    pusher.start()
    try:
        time.sleep(0.2)
        assert len(deltas) == 0, "moved without the deadman"
        buttons[0] = 1  # deadman pressed -> takeover + motion
        assert wait(lambda: len(deltas) >= 10, 10.0)  # a deadline for a condition, not a rate check
        assert wait(lambda: len(calls) == 1, 10.0), "deadman press did not call takeover"
        recent = [conv.ee_delta_from_msg(m) for _, m in deltas.items[-10:]]
        assert {source for _, source in recent} == {"teleop"}
        # full deflection, open (a tick whose twist input went stale in transit sends zero motion instead: safe)
        full = np.array([0.1 * 0.02, 0, 0, 0, 0, 0, 1.0])
        assert any(np.allclose(d, full, atol=1e-12) for d, _ in recent), [d for d, _ in recent]
        assert all(np.allclose(d, full, atol=1e-12) or np.allclose(d[:6], 0.0) for d, _ in recent)
        buttons[1] = 1  # toggle gripper: closed
        assert wait(lambda: conv.ee_delta_from_msg(deltas.items[-1][1])[0][6] == 0.0, 3.0)
        buttons[:] = [0, 0]  # release: one zero-motion delta, then silence
        # (a zero delta alone does not show the release: a tick whose twist went stale sends one too)
        assert wait(lambda: not node._armed, 10.0), "the release was not seen"
        assert wait(lambda: np.allclose(conv.ee_delta_from_msg(deltas.items[-1][1])[0][:6], 0.0), 10.0)
        time.sleep(0.1)
        n = len(deltas)
        time.sleep(0.3)
        assert len(deltas) == n, "still publishing after the deadman was released"
    finally:  # a failed attempt must not leave a publisher running into the next test
        stop.set()
        pusher.join()
        ros.remove(node)


class FakeDevice:
    """A capture device that yields numbered frames and can be unplugged."""

    opened = 0

    def __init__(self, plugged: threading.Event) -> None:
        self.plugged = plugged
        FakeDevice.opened += 1

    def isOpened(self) -> bool:
        return self.plugged.is_set()

    def read(self):
        time.sleep(0.01)
        if not self.plugged.is_set():
            return False, None
        frame = np.zeros((24, 32, 3), np.uint8)
        frame[:, :, 0] = 255  # blue in BGR
        return True, frame

    def release(self) -> None:
        pass


def test_camera_stamps_at_capture_and_reconnects(ros, wait):
    plugged = threading.Event()
    plugged.set()
    node = CameraNode(context=ros.context, capture_factory=lambda cfg: FakeDevice(plugged),
                      parameter_overrides=[Parameter("fps", value=50.0), Parameter("reconnect_period", value=0.1)])
    ros.add(node)
    frames = ros.subscribe(Image, "/wrist_camera/image_raw", qos.SENSOR)
    diag = ros.subscribe(DiagnosticArray, "/diagnostics", qos.DIAGNOSTICS)
    node.trigger_configure()
    node.trigger_activate()
    assert wait(lambda: len(frames) >= 10, 3.0)
    _, msg = frames.items[-1]
    age = (ros.now_ns() - conv.stamp_to_ns(msg.header.stamp)) * 1e-9
    assert 0 <= age < 0.5 and msg.encoding == "bgr8" and msg.header.frame_id == "wrist_camera_optical_frame"
    rgb = conv.image_to_rgb(msg)
    assert rgb.shape == (24, 32, 3) and rgb[0, 0].tolist() == [0, 0, 255]
    stamps = [conv.stamp_to_ns(m.header.stamp) for _, m in frames.items]
    assert stamps == sorted(stamps)
    plugged.clear()  # unplug: no frames, the node keeps trying (frames in flight may still arrive: settle 1 s)
    time.sleep(1.0)
    n, opened = len(frames), FakeDevice.opened
    time.sleep(0.3)
    assert len(frames) == n and node.reconnects >= 1
    assert node.frame_age() > 0.3
    plugged.set()  # plug back in: frames resume through a reopen
    assert wait(lambda: len(frames) >= n + 5, 3.0), "no frames after the device came back"
    assert FakeDevice.opened > opened
    assert wait(lambda: len(diag) > 0, 2.0)
    keys = {kv.key for kv in diag.items[-1][1].status[0].values}
    assert {"frame_age_ms", "fps", "reconnects"} <= keys
    node.trigger_deactivate()
    ros.remove(node)
