"""Camera calibration: camera_calibration_parsers YAML, uncalibrated pinhole, URDF rpy, latency estimate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mole_inference.data.camera_calibration import (
    estimate_latency,
    load_calibration,
    pinhole_from_fov,
    quaternion_from_rpy,
)
from mole_inference.errors import ConfigError

CALIBRATION = """\
image_width: 640
image_height: 480
camera_name: gopro
camera_matrix:
  rows: 3
  cols: 3
  data: [400.0, 0.0, 321.5, 0.0, 401.0, 239.5, 0.0, 0.0, 1.0]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [-0.1, 0.01, 0.0, 0.0, 0.0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
projection_matrix:
  rows: 3
  cols: 4
  data: [395.0, 0.0, 321.0, 0.0, 0.0, 396.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0]
"""


def test_load_calibration_yaml(tmp_path):
    path = tmp_path / "gopro.yaml"
    path.write_text(CALIBRATION)
    cal = load_calibration(path)
    assert (cal.width, cal.height, cal.camera_name, cal.distortion_model) == (640, 480, "gopro", "plumb_bob")
    assert cal.k[0] == 400.0 and cal.k[2] == 321.5 and len(cal.d) == 5 and cal.p[0] == 395.0


def test_bad_calibration_names_the_file_and_key(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_calibration(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(CALIBRATION.replace("cols: 4", "cols: 3"))
    with pytest.raises(ConfigError, match="projection_matrix"):
        load_calibration(bad)


def test_pinhole_from_fov():
    cal = pinhole_from_fov(640, 480, 90.0)
    assert cal.k[0] == pytest.approx(320.0) and cal.k[4] == pytest.approx(320.0)  # tan(45 deg) = 1
    assert (cal.k[2], cal.k[5]) == (320.0, 240.0) and cal.p[3] == 0.0 and not any(cal.d)
    with pytest.raises(ConfigError, match="horizontal_fov_deg"):
        pinhole_from_fov(640, 480, 180.0)


def test_quaternion_from_rpy_matches_urdf_convention():
    assert quaternion_from_rpy(0, 0, 0) == pytest.approx((0, 0, 0, 1))
    s = math.sin(math.pi / 4)
    assert quaternion_from_rpy(0, 0, math.pi / 2) == pytest.approx((0, 0, s, s))
    # R = Rz(yaw) Ry(pitch) Rx(roll): roll then pitch about fixed axes
    x, y, z, w = quaternion_from_rpy(math.pi / 2, math.pi / 2, 0)
    assert (x, y, z, w) == pytest.approx((0.5, 0.5, -0.5, 0.5))


def test_estimate_latency_from_a_flashing_screen():
    rng = np.random.default_rng(0)
    flips = np.arange(10) * 2.0 + 1.0  # bright at 1, dark at 3, ...
    t = np.arange(0, 22, 1 / 30)  # read() times at 30 fps
    shown = t - 0.6  # what the sensor saw: the screen 0.6 s earlier
    bright = np.searchsorted(flips, shown, side="right") % 2 == 1
    brightness = np.where(bright, 200.0, 20.0) + rng.normal(0, 3, t.size)
    assert estimate_latency(flips, t, brightness) == pytest.approx(0.6, abs=1 / 30)
    with pytest.raises(ConfigError, match="no frame answered"):
        estimate_latency([100.0], t, brightness)
