"""Gripper output: franka_gripper Grasp/Move actions (`gripper: franka`), a Float64 width topic, or nothing.

The command (1 = open, 0 = closed) goes through a hysteresis (close below `close_below`, open above
`open_above`, else keep the state), so a policy output hovering near 0.5 cannot make the hand chatter; only a
change of the binary state is sent: the FR3 hand executes one action at a time and a new goal preempts the
running one. Closing is a Grasp at width 0 with epsilons of `open_width` (it succeeds on any object width);
opening is a Move to `open_width`.

Action goals are sent by a sender thread, never by the control tick: `send` only stores the wanted state. The
thread waits for the goal's acceptance and result (futures completed by the node's executor) and records
failures (server absent, goal rejected, no answer in time, result `success: false` with its `error`), which
`status` reports for /diagnostics. `gripper: franka` never falls back to the topic: without franka_msgs it is a
ConfigError at configure, and an action server still absent `server_timeout` after `start` is an ERROR.

Interface checked against franka_ros2 (frankarobotics/franka_ros2, read at 43357d1):
franka_msgs/action/Grasp.action (goal: width, epsilon{inner, outer}, speed, force; result: success, error),
franka_msgs/action/Move.action (goal: width, speed; result: success, error), franka_msgs/action/Homing.action
(empty goal); franka_gripper/src/gripper_action_server.cpp creates the servers as "~/grasp", "~/move",
"~/homing" of the node `franka_gripper` (franka_gripper/launch/gripper.launch.py), accepts every goal, runs
each in its own thread, and aborts with `success: false` when libfranka reports a failure.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from action_msgs.msg import GoalStatus
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from std_msgs.msg import Float64

from mole_inference.errors import ConfigError
from mole_ros import qos
from mole_ros.conversions import gripper_width

MODES = ("auto", "franka", "topic", "none")


def franka_msgs_available() -> bool:
    """True when the franka_msgs Python package (built with franka_ros2) can be imported."""
    return importlib.util.find_spec("franka_msgs") is not None


def resolve_mode(mode: str) -> str:
    """The output actually used for `mode`; ConfigError for `franka` without franka_msgs or an unknown mode."""
    if mode not in MODES:
        raise ConfigError(f"gripper={mode!r}: expected one of {', '.join(MODES)}")
    if mode == "auto":
        return "franka" if franka_msgs_available() else "topic"
    if mode == "franka" and not franka_msgs_available():
        raise ConfigError("gripper='franka' but franka_msgs does not import: source the franka_ros2 workspace "
                          "(or set gripper: topic / none explicitly)")
    return mode


@dataclass(frozen=True)
class GripperSettings:
    """Where and how to command the gripper."""

    mode: str  # "auto" | "franka" | "topic" | "none"
    topic: str  # Float64 width topic (mode "topic")
    action_ns: str  # franka_gripper action namespace (mode "franka"), e.g. /franka_gripper
    open_width: float  # metres
    speed: float  # m/s
    force: float  # N, for grasping
    close_below: float = 0.4  # hysteresis: close when the command falls below this
    open_above: float = 0.6  # ... open when it rises above this; in between the state is kept
    server_timeout: float = 2.0  # s after start for the action servers to appear before it is an error
    result_timeout: float = 10.0  # s a goal may take (acceptance + result) before it is a failure
    retry_period: float = 1.0  # s between attempts while the action server is absent

    def __post_init__(self) -> None:
        if not 0.0 <= self.close_below <= self.open_above <= 1.0:
            raise ConfigError(f"gripper hysteresis close_below={self.close_below}, open_above={self.open_above}: "
                              "expected 0 <= close_below <= open_above <= 1")


class GripperHysteresis:
    """Binary gripper state (1 = open, 0 = closed) from a command in [0, 1] with a dead band."""

    def __init__(self, close_below: float, open_above: float) -> None:
        self.close_below, self.open_above = close_below, open_above
        self.state: float | None = None  # None until the first command

    def update(self, command: float) -> float:
        """The state after `command`; the first command inside the band picks the nearer side of its middle."""
        if command < self.close_below:
            self.state = 0.0
        elif command > self.open_above:
            self.state = 1.0
        elif self.state is None:
            self.state = 0.0 if command < (self.close_below + self.open_above) / 2 else 1.0
        return self.state

    def reset(self) -> None:
        """Forget the state (the next command decides afresh)."""
        self.state = None


class ActionPort(Protocol):
    """The part of rclpy.action.ActionClient the sender uses (a fake in tests)."""

    def server_is_ready(self) -> bool: ...
    def send_goal_async(self, goal: Any) -> Any: ...
    def destroy(self) -> None: ...


@dataclass(frozen=True)
class FrankaActions:
    """Grasp and Move clients with their action types (franka_msgs.action.Grasp / Move, or fakes)."""

    grasp: ActionPort
    move: ActionPort
    grasp_type: Any
    move_type: Any


def franka_actions(node: Node, action_ns: str) -> FrankaActions:
    """ActionClients for `<action_ns>/grasp` and `<action_ns>/move` in their own reentrant callback group."""
    from franka_msgs.action import Grasp, Move
    from rclpy.action import ActionClient

    group = ReentrantCallbackGroup()
    return FrankaActions(ActionClient(node, Grasp, f"{action_ns}/grasp", callback_group=group),
                         ActionClient(node, Move, f"{action_ns}/move", callback_group=group), Grasp, Move)


class GripperOutput:
    """Sends the gripper's binary state on change through the configured channel (see module docstring)."""

    def __init__(self, node: Node, settings: GripperSettings,
                 actions: Callable[[Node, str], FrankaActions] = franka_actions) -> None:
        self.node = node
        self.settings = settings
        self.mode = resolve_mode(settings.mode)
        if settings.mode == "auto" and self.mode == "topic":
            node.get_logger().warning(f"gripper: auto and franka_msgs does not import: width on {settings.topic} "
                                      "(set gripper: franka on the robot)")
        self.hysteresis = GripperHysteresis(settings.close_below, settings.open_above)
        self._pub = None
        self._actions: FrankaActions | None = None
        self._cond = threading.Condition()  # guards the fields below; the executor's done callbacks notify it
        self._wanted: float | None = None  # the state the control tick asked for
        self._sent: float | None = None  # the state of the last goal the sender attempted
        self._resync = False  # `resync` asked: send the next command's state even if unchanged
        self._running = False
        self._thread: threading.Thread | None = None
        self.server_ready: bool | None = None  # None: not checked yet
        self.goals_sent = 0
        self.failures = 0
        self.last_error = ""
        if self.mode == "topic":
            self._pub = node.create_publisher(Float64, settings.topic, qos.RELIABLE)
        elif self.mode == "franka":
            self._actions = actions(node, settings.action_ns)
        node.get_logger().info(f"gripper output: {self.mode}")

    # ------------------------------------------------------------------ control thread
    def send(self, command: float | None) -> bool:
        """Pass `command` through the hysteresis and hand a changed state on; never blocks on the gripper.

        True when a new state was published (topic) or queued for the sender thread (franka)."""
        if command is None or self.mode == "none":
            return False
        resync = False
        if self._resync:  # rare (one instruction): the 50 Hz tick takes the lock only then
            with self._cond:
                resync, self._resync = self._resync, False
        previous = None if resync else self.hysteresis.state
        state = self.hysteresis.update(command)
        if state == previous:
            return False
        if self._pub is not None:
            self._pub.publish(Float64(data=gripper_width(state, self.settings.open_width)))
            return True
        with self._cond:
            self._wanted = state
            if resync:
                self._sent = None  # the sender sends it even if its last goal had the same state
            self._cond.notify_all()
        return True

    def resync(self) -> None:
        """Send the next command's state even if it is the one sent last (thread-safe). Only changes are sent,
        so when the hand was moved meanwhile by something else (a scene reset between episodes, the gripper's
        own buttons, a homing) the node would otherwise never close or open it again: the policy node calls
        this on every instruction, where a new task starts."""
        with self._cond:
            self._resync = True

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the sender thread (franka mode; idempotent); it first checks that the action servers exist."""
        self.hysteresis.reset()
        if self._actions is None or self._thread is not None:
            return
        with self._cond:
            self._running = True
            self._wanted = self._sent = None
        self._thread = threading.Thread(target=self._run, name="mole_gripper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the sender thread (a goal in flight keeps running on the gripper)."""
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def destroy(self) -> None:
        """Stop the sender and release the publisher / action clients."""
        self.stop()
        if self._pub is not None:
            self.node.destroy_publisher(self._pub)
        if self._actions is not None:
            self._actions.grasp.destroy()
            self._actions.move.destroy()

    def status(self) -> tuple[bool, str]:
        """(ok, message) for /diagnostics: not ok while the action servers are missing or the last goal failed."""
        with self._cond:
            if self.last_error:
                return False, self.last_error
            return True, f"{self.mode}, {self.goals_sent} goals sent"

    # ------------------------------------------------------------------ sender thread
    # The lock is never held across an action-client call, so `send` on the control thread never waits on one.
    def _wait(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Wait (lock held by the caller) until `predicate` or stop; False on timeout or stop."""
        self._cond.wait_for(lambda: predicate() or not self._running, timeout)
        return self._running and predicate()

    def _fail(self, message: str) -> None:
        """Record a failure (lock held by the caller) and log it."""
        self.failures += 1
        self.last_error = message
        self.node.get_logger().error(f"gripper: {message}", throttle_duration_sec=2.0)

    def _servers_ready(self) -> bool:
        return self._actions.grasp.server_is_ready() and self._actions.move.server_is_ready()

    def _run(self) -> None:
        s = self.settings
        ready, waited = self._servers_ready(), 0.0
        while not ready and waited < s.server_timeout:
            with self._cond:  # the graph has no event to wait on: look again every 0.1 s
                if self._wait(lambda: False, 0.1) or not self._running:
                    return
            ready, waited = self._servers_ready(), waited + 0.1
        with self._cond:
            self.server_ready = ready
            if not ready:
                self._fail(f"franka_gripper action servers {s.action_ns}/grasp, {s.action_ns}/move not available "
                           f"{s.server_timeout:g} s after activation (gripper: franka): is franka_gripper running?")

        def pending() -> bool:
            return self._wanted is not None and self._wanted != self._sent

        while True:
            with self._cond:
                # while the servers are missing, look again every retry_period so the error clears by itself
                got = self._wait(pending, None if self.server_ready else s.retry_period)
                if not self._running:
                    return
                state, missing = self._wanted, not self.server_ready
            if got:
                self._execute(state)
            elif missing and self._servers_ready():
                with self._cond:
                    self.server_ready, self.last_error = True, ""
                self.node.get_logger().info(f"gripper: action servers under {s.action_ns} available")

    def _execute(self, state: float) -> None:
        """One goal for `state`: send, wait for acceptance and result unless a newer state supersedes it."""
        s, actions = self.settings, self._actions
        closing = state == 0.0
        client, name = (actions.grasp, "grasp") if closing else (actions.move, "move")

        def superseded() -> bool:  # a newer state preempts this goal
            return self._wanted != state

        if not client.server_is_ready():
            with self._cond:
                self.server_ready = False
                self._fail(f"action server {s.action_ns}/{name} not available: gripper state {state:g} not sent")
                self._wait(superseded, s.retry_period)  # then retry, or send the newer state
            return
        if closing:
            goal = actions.grasp_type.Goal(width=0.0, speed=s.speed, force=s.force)
            goal.epsilon.inner = goal.epsilon.outer = s.open_width
        else:
            goal = actions.move_type.Goal(width=s.open_width, speed=s.speed)
        with self._cond:
            self.server_ready, self._sent = True, state
            self.goals_sent += 1
        sent = client.send_goal_async(goal)
        if not self._await(sent, superseded, f"{name} goal not acknowledged within {s.result_timeout:g} s"):
            return
        handle = sent.result()
        if handle is None or not handle.accepted:
            with self._cond:
                self._fail(f"{name} goal rejected by {s.action_ns}/{name}")
            return
        done = handle.get_result_async()
        if not self._await(done, superseded, f"{name} goal without result within {s.result_timeout:g} s"):
            return  # (superseded: the next goal preempts this one, its outcome does not matter)
        with self._cond:
            response = done.result()
            if response.status != GoalStatus.STATUS_SUCCEEDED or not response.result.success:
                self._fail(f"{name} to state {state:g} failed: {response.result.error or f'status {response.status}'}")
                return
            self.last_error = ""  # the gripper works (again)

    def _await(self, future: Any, superseded: Callable[[], bool], late: str) -> bool:
        """Wait until `future` is done (True) or a newer state supersedes it (False); past `result_timeout`,
        report `late` (unless stopping) and give up (False)."""
        self._notify_when_done(future)
        with self._cond:
            if not self._wait(lambda: future.done() or superseded(), self.settings.result_timeout):
                if self._running:
                    self._fail(late)
                return False
            return future.done()

    def _notify_when_done(self, future: Any) -> None:
        def wake(_: Any) -> None:
            with self._cond:
                self._cond.notify_all()

        if not future.done():  # rclpy asserts on add_done_callback of a done future without an executor
            future.add_done_callback(wake)
