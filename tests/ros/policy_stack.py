"""A mole_policy node under test and what drives it: the feeder thread standing in for robot and camera, the node
built with parameter overrides, and the output topics collected by name (used with the fixtures of conftest.py)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, TwistStamped
from mole_ros import qos
from mole_ros.policy_node import PolicyNode
from rcl_interfaces.msg import Log
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, Float64MultiArray, String
from std_srvs.srv import Trigger

from mole_inference.data import schema

# the feeder thread shares 2 loaded cores with the node: a pose may arrive late
LOADED_MACHINE = {"control.watchdog.max_pose_age": 0.3}

OUTPUTS: dict[str, tuple[type, str, Any]] = {
    "targets": (PoseStamped, schema.TARGET_POSE_TOPIC, qos.RELIABLE),
    "deltas": (Float64MultiArray, schema.EE_DELTA_TOPIC, qos.RELIABLE),
    "twists": (TwistStamped, "/cartesian_controller/target_twist", qos.RELIABLE),
    "routing": (Float32MultiArray, "/mole/routing", qos.RELIABLE),
    "source": (String, schema.ACTIVE_SOURCE_TOPIC, qos.LATCHED),
    "diag": (DiagnosticArray, "/diagnostics", qos.DIAGNOSTICS),
    "log": (Log, "/rosout", qos.RELIABLE),
}

_NODE_IDS = itertools.count()


def node_name(prefix: str) -> str:
    """`prefix`_N, fresh in this process: rclpy shares one /rosout publisher per name, and destroying the previous
    test's node would unregister it under this one's feet."""
    return f"{prefix}_{next(_NODE_IDS)}"


def policy_node(ros: Any, prefix: str, policy_factory: Callable[[Any], Any], params: dict[str, Any] | None = None,
                **kwargs: Any) -> PolicyNode:
    """A PolicyNode named node_name(`prefix`) spun by `ros`, with `params` as parameter overrides; `kwargs` go to it."""
    node = PolicyNode(node_name(prefix), policy_factory=policy_factory, context=ros.context,
                      parameter_overrides=[Parameter(k, value=v) for k, v in (params or {}).items()], **kwargs)
    return ros.add(node)


def subscribe_outputs(ros: Any, *names: str) -> dict[str, Any]:
    """Collectors (conftest.Received) for the named OUTPUTS of the node."""
    return {name: ros.subscribe(*OUTPUTS[name]) for name in names}


def resume(ros: Any, node: PolicyNode) -> Trigger.Response:
    """Call the node's resume_policy service."""
    return ros.call(Trigger, f"/{node.get_name()}/resume_policy")


class Feeder:
    """Publishes the measured pose at 100 Hz and a camera frame every 50 ms, stamped now, from a thread.

    `make_image` may be swapped while running (None: the camera is gone); `cycle` is a hook that subclasses use
    to publish more each 10 ms. Use as a context manager or with start()/stop().
    """

    def __init__(self, ros: Any, msgs: Any, pose_qos: Any = qos.RELIABLE) -> None:
        self.ros, self.msgs = ros, msgs
        self._publishers: list[Any] = []
        self.pose_pub = self.publisher(PoseStamped, schema.MEASURED_POSE_TOPIC, pose_qos)
        self.image_pub = self.publisher(Image, schema.IMAGE_TOPIC, qos.SENSOR)
        self.instruction_pub = self.publisher(String, schema.INSTRUCTION_TOPIC, qos.LATCHED)
        self.make_image: Callable[[int], Any] | None = msgs.image
        self.last_image_ns = 0  # stamp of the last good frame (made by msgs.image) sent
        self.images_sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def publisher(self, msg_type: type, topic: str, qos_profile: Any) -> Any:
        """A publisher of the test client, destroyed by stop()."""
        pub = self.ros.client.create_publisher(msg_type, topic, qos_profile)
        self._publishers.append(pub)
        return pub

    def start(self) -> Feeder:
        """Latch the instruction and start publishing."""
        self.instruction_pub.publish(String(data="pick up the red block"))
        self._thread.start()
        return self

    def cycle(self, now_ns: int) -> None:
        """Runs after each measured pose; nothing here."""

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            now = self.ros.now_ns()
            self.pose_pub.publish(self.msgs.pose(now))
            self.cycle(now)
            make = self.make_image
            msg = make(now) if i % 5 == 0 and make is not None else None
            if msg is not None:
                self.image_pub.publish(msg)
                self.images_sent += 1
                if make is self.msgs.image:
                    self.last_image_ns = now
            i += 1
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop the thread and destroy the publishers."""
        self._stop.set()
        self._thread.join()
        for pub in self._publishers:
            self.ros.client.destroy_publisher(pub)

    def __enter__(self) -> Feeder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
