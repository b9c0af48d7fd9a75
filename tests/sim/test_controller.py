"""EE-delta controller: DLS IK accuracy, tracking, and the documented meaning of each action axis."""

from __future__ import annotations

import numpy as np
import pytest

from tests.sim.conftest import missing_sim_reason

pytestmark = [pytest.mark.sim, pytest.mark.skipif(missing_sim_reason() is not None,
                                                  reason=str(missing_sim_reason()))]


@pytest.fixture()
def env(pick_env):
    pick_env.reset(seed=5, render=False)
    return pick_env


def _hold(gripper: float = 1.0) -> np.ndarray:
    return np.array([0, 0, 0, 0, 0, 0, gripper], dtype=float)


def test_ik_solves_targets_within_2mm(env):
    from mole_inference.control.transforms import matrix_to_rotvec, rpy_to_matrix

    ctrl, rng = env.controller, np.random.default_rng(0)
    pos0, rot0 = env.scene.ee_matrix()
    for _ in range(10):
        target_pos = pos0 + rng.uniform(-0.12, 0.12, 3)
        target_rot = rpy_to_matrix(rng.uniform(-0.3, 0.3, 3)) @ rot0
        q = ctrl.ik.solve(ctrl.home_q, target_pos, target_rot)
        pos, rot = ctrl.ik.forward_kinematics(q)
        assert np.linalg.norm(pos - target_pos) < 2e-3
        assert np.linalg.norm(matrix_to_rotvec(target_rot @ rot.T)) < 1e-2


def test_simulated_arm_tracks_a_target_within_2mm(env):
    ctrl = env.controller
    pos0, rot0 = env.scene.ee_matrix()
    target = pos0 + np.array([0.05, -0.08, -0.06])
    for _ in range(8):
        ctrl.servo_to(target, rot0, 1.0)
    assert np.linalg.norm(env.scene.ee_matrix()[0] - target) < 2e-3


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_translation_deltas_move_along_base_axes(env, axis):
    delta = _hold()
    delta[axis] = 0.02
    before = env.scene.ee_matrix()[0]
    env.step(delta, render=False)
    env.step(_hold(), render=False)  # let the servo settle
    moved = env.scene.ee_matrix()[0] - before
    assert moved[axis] == pytest.approx(0.02, abs=2e-3)
    assert np.linalg.norm(np.delete(moved, axis)) < 2e-3


@pytest.mark.parametrize("axis", [3, 4, 5])
def test_rotation_deltas_premultiply_in_base_frame(env, axis):
    from mole_inference.control.transforms import matrix_to_rotvec, rpy_to_matrix

    delta = _hold()
    delta[axis] = 0.1
    pos0, rot0 = env.scene.ee_matrix()
    env.step(delta, render=False)
    env.step(_hold(), render=False)
    pos1, rot1 = env.scene.ee_matrix()
    expected = rpy_to_matrix(delta[3:6]) @ rot0
    assert np.linalg.norm(matrix_to_rotvec(expected @ rot1.T)) < 5e-3
    assert np.linalg.norm(pos1 - pos0) < 2e-3  # rotation is about the TCP


def test_gripper_command_is_absolute_open_one_closed_zero(env):
    from mole_inference.sim.controller import GRIPPER_CLOSED, GRIPPER_OPEN

    env.step(np.array([0, 0, 0.05, 0, 0, 0, GRIPPER_CLOSED]), render=False)  # lift clear of objects
    for _ in range(5):
        env.step(_hold(GRIPPER_CLOSED), render=False)
    assert env.scene.gripper_width() < 0.005
    for _ in range(5):
        env.step(_hold(GRIPPER_OPEN), render=False)
    assert env.scene.gripper_width() > 0.075


def test_bad_actions_and_rates_are_rejected(env):
    from mole_inference.errors import ConfigError
    from mole_inference.sim.env import make_env

    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(6))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([np.nan, 0, 0, 0, 0, 0, 1.0]))
    with pytest.raises(ConfigError, match="control_dt"):
        make_env("pick", control_dt=0.015)
