"""ChunkScheduler: fixed-rate stepping with resampling, gapless swaps, latency skip, ensemble, exhaustion."""

import math
import threading

import numpy as np
import pytest

from mole_inference.config.control import SchedulerConfig
from mole_inference.control.scheduler import ChunkScheduler
from mole_inference.errors import InputError

DT = 0.02  # 50 Hz


def ramp_chunk(base: float, n: int = 16, gripper: float = 1.0) -> np.ndarray:
    """Chunk whose step k has dx = base + k, dyaw = -(base + k) / 100 (a real angle), gripper fixed."""
    chunk = np.zeros((n, 7))
    chunk[:, 0] = base + np.arange(n)
    chunk[:, 5] = -(base + np.arange(n)) / 100
    chunk[:, 6] = gripper
    return chunk


def test_steps_at_fixed_rate_with_even_split():
    s = ChunkScheduler(SchedulerConfig(control_rate_hz=50.0, action_dt=0.1))
    assert s.push(ramp_chunk(1.0), image_stamp=0.0, now=0.0)
    actions = [s.next_action(i * DT) for i in range(80)]  # 1.6 s: the whole chunk
    dx = np.array([a[0] for a in actions])
    # each 0.1 s step spans five 20 ms ticks, each tick gets a fifth of the step's delta
    np.testing.assert_allclose(dx[:5], [0.2] * 5)
    np.testing.assert_allclose(dx[5:10], [0.4] * 5)
    np.testing.assert_allclose(dx[75:], [16 * 0.2] * 5)
    assert dx.sum() == pytest.approx(ramp_chunk(1.0)[:, 0].sum())  # ticks sum to the chunk's motion
    assert sum(a[5] for a in actions) == pytest.approx(ramp_chunk(1.0)[:, 5].sum())
    assert all(a[6] == 1.0 for a in actions)  # gripper held, not scaled


def test_gripper_is_absolute_per_step():
    chunk = ramp_chunk(0.0, n=2)
    chunk[1, 6] = 0.0
    s = ChunkScheduler(SchedulerConfig())
    s.push(chunk, 0.0, 0.0)
    assert [s.next_action(t)[6] for t in (0.0, 0.08, 0.1, 0.18)] == [1.0, 1.0, 0.0, 0.0]


def test_exhausted_chunk_reports_no_action_instead_of_repeating():
    s = ChunkScheduler(SchedulerConfig())
    assert s.next_action(0.0) is None  # nothing pushed yet
    s.push(ramp_chunk(1.0), 0.0, 0.0)
    assert s.next_action(1.58)[0] == pytest.approx(16 * 0.2)
    assert s.next_action(1.6) is None
    assert s.next_action(5.0) is None
    assert s.steps_remaining(1.6) == 0


def test_swap_without_gap_and_latency_skip():
    s = ChunkScheduler(SchedulerConfig())
    s.push(ramp_chunk(0.0), image_stamp=0.0, now=0.05)
    assert s.last_skipped_steps == 0
    assert s.next_action(0.28)[0] == pytest.approx(2 * 0.2)  # old chunk, step 2
    # B was computed from the image at 0.13 and arrives at 0.29: steps 0 (0.13-0.23) is over, step 1 runs
    s.push(ramp_chunk(100.0), image_stamp=0.13, now=0.29)
    assert s.last_skipped_steps == 1
    assert s.next_action(0.30)[0] == pytest.approx(101 * 0.2)  # the very next tick uses B, step 1
    assert s.next_action(0.34)[0] == pytest.approx(102 * 0.2)


def test_no_gap_over_many_swaps():
    s = ChunkScheduler(SchedulerConfig())
    seen_none = False
    for i in range(200):
        now = i * DT
        if i % 15 == 0:  # a new chunk every 0.3 s with 0.12 s latency
            s.push(ramp_chunk(float(i)), image_stamp=max(0.0, now - 0.12), now=now)
        seen_none |= s.next_action(now) is None
    assert not seen_none


