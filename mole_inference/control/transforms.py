"""Poses and quaternion helpers in plain numpy (quaternions are [x, y, z, w], Hamilton, unit).

Rotation deltas `[droll, dpitch, dyaw]` are fixed-axis (extrinsic) X-Y-Z angles about the robot base frame:
R_delta = Rz(dyaw) @ Ry(dpitch) @ Rx(droll), applied on the left: R_new = R_delta @ R_current.
Functions take small arrays and use scalar math so a control tick stays in microseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_SMALL = 1e-12


@dataclass(frozen=True)
class Pose:
    """End-effector pose in the robot base frame: position (3,) in metres, quaternion (4,) xyzw."""

    position: np.ndarray  # (3,)
    quaternion: np.ndarray  # (4,) xyzw

    @classmethod
    def from_arrays(cls, position: object, quaternion: object) -> Pose:
        """Build a Pose from anything array-like, as float64 copies (not validated: see `is_valid`)."""
        return cls(np.array(position, dtype=np.float64).reshape(3),
                   np.array(quaternion, dtype=np.float64).reshape(4))

    def is_valid(self) -> bool:
        """True when every value is finite and the quaternion is close enough to unit length to normalize."""
        if not (np.isfinite(self.position).all() and np.isfinite(self.quaternion).all()):
            return False
        return abs(float(np.dot(self.quaternion, self.quaternion)) - 1.0) < 0.1


def quat_normalize(q: np.ndarray) -> np.ndarray:
    """Unit quaternion with w >= 0 (same rotation; a canonical sign keeps comparisons simple)."""
    x, y, z, w = (float(v) for v in q)
    n = math.sqrt(x * x + y * y + z * z + w * w)
    if n < _SMALL:
        raise ValueError(f"cannot normalize a zero quaternion {q!r}")
    s = 1.0 / n if w >= 0.0 else -1.0 / n
    return np.array([x * s, y * s, z * s, w * s])


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b (rotation b first, then a)."""
    ax, ay, az, aw = (float(v) for v in a)
    bx, by, bz, bw = (float(v) for v in b)
    return np.array([
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    ])


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    """Inverse of a unit quaternion."""
    return np.array([-q[0], -q[1], -q[2], q[3]], dtype=np.float64)


def quat_from_rotvec(v: np.ndarray) -> np.ndarray:
    """Quaternion of the rotation by angle |v| about axis v/|v| (axis-angle vector)."""
    x, y, z = (float(c) for c in v)
    angle = math.sqrt(x * x + y * y + z * z)
    # sin(a/2)/a -> 1/2 - a^2/48 as a -> 0: exact enough below 1e-6 rad
    s = math.sin(0.5 * angle) / angle if angle > 1e-6 else 0.5 - angle * angle / 48.0
    return np.array([x * s, y * s, z * s, math.cos(0.5 * angle)])


def quat_to_rotvec(q: np.ndarray) -> np.ndarray:
    """Axis-angle vector of a unit quaternion, angle in [0, pi]."""
    x, y, z, w = (float(v) for v in q)
    if w < 0.0:
        x, y, z, w = -x, -y, -z, -w
    sin_half = math.sqrt(x * x + y * y + z * z)
    angle = 2.0 * math.atan2(sin_half, w)
    s = angle / sin_half if sin_half > 1e-9 else 2.0 / max(w, _SMALL)
    return np.array([x * s, y * s, z * s])


def quat_angle(q: np.ndarray) -> float:
    """Rotation angle of a unit quaternion, in [0, pi]."""
    x, y, z, w = (float(v) for v in q)
    return 2.0 * math.atan2(math.sqrt(x * x + y * y + z * z), abs(w))


