"""The wrist camera's calibration: intrinsics (what CameraInfo carries), mount extrinsics, pipeline latency.

Intrinsics come from a `camera_calibration_parsers` YAML (what `ros2 run camera_calibration cameracalibrator`
saves: image_width/height, camera_name, camera_matrix, distortion_model, distortion_coefficients,
rectification_matrix, projection_matrix, each matrix as {rows, cols, data}), or, uncalibrated, from a
horizontal field of view as an ideal pinhole with square pixels and the principal point at the image centre.

The latency is the time from exposure to `read()` returning on the host. A webcam-mode GoPro adds 0.5-0.7 s
of encoding and streaming; frames are stamped `read time - latency` so the controller sees capture time.
`estimate_latency` measures it from a screen that flips dark/bright at known host times while the camera
watches it (scripts/camera_latency_probe.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mole_inference.errors import ConfigError

DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant", "")


@dataclass(frozen=True)
class CameraIntrinsics:
    """Fields of sensor_msgs/CameraInfo, row-major: k (9), d, r (9), p (12)."""

    width: int
    height: int
    k: tuple[float, ...]
    d: tuple[float, ...]
    r: tuple[float, ...]
    p: tuple[float, ...]
    distortion_model: str = "plumb_bob"
    camera_name: str = ""

    def __post_init__(self) -> None:
        for name, n in (("k", 9), ("r", 9), ("p", 12)):
            if len(getattr(self, name)) != n:
                raise ConfigError(f"camera intrinsics: {name} needs {n} values, got {len(getattr(self, name))}")
        if self.width <= 0 or self.height <= 0:
            raise ConfigError(f"camera intrinsics: image size must be positive, got {self.width}x{self.height}")
        if self.distortion_model not in DISTORTION_MODELS:
            raise ConfigError(
                f"camera intrinsics: distortion_model {self.distortion_model!r} not in {DISTORTION_MODELS}"
            )


def pinhole_from_fov(width: int, height: int, horizontal_fov_deg: float) -> CameraIntrinsics:
    """An uncalibrated ideal pinhole: fx = fy = (width / 2) / tan(hfov / 2), centre principal point, no distortion."""
    if not 0.0 < horizontal_fov_deg < 180.0:
        raise ConfigError(f"horizontal_fov_deg must be in (0, 180), got {horizontal_fov_deg}")
    f = (width / 2.0) / math.tan(math.radians(horizontal_fov_deg) / 2.0)
    cx, cy = width / 2.0, height / 2.0
    return CameraIntrinsics(
        width=width,
        height=height,
        k=(f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0),
        d=(0.0, 0.0, 0.0, 0.0, 0.0),
        r=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        p=(f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0),
        distortion_model="plumb_bob",
    )


def _matrix(doc: dict[str, Any], key: str, rows: int, cols: int | None, path: Path) -> tuple[float, ...]:
    block = doc.get(key)
    if not isinstance(block, dict) or "data" not in block:
        raise ConfigError(f"{path}: '{key}' must be a mapping with rows, cols, data")
    data = [float(v) for v in block["data"]]
    want_cols = cols if cols is not None else len(data)
    if (
        int(block.get("rows", rows)) != rows
        or int(block.get("cols", want_cols)) != want_cols
        or len(data) != rows * want_cols
    ):
        raise ConfigError(
            f"{path}: '{key}' must be {rows}x{want_cols}, got rows={block.get('rows')} "
            f"cols={block.get('cols')} with {len(data)} values"
        )
    return tuple(data)


def load_calibration(path: str | Path) -> CameraIntrinsics:
    """Read a camera_calibration_parsers YAML file; ConfigError names the file and the bad key."""
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"calibration_file {str(path)!r} does not exist")
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: not a camera_calibration_parsers YAML mapping")
    try:
        width, height = int(doc["image_width"]), int(doc["image_height"])
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{path}: image_width and image_height are required integers ({err})") from None
    return CameraIntrinsics(
        width=width,
        height=height,
        k=_matrix(doc, "camera_matrix", 3, 3, path),
        d=_matrix(doc, "distortion_coefficients", 1, None, path),
        r=_matrix(doc, "rectification_matrix", 3, 3, path),
        p=_matrix(doc, "projection_matrix", 3, 4, path),
        distortion_model=str(doc.get("distortion_model", "plumb_bob")),
        camera_name=str(doc.get("camera_name", "")),
    )


def quaternion_from_rpy(roll: float, pitch: float, yaw: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) of R = Rz(yaw) Ry(pitch) Rx(roll), the convention of tf2 and URDF `rpy`."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return (
        sr * cp * cy - cr * sp * sy,
        cr * sp * cy + sr * cp * sy,
        cr * cp * sy - sr * sp * cy,
        cr * cp * cy + sr * sp * sy,
    )


def estimate_latency(flip_times: Any, frame_times: Any, brightness: Any, threshold: float | None = None) -> float:
    """Median seconds from each screen flip (host time it was shown) to the first frame read after it whose
    brightness crossed to the flipped side; flips with no answering frame are skipped.

    `flip_times[i]` is when the screen switched to bright for even i and to dark for odd i; `frame_times` and
    `brightness` (mean grey level) describe each frame read, at the host time `read()` returned.
    """
    flips = np.asarray(flip_times, dtype=np.float64)
    t = np.asarray(frame_times, dtype=np.float64)
    b = np.asarray(brightness, dtype=np.float64)
    if t.shape != b.shape or t.ndim != 1 or len(t) < 2:
        raise ConfigError("estimate_latency needs matching 1-D frame_times and brightness (>= 2 frames)")
    level = float(threshold) if threshold is not None else 0.5 * (float(b.min()) + float(b.max()))
    bright = b > level
    delays = []
    for i, flip in enumerate(flips):
        want_bright = i % 2 == 0
        after = np.flatnonzero((t >= flip) & (bright == want_bright))
        if after.size:
            delays.append(t[after[0]] - flip)
    if not delays:
        raise ConfigError("no frame answered any flip: is the camera looking at the flashing window?")
    return float(np.median(delays))
