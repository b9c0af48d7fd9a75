"""ControlLoop end to end at 50 Hz with a simulated inference worker (times passed explicitly)."""

import dataclasses
import logging
import math

import numpy as np
import pytest

from mole_inference.config.control import ControlConfig, SchedulerConfig
from mole_inference.control.loop import ControlLoop
from mole_inference.control.mux import Mode
from mole_inference.control.safety import Source
from mole_inference.control.transforms import Pose
from mole_inference.control.watchdog import Fault
from mole_inference.errors import InputError

DT = 0.02
MEASURED = Pose.from_arrays([0.5, 0.0, 0.3], [1.0, 0.0, 0.0, 0.0])


def chunk(dx: float, n: int = 16) -> np.ndarray:
    c = np.zeros((n, 7))
    c[:, 0] = dx
    c[:, 6] = 1.0
    return c


def feed(loop: ControlLoop, now: float) -> None:
    loop.image_received(now)
    loop.pose_received(now)


def test_policy_runs_then_falls_back_when_camera_dies():
    events = []
    loop = ControlLoop(ControlConfig(), on_switch=events.append)
    feed(loop, 0.0)
    assert not loop.resume_policy("operator", 0.0)  # no chunk yet
    loop.inference_started(0.0)
    loop.inference_finished(0.15)
    assert loop.push_chunk(chunk(0.01), image_stamp=0.0, now=0.15)
    feed(loop, 0.15)
    assert loop.resume_policy("operator", 0.15)
    t, sources = 0.16, []
    for _ in range(10):
        feed(loop, t)
        cmd = loop.tick(t, MEASURED)
        sources.append(cmd.source)
        assert cmd.delta[0] == pytest.approx(0.002)  # 1 cm per 0.1 s step -> 2 mm per 20 ms tick
        t += DT
    assert sources == [Source.POLICY] * 10
    # camera stops; pose keeps coming
    for _ in range(20):
        loop.pose_received(t)
        cmd = loop.tick(t, MEASURED)
        t += DT
    assert loop.mux.mode is Mode.HOLD and cmd.is_hold
    assert events[-1].automatic and "stale_image" in events[-1].reason
    assert "stale_image" in loop.last_health.reason


def test_exhausted_chunk_holds_and_stale_chunk_falls_back():
    loop = ControlLoop(ControlConfig())
    feed(loop, 0.0)
    loop.push_chunk(chunk(0.01, n=2), 0.0, 0.05)  # covers 0.0-0.2 s
    assert loop.resume_policy("go", 0.05)
    assert loop.tick(0.1, MEASURED).source is Source.POLICY
    feed(loop, 0.5)
    cmd = loop.tick(0.5, MEASURED)
    assert cmd.is_hold and loop.mux.mode is Mode.POLICY  # no action, not yet unhealthy
    feed(loop, 1.1)
    cmd = loop.tick(1.1, MEASURED)
    assert cmd.is_hold and loop.mux.mode is Mode.HOLD
    assert "stale_chunk" in loop.mux.events[-1].reason


def test_clear_chunks_and_out_of_order_push():
    loop = ControlLoop(ControlConfig(), now=0.0)
    feed(loop, 0.0)
    loop.push_chunk(chunk(0.01), 0.1, 0.2)
    assert not loop.push_chunk(chunk(0.02), 0.05, 0.21)
    feed(loop, 0.21)
    assert loop.resume_policy("go", 0.21)
    feed(loop, 0.22)
    assert loop.tick(0.22, MEASURED).delta[0] == pytest.approx(0.002)
    loop.clear_chunks()
    assert loop.tick(0.24, MEASURED).is_hold


def test_takeover_and_request_hold_through_loop():
    loop = ControlLoop(ControlConfig())
    feed(loop, 0.0)
    loop.takeover("gamepad button", 0.0)
    loop.set_teleop(np.array([0.0, 0.0, 0.001, 0.0, 0.0, 0.0, 1.0]), 0.0)
    cmd = loop.tick(0.02, MEASURED)
    assert cmd.source is Source.TELEOP and cmd.position[2] == pytest.approx(0.301)
    loop.request_hold("done", 0.04)
    assert loop.tick(0.04, MEASURED).is_hold


