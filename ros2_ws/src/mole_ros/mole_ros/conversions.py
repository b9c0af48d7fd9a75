"""The one place where ROS messages become numpy arrays and back (rclpy message classes, no node logic).

Camera frames are taken serialized (`raw=True` subscriptions) and parsed here (`parse_image_cdr`): only the
header fields become Python objects and the pixels are viewed in place with numpy, because building an rclpy
Image holds the GIL for ~0.2 s for an 8K frame, which would stall the control timer of the same process.
Image checks run on the header fields first, so a malformed frame (unknown encoding, zero size, a `step` that
does not match the width, more bytes claimed than sent, an 8K frame) is rejected in O(1) before any pixel is
touched. The `/mole/ee_delta` encoding (Float64MultiArray, `layout.dim[0].label` = source) follows
`mole_inference.data.schema`, which validates it; the gripper width mapping follows the FR3 hand
(1 = open = `open_width` metres, 0 = closed).
"""

from __future__ import annotations

import array
import importlib
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped, TwistStamped
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float32MultiArray, Float64MultiArray, MultiArrayDimension

from mole_inference.control import Command, Pose
from mole_inference.data.schema import EE_DELTA_DIM, validate_ee_delta
from mole_inference.errors import InputError
from mole_inference.policy.contract import RoutingDecision
from mole_inference.policy.processing import MAX_IMAGE_SIDE

