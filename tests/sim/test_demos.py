"""`record_demos`: expert episodes as bags with the robot's topics, types, exact counts and consistent deltas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.sim.conftest import missing_sim_reason

pytestmark = [pytest.mark.sim, pytest.mark.skipif(missing_sim_reason() is not None,
                                                  reason=str(missing_sim_reason()))]


@pytest.fixture(scope="module")
def touch_demo(tmp_path_factory):
    """One successful 50 Hz touch demonstration (images at 10 Hz), recorded twice from the same seed."""
    from mole_inference.sim.demos import DemoConfig, record_demos

    cfg = DemoConfig(tasks=("touch",), episodes=1, seed=3)
    first = record_demos(tmp_path_factory.mktemp("demos_a"), cfg)
    second = record_demos(tmp_path_factory.mktemp("demos_b"), cfg)
    return cfg, first.results[-1], second.results[-1]


def test_bag_has_the_robot_topics_and_types(touch_demo):
    from rosbags.highlevel import AnyReader

    from mole_inference.data.schema import (
        ACTIVE_SOURCE_TOPIC,
        COMPRESSED_IMAGE_TOPIC,
        EPISODE_TOPICS,
        ROBOT_STATE_TOPICS,
        default_typestore,
    )

    _, result, _ = touch_demo
    with AnyReader([result.path], default_typestore=default_typestore()) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
    expected = {t: s.msgtype for t, s in EPISODE_TOPICS.items()
                if t != COMPRESSED_IMAGE_TOPIC and t not in ROBOT_STATE_TOPICS}
    assert types == expected
    assert ACTIVE_SOURCE_TOPIC in types


def test_counts_timestamps_and_metadata(touch_demo):
    from mole_inference.data.bag_reader import read_episode
    from mole_inference.sim.demos import OPERATOR, episode_start_ns

    _, result, _ = touch_demo
    assert result.success and result.ticks > 10
    ep = read_episode(result.path)
    n = result.ticks
    frames = ep.camera()
    assert len(frames) == result.images == math.ceil(n / 5)
    assert frames.rgb.shape == (len(frames), 224, 224, 3)
    np.testing.assert_array_equal(frames.stamp_ns, frames.t_ns)  # header stamp = sim time
    assert len(ep.deltas) == len(ep.target_poses) == n and len(ep.measured_poses) == n + 1
    t0 = episode_start_ns(result.seed)
    np.testing.assert_array_equal(ep.delta_t_ns, t0 + np.arange(n) * 20_000_000)
    np.testing.assert_array_equal(frames.t_ns, t0 + np.arange(0, n, 5) * 20_000_000)
    assert ep.instructions == [result.instruction] and ep.active_sources == ["teleop"]
    assert set(ep.delta_sources) == {"teleop"}
    changes = 1 + int(np.count_nonzero(np.diff(ep.deltas[:, 6])))
    assert len(ep.gripper_width) == changes and set(ep.gripper_width) <= {0.0, 0.08}
    assert set(ep.deltas[:, 6]) <= {0.0, 1.0}  # binarized like the robot's safety envelope
    meta = ep.metadata
    assert meta.success is True and meta.task == "touch" and meta.operator == OPERATOR
    assert meta.instruction == result.instruction and meta.extra["seed"] == result.seed and meta.extra["sim"]
    assert meta.start_ns == t0 and meta.stop_ns == t0 + n * 20_000_000


def test_deltas_are_clean_labels_of_a_noisy_execution_from_a_random_start(touch_demo):
    """DART: consecutive targets move by the executed (noisy) deltas; the recorded labels are the expert's clean
    actions, which differ from them by about the injected noise and still sum to roughly the displacement."""
    from mole_inference.data.bag_reader import read_episode
    from mole_inference.sim.controller import HOME_POS

    cfg, result, _ = touch_demo
    ep = read_episode(result.path, decode_images=False)
    start = ep.measured_poses.position[0]
    assert np.linalg.norm(start - HOME_POS) > 1e-3 and np.all(np.abs(start - HOME_POS) <= cfg.start_offset + 1e-3)
    moved = ep.measured_poses.position[-1] - start
    assert np.linalg.norm(moved) > 0.05
    steps = np.diff(ep.target_poses.position, axis=0)
    gap = np.linalg.norm(steps - ep.deltas[1:, :3], axis=1)  # label - executed = -noise, |noise| ~ 1.6 sigma
    assert 0.5 * cfg.noise_trans < np.median(gap) < 3 * cfg.noise_trans
    np.testing.assert_allclose(ep.deltas[:, :3].sum(axis=0), moved, atol=0.03)


def test_without_dart_deltas_are_what_was_executed(tmp_path):
    from mole_inference.data.bag_reader import read_episode
    from mole_inference.sim.demos import DemoConfig, record_demos

    cfg = DemoConfig(tasks=("touch",), episodes=1, seed=3, dart=False, start_offset=0.0, start_yaw=0.0)
    ep = read_episode(record_demos(tmp_path, cfg).results[-1].path, decode_images=False)
    moved = ep.measured_poses.position[-1] - ep.measured_poses.position[0]
    np.testing.assert_allclose(ep.deltas[:, :3].sum(axis=0), moved, atol=5e-3)
    # Targets are the reference plus the delta: consecutive targets differ by the deltas while tracking.
    steps = np.diff(ep.target_poses.position, axis=0)
    assert np.median(np.linalg.norm(steps - ep.deltas[1:, :3], axis=1)) < 1e-3


def test_same_seed_same_bag_content(touch_demo):
    from mole_inference.data.bag_reader import read_episode

    _, a, b = touch_demo
    ea, eb = read_episode(a.path), read_episode(b.path)
    assert a.path.name == b.path.name
    np.testing.assert_array_equal(ea.deltas, eb.deltas)
    np.testing.assert_array_equal(ea.measured_poses.position, eb.measured_poses.position)
    np.testing.assert_array_equal(ea.camera().rgb, eb.camera().rgb)


def test_config_validation_names_the_field():
    from mole_inference.errors import ConfigError
    from mole_inference.sim.demos import DemoConfig

    with pytest.raises(ConfigError, match="image_hz"):
        DemoConfig(image_hz=15.0)
    with pytest.raises(ConfigError, match="did you mean 'pick'"):
        DemoConfig(tasks=("pik",))


def test_failures_are_retried_and_dropped_unless_kept(tmp_path, monkeypatch):
    from mole_inference.data.bag_reader import list_episodes, read_episode
    from mole_inference.sim.demos import DemoConfig, record_demos
    from mole_inference.sim.tasks import TouchTask

    monkeypatch.setattr(TouchTask, "max_seconds", 0.1)  # 5 ticks: the expert cannot reach the cube
    dropped = record_demos(tmp_path / "a", DemoConfig(tasks=("touch",), episodes=1, max_attempts=2))
    assert [(r.seed, r.success, r.path) for r in dropped.results] == [(0, False, None), (1, False, None)]
    assert list_episodes(tmp_path / "a") == []
    kept = record_demos(tmp_path / "b", DemoConfig(tasks=("touch",), episodes=1, keep_failures=True))
    assert len(kept.results) == 1 and read_episode(kept.results[0].path).metadata.success is False


def test_linger_records_past_the_release_and_keeps_the_episode_up_to_it(tmp_path):
    """A stack succeeds a few ticks after the release command: cut there, the episode has 1-4 ticks labelled
    "open" and no frame of the open hand. With `linger` (stack's own 0.5 s by default) the same episode goes on for
    that long (the expert opens and moves away) and is still a success."""
    from mole_inference.data.bag_reader import read_episode
    from mole_inference.sim.demos import DemoConfig, record_demos

    cut, kept = (record_demos(tmp_path / f"l{s}", DemoConfig(tasks=("stack",), episodes=1, seed=2,
                                                                start_near_target=0.02, linger=s)).results[-1]
                 for s in (0.0, None))
    assert cut.success and kept.success
    assert kept.ticks == cut.ticks + 25  # 0.5 s at 50 Hz
    a, b = (read_episode(r.path, decode_images=False) for r in (cut, kept))
    np.testing.assert_array_equal(b.deltas[:cut.ticks], a.deltas)  # the same episode up to the success tick
    def opened(ep):  # ticks labelled "open" after the last "closed"
        return len(ep.deltas) - 1 - np.flatnonzero(ep.deltas[:, 6] == 0.0).max()

    assert opened(a) <= 4 and opened(b) == opened(a) + 25
    assert b.deltas[-1, 2] > 0  # moving up, away from the stacked cubes
    assert b.metadata.success is True


def test_linger_must_not_be_negative():
    from mole_inference.errors import ConfigError
    from mole_inference.sim.demos import DemoConfig

    with pytest.raises(ConfigError, match="linger"):
        DemoConfig(linger=-0.1)


def test_pick_records_the_lift_past_success(tmp_path):
    """Pick succeeds 2-3 actions into the lift; its default linger records the rest of it (up to the hover height),
    so the recording is no longer mostly the closing hand standing still."""
    from mole_inference.data.bag_reader import read_episode
    from mole_inference.sim.demos import DemoConfig, record_demos

    cut, kept = (record_demos(tmp_path / f"p{s}", DemoConfig(tasks=("pick",), episodes=1, seed=3,
                                                               start_near_target=0.02, linger=s)).results[-1]
                 for s in (0.0, None))
    assert cut.success and kept.success and kept.ticks == cut.ticks + 25
    a, b = (read_episode(r.path, decode_images=False) for r in (cut, kept))
    np.testing.assert_array_equal(b.deltas[:cut.ticks], a.deltas)
    closed = np.flatnonzero(b.deltas[:, 6] == 0.0)
    assert len(closed) and (b.deltas[cut.ticks:, 6] == 0.0).all()  # still holding it
    lift_a, lift_b = (ep.deltas[closed[0]:, 2].clip(0).sum() for ep in (a, b))
    assert lift_b > lift_a + 0.03  # at least 3 cm more of the lift recorded
