"""A `vision.state_input` model under mole_policy: the measured pose at each frame's stamp reaches the policy, and a
missing or stale pose means no inference (hold) with the reason in the log and on /diagnostics.

StateInput and the InferenceWorker are driven with plain numbers and injected stamps; the node tests use real rclpy
and are ordered by polled conditions with generous deadlines, never by wall-clock bounds.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from mole_ros import conversions as conv
from mole_ros.inference_worker import InferenceWorker
from mole_ros.robot_checks import ERROR, OK, WARN
from mole_ros.state_input import StateInput

from mole_inference.config.control import ControlConfig
from mole_inference.control import ControlLoop, Pose, Source
from mole_inference.errors import InputError
from tests.ros.conftest import HOME, HOME_QUAT, FakePolicy, image_msg
from tests.ros.policy_stack import LOADED_MACHINE, Feeder, policy_node, subscribe_outputs

pytestmark = pytest.mark.ros

TOPIC = "/franka_robot_state_broadcaster/current_pose"
DEADLINE = 10.0  # s: only a bound on waiting


class StateModel(FakePolicy):
    """FakePolicy standing for a `vision.state_input` model (records every `state` it gets)."""

    @property
    def uses_state(self) -> bool:
        """Always: this fake reads the robot state."""
        return True


MEASURED = Pose.from_arrays(HOME, HOME_QUAT)


def pose_at(x: float) -> Pose:
    return Pose.from_arrays((x, 0.0, 0.4), HOME_QUAT)


# -- StateInput: which pose a frame gets ------------------------------------------------------------------------
def test_a_frame_gets_the_newest_pose_at_or_before_its_stamp():
    states = StateInput(max_age=0.1, span=1.0, pose_topic=TOPIC)
    for i in range(10):  # poses at 0.00, 0.01, ... 0.09 s with x = 0.5 + i mm
        states.add_pose(100.0 + 0.01 * i, pose_at(0.5 + 0.001 * i))
    np.testing.assert_allclose(states.at(100.045), [0.504, 0.0, 0.4, *HOME_QUAT])  # not the newest (0.509)
    assert states.at(100.05)[0] == pytest.approx(0.505)  # a pose stamped with the frame's instant is "at"
    assert states.at(100.095)[0] == pytest.approx(0.509)  # a newer frame: the newest pose
    assert states.at(99.95)[0] == pytest.approx(0.5)  # older than every pose: the nearest, the oldest one
    assert states.check().level == OK and states.lookups == 4


def test_a_stale_or_missing_pose_refuses_the_frame_and_says_why():
    states = StateInput(max_age=0.1, span=1.0, pose_topic=TOPIC)
    assert states.check().level == WARN  # nothing looked up yet
    with pytest.raises(InputError, match=f"no measured pose received on {TOPIC}"):
        states.at(5.0)
    check = states.check()
    assert check.level == ERROR and "holding: no measured pose" in check.message and check.values["refused"] == "1"
    states.add_pose(5.0, pose_at(0.5))
    with pytest.raises(InputError, match=r"250 ms older than it \(limit 100 ms, control.watchdog.max_pose_age\)"):
        states.at(5.25)  # the robot state stream stopped 250 ms before the frame
    with pytest.raises(InputError, match="200 ms newer than it"):
        states.at(4.8)  # the first pose came long after the frame
    assert states.check().values["pose_before_frame_ms"] == "-200.0"
    states.at(5.1)  # within the limit again
    assert states.check().level == OK and states.refused == 3


def test_the_history_spans_its_window_and_restarts_when_the_clock_goes_back():
    states = StateInput(max_age=0.1, span=0.5, pose_topic=TOPIC)
    for i in range(200):  # 2 s at 100 Hz: only the last 0.5 s is kept
        states.add_pose(10.0 + 0.01 * i, pose_at(0.5))
    assert states.check().values["poses_buffered"] == "51"
    states.add_pose(1.0, pose_at(0.6))  # the clock went back (a restarted simulation)
    assert states.check().values["poses_buffered"] == "1"
    assert states.at(1.0)[0] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="max_age"):
        StateInput(max_age=0.2, span=0.1, pose_topic=TOPIC)


# -- InferenceWorker: the state goes to the policy, or nothing does ----------------------------------------------
def run_one_frame(state_at: Any) -> tuple[StateModel, list[str], ControlLoop]:
    """One frame stamped 7.0 through a started InferenceWorker whose loop drives from a queued chunk; the policy,
    the reported errors and the loop."""
    policy, loop, errors, done = StateModel(), ControlLoop(ControlConfig()), [], threading.Event()
    loop.image_received(7.0, 7.0)
    loop.pose_received(7.0, 7.0)
    loop.push_chunk(FakePolicy().infer(np.zeros((8, 8, 3), np.uint8), "").actions, 7.0, 7.0)
    assert loop.resume_policy("test", 7.0) and loop.tick(7.0, MEASURED).source is Source.POLICY

    def on_error(message: str) -> None:
        errors.append(message)
        done.set()

    worker = InferenceWorker(policy, loop, clock=lambda: 7.0, on_chunk=lambda c, s: done.set(), on_error=on_error,
                             max_image_side=640, torch_threads=0, state_at=state_at)
    worker.set_instruction("pick up the red block")
    worker.start()
    try:
        worker.submit(image_msg(7_000_000_000), 7.0)
        assert done.wait(DEADLINE), "the frame was never handled"
    finally:
        worker.stop()
    return policy, errors, loop


def test_the_worker_passes_the_state_at_the_frame_stamp():
    asked: list[float] = []

    def state_at(stamp: float) -> np.ndarray:
        asked.append(stamp)
        return np.array([*HOME, *HOME_QUAT])

    policy, errors, _ = run_one_frame(state_at)
    assert asked == [7.0] and not errors and policy.calls == 1
    np.testing.assert_array_equal(policy.states[0], [*HOME, *HOME_QUAT])


def test_without_a_state_the_worker_does_not_infer_and_reports_why():
    def state_at(stamp: float) -> np.ndarray:
        raise InputError("the model reads the robot state, and no measured pose received on /pose")

    policy, errors, loop = run_one_frame(state_at)
    assert policy.calls == 0 and len(errors) == 1
    assert errors[0] == "no inference, holding: the model reads the robot state, and no measured pose received on /pose"
    assert loop.tick(7.02, MEASURED).is_hold  # the queued actions were dropped: no step without the state


# -- the node --------------------------------------------------------------------------------------------------
CAMERA_LAG = 10  # feeder cycles (10 ms each) between a frame's capture stamp and its publication


class LaggedMsgs:
    """Builders for the Feeder: each pose carries its own stamp in y (1e-8 m per microsecond, under 0.1 m), and each
    frame is stamped CAMERA_LAG cycles before it is sent, at the stamp of a pose sent back then (a camera with
    ~100 ms latency). The pose at a frame's stamp is then long delivered, while the newest pose is ~100 ms newer."""

    HOME, HOME_QUAT = HOME, HOME_QUAT

    def __init__(self) -> None:
        self.pose_stamps: list[int] = []
        self.frame_stamps: set[int] = set()

    def pose(self, t_ns: int) -> Any:
        self.pose_stamps.append(t_ns)
        return conv.pose_to_msg(Pose.from_arrays((HOME[0], encode(t_ns), HOME[2]), HOME_QUAT), t_ns, "fr3_link0")

    def image(self, t_ns: int) -> Any:
        if len(self.pose_stamps) <= CAMERA_LAG:
            return None
        stamp = self.pose_stamps[-1 - CAMERA_LAG]
        self.frame_stamps.add(stamp)
        return image_msg(stamp)


