"""Real rclpy on loopback: each test module gets its own Context on its own ROS_DOMAIN_ID, localhost only.

Discovery is restricted to this host before any rclpy init (ROS_AUTOMATIC_DISCOVERY_RANGE for Iron and
later, ROS_LOCALHOST_ONLY for Humble); domain ids are derived from the pid, so parallel runs do not collide.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 rclpy wheels not installed (pip install -e '.[ros]')")
pytest.importorskip("mole_ros", reason="mole_ros not installed (pip install -e ros2_ws/src/mole_ros)")

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # Iron and later
os.environ["ROS_LOCALHOST_ONLY"] = "1"  # Humble (deprecated but honoured later, consistent with the range)
os.environ.pop("ROS_STATIC_PEERS", None)

import rclpy
from geometry_msgs.msg import PoseStamped
from mole_ros import conversions as conv
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

from mole_inference.policy.contract import ActionChunk, Policy, RoutingDecision

_DOMAINS = itertools.count()


def next_domain_id() -> int:
    """A domain id in [1, 100] unique within this process and unlikely to clash with other processes."""
    return 1 + (os.getpid() * 13 + next(_DOMAINS)) % 100


@dataclass
class Received:
    """Messages received on one topic with their monotonic arrival time."""

    items: list[tuple[float, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, msg: Any) -> None:
        with self.lock:
            self.items.append((time.monotonic(), msg))

    def since(self, t: float) -> list[tuple[float, Any]]:
        """Items that arrived at or after monotonic time `t`."""
        with self.lock:
            return [(ti, m) for ti, m in self.items if ti >= t]

    def __len__(self) -> int:
        with self.lock:
            return len(self.items)


class Harness:
    """A Context + MultiThreadedExecutor spinning in a thread, and a client node for the test."""

    def __init__(self, domain_id: int) -> None:
        self.domain_id = domain_id
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.client = rclpy.create_node("test_client", context=self.context)
        self.executor.add_node(self.client)
        self.nodes: list[Any] = []
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        # spin_once in a loop: an exception from a callback of a node being destroyed must not end spinning
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.1)
            except ExternalShutdownException:
                return
            except Exception as err:
                if not self.context.ok():
                    return
                print(f"executor: {type(err).__name__}: {err}", file=sys.stderr)

    def add(self, node: Any) -> Any:
        """Spin `node` too; it is destroyed at teardown."""
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def remove(self, node: Any) -> None:
        """Stop spinning and destroy `node`."""
        self.executor.remove_node(node)
        self.nodes.remove(node)
        node.destroy_node()

    def subscribe(self, msg_type: type, topic: str, qos: Any) -> Received:
        """Collect every message on `topic`."""
        received = Received()
        self.client.create_subscription(msg_type, topic, received, qos)
        return received

    def call(self, srv_type: type, name: str, request: Any = None, timeout: float = 5.0) -> Any:
        """Call a service from the test thread and wait for the response."""
        client = self.client.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        future = client.call_async(request or srv_type.Request())
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert future.done(), f"service {name} did not answer within {timeout} s"
        self.client.destroy_client(client)
        return future.result()

    def now_ns(self) -> int:
        """The client's ROS clock (the same system clock the nodes use)."""
        return self.client.get_clock().now().nanoseconds

    def close(self) -> None:
        """Destroy everything and shut the context down."""
        for node in reversed(self.nodes):
            self.executor.remove_node(node)
            node.destroy_node()
        self.executor.shutdown(timeout_sec=2.0)
        self.client.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=2.0)


@pytest.fixture(scope="module")
def ros() -> Harness:
    """One ROS context per test module, on its own domain id."""
    harness = Harness(next_domain_id())
    yield harness
    harness.close()


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.005) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


@pytest.fixture
def wait() -> Callable[[Callable[[], bool], float], bool]:
    """`wait(predicate, timeout)`."""
    return wait_until


class FakePolicy(Policy):
    """Deterministic policy: every chunk moves +x by `dx` per step; `nan=True` makes it emit NaN."""

    action_dt = 0.1
    chunk_size = 16
    num_layers = 6

    def __init__(self, dx: float = 0.01, delay: float = 0.0) -> None:
        self.dx = dx
        self.delay = delay
        self.nan = False
        self.calls = 0
        self.images: list[tuple[int, ...]] = []
        self.states: list[np.ndarray | None] = []  # the `state` of every call (None: called without one)

    def infer(self, image: np.ndarray, instruction: str, *, seed: int | None = None,
              state: np.ndarray | None = None) -> ActionChunk:
        """See Policy.infer."""
        self.calls += 1
        self.images.append(image.shape)
        self.states.append(state)
        if self.delay:
            time.sleep(self.delay)
        actions = np.zeros((self.chunk_size, 7))
        actions[:, 0] = math_nan if self.nan else self.dx
        actions[:, 6] = 1.0
        probs = np.linspace(0.1, 0.6, self.num_layers)
        return ActionChunk(actions, RoutingDecision((1, 3, 5), probs, self.num_layers), {"total": 1.0},
                           self.action_dt)


math_nan = float("nan")


@pytest.fixture
def fake_policy() -> FakePolicy:
    """A fresh FakePolicy."""
    return FakePolicy()


HOME = (0.5, 0.0, 0.4)  # inside the default workspace box
HOME_QUAT = (1.0, 0.0, 0.0, 0.0)  # xyzw: gripper pointing down


def pose_msg(t_ns: int, position: tuple[float, float, float] = HOME) -> PoseStamped:
    """A measured pose message at HOME (or `position`) stamped `t_ns`."""
    return conv.pose_to_msg(conv.Pose.from_arrays(position, HOME_QUAT), t_ns, "fr3_link0")


def image_msg(t_ns: int, size: int = 64, encoding: str = "rgb8") -> Any:
    """A small valid camera frame stamped `t_ns`."""
    rgb = np.full((size, size, 3), 128, dtype=np.uint8)
    return conv.rgb_to_image(rgb, t_ns, "wrist_camera", encoding)


@pytest.fixture
def msgs() -> Any:
    """Message builders: `msgs.pose(t_ns)`, `msgs.image(t_ns)`, `msgs.HOME`."""

    class Builders:
        pose = staticmethod(pose_msg)
        image = staticmethod(image_msg)

    Builders.HOME = HOME
    Builders.HOME_QUAT = HOME_QUAT
    return Builders
