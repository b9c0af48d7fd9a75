"""mole_ros.conversions: CDR image parsing against rclpy's serializer, image checks, poses, ee_delta, routing."""

from __future__ import annotations

import array

import numpy as np
import pytest
from mole_ros import conversions as conv
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage, Image

from mole_inference.data.schema import decode_ee_delta
from mole_inference.errors import InputError
from mole_inference.policy.contract import RoutingDecision

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
@pytest.mark.parametrize("frame_id", ["", "cam", "wrist_camera_optical"])
def test_raw_image_roundtrip_matches_rclpy(encoding, frame_id):
    rgb = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    msg = conv.rgb_to_image(rgb, 1_700_000_000_123_456_789, frame_id, encoding)
    raw = conv.parse_image_cdr(serialize_message(msg), compressed=False)
    assert (raw.stamp_ns, raw.frame_id, raw.height, raw.width, raw.encoding, raw.step) == (
        1_700_000_000_123_456_789, frame_id, 5, 7, encoding, 21)
    np.testing.assert_array_equal(conv.image_to_rgb(raw), rgb)
    np.testing.assert_array_equal(conv.image_to_rgb(msg), rgb)


def test_raw_compressed_and_padded_rows():
    import cv2

    rgb = np.zeros((8, 6, 3), np.uint8)
    rgb[:, :, 0] = 200
    _, buf = cv2.imencode(".png", rgb[:, :, ::-1])
    msg = CompressedImage(format="png")
    msg.data = array.array("B", buf.tobytes())
    raw = conv.parse_image_cdr(serialize_message(msg), compressed=True)
    np.testing.assert_array_equal(conv.image_to_rgb(raw), rgb)
    padded = Image(height=2, width=2, encoding="mono8", step=4)
    padded.data = array.array("B", [1, 2, 0, 0, 3, 4, 0, 0])
    out = conv.image_to_rgb(conv.parse_image_cdr(serialize_message(padded), False))
    np.testing.assert_array_equal(out[:, :, 0], [[1, 2], [3, 4]])


@pytest.mark.parametrize("fields, match", [
    ({"encoding": "yuv422"}, "encoding"),
    ({"height": 0, "width": 0, "step": 0}, "empty"),
    ({"step": 10}, "step"),
    ({"height": 4320, "width": 7680, "step": 7680 * 3}, "4096px"),
    ({"data_len": 5}, "bytes"),
])
def test_bad_frames_rejected_from_header(fields, match):
    msg = Image(height=4, width=4, encoding="rgb8", step=12)
    n = fields.pop("data_len", 48)
    for k, v in fields.items():
        setattr(msg, k, v)
    msg.data = array.array("B", bytes(n))
    with pytest.raises(InputError, match=match):
        conv.image_to_rgb(conv.parse_image_cdr(serialize_message(msg), False))


def test_truncated_cdr_rejected():
    data = serialize_message(conv.rgb_to_image(np.zeros((4, 4, 3), np.uint8), 0))
    with pytest.raises(InputError):
        conv.parse_image_cdr(data[:30], False)
    with pytest.raises(InputError):
        conv.parse_image_cdr(b"\x07", False)


def test_pose_and_ee_delta_and_routing():
    pose = conv.Pose.from_arrays((0.1, 0.2, 0.3), (0.0, 0.0, 0.0, 1.0))
    back = conv.pose_from_msg(conv.pose_to_msg(pose, 5, "base"))
    np.testing.assert_allclose(back.position, pose.position)
    np.testing.assert_allclose(back.quaternion, pose.quaternion)
    d = np.array([0.001, 0, 0, 0, 0, 0.01, 1.0])
    msg = conv.ee_delta_to_msg(d, "teleop")
    out, source = conv.ee_delta_from_msg(msg)
    np.testing.assert_allclose(out, d)
    assert source == "teleop" == msg.layout.dim[0].label
    hold = conv.ee_delta_to_msg(np.array([0, 0, 0, 0, 0, 0, np.nan]), "hold")  # no gripper command yet
    assert np.isfinite(hold.data).all()
    with pytest.raises(InputError):
        conv.ee_delta_to_msg(d, "autopilot")
    # same convention as the bag schema (rosbags side)
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    rb = ts.deserialize_cdr(bytes(serialize_message(msg)), "std_msgs/msg/Float64MultiArray")
    np.testing.assert_allclose(decode_ee_delta(rb)[0], d)
    routing = RoutingDecision((0, 2), np.array([0.9, 0.1, 0.8]), 3)
    layers, probs = conv.routing_from_msg(conv.routing_to_msg(routing))
    assert layers == (0, 2)
    np.testing.assert_allclose(probs, [0.9, 0.1, 0.8], rtol=1e-6)
