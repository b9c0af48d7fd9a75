"""TeleopMux: priority, takeover, explicit resume, automatic fallback, switch log."""

import logging

import numpy as np
import pytest

from mole_inference.config.control import MuxConfig, SafetyConfig
from mole_inference.control.mux import Mode, TeleopMux
from mole_inference.control.safety import SafetyEnvelope, Source
from mole_inference.control.transforms import Pose
from mole_inference.control.watchdog import Fault, Health

OK = Health(True)
STALE_IMAGE = Health(False, (Fault.STALE_IMAGE,), ("stale_image: image is 0.500 s old > 0.300 s",))
STALE_POSE = Health(False, (Fault.STALE_POSE,), ("stale_pose: pose is 0.200 s old > 0.100 s",))
MEASURED = Pose.from_arrays([0.5, 0.0, 0.3], [1.0, 0.0, 0.0, 0.0])
POLICY_DX = np.array([0.001, 0, 0, 0, 0, 0, 1.0])
TELEOP_DY = np.array([0, 0.002, 0, 0, 0, 0, 0.0])


def make(events=None, **kw):
    cb = events.append if events is not None else None
    return TeleopMux(MuxConfig(**kw), SafetyEnvelope(SafetyConfig()), on_switch=cb)


def test_starts_in_hold_and_publishes_hold():
    mux = make()
    cmd = mux.step(0.0, MEASURED, POLICY_DX, OK)
    assert mux.mode is Mode.HOLD and cmd.is_hold
    np.testing.assert_array_equal(cmd.position, MEASURED.position)


def test_start_mode_policy():
    assert make(start_mode="policy").step(0.0, MEASURED, POLICY_DX, OK).source is Source.POLICY


def test_resume_is_explicit_and_refused_when_unhealthy(caplog):
    events = []
    mux = make(events)
    assert not mux.resume_policy("operator", 0.0)  # no health seen yet
    mux.step(0.0, MEASURED, POLICY_DX, STALE_IMAGE)
    with caplog.at_level(logging.WARNING, logger="mole_inference.control.mux"):
        assert not mux.resume_policy("operator", 0.01)
    assert "refused" in caplog.text and "stale_image" in caplog.text
    assert mux.mode is Mode.HOLD and events == []
    assert mux.resume_policy("operator pressed start", 0.02, health=OK)
    assert mux.mode is Mode.POLICY
    assert [(e.previous, e.mode, e.reason, e.automatic) for e in events] == [
        (Mode.HOLD, Mode.POLICY, "operator pressed start", False)]
    cmd = mux.step(0.04, MEASURED, POLICY_DX, OK)
    assert cmd.source is Source.POLICY and cmd.position[0] == pytest.approx(0.501)


def test_policy_without_action_holds_but_stays_in_policy():
    mux = make(start_mode="policy")
    cmd = mux.step(0.0, MEASURED, None, OK)
    assert cmd.is_hold and mux.mode is Mode.POLICY


def test_teleop_has_priority_over_policy():
    mux = make(start_mode="policy")
    mux.set_teleop(TELEOP_DY, 0.0)
    # teleop input alone does not take over: a button or service does
    assert mux.step(0.0, MEASURED, POLICY_DX, OK).source is Source.POLICY
    mux.takeover("spacemouse button", 0.01)
    cmd = mux.step(0.02, MEASURED, POLICY_DX, OK)
    assert mux.mode is Mode.TELEOP and cmd.source is Source.TELEOP
    # integrates onto the previous (policy) target: no jump back to the measured pose at a takeover
    np.testing.assert_allclose(cmd.position, [0.501, 0.002, 0.3])
    assert cmd.gripper == 0.0


def test_teleop_input_repeats_while_live_then_holds():
    mux = make(teleop_timeout=0.2)
    mux.takeover("service", 0.0)
    assert mux.step(0.0, MEASURED, None, OK).is_hold  # no input yet
    mux.set_teleop(TELEOP_DY, 0.0)
    assert mux.teleop_live(0.2) and not mux.teleop_live(0.21)
    assert mux.step(0.2, MEASURED, None, OK).source is Source.TELEOP
    cmd = mux.step(0.21, MEASURED, None, OK)
    assert cmd.is_hold and "stale" in cmd.reason and mux.mode is Mode.TELEOP


