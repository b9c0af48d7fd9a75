"""Gripper output (issue #10, item 9): hysteresis, goals sent off the control thread, results checked, a missing
action server reported, no silent fallback. Fake action clients stand in for franka_gripper (no server, no
executor); every wait on the sender thread is an Event or a polled condition with a hang guard, never a sleep."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from action_msgs.msg import GoalStatus
from mole_ros import gripper as gripper_mod
from mole_ros.gripper import FrankaActions, GripperHysteresis, GripperOutput, GripperSettings, resolve_mode

from mole_inference.errors import ConfigError

pytestmark = pytest.mark.ros

HANG = 10.0  # s: only reached when the sender is broken


class FakeFuture:
    """The part of rclpy.task.Future the sender uses; completed by the test."""

    def __init__(self) -> None:
        self._done, self._result, self._callbacks = False, None, []

    def done(self) -> bool:
        return self._done

    def result(self) -> Any:
        return self._result

    def add_done_callback(self, callback) -> None:
        self._callbacks.append(callback)

    def set_result(self, value: Any) -> None:
        self._result, self._done = value, True
        for callback in self._callbacks:
            callback(self)


@dataclass
class Sent:
    goal: Any
    acknowledged: FakeFuture = field(default_factory=FakeFuture)
    result: FakeFuture = field(default_factory=FakeFuture)

    def finish(self, success: bool = True, error: str = "", status: int = GoalStatus.STATUS_SUCCEEDED) -> None:
        """Accept the goal and complete it with `success` / `error`."""
        self.acknowledged.set_result(SimpleNamespace(accepted=True, get_result_async=lambda: self.result))
        self.result.set_result(SimpleNamespace(status=status, result=SimpleNamespace(success=success, error=error)))


class FakeClient:
    """An ActionClient whose server is there when `ready`; `send_goal_async` may block until `gate` is set."""

    def __init__(self, ready: bool = True) -> None:
        self.ready = ready
        self.sent: list[Sent] = []
        self.goal_in = threading.Semaphore(0)
        self.gate = threading.Event()
        self.gate.set()
        self.inside = threading.Event()

    def server_is_ready(self) -> bool:
        return self.ready

    def send_goal_async(self, goal: Any) -> FakeFuture:
        self.inside.set()
        assert self.gate.wait(HANG)
        self.sent.append(Sent(goal))
        self.goal_in.release()
        return self.sent[-1].acknowledged

    def destroy(self) -> None:
        pass

    def next_goal(self) -> Sent:
        assert self.goal_in.acquire(timeout=HANG), "no goal sent"
        return self.sent[-1]


class GraspGoal:
    def __init__(self, width: float, speed: float, force: float) -> None:
        self.width, self.speed, self.force = width, speed, force
        self.epsilon = SimpleNamespace(inner=0.005, outer=0.005)  # franka_msgs/msg/GraspEpsilon defaults


class MoveGoal:
    def __init__(self, width: float, speed: float) -> None:
        self.width, self.speed = width, speed


class FakeNode:
    def __init__(self) -> None:
        self.errors: list[str] = []
        node = self

        class Logger:
            def info(self, msg: str, **_: Any) -> None:
                pass

            warning = info

            def error(self, msg: str, **_: Any) -> None:
                node.errors.append(msg)

        self._logger = Logger()

    def get_logger(self):
        return self._logger


@pytest.fixture
def franka(monkeypatch):
    """(output, grasp client, move client, node) with fake franka_gripper clients; stopped afterwards."""
    monkeypatch.setattr(gripper_mod, "franka_msgs_available", lambda: True)
    grasp, move = FakeClient(), FakeClient()
    actions = FrankaActions(grasp, move, SimpleNamespace(Goal=GraspGoal), SimpleNamespace(Goal=MoveGoal))
    node = FakeNode()
    settings = GripperSettings("franka", "/unused", "/franka_gripper", 0.08, 0.1, 20.0, server_timeout=0.0,
                               result_timeout=HANG, retry_period=HANG)
    out = GripperOutput(node, settings, actions=lambda n, ns: actions)
    yield out, grasp, move, node
    grasp.gate.set()
    move.gate.set()
    out.stop(HANG)


def poll(predicate, timeout: float = HANG) -> bool:
    """Condition polled on the sender's lock-free fields; the timeout only guards against a hang."""
    done = threading.Event()
    deadline = threading.Timer(timeout, done.set)
    deadline.start()
    try:
        while not done.is_set():
            if predicate():
                return True
            done.wait(0.001)
        return predicate()
    finally:
        deadline.cancel()


