"""Rotation helpers: pure numpy, no MuJoCo needed."""

from __future__ import annotations

import numpy as np

from mole_inference.sim.rotations import (
    axis_angle_to_matrix,
    matrix_to_quat_xyzw,
    matrix_to_rpy,
    quat_xyzw_to_matrix,
    rotation_vector,
    rpy_to_matrix,
)


def test_rpy_is_fixed_axis_xyz():
    roll, pitch, yaw = 0.3, -0.2, 0.7
    expected = axis_angle_to_matrix([0, 0, yaw]) @ axis_angle_to_matrix([0, pitch, 0]) @ axis_angle_to_matrix(
        [roll, 0, 0])
    np.testing.assert_allclose(rpy_to_matrix([roll, pitch, yaw]), expected, atol=1e-12)
    np.testing.assert_allclose(matrix_to_rpy(expected), [roll, pitch, yaw], atol=1e-12)


def test_round_trips():
    rng = np.random.default_rng(0)
    for _ in range(50):
        rotvec = rng.normal(size=3)
        rotvec *= rng.uniform(0, 3.1) / np.linalg.norm(rotvec)
        rot = axis_angle_to_matrix(rotvec)
        np.testing.assert_allclose(rotation_vector(rot), rotvec, atol=1e-6)
        np.testing.assert_allclose(quat_xyzw_to_matrix(matrix_to_quat_xyzw(rot)), rot, atol=1e-9)


def test_pointing_down_quaternion():
    np.testing.assert_allclose(matrix_to_quat_xyzw(np.diag([1.0, -1.0, -1.0])), [1, 0, 0, 0], atol=1e-12)