def test_teleop_passes_through_the_envelope():
    mux = make()
    mux.takeover("service", 0.0)
    mux.set_teleop(np.array([0.05, 0, 0, 0, 0, 0, 1.0]), 0.0)
    cmd = mux.step(0.0, MEASURED, None, OK)
    assert cmd.delta[0] == pytest.approx(SafetyConfig().max_step_translation)
    mux.set_teleop(np.array([np.nan, 0, 0, 0, 0, 0, 1.0]), 0.01)
    assert mux.step(0.02, MEASURED, None, OK).is_hold


def test_automatic_fallback_to_hold_and_no_automatic_return(caplog):
    events = []
    mux = make(events, start_mode="policy")
    with caplog.at_level(logging.WARNING, logger="mole_inference.control.mux"):
        cmd = mux.step(1.0, MEASURED, POLICY_DX, STALE_IMAGE)
    assert cmd.is_hold and mux.mode is Mode.HOLD
    ev = events[-1]
    assert (ev.time, ev.previous, ev.mode, ev.automatic) == (1.0, Mode.POLICY, Mode.HOLD, True)
    assert "policy unhealthy" in ev.reason and "stale_image" in ev.reason
    assert "policy -> hold" in caplog.text
    # healthy again: still hold, only an explicit request returns to the policy
    assert mux.step(1.02, MEASURED, POLICY_DX, OK).is_hold and mux.mode is Mode.HOLD
    assert mux.resume_policy("operator", 1.04)
    assert mux.step(1.06, MEASURED, POLICY_DX, OK).source is Source.POLICY
    assert len(mux.events) == 2


def test_fallback_to_teleop_only_when_live():
    mux = make(start_mode="policy", fallback="teleop")
    mux.set_teleop(TELEOP_DY, 0.95)
    cmd = mux.step(1.0, MEASURED, POLICY_DX, STALE_IMAGE)
    assert mux.mode is Mode.TELEOP and cmd.source is Source.TELEOP
    mux2 = make(start_mode="policy", fallback="teleop")
    mux2.set_teleop(TELEOP_DY, 0.0)  # stale by 1.0
    mux2.step(1.0, MEASURED, POLICY_DX, STALE_IMAGE)
    assert mux2.mode is Mode.HOLD


def test_repeated_rejections_fall_back():
    events = []
    mux = make(events, start_mode="policy", max_consecutive_rejections=3)
    bad = np.full(7, np.nan)
    mux.step(0.0, MEASURED, bad, OK)
    mux.step(0.02, MEASURED, POLICY_DX, OK)  # a good one resets the count
    for i in range(2):
        mux.step(0.04 + 0.02 * i, MEASURED, bad, OK)
    assert mux.mode is Mode.POLICY
    mux.step(0.1, MEASURED, bad, OK)
    assert mux.mode is Mode.HOLD and "3 policy actions rejected" in events[-1].reason


def test_stale_pose_holds_every_source():
    mux = make()
    mux.takeover("service", 0.0)
    mux.set_teleop(TELEOP_DY, 0.0)
    cmd = mux.step(0.0, MEASURED, None, STALE_POSE)
    assert cmd.is_hold and "pose" in cmd.reason and mux.mode is Mode.TELEOP


def test_request_hold_and_redundant_switches_are_not_logged_as_events():
    events = []
    mux = make(events)
    mux.request_hold("already holding", 0.0)
    mux.takeover("button", 0.1)
    mux.takeover("button again", 0.2)
    mux.request_hold("operator released", 0.3)
    assert [(e.mode, e.reason) for e in events] == [(Mode.TELEOP, "button"), (Mode.HOLD, "operator released")]
    assert mux.events == events


def test_broken_callback_does_not_break_the_tick():
    def boom(event):
        raise RuntimeError("listener bug")

    mux = TeleopMux(MuxConfig(start_mode="policy"), SafetyEnvelope(SafetyConfig()), on_switch=boom)
    assert mux.step(0.0, MEASURED, POLICY_DX, STALE_IMAGE).is_hold
    assert mux.mode is Mode.HOLD