def test_without_latency_compensation_chunk_starts_on_arrival():
    s = ChunkScheduler(SchedulerConfig(latency_compensation=False))
    s.push(ramp_chunk(0.0), image_stamp=0.0, now=0.35)
    assert s.last_skipped_steps == 0
    assert s.next_action(0.36)[0] == pytest.approx(0.0)
    assert s.next_action(0.45)[0] == pytest.approx(0.2)


def test_chunk_older_than_all_its_steps_is_accepted_but_yields_hold():
    s = ChunkScheduler(SchedulerConfig())
    assert s.push(ramp_chunk(0.0, n=2), image_stamp=0.0, now=0.5)
    assert s.last_skipped_steps == 2
    assert s.next_action(0.5) is None


def test_out_of_order_chunk_is_dropped():
    s = ChunkScheduler(SchedulerConfig())
    s.push(ramp_chunk(100.0), image_stamp=0.2, now=0.3)
    assert not s.push(ramp_chunk(0.0), image_stamp=0.1, now=0.31)
    assert s.next_action(0.32)[0] == pytest.approx(101 * 0.2)


@pytest.mark.parametrize("bad", [np.zeros((16, 6)), np.zeros(7), np.zeros((0, 7))])
def test_bad_shape_raises(bad):
    with pytest.raises(InputError, match="shape"):
        ChunkScheduler(SchedulerConfig()).push(bad, 0.0, 0.0)


