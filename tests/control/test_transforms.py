"""Quaternion helpers against independently built rotation matrices."""

import math

import numpy as np
import pytest

from mole_inference.control.transforms import (
    Pose,
    matrix_to_quat,
    matrix_to_rotvec,
    matrix_to_rpy,
    quat_angle,
    quat_conjugate,
    quat_from_rotvec,
    quat_from_rpy,
    quat_multiply,
    quat_normalize,
    quat_to_matrix,
    quat_to_rotvec,
    quat_to_rpy,
    rotvec_to_matrix,
    rpy_to_matrix,
    wrap_angle,
)


def rx(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def ry(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rz(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


@pytest.mark.parametrize("rpy", [(0.3, 0.0, 0.0), (0.0, -0.4, 0.0), (0.0, 0.0, 1.2), (0.2, -0.5, 2.5)])
def test_rpy_is_fixed_axis_xyz(rpy):
    r, p, y = rpy
    np.testing.assert_allclose(quat_to_matrix(quat_from_rpy(r, p, y)), rz(y) @ ry(p) @ rx(r), atol=1e-12)
    np.testing.assert_allclose(quat_to_rpy(quat_from_rpy(r, p, y)), rpy, atol=1e-12)


def test_multiply_composes_like_matrices():
    a, b = quat_from_rpy(0.1, 0.7, -0.3), quat_from_rpy(-1.0, 0.2, 0.4)
    np.testing.assert_allclose(quat_to_matrix(quat_multiply(a, b)), quat_to_matrix(a) @ quat_to_matrix(b),
                               atol=1e-12)
    np.testing.assert_allclose(quat_normalize(quat_multiply(a, quat_conjugate(a))), [0, 0, 0, 1], atol=1e-12)


@pytest.mark.parametrize("v", [(0.0, 0.0, 0.0), (1e-8, 0.0, -2e-8), (0.3, -0.2, 0.1), (0.0, 3.0, 0.0)])
def test_rotvec_round_trip_and_axis(v):
    v = np.array(v)
    q = quat_from_rotvec(v)
    np.testing.assert_allclose(quat_to_rotvec(q), v, atol=1e-12)
    assert quat_angle(q) == pytest.approx(np.linalg.norm(v), abs=1e-12)
    if np.linalg.norm(v) > 0:  # rotation about the axis leaves the axis fixed
        np.testing.assert_allclose(quat_to_matrix(q) @ v, v, atol=1e-12)


def test_rotvec_of_negated_quaternion_is_the_same_rotation():
    q = quat_from_rotvec(np.array([0.0, 0.0, 0.5]))
    np.testing.assert_allclose(quat_to_rotvec(-q), [0.0, 0.0, 0.5], atol=1e-12)


def test_normalize_rejects_zero_and_pose_validity():
    with pytest.raises(ValueError):
        quat_normalize(np.zeros(4))
    assert Pose.from_arrays([0.5, 0, 0.3], [0, 0, 0, 1]).is_valid()
    assert not Pose.from_arrays([np.nan, 0, 0.3], [0, 0, 0, 1]).is_valid()
    assert not Pose.from_arrays([0.5, 0, 0.3], [0, 0, 0, 2]).is_valid()


# -- matrix helpers (the sim's IK, expert and scene use these) ---------------------------------------------------
@pytest.mark.parametrize("rpy", [(0.3, 0.0, 0.0), (0.2, -0.5, 2.5), (-1.0, 1.2, -3.0)])
def test_matrix_rpy_matches_quaternion_rpy(rpy):
    r, p, y = rpy
    np.testing.assert_allclose(rpy_to_matrix(rpy), rz(y) @ ry(p) @ rx(r), atol=1e-12)
    np.testing.assert_allclose(matrix_to_rpy(rpy_to_matrix(rpy)), rpy, atol=1e-12)
    np.testing.assert_allclose(rpy_to_matrix(rpy), quat_to_matrix(quat_from_rpy(r, p, y)), atol=1e-12)


def test_matrix_round_trips():
    rng = np.random.default_rng(0)
    for _ in range(50):
        v = rng.normal(size=3)
        v *= rng.uniform(0, 3.1) / np.linalg.norm(v)
        rot = rotvec_to_matrix(v)
        np.testing.assert_allclose(rot, quat_to_matrix(quat_from_rotvec(v)), atol=1e-12)
        np.testing.assert_allclose(matrix_to_rotvec(rot), v, atol=1e-6)
        np.testing.assert_allclose(matrix_to_quat(rot), quat_normalize(quat_from_rotvec(v)), atol=1e-9)


def test_matrix_to_rotvec_near_pi_and_pointing_down():
    v = np.array([0.0, np.pi - 1e-6, 0.0])
    np.testing.assert_allclose(matrix_to_rotvec(rotvec_to_matrix(v)), v, atol=1e-5)
    np.testing.assert_allclose(matrix_to_quat(np.diag([1.0, -1.0, -1.0])), [1, 0, 0, 0], atol=1e-12)
    assert wrap_angle(3 * np.pi / 2) == pytest.approx(-np.pi / 2)
