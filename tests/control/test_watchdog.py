"""Watchdog: each timeout, missing inputs, inference deadline, several faults at once."""

import pytest

from mole_inference.config.control import WatchdogConfig
from mole_inference.control.watchdog import Fault, Watchdog

CFG = WatchdogConfig(max_image_age=0.3, max_chunk_age=1.0, inference_deadline=0.5, max_pose_age=0.1)


def fed(now: float = 0.0) -> Watchdog:
    w = Watchdog(CFG)
    w.image_received(now)
    w.chunk_received(now)
    w.pose_received(now)
    return w


def test_nothing_received_is_unhealthy():
    h = Watchdog(CFG).check(0.0)
    assert not h.ok and not h.pose_ok
    assert set(h.faults) == {Fault.NO_IMAGE, Fault.NO_CHUNK, Fault.NO_POSE}
    assert "no image received yet" in h.reason


def test_fresh_inputs_are_healthy():
    h = fed().check(0.09)
    assert h.ok and h.pose_ok and h.faults == () and h.reason == ""


@pytest.mark.parametrize(("feed", "limit", "fault"), [
    ("image_received", 0.3, Fault.STALE_IMAGE),
    ("chunk_received", 1.0, Fault.STALE_CHUNK),
    ("pose_received", 0.1, Fault.STALE_POSE),
])
def test_each_age_timeout(feed, limit, fault):
    w = fed()

    def keep_others_fresh(now):  # so that only the input under test ages
        for name in ("image_received", "chunk_received", "pose_received"):
            if name != feed:
                getattr(w, name)(now)

    keep_others_fresh(limit)
    assert w.check(limit).ok  # exactly at the limit is still fine
    keep_others_fresh(limit + 0.05)
    h = w.check(limit + 0.05)
    assert h.faults == (fault,)
    assert fault.value in h.reason and f"> {limit:.3f} s" in h.reason
    getattr(w, feed)(limit + 0.05)
    assert w.check(limit + 0.05).ok


def test_older_stamp_never_rejuvenates():
    w = fed(1.0)
    w.image_received(0.5)  # late, out-of-order frame
    assert Fault.STALE_IMAGE not in w.check(1.2).faults
    assert Fault.STALE_IMAGE in w.check(1.35).faults


def test_inference_deadline():
    w = fed()
    w.inference_started(0.0)
    for t in (0.02, 0.04, 0.06, 0.08):  # keep the rest fresh
        w.image_received(t)
        w.pose_received(t)
    assert w.check(0.08).ok
    w.image_received(0.55)
    w.pose_received(0.55)
    h = w.check(0.55)
    assert h.faults == (Fault.INFERENCE_OVERDUE,) and "deadline 0.500 s" in h.reason
    w.inference_finished(0.6)
    assert w.check(0.6).ok
    assert w.missed_deadlines == 1 and w.last_latency == pytest.approx(0.6)
    w.inference_started(0.6)
    w.inference_finished(0.7)
    assert w.missed_deadlines == 1 and w.last_latency == pytest.approx(0.1)


def test_all_faults_reported_together_and_reset():
    w = fed()
    w.inference_started(0.0)
    h = w.check(2.0)
    assert set(h.faults) == {Fault.STALE_IMAGE, Fault.STALE_CHUNK, Fault.STALE_POSE, Fault.INFERENCE_OVERDUE}
    assert len(h.reasons) == 4
    w.reset()
    assert set(w.check(2.0).faults) == {Fault.NO_IMAGE, Fault.NO_CHUNK, Fault.NO_POSE}


# -- stamps from the future (issue #11: one future stamp kept by max() made STALE_IMAGE never fire again) --------
def test_one_future_image_stamp_does_not_keep_a_dead_camera_healthy():
    w = fed()
    w.image_received(3600.0)  # one bad header (or a camera clock an hour ahead); no arrival time given
    for t in (0.02, 0.04):
        w.image_received(t)
        w.chunk_received(t)
        w.pose_received(t)
    h = w.check(0.04)
    assert h.faults == (Fault.STALE_IMAGE,) and "in the future" in h.reason
    w.pose_received(0.5)
    w.chunk_received(0.5)
    assert Fault.STALE_IMAGE in w.check(0.5).faults  # camera dead since 0.04: must never look healthy


def test_future_stamp_is_rejected_on_arrival_and_the_camera_death_still_fires():
    w = fed()
    assert not w.image_received(3600.0, received=0.01)  # rejected: not counted as a frame
    assert w.image_received(0.02, received=0.02)  # later good frames are still accepted
    w.chunk_received(0.3, received=0.3)
    w.pose_received(0.3, received=0.3)
    assert w.check(0.3).ok
    w.pose_received(0.33, received=0.33)
    w.chunk_received(0.33, received=0.33)
    h = w.check(0.33)  # the camera died after the frame stamped 0.02
    assert h.faults == (Fault.STALE_IMAGE,) and "0.310 s old" in h.reason


def test_stamp_within_the_tolerance_is_accepted():
    w = fed()
    assert w.image_received(0.14, received=0.1)  # 40 ms ahead of arrival <= max_future_stamp (50 ms)
    assert w.check(0.1).ok


def test_reason_says_why_frames_were_rejected(caplog):
    w = Watchdog(CFG)
    with caplog.at_level("WARNING", logger="mole_inference.control.watchdog"):
        for t in (0.0, 0.05, 0.1):  # a camera clock 2 s ahead: every frame rejected, logged once
            assert not w.image_received(t + 2.0, received=t)
    assert caplog.text.count("rejected") == 1 and "clock ahead" in caplog.text
    h = w.check(0.1)
    assert Fault.NO_IMAGE in h.faults
    assert "3 image(s) since rejected, stamped 2.000 s ahead of arrival" in h.reason


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_stamp_is_rejected(bad):
    w = fed()
    assert not w.pose_received(bad, received=0.05)
    assert not w.image_received(bad)
    h = w.check(0.35)
    assert {Fault.STALE_IMAGE, Fault.STALE_POSE} <= set(h.faults)
    assert "non-finite stamp" in h.reason


def test_future_pose_stamp_makes_every_source_hold():
    w = fed()
    w.pose_received(10.0)  # no arrival time: caught by the check instead
    h = w.check(0.05)
    assert not h.pose_ok and Fault.STALE_POSE in h.faults


def test_staleness_is_judged_on_arrival_time_too():
    w = fed()
    # a frame stamped slightly ahead (within the tolerance) arrives at 0.0: its stamp alone would keep the
    # image fresh for 50 ms longer than the camera really delivered
    assert w.image_received(0.04, received=0.0)
    for t in (0.3, 0.32):
        w.chunk_received(t, received=t)
        w.pose_received(t, received=t)
    assert w.check(0.3).ok
    h = w.check(0.32)
    assert h.faults == (Fault.STALE_IMAGE,) and "arrived 0.320 s ago" in h.reason
