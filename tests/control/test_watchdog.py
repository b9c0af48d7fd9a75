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
    # keep every other input fresh so only the one under test ages
    for name in ("image_received", "chunk_received", "pose_received"):
        if name != feed:
            getattr(w, name)(limit + 0.05)
    assert w.check(limit).ok  # exactly at the limit is still fine
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
