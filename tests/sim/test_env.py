"""Env facade: observation keys and types, done/info, lazy optional front camera."""

from __future__ import annotations

import numpy as np
import pytest

from tests.sim.conftest import missing_sim_reason

pytestmark = [pytest.mark.sim, pytest.mark.skipif(missing_sim_reason() is not None,
                                                  reason=str(missing_sim_reason()))]


def test_observation_dict(renderable):
    obs = renderable.reset(seed=0)
    assert set(obs) == {"wrist_rgb", "front_rgb", "ee_pose", "gripper_width", "instruction"}
    assert obs["ee_pose"].shape == (7,)
    assert np.linalg.norm(obs["ee_pose"][3:]) == pytest.approx(1.0)
    assert isinstance(obs["gripper_width"], float) and isinstance(obs["instruction"], str)
    obs, done, info = renderable.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))
    assert obs["wrist_rgb"].shape == (224, 224, 3) and not done
    assert info["step"] == 1 and info["time"] == pytest.approx(0.1) and info["success"] is False


def test_images_only_when_configured_and_asked(renderable):
    from mole_inference.sim.env import make_env

    assert "wrist_rgb" not in renderable.reset(seed=0, render=False)
    with make_env("touch", seed=0) as env:
        assert set(env.reset()) == {"wrist_rgb", "ee_pose", "gripper_width", "instruction"}


def test_episode_times_out_at_the_step_limit():
    from mole_inference.sim.env import make_env

    with make_env("touch", seed=0, cameras=(), max_seconds=0.3) as env:
        env.reset(render=False)
        done, info, steps = False, {}, 0
        while not done:
            _, done, info = env.step(np.array([0, 0, 0, 0, 0, 0, 1.0]), render=False)
            steps += 1
        assert steps == env.max_steps == 3 and info["timeout"] and not info["success"]


def test_random_start_pose_is_seeded_bounded_and_leaves_the_layout_alone():
    from mole_inference.control.transforms import matrix_to_rpy
    from mole_inference.sim.controller import HOME_POS
    from mole_inference.sim.env import make_env

    with make_env("touch", start_offset=0.05, start_yaw=0.3) as env, make_env("touch") as home_env:
        a = env.reset(5, render=False)["ee_pose"][:3]
        layout = dict(env.task.layout)
        b = env.reset(5, render=False)["ee_pose"][:3]
        np.testing.assert_allclose(a, b, atol=1e-9)  # same seed, same start
        assert np.linalg.norm(a - HOME_POS) > 2e-3 and np.all(np.abs(a - HOME_POS) <= [0.051, 0.051, 0.026])
        yaw = matrix_to_rpy(env.scene.ee_matrix()[1] @ np.diag([1.0, -1.0, -1.0]).T)[2]
        assert abs(yaw) <= 0.31
        home_env.reset(5, render=False)
        assert home_env.task.layout == layout  # the start pose is drawn after the layout
        np.testing.assert_allclose(home_env.observe(False)["ee_pose"][:3], HOME_POS, atol=2e-3)


def test_a_start_near_the_target_is_above_the_named_cube_within_the_offset():
    from mole_inference.sim.env import START_NEAR_Z, make_env

    with make_env("pick", start_near_target=0.03) as env:
        offsets = []
        for seed in range(6):
            tcp = env.reset(seed, render=False)["ee_pose"][:3]
            target = env.task.layout[env.task.target]
            offsets.append(tcp[:2] - [target.x, target.y])
            assert START_NEAR_Z[0] - 2e-3 <= tcp[2] <= START_NEAR_Z[1] + 2e-3
        offsets = np.array(offsets)
        assert np.abs(offsets).max() <= 0.031 and np.abs(offsets).max() > 0.005  # off-centre, not beside another
        env.reset(0, render=False)
        assert not env.state().touching  # the fingers start clear of every cube