def quat_from_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Quaternion of R = Rz(yaw) @ Ry(pitch) @ Rx(roll) (fixed axes X, then Y, then Z)."""
    cr, sr = math.cos(0.5 * roll), math.sin(0.5 * roll)
    cp, sp = math.cos(0.5 * pitch), math.sin(0.5 * pitch)
    cy, sy = math.cos(0.5 * yaw), math.sin(0.5 * yaw)
    return np.array([
        sr * cp * cy - cr * sp * sy,
        cr * sp * cy + sr * cp * sy,
        cr * cp * sy - sr * sp * cy,
        cr * cp * cy + sr * sp * sy,
    ])


def quat_to_rpy(q: np.ndarray) -> np.ndarray:
    """Inverse of `quat_from_rpy`: [roll, pitch, yaw] with pitch in [-pi/2, pi/2]."""
    x, y, z, w = (float(v) for v in q)
    roll = math.atan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2.0 * (w * y - z * x))))
    yaw = math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    return np.array([roll, pitch, yaw])


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix of a unit quaternion."""
    x, y, z, w = (float(v) for v in q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


# -- rotation matrices (the same conventions: R = Rz(yaw) @ Ry(pitch) @ Rx(roll), quaternions xyzw) --------------
def rpy_to_matrix(rpy: np.ndarray) -> np.ndarray:
    """Rotation matrix Rz(yaw) @ Ry(pitch) @ Rx(roll) from [roll, pitch, yaw] in radians."""
    r, p, y = (float(v) for v in rpy)
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


def matrix_to_rpy(rot: np.ndarray) -> np.ndarray:
    """Inverse of `rpy_to_matrix`: [roll, pitch, yaw] with pitch in [-pi/2, pi/2]."""
    pitch = math.asin(max(-1.0, min(1.0, -float(rot[2, 0]))))
    roll = math.atan2(float(rot[2, 1]), float(rot[2, 2]))
    yaw = math.atan2(float(rot[1, 0]), float(rot[0, 0]))
    return np.array([roll, pitch, yaw])


def matrix_to_quat(rot: np.ndarray) -> np.ndarray:
    """Unit quaternion [x, y, z, w] (w >= 0) of a rotation matrix (Shepperd's method, stable for any angle)."""
    m = np.asarray(rot, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    return quat_normalize(np.array(q))


def matrix_to_rotvec(rot: np.ndarray) -> np.ndarray:
    """Axis * angle (radians, angle in [0, pi]) of a rotation matrix; the orientation error term of the IK."""
    cos = max(-1.0, min(1.0, (float(np.trace(rot)) - 1.0) / 2.0))
    angle = math.acos(cos)
    axis = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]], dtype=np.float64)
    if angle < 1e-6:
        return 0.5 * axis
    if math.pi - angle < 1e-4:
        # Near 180 degrees the antisymmetric part vanishes; take the axis from the symmetric part.
        axis = np.sqrt(np.clip((np.diag(rot) + 1.0) / 2.0, 0.0, None))
        k = int(np.argmax(axis))
        signs = np.sign(rot[k] + rot[:, k])
        signs[k] = 1.0
        return angle * axis * signs
    return angle * axis / (2.0 * math.sin(angle))


def rotvec_to_matrix(v: np.ndarray) -> np.ndarray:
    """Rotation matrix of an axis * angle vector (Rodrigues)."""
    angle = float(np.linalg.norm(v))
    if angle < _SMALL:
        return np.eye(3)
    k = np.asarray(v, dtype=np.float64) / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(angle) * kx + (1.0 - math.cos(angle)) * kx @ kx


def wrap_angle(angle: float) -> float:
    """Angle wrapped to [-pi, pi)."""
    return float((angle + math.pi) % (2 * math.pi) - math.pi)


def normalize_rotation_delta(angles: np.ndarray) -> np.ndarray:
    """Rotation delta angles (any shape) as the equivalent angles in [-pi, pi]: a new array.

    Angles already in [-pi, pi] (both ends included) are returned unchanged, so +pi never flips to -pi;
    a yaw delta of 2*pi - 0.1 becomes -0.1, the rotation it describes. Scale or average rotation deltas only
    after this: 0.2 * (2*pi - 0.1) is a large turn the other way round.
    """
    a = np.array(angles, dtype=np.float64)
    outside = np.abs(a) > math.pi
    if outside.any():
        a[outside] = (a[outside] + math.pi) % (2 * math.pi) - math.pi
    return a
