"""ControlLoop end to end at 50 Hz with a simulated inference worker (times passed explicitly)."""

import numpy as np
import pytest

from mole_inference.config.control import ControlConfig
from mole_inference.control.loop import ControlLoop
from mole_inference.control.mux import Mode
from mole_inference.control.safety import Source
from mole_inference.control.transforms import Pose

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