# -- hysteresis ------------------------------------------------------------------------------------------------
def test_hysteresis_keeps_the_state_inside_the_band():
    h = GripperHysteresis(0.4, 0.6)
    states = [h.update(c) for c in (0.55, 0.45, 0.39, 0.5, 0.59, 0.61, 0.41, 0.45, 0.3)]
    assert states == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    h.reset()
    assert h.update(0.45) == 0.0  # fresh: the nearer side of the middle


def test_a_command_chattering_around_half_sends_one_goal(franka):
    out, grasp, move, _ = franka
    out.start()
    assert out.send(0.9)
    move.next_goal().finish()
    for c in (0.49, 0.51, 0.45, 0.55, 0.42, 0.58):  # a threshold at 0.5 would toggle six times
        assert not out.send(c)
    assert not grasp.sent and len(move.sent) == 1


def test_settings_and_config_reject_an_inverted_band():
    with pytest.raises(ConfigError, match="close_below"):
        GripperSettings("none", "", "", 0.08, 0.1, 20.0, close_below=0.7, open_above=0.3)
    from mole_inference.config.control import SafetyConfig

    with pytest.raises(ConfigError, match="gripper_close_below"):
        SafetyConfig(gripper_close_below=0.7, gripper_open_above=0.3)


# -- goals off the control thread ------------------------------------------------------------------------------
def test_send_never_waits_on_the_action_client(franka):
    out, grasp, _, _ = franka
    out.start()
    grasp.gate.clear()  # the client's send_goal_async hangs
    assert out.send(0.0)
    assert grasp.inside.wait(HANG)  # the sender thread is stuck inside the client ...
    tick = threading.Thread(target=lambda: (out.send(1.0), out.send(0.0)), name="control")
    tick.start()
    tick.join(HANG)
    assert not tick.is_alive()  # ... and the control thread is not
    grasp.gate.set()
    goal = grasp.next_goal().goal
    assert (goal.width, goal.speed, goal.force) == (0.0, 0.1, 20.0)
    assert goal.epsilon.inner == goal.epsilon.outer == 0.08  # any object width counts as grasped


def test_move_goal_opens_to_open_width(franka):
    out, _, move, _ = franka
    out.start()
    out.send(1.0)
    goal = move.next_goal().goal
    assert (goal.width, goal.speed) == (0.08, 0.1)


# -- results checked and reported ------------------------------------------------------------------------------
def test_a_failed_grasp_is_reported_and_a_success_clears_it(franka):
    out, grasp, move, node = franka
    out.start()
    out.send(0.0)
    grasp.next_goal().finish(success=False, error="libfranka: command aborted")
    assert poll(lambda: out.failures == 1)
    ok, text = out.status()
    assert not ok and "grasp" in text and "command aborted" in text and node.errors
    out.send(1.0)
    move.next_goal().finish()
    assert poll(lambda: out.status()[0])


def test_an_aborted_goal_status_is_a_failure(franka):
    out, _, move, _ = franka
    out.start()
    out.send(1.0)
    move.next_goal().finish(success=True, status=GoalStatus.STATUS_ABORTED)
    assert poll(lambda: out.failures == 1)
    assert "status 6" in out.status()[1]


def test_a_rejected_goal_is_a_failure(franka):
    out, _, move, _ = franka
    out.start()
    out.send(1.0)
    move.next_goal().acknowledged.set_result(SimpleNamespace(accepted=False))
    assert poll(lambda: out.failures == 1)
    assert "rejected" in out.status()[1]


def test_missing_action_server_is_an_error_at_activation(franka):
    out, grasp, move, node = franka
    grasp.ready = move.ready = False
    out.start()
    assert poll(lambda: out.server_ready is False)
    ok, text = out.status()
    assert not ok and "/franka_gripper/grasp" in text and "not available" in text
    assert any("not available" in e for e in node.errors)


def test_franka_without_franka_msgs_is_a_config_error(monkeypatch):
    monkeypatch.setattr(gripper_mod, "franka_msgs_available", lambda: False)
    with pytest.raises(ConfigError, match="franka_msgs"):
        resolve_mode("franka")
    assert resolve_mode("auto") == "topic"  # only auto may fall back, and it says so (warning)
    with pytest.raises(ConfigError, match="expected one of"):
        resolve_mode("frank")


def test_resync_sends_the_unchanged_state_once_more(franka):
    """Only changes are sent; after `resync` (a new instruction: the hand may have been reset meanwhile) the next
    command goes out even if it is the state sent last, and later ones again only on change."""
    out, grasp, move, _ = franka
    out.start()
    assert out.send(0.0)
    grasp.next_goal().finish()
    assert not out.send(0.0) and len(grasp.sent) == 1
    out.resync()
    assert out.send(0.1)  # still "closed", sent again
    grasp.next_goal().finish()
    assert len(grasp.sent) == 2 and not move.sent
    assert not out.send(0.0)
    assert len(grasp.sent) == 2