def test_hold_holds_the_latched_pose_while_the_arm_is_pushed():
    loop = ControlLoop(ControlConfig())
    t, targets = 0.0, []
    for k in range(50):  # hold mode (start): the arm sags 2 cm under a load while the pose keeps coming
        measured = Pose.from_arrays(MEASURED.position - np.array([0.0, 0.0, 0.02 * k / 49]), MEASURED.quaternion)
        feed(loop, t)
        cmd = loop.tick(t, measured)  # a command every tick: never silent
        assert cmd.is_hold
        targets.append(cmd.position)
        t += DT
    assert np.linalg.norm(measured.position - MEASURED.position) == pytest.approx(0.02)
    assert np.max(np.linalg.norm(np.array(targets) - MEASURED.position, axis=1)) < 1e-3


def engaged(config: ControlConfig | None = None, dx: float = 0.01, t: float = 0.0) -> ControlLoop:
    """A loop at time `t` driven by the policy: fresh inputs, a chunk from the image at `t`, resumed."""
    loop = ControlLoop(config or ControlConfig(), now=t)
    feed(loop, t)
    assert loop.push_chunk(chunk(dx), image_stamp=t, now=t)
    assert loop.resume_policy("operator", t)
    return loop


def test_yaw_step_across_two_pi_turns_the_short_way_through_the_loop():
    # issue #11: a dyaw of 2*pi - 0.1 per 0.1 s step is the rotation -0.1; split per tick before normalising it
    # became +1.24 rad per tick, clamped to +0.05: a turn the opposite way, five times faster than asked
    loop = engaged()
    c = chunk(0.0)
    c[:, 5] = 2 * math.pi - 0.1
    assert loop.push_chunk(c, image_stamp=0.0, now=0.01)
    feed(loop, 0.02)
    cmd = loop.tick(0.02, MEASURED)
    assert cmd.source is Source.POLICY
    assert cmd.delta[5] == pytest.approx(-0.02, abs=1e-9)  # -0.1 / 5 ticks, unclamped


def test_stale_pose_in_policy_mode_holds_the_latched_pose_and_falls_back():
    events = []
    loop = ControlLoop(ControlConfig(), on_switch=events.append)
    feed(loop, 0.0)
    loop.push_chunk(chunk(0.01), 0.0, 0.0)
    assert loop.resume_policy("go", 0.0)
    feed(loop, 0.02)
    first = loop.tick(0.02, MEASURED)
    assert first.source is Source.POLICY
    t = 0.04
    while t < 0.2:  # the pose stream stops at 0.02 (max_pose_age 0.1 s); camera and chunks keep coming
        loop.image_received(t)
        cmd = loop.tick(t, MEASURED)
        t += DT
    assert cmd.is_hold and loop.mux.mode is Mode.HOLD
    assert Fault.STALE_POSE in loop.last_health.faults
    assert events[-1].automatic and "stale_pose" in events[-1].reason
    np.testing.assert_allclose(cmd.position, MEASURED.position, atol=1e-12)  # latched, not a last policy step
    # a stale pose holds even a live operator: nothing may move the arm on a pose it cannot see
    loop.takeover("operator", t)
    loop.set_teleop(np.array([0.001, 0, 0, 0, 0, 0, 1.0]), t)
    assert loop.tick(t, MEASURED).is_hold


def test_a_tick_that_raises_holds_logs_and_the_loop_keeps_running(monkeypatch, caplog):
    loop = engaged()
    feed(loop, 0.02)
    assert loop.tick(0.02, MEASURED).source is Source.POLICY

    def broken(now):
        raise RuntimeError("scheduler exploded")

    monkeypatch.setattr(loop.scheduler, "next_action", broken)
    with caplog.at_level(logging.ERROR, logger="mole_inference.control.loop"):
        cmds = []
        for k in range(2, 10):
            feed(loop, k * DT)
            cmds.append(loop.tick(k * DT, MEASURED))
    assert all(c.is_hold and "scheduler exploded" in c.reason for c in cmds)
    assert loop.mux.mode is Mode.HOLD and loop.failed_ticks == 8
    assert caplog.text.count("control tick failed") == 1  # throttled: once a second, not 50 times
    monkeypatch.undo()
    feed(loop, 0.2)
    assert loop.tick(0.2, MEASURED).is_hold  # no automatic return to the policy
    assert loop.resume_policy("operator", 0.2)
    assert loop.tick(0.2, MEASURED).source is Source.POLICY


@pytest.mark.parametrize("measured", [
    Pose.from_arrays([math.nan, 0.0, 0.3], [1.0, 0.0, 0.0, 0.0]),  # never a valid one: nothing to hold
    Pose(np.zeros(2), np.array([1.0, 0.0, 0.0, 0.0])),  # malformed
])
def test_a_tick_without_any_usable_pose_raises_a_clear_input_error(measured):
    loop = ControlLoop(ControlConfig())
    feed(loop, 0.0)
    with pytest.raises(InputError, match=r"control tick failed|measured pose"):
        loop.tick(0.0, measured)
    assert loop.tick(0.02, MEASURED).is_hold  # and the next good pose is served normally


