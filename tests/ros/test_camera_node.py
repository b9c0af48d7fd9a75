"""mole_camera with fake frame sources: latency-corrected stamps, CameraInfo, the static TF, bad sources."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from mole_ros import conversions as conv
from mole_ros import qos
from mole_ros.camera_node import CameraConfig, CameraNode, capture_args
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from mole_inference.errors import ConfigError
from tests.data.test_camera_calibration import CALIBRATION

pytestmark = pytest.mark.ros


class NumberedDevice:
    """Frames whose first pixel counts reads; remembers the host time each read() returned."""

    def __init__(self) -> None:
        self.read_ns: list[int] = []
        self.lock = threading.Lock()

    def isOpened(self) -> bool:
        return True

    def read(self):
        time.sleep(0.01)
        with self.lock:
            n = len(self.read_ns)
            frame = np.zeros((24, 32, 3), np.uint8)
            frame[0, 0, :2] = n % 256, n // 256
            self.read_ns.append(time.time_ns())
        return True, frame

    def release(self) -> None:
        pass


def _frame_number(msg: Image) -> int:
    rgb = conv.image_to_rgb(msg)  # bgr8 -> rgb: pixel (b, g) is (count % 256, count // 256)
    return int(rgb[0, 0, 2]) + 256 * int(rgb[0, 0, 1])


def test_stamp_is_read_time_minus_latency_and_camera_info_rides_along(ros, wait, tmp_path):
    calibration = tmp_path / "wrist.yaml"
    calibration.write_text(CALIBRATION.replace("image_width: 640", "image_width: 32").replace(
        "image_height: 480", "image_height: 24"))
    device = NumberedDevice()
    node = ros.add(CameraNode("cam_latency", context=ros.context, capture_factory=lambda cfg: device,
                              parameter_overrides=[Parameter("latency", value=0.6),
                                                   Parameter("publish_tf", value=False),
                                                   Parameter("calibration_file", value=str(calibration))]))
    frames = ros.subscribe(Image, "/wrist_camera/image_raw", qos.SENSOR)
    infos = ros.subscribe(CameraInfo, "/wrist_camera/camera_info", qos.SENSOR)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    node.trigger_activate()
    assert wait(lambda: len(frames) >= 10 and len(infos) >= 10, 5.0)
    node.trigger_deactivate()
    with device.lock:
        read_ns = list(device.read_ns)
    for _, msg in list(frames.items)[:10]:
        stamp = conv.stamp_to_ns(msg.header.stamp)
        # stamped after read() returned, minus 0.6 s: never before that, and 0.6 s before it arrived here
        assert stamp >= read_ns[_frame_number(msg)] - 600_000_000
        assert stamp + 600_000_000 <= time.time_ns()
    image_stamps = {conv.stamp_to_ns(m.header.stamp) for _, m in frames.items}
    _, info = infos.items[0]
    assert conv.stamp_to_ns(info.header.stamp) in image_stamps  # same stamp as its frame
    assert info.header.frame_id == "wrist_camera_optical_frame" and (info.width, info.height) == (32, 24)
    assert info.distortion_model == "plumb_bob" and list(info.d) == [-0.1, 0.01, 0.0, 0.0, 0.0]
    assert list(info.k)[:3] == [400.0, 0.0, 321.5] and info.p[0] == 395.0
    ros.remove(node)


def test_uncalibrated_camera_info_is_a_pinhole_from_the_fov(ros):
    node = ros.add(CameraNode("cam_fov", context=ros.context, capture_factory=lambda cfg: NumberedDevice(),
                              parameter_overrides=[Parameter("horizontal_fov_deg", value=90.0),
                                                   Parameter("publish_tf", value=False)]))
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    info = node.camera_info(640, 480)
    assert list(info.k) == pytest.approx([320.0, 0, 320.0, 0, 320.0, 240.0, 0, 0, 1])
    assert list(info.p) == pytest.approx([320.0, 0, 320.0, 0, 0, 320.0, 240.0, 0, 0, 0, 1, 0])
    assert info.distortion_model == "plumb_bob" and not any(info.d)
    ros.remove(node)


def test_static_transform_of_the_mount(ros):
    node = ros.add(CameraNode("cam_tf", context=ros.context, capture_factory=lambda cfg: NumberedDevice(),
                              parameter_overrides=[Parameter("parent_frame", value="fr3_hand"),
                                                   Parameter("mount_xyz", value=[0.05, 0.0, 0.04]),
                                                   Parameter("mount_rpy", value=[0.0, 0.0, math.pi / 2]),
                                                   Parameter("publish_tf", value=False)]))
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    t = node.static_transform()
    assert (t.header.frame_id, t.child_frame_id) == ("fr3_hand", "wrist_camera_optical_frame")
    assert (t.transform.translation.x, t.transform.translation.y, t.transform.translation.z) == (0.05, 0.0, 0.04)
    r = t.transform.rotation
    s = math.sin(math.pi / 4)
    assert (r.x, r.y, r.z, r.w) == pytest.approx((0.0, 0.0, s, s))
    # offered like tf2_ros' StaticTransformBroadcaster: reliable, transient local, depth 1
    assert qos.TF_STATIC.durability == DurabilityPolicy.TRANSIENT_LOCAL and qos.TF_STATIC.depth == 1
    assert qos.TF_STATIC.reliability == ReliabilityPolicy.RELIABLE
    ros.remove(node)


def test_static_tf_reaches_a_late_tf2_style_listener(ros, wait):
    tf2_msgs = pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs is not installed (ros-<distro>-tf2-msgs)")
    node = ros.add(CameraNode("cam_tf_pub", context=ros.context, capture_factory=lambda cfg: NumberedDevice()))
    node.trigger_configure()
    node.trigger_activate()
    time.sleep(0.2)
    static = ros.subscribe(tf2_msgs.TFMessage, "/tf_static", qos.TF_STATIC_LISTENER)  # subscribes after publishing
    assert wait(lambda: len(static) >= 1, 5.0), "a transient-local listener must get the mount transform"
    [t] = static.items[0][1].transforms
    assert (t.header.frame_id, t.child_frame_id) == ("fr3_hand", "wrist_camera_optical_frame")
    node.trigger_deactivate()
    ros.remove(node)


def test_bad_source_is_a_clear_error_and_the_node_lives(ros, wait):
    def broken(cfg):
        raise RuntimeError("VIDIOC_STREAMON: No such device")

    node = ros.add(CameraNode("cam_bad", context=ros.context, capture_factory=broken,
                              parameter_overrides=[Parameter("source", value="udp://@0.0.0.0:8554"),
                                                   Parameter("reconnect_period", value=0.1),
                                                   Parameter("publish_tf", value=False)]))
    diag = ros.subscribe(DiagnosticArray, "/diagnostics", qos.DIAGNOSTICS)
    node.trigger_configure()
    node.trigger_activate()
    assert wait(lambda: "No such device" in node.last_error, 3.0)
    assert wait(lambda: any(s.level == b"\x02" and "No such device" in s.message
                            for _, m in diag.items for s in m.status), 3.0)
    assert node._thread is not None and node._thread.is_alive()  # still retrying, not crashed
    node.trigger_deactivate()
    ros.remove(node)


def test_config_and_source_parsing():
    assert capture_args("0", "auto") == (0, "v4l2")
    assert capture_args("/dev/video2", "auto") == ("/dev/video2", "v4l2")
    assert capture_args("udp://@0.0.0.0:8554", "auto") == ("udp://@0.0.0.0:8554", "ffmpeg")
    assert capture_args("v4l2src ! appsink", "auto")[1] == "gstreamer"
    assert CameraConfig().info_topic() == "/wrist_camera/camera_info"
    with pytest.raises(ConfigError, match="latency"):
        CameraConfig(latency=-0.1)
    with pytest.raises(ConfigError, match="backend"):
        CameraConfig(backend="dshow")


def test_missing_calibration_file_fails_configure(ros):
    node = ros.add(CameraNode("cam_nocal", context=ros.context, capture_factory=lambda cfg: NumberedDevice(),
                              parameter_overrides=[Parameter("calibration_file", value="/nonexistent/wrist.yaml")]))
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    ros.remove(node)
