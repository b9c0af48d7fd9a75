"""The robot state a `vision.state_input` model reads with each image (model/state_input.py), without torch: the
ROS node, the worker proxy and the sim build and check it here.

    state = [x, y, z, qx, qy, qz, qw]   the measured end-effector pose: metres, robot base frame, quaternion xyzw
"""

from __future__ import annotations

import numpy as np

from mole_inference.errors import InputError

STATE_DIM = 7  # x, y, z (m), qx, qy, qz, qw
STATE_FIELDS = ("x", "y", "z", "qx", "qy", "qz", "qw")


def check_state(state: np.ndarray | None, required: bool) -> np.ndarray | None:
    """A (7,) float32 copy of `state`, or None when the model does not read it.

    InputError (callers hold the robot) when the model needs a state and none, a wrong shape or a non-finite
    value came, or the quaternion is (near) zero.
    """
    if not required:
        return None
    if state is None:
        raise InputError("this model reads the robot state (vision.state_input): pass state=[x, y, z, qx, qy, qz, "
                         "qw] (the measured EE pose, m, base frame) with every image")
    try:
        arr = np.asarray(state, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"robot state must be {STATE_DIM} numbers {STATE_FIELDS}, got {state!r:.80}") from None
    if arr.shape != (STATE_DIM,):
        raise InputError(f"robot state must have {STATE_DIM} values {STATE_FIELDS}, got shape "
                         f"{np.shape(state)}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"robot state contains NaN or inf: {arr.tolist()}")
    if np.linalg.norm(arr[3:7]) < 1e-6:
        raise InputError("robot state quaternion is zero")
    return arr.astype(np.float32)


def make_state(pos: np.ndarray, quat_xyzw: np.ndarray) -> np.ndarray:
    """Pack a measured pose into the (7,) layout the model reads."""
    return np.concatenate([np.asarray(pos, float).reshape(3), np.asarray(quat_xyzw, float).reshape(4)])