# encoding -> (bytes per pixel, channel order that turns the stored channels into RGB)
RAW_ENCODINGS: dict[str, tuple[int, tuple[int, int, int]]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")


# ---------------------------------------------------------------- time
def stamp_to_ns(stamp: Time) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def stamp_to_sec(stamp: Time) -> float:
    """builtin_interfaces/Time -> float seconds (the ControlLoop's time base)."""
    return int(stamp.sec) + int(stamp.nanosec) * 1e-9


def ns_to_stamp(t_ns: int) -> Time:
    """Integer nanoseconds -> builtin_interfaces/Time."""
    return Time(sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)


# ---------------------------------------------------------------- images
@dataclass(frozen=True)
class RawImage:
    """A serialized Image or CompressedImage: header fields parsed, pixel bytes left in the CDR buffer."""

    compressed: bool
    stamp_ns: int
    frame_id: str
    height: int = 0
    width: int = 0
    encoding: str = ""
    step: int = 0
    format: str = ""
    data: memoryview = field(default_factory=lambda: memoryview(b""))


class _Cdr:
    """Minimal XCDR1 reader (ROS 2's default serialization) for the few field kinds an image header uses."""

    def __init__(self, buf: bytes) -> None:
        if len(buf) < 4 or buf[1] not in (0, 1):
            raise InputError(f"not a CDR-serialized message ({len(buf)} bytes)")
        self.buf, self.view, self.pos = buf, memoryview(buf), 4
        self.fmt = "<" if buf[1] == 1 else ">"

    def _align(self, n: int) -> None:
        self.pos += (-(self.pos - 4)) % n

    def u32(self) -> int:
        self._align(4)
        if self.pos + 4 > len(self.buf):
            raise InputError("truncated CDR message")
        (value,) = struct.unpack_from(self.fmt + "I", self.buf, self.pos)
        self.pos += 4
        return value

    def u8(self) -> int:
        if self.pos >= len(self.buf):
            raise InputError("truncated CDR message")
        self.pos += 1
        return self.buf[self.pos - 1]

    def string(self) -> str:
        n = self.u32()
        if n > 4096 or self.pos + n > len(self.buf):
            raise InputError(f"CDR string of {n} bytes does not fit the message")
        text = bytes(self.view[self.pos:self.pos + max(0, n - 1)]).decode("utf-8", "replace")
        self.pos += n
        return text

    def octets(self) -> memoryview:
        n = self.u32()
        if self.pos + n > len(self.buf):
            raise InputError(f"CDR sequence claims {n} bytes, message has {len(self.buf) - self.pos}")
        self.pos += n
        return self.view[self.pos - n:self.pos]


def parse_image_cdr(buf: bytes, compressed: bool) -> RawImage:
    """Parse a serialized sensor_msgs Image (or CompressedImage) without copying its pixels."""
    r = _Cdr(buf)
    sec, nanosec = r.u32(), r.u32()
    sec = sec - (1 << 32) if sec >= 1 << 31 else sec  # int32
    frame_id = r.string()
    stamp_ns = sec * 1_000_000_000 + nanosec
    if compressed:
        fmt = r.string()
        return RawImage(True, stamp_ns, frame_id, format=fmt, data=r.octets())
    height, width = r.u32(), r.u32()
    encoding = r.string()
    r.u8()  # is_bigendian: irrelevant for 8-bit encodings
    step = r.u32()
    return RawImage(False, stamp_ns, frame_id, height, width, encoding, step, data=r.octets())


def _is_compressed(msg: Any) -> bool:
    return isinstance(msg, CompressedImage) or getattr(msg, "compressed", False) is True


def check_image_msg(msg: Image | CompressedImage | RawImage, max_side: int = MAX_IMAGE_SIDE) -> None:
    """Raise InputError if the frame cannot be used; looks only at header fields (cheap, any thread)."""
    if _is_compressed(msg):
        fmt = msg.format.lower()
        if not any(f in fmt for f in COMPRESSED_FORMATS):
            raise InputError(f"CompressedImage format {msg.format!r} unsupported; expected jpeg or png")
        if len(msg.data) == 0:
            raise InputError("CompressedImage has no data")
        return
    if msg.encoding not in RAW_ENCODINGS:
        raise InputError(f"Image encoding {msg.encoding!r} unsupported; supported: {sorted(RAW_ENCODINGS)}")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h == 0 or w == 0:
        raise InputError(f"Image is empty ({w}x{h})")
    if max(h, w) > max_side:
        raise InputError(f"Image {w}x{h} exceeds the {max_side}px limit; downscale at the camera")
    bpp = RAW_ENCODINGS[msg.encoding][0]
    if step < w * bpp:
        raise InputError(f"Image step {step} < width {w} x {bpp} bytes ({msg.encoding})")
    if len(msg.data) != h * step:
        raise InputError(f"Image {w}x{h} step={step} needs {h * step} bytes, got {len(msg.data)}")


def image_to_rgb(msg: Image | CompressedImage | RawImage, max_side: int = MAX_IMAGE_SIDE) -> np.ndarray:
    """Checked Image (rgb8/bgr8/rgba8/bgra8/mono8) or CompressedImage (or their RawImage) -> RGB uint8 (H, W, 3)."""
    check_image_msg(msg, max_side)
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if _is_compressed(msg):
        import cv2

        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"could not decode CompressedImage ({msg.format}, {data.size} bytes)")
        if max(bgr.shape[:2]) > max_side:
            raise InputError(f"CompressedImage {bgr.shape[1]}x{bgr.shape[0]} exceeds the {max_side}px limit")
        return np.ascontiguousarray(bgr[:, :, ::-1])
    bpp, order = RAW_ENCODINGS[msg.encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    rows = data.reshape(h, step)[:, : w * bpp].reshape(h, w, bpp)  # drops row padding
    if order == (0, 1, 2) and bpp == 3:
        return rows.copy()  # the message buffer may be reused by rclpy
    return np.ascontiguousarray(rows[:, :, list(order)])  # (H, W, 3)


def rgb_to_image(rgb: np.ndarray, t_ns: int, frame_id: str = "", encoding: str = "rgb8") -> Image:
    """RGB uint8 (H, W, 3) -> sensor_msgs/Image in `encoding` "rgb8" or "bgr8", stamped `t_ns`."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"expected uint8 (H, W, 3) RGB, got {rgb.dtype} {rgb.shape}")
    if encoding not in ("rgb8", "bgr8"):
        raise InputError(f"encoding must be 'rgb8' or 'bgr8', got {encoding!r}")
    pixels = rgb if encoding == "rgb8" else rgb[:, :, ::-1]
    h, w = rgb.shape[:2]
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=w * 3)
    msg.header.stamp = ns_to_stamp(t_ns)
    msg.header.frame_id = frame_id
    msg.data = array.array("B", np.ascontiguousarray(pixels).tobytes())
    return msg


def bgr_to_image(bgr: np.ndarray, t_ns: int, frame_id: str = "") -> Image:
    """OpenCV BGR uint8 (H, W, 3) -> sensor_msgs/Image "bgr8" without a colour conversion (camera node)."""
    h, w = bgr.shape[:2]
    msg = Image(height=h, width=w, encoding="bgr8", is_bigendian=0, step=w * 3)
    msg.header.stamp = ns_to_stamp(t_ns)
    msg.header.frame_id = frame_id
    msg.data = array.array("B", np.ascontiguousarray(bgr).tobytes())
    return msg


# ---------------------------------------------------------------- poses and commands
def pose_from_msg(msg: PoseStamped) -> Pose:
    """PoseStamped -> control Pose (position (3,), quaternion xyzw (4,)); validity is the envelope's job."""
    p, q = msg.pose.position, msg.pose.orientation
    return Pose.from_arrays((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))


def pose_to_msg(pose: Pose, t_ns: int, frame_id: str) -> PoseStamped:
    """Control Pose -> PoseStamped stamped `t_ns` in `frame_id`."""
    msg = PoseStamped()
    msg.header.stamp = ns_to_stamp(t_ns)
    msg.header.frame_id = frame_id
    x, y, z = (float(v) for v in pose.position)
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = x, y, z
    qx, qy, qz, qw = (float(v) for v in pose.quaternion)
    o = msg.pose.orientation
    o.x, o.y, o.z, o.w = qx, qy, qz, qw
    return msg


def command_to_pose(cmd: Command, t_ns: int, frame_id: str) -> PoseStamped:
    """The target pose of a Command (hold: the measured pose)."""
    return pose_to_msg(cmd.pose, t_ns, frame_id)


def command_to_twist(cmd: Command, dt: float, t_ns: int, frame_id: str) -> TwistStamped:
    """The applied delta of a Command as a base-frame velocity (delta / dt); zero when holding."""
    msg = TwistStamped()
    msg.header.stamp = ns_to_stamp(t_ns)
    msg.header.frame_id = frame_id
    if cmd.is_hold:
        return msg
    v = [float(x) / dt for x in cmd.delta[:6]]
    msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = v[0], v[1], v[2]
    msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = v[3], v[4], v[5]
    return msg


def gripper_width(command: float, open_width: float) -> float:
    """Absolute gripper command (1 = open, 0 = closed) -> finger width in metres."""
    return float(min(1.0, max(0.0, command)) * open_width)


# ---------------------------------------------------------------- ee delta and teleop
def ee_delta_to_msg(delta: np.ndarray, source: str) -> Float64MultiArray:
    """(7,) delta + source -> Float64MultiArray as in `mole_inference.data.schema` (label = source).

    A hold command's gripper is NaN when no gripper command was ever sent; it travels as the last
    command or 1.0 (open) so the message stays finite (the schema rejects NaN).
    """
    d = np.array(delta, dtype=np.float64)
    if not math.isfinite(d[6]):
        d[6] = 1.0
    arr = validate_ee_delta(d, source)
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=source, size=EE_DELTA_DIM, stride=EE_DELTA_DIM)]
    msg.data = array.array("d", arr.tobytes())
    return msg