def test_non_finite_chunk_raises_and_keeps_previous():
    s = ChunkScheduler(SchedulerConfig())
    s.push(ramp_chunk(0.0), 0.0, 0.0)
    bad = ramp_chunk(5.0)
    bad[3, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        s.push(bad, 0.1, 0.1)
    assert s.next_action(0.12)[0] == pytest.approx(0.2)


def test_clear_drops_queued_actions():
    s = ChunkScheduler(SchedulerConfig())
    s.push(ramp_chunk(0.0), 0.0, 0.0)
    s.clear()
    assert s.next_action(0.02) is None


def three_chunks(config: SchedulerConfig) -> ChunkScheduler:
    """A scheduler holding chunks A, B, C (dx ramps from 10, 20, 30) stamped 0.0, 0.1, 0.2 s; only C's gripper open."""
    s = ChunkScheduler(config)
    s.push(ramp_chunk(10.0, gripper=0.0), image_stamp=0.0, now=0.0)
    s.push(ramp_chunk(20.0, gripper=0.0), image_stamp=0.1, now=0.1)
    s.push(ramp_chunk(30.0, gripper=1.0), image_stamp=0.2, now=0.2)
    return s


def test_ensemble_weights_hand_checked():
    # k = ln 2: weights 1, 1/2, 1/4 for the newest, previous, and one before
    s = three_chunks(SchedulerConfig(ensemble=True, ensemble_decay=math.log(2.0), ensemble_horizon=4))
    a = s.next_action(0.25)
    # at 0.25: A is at step 2 (12), B at step 1 (21), C at step 0 (30)
    expected = (30 * 1 + 21 * 0.5 + 12 * 0.25) / 1.75 * 0.2
    assert a[0] == pytest.approx(expected)
    assert a[5] == pytest.approx(-expected / 100)
    assert a[6] == 1.0  # gripper from the newest chunk, not averaged


def test_ensemble_horizon_and_expired_chunks():
    s = ChunkScheduler(SchedulerConfig(ensemble=True, ensemble_decay=math.log(2.0), ensemble_horizon=2))
    s.push(ramp_chunk(10.0), 0.0, 0.0)
    s.push(ramp_chunk(20.0), 0.1, 0.1)
    s.push(ramp_chunk(30.0), 0.2, 0.2)  # pushes A out of the horizon
    assert s.next_action(0.25)[0] == pytest.approx((30 + 21 * 0.5) / 1.5 * 0.2)
    s2 = ChunkScheduler(SchedulerConfig(ensemble=True, ensemble_decay=math.log(2.0)))
    s2.push(ramp_chunk(10.0, n=2), 0.0, 0.0)  # covers 0.0-0.2 only
    s2.push(ramp_chunk(20.0), 0.1, 0.1)
    assert s2.next_action(0.15)[0] == pytest.approx((20 * 1 + 11 * 0.5) / 1.5 * 0.2)
    assert s2.next_action(0.25)[0] == pytest.approx(21 * 0.2)  # A expired: B alone
    assert s2.next_action(1.7) is None


def test_ensemble_with_zero_decay_is_plain_mean():
    s = ChunkScheduler(SchedulerConfig(ensemble=True, ensemble_decay=0.0))
    s.push(ramp_chunk(10.0), 0.0, 0.0)
    s.push(ramp_chunk(20.0), 0.0, 0.01)
    assert s.next_action(0.02)[0] == pytest.approx(15 * 0.2)


def test_gripper_vote_weights_the_covering_chunks_and_leaves_motion_to_the_newest():
    # weights 1, 1/2, 1/4: the two older chunks say closed, the newest says open
    s = three_chunks(SchedulerConfig(gripper_ensemble=True, ensemble_decay=math.log(2.0), ensemble_horizon=4))
    a = s.next_action(0.25)
    assert a[6] == pytest.approx(1.0 / 1.75)  # a vote fraction, not the newest chunk's 1.0
    assert a[0] == pytest.approx(30 * 0.2)  # motion: the newest chunk only (ensemble off)
    # one stray "open" among closed draws stays a minority
    s.push(ramp_chunk(40.0, gripper=0.0), image_stamp=0.3, now=0.3)
    assert s.next_action(0.35)[6] == pytest.approx(0.5 / 1.875)


def test_gripper_vote_counts_only_chunks_covering_now_and_combines_with_the_motion_ensemble():
    s = ChunkScheduler(SchedulerConfig(ensemble=True, gripper_ensemble=True, ensemble_decay=0.0))
    s.push(ramp_chunk(10.0, n=2, gripper=0.0), 0.0, 0.0)  # covers 0.0-0.2 only
    s.push(ramp_chunk(20.0, gripper=1.0), 0.1, 0.1)
    a = s.next_action(0.15)
    assert a[6] == pytest.approx(0.5) and a[0] == pytest.approx((20 + 11) / 2 * 0.2)
    assert s.next_action(0.25)[6] == 1.0  # the first chunk expired: the second alone
    off = ChunkScheduler(SchedulerConfig(ensemble=True, ensemble_decay=0.0))
    off.push(ramp_chunk(10.0, n=2, gripper=0.0), 0.0, 0.0)
    off.push(ramp_chunk(20.0, gripper=1.0), 0.1, 0.1)
    assert off.next_action(0.15)[6] == 1.0  # without the vote: the newest chunk's gripper


def closed_then(open_from: int, n: int = 8, reclose_at: int | None = None) -> np.ndarray:
    """Chunk that is closed (0) until step `open_from`, open after (until `reclose_at`)."""
    chunk = ramp_chunk(0.0, n=n, gripper=0.0)
    chunk[open_from:reclose_at, 6] = 1.0
    return chunk


def test_gripper_read_ahead_sends_a_planned_release_now_and_never_delays_a_close():
    cfg = SchedulerConfig(control_rate_hz=10.0, action_dt=0.1, gripper_open_lookahead=3)
    s = ChunkScheduler(cfg)
    s.push(closed_then(3), 0.0, 0.0)  # the chunk opens at its step 3
    assert [s.next_action(0.1 * k + 0.01)[6] for k in range(5)] == [1.0] * 5  # read 3 steps ahead: open at once
    plain = ChunkScheduler(SchedulerConfig(control_rate_hz=10.0, action_dt=0.1))
    plain.push(closed_then(3), 0.0, 0.0)
    assert [plain.next_action(0.1 * k + 0.01)[6] for k in range(5)] == [0.0, 0.0, 0.0, 1.0, 1.0]
    s.push(closed_then(4), 0.5, 0.5)  # opens 4 steps ahead: one step beyond the window
    assert [s.next_action(0.5 + 0.1 * k + 0.01)[6] for k in range(3)] == [0.0, 1.0, 1.0]
    grasp = 1.0 - closed_then(2)  # open, then closing at step 2 and staying closed
    s.push(grasp, 1.0, 1.0)
    assert [s.next_action(1.0 + 0.1 * k + 0.01)[6] for k in range(4)] == [1.0, 1.0, 0.0, 0.0]  # closes on time
    s.push(closed_then(1, reclose_at=2), 2.0, 2.0)  # a one-step "open" draw inside the window opens too
    assert s.next_action(2.01)[6] == 1.0
    assert s.next_action(2.41)[6] == 0.0  # window past it


def test_gripper_read_ahead_applies_to_every_voter():
    cfg = SchedulerConfig(control_rate_hz=10.0, action_dt=0.1, gripper_ensemble=True, ensemble_decay=0.0,
                          gripper_open_lookahead=2)
    s = ChunkScheduler(cfg)
    s.push(closed_then(4), 0.0, 0.0)  # at 0.2 s its window (steps 2..4) holds the open at 4
    s.push(closed_then(6), 0.1, 0.1)  # at 0.2 s its window (steps 1..3) is closed
    assert s.next_action(0.21)[6] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="gripper_open_lookahead"):
        SchedulerConfig(gripper_open_lookahead=-1)


