"""Resampling recorded per-tick deltas to the model's action_dt, on hand-made episodes."""

import numpy as np
import pytest

from mole_inference.control.transforms import quat_from_rotvec, quat_multiply
from mole_inference.data.action_windows import resample_windows
from mole_inference.data.bag_reader import read_episode
from mole_inference.data.bag_writer import EpisodeBagWriter
from mole_inference.data.episode_meta import EpisodeMetadata
from mole_inference.data.images import rgb_to_image_msg
from mole_inference.data.schema import IMAGE_TOPIC, INSTRUCTION_TOPIC, MEASURED_POSE_TOPIC
from mole_inference.sim.demos import pose_msg
from mole_inference.training.windows import episode_samples

T0 = 1_700_000_000_000_000_000
MS = 1_000_000
DT = 100 * MS


def ticks(n: int, period_ms: int, jitter_ms: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    jitter = (rng.uniform(-jitter_ms, jitter_ms, n) * MS).astype(np.int64)
    jitter[0] = 0  # the first frame below is logged exactly at tick 0
    return T0 + 10 * MS + np.arange(n, dtype=np.int64) * period_ms * MS + jitter


def deltas_for(n: int) -> np.ndarray:
    """Tick j moves dx = j, drot = 0.5, gripper = j (so 'last in window' is visible)."""
    d = np.zeros((n, 7))
    d[:, 0], d[:, 5], d[:, 6] = np.arange(n), 0.5, np.arange(n)
    return d


@pytest.mark.parametrize("jitter_ms", [0.0, 4.0])
def test_50hz_ticks_sum_per_window_and_gripper_is_last(jitter_ms):
    t = ticks(100, 20, jitter_ms)
    frames = T0 + 10 * MS + np.array([0, 3]) * DT - 5 * MS  # just before ticks 0 and 15
    w = resample_windows(t, deltas_for(100), np.full(100, "policy"), frames, 4, DT)
    for f, first in enumerate([0, 15]):
        for j in range(4):
            ids = np.arange(first + 5 * j, first + 5 * j + 5)
            assert w.actions[f, j, 0] == pytest.approx(ids.sum())  # translation: sum of the 5 ticks
            assert w.actions[f, j, 5] == pytest.approx(2.5)  # rotation: 5 x 0.5
            assert w.actions[f, j, 6] == ids[-1]  # gripper: the last tick's command
    assert w.mask.all() and (w.sources == "policy").all()


def test_10hz_ticks_map_one_to_one():
    t = ticks(20, 100, jitter_ms=10.0)
    d = deltas_for(20)
    w = resample_windows(t, d, np.full(20, "teleop"), t[[2]] - 5 * MS, 16, DT)
    np.testing.assert_allclose(w.actions[0], d[2:18])
    assert (w.sources == "teleop").all()


def test_past_the_end_is_hold_with_last_gripper():
    t = ticks(10, 20)  # 10 ticks = 2 windows of 5
    w = resample_windows(t, deltas_for(10), np.full(10, "policy"), t[[0]], 4, DT)
    np.testing.assert_array_equal(w.mask[0], [True, True, False, False])
    np.testing.assert_array_equal(w.actions[0, 2:, :6], 0.0)
    np.testing.assert_array_equal(w.actions[0, :, 6], [4, 9, 9, 9])
    assert list(w.sources[0]) == ["policy", "policy", "hold", "hold"]
    after = resample_windows(t, deltas_for(10), np.full(10, "policy"), t[[-1]] + 50 * MS, 2, DT)
    assert not after.mask.any() and (after.actions[0, :, 6] == 9).all()


def test_trailing_partial_window_is_masked_but_inner_short_windows_are_not():
    """12 ticks at 50 Hz: windows of 5, 5 and a trailing 2 (only 40 % of an action_dt of motion)."""
    t = ticks(12, 20)
    w = resample_windows(t, deltas_for(12), np.full(12, "policy"), t[[0]], 4, DT)
    np.testing.assert_array_equal(w.mask[0], [True, True, False, False])
    assert w.actions[0, 2, 0] == pytest.approx(10 + 11)  # still summed (the gripper carries on), just not a target
    jittered = ticks(100, 20, jitter_ms=9.0, seed=3)  # inner windows may hold 4 or 6 ticks: complete all the same
    w = resample_windows(jittered, deltas_for(100), np.full(100, "policy"), jittered[[0, 40]], 8, DT)
    assert w.mask.all()


def test_window_source_is_the_majority_of_its_ticks():
    t = ticks(10, 20)
    src = np.array(["policy"] * 3 + ["teleop"] * 2 + ["hold"] * 2 + ["teleop"] * 3)
    w = resample_windows(t, deltas_for(10), src, t[[0]], 2, DT)
    assert list(w.sources[0]) == ["policy", "teleop"]


def test_episode_bag_to_samples(tmp_path):
    """Through the bag writer/reader: 50 Hz ticks, 10 Hz frames, an intervention and a hold tail."""
    path = tmp_path / "ep"
    with EpisodeBagWriter(path, "mcap", EpisodeMetadata(task="stack", instruction="stack it"), start_ns=T0) as w:
        w.write_text(INSTRUCTION_TOPIC, "stack the block", T0 + 1)
        for k in range(6):
            t = int(T0 + 10 * MS + k * DT)
            w.write(IMAGE_TOPIC, rgb_to_image_msg(np.full((8, 8, 3), k, np.uint8), t), t)
        for j in range(30):
            source = "policy" if j < 10 else "teleop" if j < 20 else "hold"
            delta = [0.01, 0, 0, 0, 0, 0, 1.0] if source != "hold" else [0, 0, 0, 0, 0, 0, 0.0]
            w.write_ee_delta(delta, source, int(T0 + 10 * MS + j * 20 * MS))
        w.close(success=True)
    s = episode_samples(read_episode(path), n=3, dt_s=0.1)
    assert s.task == "stack" and s.instructions == ["stack the block"] * 6 and s.frames.shape == (6, 8, 8, 3)
    assert list(s.sample_sources) == ["policy", "policy", "teleop", "teleop", "hold", "hold"]
    np.testing.assert_allclose(s.windows.actions[0, :, 0], [0.05, 0.05, 0.05])
    np.testing.assert_allclose(s.windows.actions[3, :, 0], [0.05, 0.0, 0.0])  # teleop, then held
    np.testing.assert_array_equal(s.windows.actions[3, :, 6], [1.0, 0.0, 0.0])


def test_subgoal_is_where_the_hand_is_at_the_next_gripper_change(tmp_path):
    """Ticks 0-9 open, 10-19 closed (a grasp at tick 10), 20-29 open (a release at 20); x = 0.01 m per tick."""
    path = tmp_path / "ep"
    with EpisodeBagWriter(path, "mcap", EpisodeMetadata(task="stack", instruction="stack it"), start_ns=T0) as w:
        for k in (0, 2, 3, 5):  # frames at ticks 0, 10 (the grasp itself), 15, 25
            t = int(T0 + k * DT)
            w.write(IMAGE_TOPIC, rgb_to_image_msg(np.zeros((8, 8, 3), np.uint8), t), t)
        for j in range(30):
            t = int(T0 + j * 20 * MS)
            w.write_ee_delta([0.01, 0, 0, 0, 0, 0, 0.0 if 10 <= j < 20 else 1.0], "teleop", t)
            w.write(MEASURED_POSE_TOPIC, pose_msg(np.array([0.01 * j, 0.2, 0.3]), np.array([1.0, 0, 0, 0]), t), t)
        w.close(success=True)
    goals = episode_samples(read_episode(path), n=2, dt_s=0.1).goals
    # frame 0 -> grasp at tick 10; the frame at the grasp and the one after -> release at 20; the last -> tick 29
    np.testing.assert_allclose(goals[:, 0], [0.10, 0.10, 0.05, 0.04], atol=1e-9)
    np.testing.assert_allclose(goals[:, 1:], 0.0, atol=1e-9)


def test_subgoal_rotation_is_the_base_frame_turn_to_the_grasp_orientation(tmp_path):
    """A gripper pointing down turns about the base z axis by 0.02 rad per tick until the grasp at tick 10 (yaw
    0.2), then keeps that yaw: the rotation label is (0, 0, remaining yaw), whatever the start yaw."""
    path = tmp_path / "ep"
    down = np.array([1.0, 0, 0, 0])  # xyzw: 180 degrees about x, the TCP pointing at the table
    with EpisodeBagWriter(path, "mcap", EpisodeMetadata(task="pick", instruction="pick it"), start_ns=T0) as w:
        for k in (0, 1, 2):  # frames at ticks 0, 5, 10
            t = int(T0 + k * DT)
            w.write(IMAGE_TOPIC, rgb_to_image_msg(np.zeros((8, 8, 3), np.uint8), t), t)
        for j in range(20):
            t = int(T0 + j * 20 * MS)
            yaw = 0.3 + 0.02 * min(j, 10)
            w.write_ee_delta([0, 0, 0, 0, 0, 0.02 if j < 10 else 0.0, 0.0 if j >= 10 else 1.0], "teleop", t)
            quat = quat_multiply(quat_from_rotvec(np.array([0, 0, yaw])), down)
            w.write(MEASURED_POSE_TOPIC, pose_msg(np.array([0.5, 0.0, 0.3]), quat, t), t)
        w.close(success=True)
    goals = episode_samples(read_episode(path), n=2, dt_s=0.1).goals
    assert goals.shape == (3, 6)
    np.testing.assert_allclose(goals[:2, 3:], [[0, 0, 0.2], [0, 0, 0.1]], atol=1e-9)
    np.testing.assert_allclose(goals[:, :3], 0.0, atol=1e-9)


def test_subgoal_is_unknown_without_measured_poses(tmp_path):
    path = tmp_path / "ep"
    with EpisodeBagWriter(path, "mcap", EpisodeMetadata(task="t", instruction="go"), start_ns=T0) as w:
        w.write(IMAGE_TOPIC, rgb_to_image_msg(np.zeros((8, 8, 3), np.uint8), T0), T0)
        for j in range(10):
            w.write_ee_delta([0.01, 0, 0, 0, 0, 0, 1.0], "teleop", int(T0 + j * 20 * MS))
        w.close(success=True)
    assert np.isnan(episode_samples(read_episode(path), n=2, dt_s=0.1).goals).all()


def test_robot_states_take_the_latest_measured_pose_at_or_before_each_frame(episode_writer, tmp_path):
    from mole_inference.data.bag_reader import read_episode
    from mole_inference.training.windows import robot_states

    episode_writer(tmp_path / "ep", 2)
    ep = read_episode(tmp_path / "ep")
    frames = ep.camera().t_ns
    states = robot_states(ep, frames)
    assert states.shape == (len(frames), 7) and np.isfinite(states).all()
    for row, t in zip(states, frames, strict=True):
        i = max(int(np.searchsorted(ep.measured_poses.t_ns, t, side="right")) - 1, 0)
        np.testing.assert_array_equal(row[:3], ep.measured_poses.position[i])
        np.testing.assert_array_equal(row[3:], ep.measured_poses.quat_xyzw[i])
    early = robot_states(ep, np.array([ep.measured_poses.t_ns[0] - 1]))  # before the first pose: the first
    np.testing.assert_array_equal(early[0, :3], ep.measured_poses.position[0])
    ep.measured_poses = type(ep.measured_poses)()
    assert np.isnan(robot_states(ep, frames)).all()