def ee_delta_from_msg(msg: Float64MultiArray) -> tuple[np.ndarray, str]:
    """Float64MultiArray -> ((7,) delta, source); InputError when malformed."""
    if not msg.layout.dim:
        raise InputError("ee_delta message has no layout.dim[0] carrying its source")
    source = msg.layout.dim[0].label
    return validate_ee_delta(np.frombuffer(msg.data, dtype=np.float64), source), source


def twist_to_vector(linear: Any, angular: Any) -> np.ndarray:
    """geometry_msgs Vector3 pair -> (6,) [vx, vy, vz, wx, wy, wz]."""
    return np.array([linear.x, linear.y, linear.z, angular.x, angular.y, angular.z], dtype=np.float64)


# ---------------------------------------------------------------- routing
def routing_to_msg(routing: RoutingDecision) -> Float32MultiArray:
    """RoutingDecision -> Float32MultiArray (2, K): row 0 = 1.0 where the layer ran, row 1 = router probs.

    A numeric 2-D array (not JSON) so rqt_plot / PlotJuggler can plot per-layer usage and probabilities and
    bags keep a fixed-size record; inference timings go to /diagnostics.
    """
    k = int(routing.total_layers)
    mask = np.zeros(k, dtype=np.float32)
    mask[list(routing.layers)] = 1.0
    probs = np.zeros(k, dtype=np.float32)
    p = np.asarray(routing.probs, dtype=np.float32).reshape(-1)[:k]
    probs[: p.size] = p
    msg = Float32MultiArray()
    msg.layout.dim = [MultiArrayDimension(label="ran,probs", size=2, stride=2 * k),
                      MultiArrayDimension(label="layer", size=k, stride=k)]
    msg.data = array.array("f", np.concatenate([mask, probs]).tobytes())
    return msg


def routing_from_msg(msg: Float32MultiArray) -> tuple[tuple[int, ...], np.ndarray]:
    """Float32MultiArray from `routing_to_msg` -> (layers that ran, probs (K,))."""
    data = np.frombuffer(msg.data, dtype=np.float32)
    k = data.size // 2
    return tuple(int(i) for i in np.flatnonzero(data[:k] > 0.5)), data[k:].astype(np.float64)


# ---------------------------------------------------------------- misc
def msg_class(msgtype: str) -> type:
    """'sensor_msgs/msg/Image' -> the rclpy message class (ImportError if the package is missing)."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