def test_event_log_is_bounded():
    mux = make(event_log_size=3)
    for i in range(5):
        mux.takeover("t", i)
        mux.request_hold("h", i + 0.5)
    assert len(mux.events) == 3 and mux.events[-1].time == 4.5


def moved(dx=0.0, dz=0.0) -> Pose:
    return Pose.from_arrays(MEASURED.position + np.array([dx, 0.0, dz]), MEASURED.quaternion)


def test_hold_relatches_on_takeover_and_resume_but_not_on_fallback_or_hold_request():
    mux = make()
    assert mux.step(0.0, MEASURED, None, OK).position[2] == pytest.approx(0.3)  # latched here
    mux.request_hold("operator", 0.01)
    assert mux.step(0.02, moved(dz=-0.02), None, OK).position[2] == pytest.approx(0.3)  # sagged: still held
    mux.takeover("button", 0.03)  # explicit: re-latch where the arm is now
    assert mux.step(0.04, moved(dz=-0.02), None, OK).position[2] == pytest.approx(0.28)
    assert mux.step(0.06, moved(dz=-0.03), None, OK).position[2] == pytest.approx(0.28)
    assert mux.resume_policy("operator", 0.07, health=OK)  # a new engage: re-latch too
    held = mux.step(0.08, moved(dz=-0.03), None, OK)  # policy mode, no action yet: hold
    assert held.is_hold and held.position[2] == pytest.approx(0.27)
    # the policy's chunk goes stale: the automatic fallback keeps the latch of the hold already running
    fallback = mux.step(0.1, moved(dz=-0.05), None, STALE_IMAGE)
    assert mux.mode is Mode.HOLD and fallback.position[2] == pytest.approx(0.27)


def test_resume_from_teleop_hands_over_to_the_policy_from_where_the_operator_left_the_arm():
    events = []
    mux = make(events)
    mux.takeover("button", 0.0)
    mux.set_teleop(TELEOP_DY, 0.0)
    driven = mux.step(0.02, MEASURED, POLICY_DX, OK)
    assert driven.source is Source.TELEOP and driven.delta[1] == pytest.approx(0.002)
    # refused while unhealthy: the operator keeps control, nothing switches
    assert not mux.resume_policy("operator", 0.03, health=STALE_IMAGE)
    assert mux.mode is Mode.TELEOP
    assert mux.step(0.04, MEASURED, POLICY_DX, OK).source is Source.TELEOP
    # accepted: the next tick is the policy's, integrated from the teleop target, and teleop input is ignored
    assert mux.resume_policy("operator", 0.05, health=OK)
    mux.set_teleop(TELEOP_DY, 0.05)  # the operator's device is still live
    cmd = mux.step(0.06, MEASURED, POLICY_DX, OK)
    assert cmd.source is Source.POLICY and cmd.delta[1] == 0.0 and cmd.delta[0] == pytest.approx(0.001)
    np.testing.assert_allclose(cmd.position, driven.position + np.array([0.001, 0.002, 0.0]), atol=1e-12)
    assert [(e.previous, e.mode, e.automatic) for e in events] == [
        (Mode.HOLD, Mode.TELEOP, False), (Mode.TELEOP, Mode.POLICY, False)]


def test_resume_from_teleop_then_fault_falls_back_to_the_live_operator():
    mux = make(fallback="teleop")
    mux.takeover("button", 0.0)
    assert mux.resume_policy("operator", 0.01, health=OK)
    mux.set_teleop(TELEOP_DY, 0.02)
    cmd = mux.step(0.03, MEASURED, POLICY_DX, STALE_IMAGE)
    assert mux.mode is Mode.TELEOP and cmd.source is Source.TELEOP


def test_fault_hold_is_automatic_and_logged_once():
    events = []
    mux = make(events)
    mux.takeover("button", 0.0)
    mux.fault_hold("control tick failed", 0.01)
    mux.fault_hold("control tick failed", 0.02)  # already holding: no second event
    assert mux.mode is Mode.HOLD
    assert [(e.mode, e.automatic) for e in events] == [(Mode.TELEOP, False), (Mode.HOLD, True)]
