"""Control-path faults of issue #11 at the mole_ros seam: twist output, a raising tick, instruction change,
deactivate/reactivate. All but the last are deterministic (explicit times, no executor); the last runs the real
node and asserts only on what was published, never on arrival times."""

from __future__ import annotations

import logging
import math
import os
import threading
import time

import numpy as np
import pytest
from geometry_msgs.msg import TwistStamped
from mole_ros import conversions as conv
from mole_ros.control_thread import ControlThread
from mole_ros.inference_worker import InferenceWorker

from mole_inference.config.control import ControlConfig, SafetyConfig
from mole_inference.control import ControlLoop, Pose, SafetyEnvelope, Source
from tests.ros.policy_stack import LOADED_MACHINE, Feeder, policy_node, resume, subscribe_outputs

pytestmark = pytest.mark.ros

DT = 0.02
MEASURED = Pose.from_arrays([0.5, 0.0, 0.3], [1.0, 0.0, 0.0, 0.0])


def twist_vector(msg: TwistStamped) -> np.ndarray:
    t = msg.twist
    return np.array([t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z])


# -- output: twist ------------------------------------------------------------------------------------------------
def test_twist_is_the_applied_delta_over_dt_and_zero_on_hold():
    env = SafetyEnvelope(SafetyConfig(max_step_translation=0.005, max_step_rotation=0.05))
    cmd = env.apply(MEASURED, np.array([0.001, -0.002, 0.0005, 0.0, 0.0, 0.01, 1.0]), Source.POLICY)
    msg = conv.command_to_twist(cmd, DT, 1_700_000_000_000_000_000, "fr3_link0")
    np.testing.assert_allclose(twist_vector(msg), cmd.delta[:6] / DT, atol=1e-12)
    np.testing.assert_allclose(twist_vector(msg), [0.05, -0.1, 0.025, 0.0, 0.0, 0.5], atol=1e-9)
    assert msg.header.frame_id == "fr3_link0" and conv.stamp_to_sec(msg.header.stamp) == pytest.approx(1.7e9)
    # clamped: the twist is what the envelope let through, not what was asked for
    clamped = env.apply(MEASURED, np.array([0.1, 0, 0, 0, 0, 2 * math.pi - 0.3, 1.0]), Source.POLICY)
    v = twist_vector(conv.command_to_twist(clamped, DT, 0, "fr3_link0"))
    assert np.linalg.norm(v[:3]) == pytest.approx(0.005 / DT) and v[0] > 0
    assert v[5] == pytest.approx(-0.05 / DT)  # dyaw 2*pi - 0.3 is the rotation -0.3: the short way
    # hold: zero twist, whatever the previous command was
    held = env.hold(MEASURED, "test")
    assert held.is_hold
    np.testing.assert_array_equal(twist_vector(conv.command_to_twist(held, DT, 0, "fr3_link0")), np.zeros(6))


# -- a tick that raises -------------------------------------------------------------------------------------------
def test_control_thread_survives_a_raising_tick():
    calls: list[int] = []
    done = threading.Event()

    def tick() -> None:
        calls.append(1)
        if len(calls) >= 6:
            done.set()
        if len(calls) % 2:
            raise RuntimeError("tick failed")

    thread = ControlThread(0.002, tick, name="test_control")
    thread.start()
    try:
        assert done.wait(10.0), f"control thread stopped after {len(calls)} ticks"
    finally:
        thread.stop()


def run_ticks(thread_kwargs: dict, ticks: int = 3) -> tuple[ControlThread, list[int]]:
    """Start a ControlThread, let it tick `ticks` times recording its thread's scheduling policy, stop it."""
    policies: list[int] = []
    done = threading.Event()

    def tick() -> None:
        policies.append(os.sched_getscheduler(0))
        if len(policies) >= ticks:
            done.set()

    thread = ControlThread(0.002, tick, name="test_control", **thread_kwargs)
    thread.start()
    try:
        assert done.wait(10.0)
    finally:
        thread.stop()
    return thread, policies


