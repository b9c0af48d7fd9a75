"""sensor_msgs Image / CompressedImage <-> RGB uint8 numpy arrays (H, W, 3), and header stamps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mole_inference.data.schema import COMPRESSED_IMAGE_TYPE, IMAGE_TYPE, default_typestore
from mole_inference.errors import InputError

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

# encoding -> (channels, index order that turns the stored channels into RGB)
_RAW_ENCODINGS: dict[str, tuple[int, list[int]]] = {
    "rgb8": (3, [0, 1, 2]),
    "bgr8": (3, [2, 1, 0]),
    "rgba8": (4, [0, 1, 2]),
    "bgra8": (4, [2, 1, 0]),
    "mono8": (1, [0, 0, 0]),
}


def header(t_ns: int, frame_id: str = "", typestore: Typestore | None = None) -> Any:
    """A std_msgs/msg/Header stamped `t_ns` (nanoseconds since epoch)."""
    ts = typestore or default_typestore()
    stamp = ts.types["builtin_interfaces/msg/Time"](sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)
    return ts.types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def stamp_ns(msg: Any) -> int:
    """The header stamp of a stamped message in nanoseconds."""
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"image must be uint8 (H, W, 3) RGB, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr)


def rgb_to_image_msg(
    rgb: np.ndarray, t_ns: int, frame_id: str = "", encoding: str = "rgb8", typestore: Typestore | None = None
) -> Any:
    """Build a sensor_msgs/msg/Image (encoding "rgb8" or "bgr8") from an RGB array."""
    arr = _check_rgb(rgb)
    if encoding not in ("rgb8", "bgr8"):
        raise InputError(f"encoding must be 'rgb8' or 'bgr8', got {encoding!r}")
    if encoding == "bgr8":
        arr = np.ascontiguousarray(arr[:, :, ::-1])
    h, w, _ = arr.shape
    ts = typestore or default_typestore()
    return ts.types[IMAGE_TYPE](
        header=header(t_ns, frame_id, ts),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=w * 3,
        data=arr.reshape(-1),
    )


def rgb_to_compressed_msg(
    rgb: np.ndarray,
    t_ns: int,
    frame_id: str = "",
    fmt: str = "jpeg",
    quality: int = 90,
    typestore: Typestore | None = None,
) -> Any:
    """Build a sensor_msgs/msg/CompressedImage ("jpeg" or "png") from an RGB array."""
    import cv2

    arr = _check_rgb(rgb)
    if fmt not in ("jpeg", "png"):
        raise InputError(f"compressed format must be 'jpeg' or 'png', got {fmt!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else []
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", arr[:, :, ::-1], params)
    if not ok:
        raise InputError(f"cv2 could not encode a {arr.shape} image as {fmt}")
    ts = typestore or default_typestore()
    return ts.types[COMPRESSED_IMAGE_TYPE](header=header(t_ns, frame_id, ts), format=fmt, data=buf.reshape(-1))


def decode_image(msg: Any) -> np.ndarray:
    """Decode an Image (rgb8/bgr8/rgba8/bgra8/mono8) or CompressedImage (jpeg/png) to RGB uint8 (H, W, 3)."""
    if msg.__msgtype__ == COMPRESSED_IMAGE_TYPE:
        return _decode_compressed(msg)
    if msg.__msgtype__ != IMAGE_TYPE:
        raise InputError(f"not an image message: {msg.__msgtype__}")
    if msg.encoding not in _RAW_ENCODINGS:
        raise InputError(f"unsupported Image encoding {msg.encoding!r}; supported: {sorted(_RAW_ENCODINGS)}")
    channels, order = _RAW_ENCODINGS[msg.encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    if step < w * channels or data.size < h * step:
        raise InputError(f"Image {w}x{h} {msg.encoding} step={step} has only {data.size} bytes")
    rows = data[: h * step].reshape(h, step)[:, : w * channels]  # drops row padding
    return np.ascontiguousarray(rows.reshape(h, w, channels)[:, :, order])  # (H, W, 3)


def _decode_compressed(msg: Any) -> np.ndarray:
    import cv2

    buf = np.asarray(msg.data, dtype=np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if bgr is None:
        raise InputError(f"cv2 could not decode CompressedImage with format {msg.format!r} ({buf.size} bytes)")
    return np.ascontiguousarray(bgr[:, :, ::-1])  # (H, W, 3) RGB