def test_push_from_worker_thread_while_ticking():
    s = ChunkScheduler(SchedulerConfig(ensemble=True))
    stop = threading.Event()

    def worker():
        t = 1e-4
        while not stop.is_set():
            s.push(ramp_chunk(1.0), t, t)
            t += 1e-4

    s.push(ramp_chunk(1.0), 0.0, 0.0)
    thread = threading.Thread(target=worker)
    thread.start()
    try:
        results = [s.next_action(0.0) for _ in range(3000)]
    finally:
        stop.set()
        thread.join()
    assert all(r is not None and r[0] == pytest.approx(0.2) for r in results)


# -- rotation deltas are normalised before they are split per tick or averaged (issue #11) ------------------------
@pytest.mark.parametrize(("dyaw", "normalised"), [
    (2 * math.pi - 0.1, -0.1),  # a yaw step across the +-pi seam, as an unwrapped difference gives it
    (-2 * math.pi + 0.1, 0.1),
    (4 * math.pi + 0.05, 0.05),
    (math.pi, math.pi),  # +pi stays +pi: normalising never flips an angle that is already in range
    (-math.pi, -math.pi),
])
def test_rotation_step_is_normalised_before_the_per_tick_split(dyaw, normalised):
    s = ChunkScheduler(SchedulerConfig(control_rate_hz=50.0, action_dt=0.1))
    chunk = np.zeros((2, 7))
    chunk[:, 3:6] = [0.0, 0.0, dyaw]
    s.push(chunk, image_stamp=0.0, now=0.0)
    ticks = [s.next_action(i * DT)[5] for i in range(5)]  # the five ticks of step 0
    np.testing.assert_allclose(ticks, [normalised * 0.2] * 5, atol=1e-12)
    assert sum(ticks) == pytest.approx(normalised)  # the step turns the way its rotation does


def test_ensemble_averages_normalised_rotations():
    s = ChunkScheduler(SchedulerConfig(ensemble=True, ensemble_decay=0.0))
    a, b = np.zeros((4, 7)), np.zeros((4, 7))
    a[:, 5] = 0.1
    b[:, 5] = 0.1 - 2 * math.pi  # the same rotation, written the other way round
    s.push(a, 0.0, 0.0)
    s.push(b, 0.0, 0.01)
    assert s.next_action(0.02)[5] == pytest.approx(0.1 * 0.2)  # not (0.1 - pi) * 0.2: a turn backwards