def test_control_thread_runs_under_sched_fifo_when_asked_and_allowed():
    _, normal = run_ticks({})
    assert set(normal) == {os.SCHED_OTHER}
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))  # may this process use real-time at all?
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError:
        pytest.skip("no rtprio permission here: covered by the refusal test")
    thread, fifo = run_ticks({"rt_priority": 10})
    assert thread.rt_active and set(fifo) == {os.SCHED_FIFO}
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # only the control thread, not its caller


def test_control_thread_refused_real_time_warns_and_keeps_ticking(monkeypatch, caplog):
    def refuse(*_):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with caplog.at_level(logging.WARNING):
        thread, policies = run_ticks({"rt_priority": 10})
    assert not thread.rt_active and len(policies) >= 3  # ticking on at normal priority
    assert "rtprio" in caplog.text
    with pytest.raises(ValueError, match="rt_priority"):
        ControlThread(0.02, lambda: None, rt_priority=100)


# -- instruction change -------------------------------------------------------------------------------------------
def test_instruction_change_drops_queued_actions_and_resets_the_policy(fake_policy):
    resets: list[int] = []
    fake_policy.reset = lambda: resets.append(1)
    loop = ControlLoop(ControlConfig())
    worker = InferenceWorker(fake_policy, loop, clock=lambda: 0.0, on_chunk=lambda c, s: None,
                             on_error=lambda m: None, max_image_side=640)  # thread never started
    loop.image_received(0.0, 0.0)
    loop.pose_received(0.0, 0.0)
    worker.set_instruction("pick up the red block")
    loop.push_chunk(fake_policy.infer(np.zeros((8, 8, 3), np.uint8), "").actions, 0.0, 0.0)
    assert loop.resume_policy("operator", 0.0)
    assert loop.tick(DT, MEASURED).source is Source.POLICY
    worker.set_instruction("pick up the red block")  # the latched topic repeats itself: nothing dropped
    assert loop.tick(2 * DT, MEASURED).source is Source.POLICY
    assert len(resets) == 1
    worker.set_instruction("open the drawer")
    cmd = loop.tick(3 * DT, MEASURED)
    assert cmd.is_hold and len(resets) == 2  # no step of the old instruction after the change


# -- deactivate / reactivate of the real node, output: twist ----------------------------------------------------
def test_reactivated_node_holds_until_an_explicit_resume(ros, msgs, fake_policy, wait):
    node = policy_node(ros, "mole_policy_faults", lambda cfg: fake_policy, {"output": "twist", **LOADED_MACHINE})
    twists = subscribe_outputs(ros, "twists")["twists"]
    node.trigger_configure()
    node.trigger_activate()
    with Feeder(ros, msgs):
        assert wait(lambda: resume(ros, node).success, 5.0), "policy never became resumable"
        # the fake policy moves +x 1 cm per 0.1 s step: 0.1 m/s
        assert wait(lambda: len(twists) and twist_vector(twists.items[-1][1])[0] == pytest.approx(0.1), 2.0)
        node.trigger_deactivate()
        assert node.loop.mux.mode.value == "policy"  # deactivation itself changes nothing: output stops

        def quiet() -> bool:  # what was published before the deactivation has been delivered
            n = len(twists)
            time.sleep(0.2)
            return len(twists) == n

        assert wait(quiet, 3.0), "twists still published after deactivation"
        node.trigger_activate()
        assert node.loop.mux.mode.value == "hold"  # ... but activation starts afresh
        mark = len(twists)
        assert wait(lambda: len(twists) >= mark + 10, 3.0)
        after = [twist_vector(m) for _, m in twists.items[mark:]]
        assert all(not v.any() for v in after), "the policy drove after reactivation without a resume"
        assert wait(lambda: resume(ros, node).success, 5.0)
        assert wait(lambda: twist_vector(twists.items[-1][1])[0] == pytest.approx(0.1), 2.0)
    ros.remove(node)