def test_invalid_pose_after_a_valid_one_holds_the_last_valid_pose():
    loop = engaged()
    feed(loop, 0.02)
    loop.tick(0.02, MEASURED)
    cmd = loop.tick(0.04, Pose.from_arrays([math.inf, 0.0, 0.3], [1.0, 0.0, 0.0, 0.0]))
    assert cmd.is_hold and np.isfinite(cmd.position).all()


def test_reactivation_starts_afresh_and_never_resumes_the_policy_implicitly():
    events = []
    loop = engaged()
    loop.mux.on_switch = events.append
    feed(loop, 0.02)
    assert loop.tick(0.02, MEASURED).source is Source.POLICY
    # deactivate at 0.04 (the node stops ticking), reactivate at 0.3: inputs kept arriving meanwhile
    for t in (0.1, 0.2, 0.3):
        feed(loop, t)
    loop.reset("activate", 0.3)
    assert loop.mux.mode is Mode.HOLD and events[-1].reason == "activate" and not events[-1].automatic
    cmd = loop.tick(0.3, MEASURED)
    assert cmd.is_hold  # the chunk from before the deactivation (it covers 0.0-1.6 s) is not executed
    assert loop.scheduler.next_action(0.32) is None
    assert loop.envelope.last_gripper is None  # no previous target or gripper carried over
    assert not loop.resume_policy("operator", 0.3)  # ... and the policy needs fresh inputs and a chunk
    assert set(loop.last_health.faults) == {Fault.NO_IMAGE, Fault.NO_CHUNK, Fault.NO_POSE}
    feed(loop, 0.3)
    loop.push_chunk(chunk(0.01), 0.3, 0.3)
    assert loop.resume_policy("operator", 0.3)
    assert loop.tick(0.32, MEASURED).source is Source.POLICY


def test_reactivation_returns_to_the_configured_start_mode():
    cfg = ControlConfig(mux=dataclasses.replace(ControlConfig().mux, start_mode="policy"))
    loop = ControlLoop(cfg)
    loop.takeover("operator", 0.0)
    loop.reset("activate", 0.1)
    assert loop.mux.mode is Mode.POLICY


@pytest.mark.parametrize("ensemble", [False, True])
def test_instruction_change_drops_queued_actions_until_the_next_chunk(ensemble):
    cfg = ControlConfig(scheduler=SchedulerConfig(ensemble=ensemble))
    loop = engaged(cfg, dx=0.01)
    loop.push_chunk(chunk(0.01), 0.01, 0.01)
    feed(loop, 0.02)
    assert loop.tick(0.02, MEASURED).delta[0] == pytest.approx(0.002)
    loop.clear_chunks()  # the worker saw a new instruction
    for t in (0.04, 0.06):
        feed(loop, t)
        cmd = loop.tick(t, MEASURED)
        assert cmd.is_hold and cmd.reason == "no policy action"  # not one more step of the old instruction
    assert loop.mux.mode is Mode.POLICY  # holding for the next chunk is not a fault
    loop.push_chunk(chunk(-0.01), 0.06, 0.07)  # the first chunk for the new instruction
    feed(loop, 0.08)
    assert loop.tick(0.08, MEASURED).delta[0] == pytest.approx(-0.002)


def test_chunk_from_an_image_stamped_in_the_future_is_rejected():
    loop = engaged()
    with pytest.raises(InputError, match=r"in the future|after its arrival"):
        loop.push_chunk(chunk(0.05), image_stamp=5.0, now=0.01)
    feed(loop, 0.02)
    assert loop.tick(0.02, MEASURED).delta[0] == pytest.approx(0.002)  # the previous chunk still drives


def test_future_image_stamp_through_the_loop_lets_the_camera_timeout_fire():
    loop = engaged()
    assert not loop.image_received(3600.0, received=0.01)
    t = 0.02
    while loop.mux.mode is Mode.POLICY and t < 1.0:
        loop.pose_received(t, received=t)
        loop.tick(t, MEASURED)
        t += DT
    assert loop.mux.mode is Mode.HOLD and "stale_image" in loop.mux.events[-1].reason
    assert t == pytest.approx(0.32 + DT)  # the first tick past max_image_age after the last good frame (0.0)