def encode(t_ns: int) -> float:
    return (t_ns // 1000 % 10_000_000) * 1e-8


def decode(y: float) -> int:
    return round(y * 1e8)  # microseconds modulo 10 s


def statuses(out: dict[str, Any], name: str) -> list[DiagnosticStatus]:
    return [s for _, m in out["diag"].items for s in m.status if s.name == f"{name}: state input"]


def test_the_node_passes_the_measured_pose_at_each_frame_stamp(ros, wait):
    policy, lagged = StateModel(), LaggedMsgs()
    node = policy_node(ros, "mole_policy_state", lambda cfg: policy, {"diagnostics_period": 0.2, **LOADED_MACHINE})
    out = subscribe_outputs(ros, "diag")
    node.trigger_configure()
    assert node.state_input is not None and node.worker.state_at == node.state_input.at
    node.trigger_activate()
    try:
        with Feeder(ros, lagged):
            assert wait(lambda: policy.calls >= 5, DEADLINE), "the policy was never called"
        states = [s for s in policy.states if s is not None]
        assert len(states) == len(policy.states), "a call without a state"
        for state in states:
            np.testing.assert_allclose(state[[0, 2]], [HOME[0], HOME[2]])
            np.testing.assert_allclose(state[3:], HOME_QUAT)
        # the pose each frame was taken with: its stamp is a frame's stamp (the newest pose would be ~100 ms newer)
        frames = {t // 1000 % 10_000_000 for t in lagged.frame_stamps}
        assert {decode(s[1]) for s in states} <= frames
        assert wait(lambda: any(s.level == DiagnosticStatus.OK for s in statuses(out, node.get_name())), DEADLINE)
    finally:
        ros.remove(node)


def test_no_measured_pose_means_no_inference_with_the_reason_logged_and_on_diagnostics(ros, msgs, wait):
    policy = StateModel()
    node = policy_node(ros, "mole_policy_state", lambda cfg: policy, {"diagnostics_period": 0.2, **LOADED_MACHINE})
    out = subscribe_outputs(ros, "diag", "log")
    name = node.get_name()
    node.trigger_configure()
    node.trigger_activate()
    reason = f"no measured pose received on {TOPIC}"
    feeder = Feeder(ros, msgs)
    feeder.pose_pub.publish = lambda msg: None  # the robot state broadcaster is down; camera and instruction are up
    try:
        with feeder:
            assert wait(lambda: any(reason in m.msg for _, m in out["log"].items if m.name == name), DEADLINE)
            assert wait(lambda: any(s.level == DiagnosticStatus.ERROR and reason in s.message
                                    for s in statuses(out, name)), DEADLINE)
            assert feeder.images_sent > 0 and policy.calls == 0 and node.worker.failures > 0
            assert node.loop.mux.mode.value == "hold"
    finally:
        ros.remove(node)
