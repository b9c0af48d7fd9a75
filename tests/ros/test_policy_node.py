"""mole_policy with real rclpy: rate, bad frames, NaN, camera timeout, takeover/resume (fake deterministic policy)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from mole_ros import conversions as conv
from mole_ros import qos
from mole_ros.policy_node import PolicyNode
from rcl_interfaces.msg import Log
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from mole_inference.data import schema
from tests.ros.policy_stack import LOADED_MACHINE, Feeder, policy_node, resume, subscribe_outputs

pytestmark = pytest.mark.ros

PERIOD = 0.02  # 50 Hz
# No wall-clock latency bounds here (a loaded CI machine delays any tick): the one-tick reaction to NaN chunks,
# teleop input, takeover and resume is asserted with injected clocks in tests/control/test_mux.py and
# test_loop.py; these tests check the same behaviour through rclpy by order and header stamps.


class TeleopFeeder(Feeder):
    """The Feeder plus a publisher of operator deltas (`teleop_pub`)."""

    def __init__(self, ros, msgs) -> None:
        super().__init__(ros, msgs)
        self.teleop_pub = self.publisher(Float64MultiArray, "/mole/teleop/delta", qos.RELIABLE)


@pytest.fixture
def stack(ros, msgs, fake_policy, wait):
    """A configured, active mole_policy (engage_on_start) fed with poses and images, plus output collectors."""
    node = policy_node(ros, "mole_policy", lambda cfg: fake_policy, {"engage_on_start": True, **LOADED_MACHINE})
    out = subscribe_outputs(ros, "targets", "deltas", "routing", "source", "diag", "log")
    node.trigger_configure()
    node.trigger_activate()
    feeder = TeleopFeeder(ros, msgs).start()
    assert wait(lambda: node.loop.mux.mode.value == "policy", 5.0), "policy never engaged"
    # let the hold commands published before engaging drain out of the subscription queues
    assert wait(lambda: len(out["deltas"]) and conv.ee_delta_from_msg(out["deltas"].items[-1][1])[1] == "policy",
                2.0)
    time.sleep(0.05)
    yield node, feeder, out, fake_policy
    feeder.stop()
    ros.remove(node)


def sources(received, since: float) -> list[tuple[float, str]]:
    return [(t, conv.ee_delta_from_msg(m)[1]) for t, m in received.since(since)]


def first_hold_after(out, since: float) -> float | None:
    return next((t for t, s in sources(out["deltas"], since) if s == "hold"), None)


def errors(out) -> list[str]:
    return [m.msg for _, m in out["log"].items if m.name.startswith("mole_policy") and m.level >= Log.ERROR]


def test_targets_at_rate_from_policy(stack, msgs, wait):
    node, _, out, policy = stack
    t0 = time.monotonic()
    assert wait(lambda: len(out["targets"].since(t0)) >= 30, 10.0)  # rates and jitter: benchmarks/control_jitter.py
    targets = out["targets"].since(t0)
    stamps = np.array([conv.stamp_to_ns(m.header.stamp) for _, m in targets])
    assert np.all(np.diff(stamps) > 0), "target stamps must increase tick by tick"
    assert all(s == "policy" for _, s in sources(out["deltas"], t0))
    # target = previous target + one tick of the chunk step (dx 0.01 m per 0.1 s step -> 0.002 m per 20 ms
    # tick); the fed pose never moves, so the leash stops the target max_target_distance (3 cm) ahead of it
    x = np.array([m.pose.position.x for _, m in targets])
    assert np.all(np.diff(x) >= -1e-12) and np.all(x <= msgs.HOME[0] + 0.03 + 1e-9), x
    np.testing.assert_allclose(x[-1], msgs.HOME[0] + 0.03, atol=1e-9)
    assert {m.header.frame_id for _, m in targets} == {"fr3_link0"}
    assert policy.calls >= 10 and set(policy.images) == {(64, 64, 3)}
    assert all(s is None for s in policy.states) and node.state_input is None  # no state_input: no state passed
    layers, probs = conv.routing_from_msg(out["routing"].items[-1][1])
    assert layers == (1, 3, 5) and probs.shape == (6,)
    assert out["source"].items[-1][1].data == "policy"
    assert wait(lambda: len(out["diag"]) > 0, 2.0)
    values = {kv.key: kv.value for kv in out["diag"].items[-1][1].status[0].values}
    assert {"inference_ms_last", "jitter_p99_ms", "layers_run", "image_age_ms", "rate_hz"} <= set(values)
    assert values["layers_run"] == "1,3,5"


BAD_FRAMES: dict[str, Callable[[int], Image]] = {}


def _bad(kind: str) -> Callable[[int], Image]:
    cache: list[Image] = []

    calls = [0]

    def make(t_ns: int) -> Image | None:
        calls[0] += 1
        if cache:  # an 8K frame costs ~0.1 s of GIL to publish from this process: send one every 0.25 s
            return cache[0] if calls[0] % 5 == 0 else None
        msg = Image(height=48, width=64, encoding="rgb8", step=64 * 3)
        msg.header.stamp = conv.ns_to_stamp(t_ns)
        if kind == "encoding":
            msg.encoding = "yuv422"
            msg.data = bytes(48 * 64 * 2)
        elif kind == "zero":
            msg.height = msg.width = msg.step = 0
        elif kind == "step":
            msg.step = 64 * 3 + 7  # claims padding that the data does not have
            msg.data = bytes(48 * 64 * 3)
        elif kind == "8k":  # header of an 8K frame with a matching buffer
            msg.height, msg.width, msg.step = 4320, 7680, 7680
            msg.encoding = "mono8"
            msg.data = bytes(4320 * 7680)
            cache.append(msg)
        return msg

    return make


@pytest.mark.parametrize("kind", ["encoding", "zero", "step", "8k"])
def test_bad_frames_log_hold_and_node_survives(stack, msgs, wait, kind):
    node, feeder, out, _ = stack
    bad_before = node.telemetry.bad_frames
    t_switch = time.monotonic()
    feeder.make_image = _bad(kind)  # only bad frames from now on
    assert wait(lambda: first_hold_after(out, t_switch) is not None, 2.0), "never held on bad frames"
    # held once the last good frame is max_image_age old (the exact tick, from header stamps:
    # test_camera_timeout_holds_within_one_period)
    assert wait(lambda: any("bad camera frame" in e for e in errors(out)), 2.0)
    assert node.telemetry.bad_frames > bad_before
    assert node.loop.mux.mode.value == "hold"
    t_held = time.monotonic()  # still publishing (hold = latched pose), never silent (rates: the benchmark)
    assert wait(lambda: len(out["targets"].since(t_held)) >= 10, 10.0), "stopped publishing instead of holding"
    held = out["targets"].since(t_held)
    assert all(abs(m.pose.position.x - msgs.HOME[0]) < 1e-9 for _, m in held)
    feeder.make_image = msgs.image  # good frames again: the node is alive and resumes on request
    assert wait(lambda: ros_call_resume(node), 3.0)


def ros_call_resume(node: PolicyNode) -> bool:
    return node.loop.resume_policy("test", node._now())


def test_nan_from_model_holds(stack, msgs, wait):
    node, _, out, policy = stack
    policy.nan = True
    t_nan = time.monotonic()
    assert wait(lambda: first_hold_after(out, t_nan) is not None, 1.0)
    assert wait(lambda: any("NaN" in e for e in errors(out)), 2.0)
    t_held = time.monotonic()  # the NaN policy never drives again: every tick from here on holds
    assert wait(lambda: len(sources(out["deltas"], t_held)) >= 5, 10.0)
    assert all(s == "hold" for _, s in sources(out["deltas"], t_held))
    policy.nan = False
    assert wait(lambda: ros_call_resume(node), 3.0)
    t_ok = time.monotonic()
    assert wait(lambda: any(s == "policy" for _, s in sources(out["deltas"], t_ok)), 1.0)


def test_camera_timeout_holds_within_one_period(stack, msgs, wait):
    node, feeder, out, _ = stack
    feeder.make_image = None  # camera gone, poses keep coming
    time.sleep(0.06)
    last_image_ns = feeder.last_image_ns

    # policy targets are ahead of HOME in x, hold targets are HOME (latched there): find the first hold tick
    # (its header stamp)
    def holds() -> list:
        return [m for _, m in list(out["targets"].items)
                if conv.stamp_to_ns(m.header.stamp) > last_image_ns and abs(m.pose.position.x - msgs.HOME[0]) < 1e-9]

    assert wait(lambda: bool(holds()), 1.0)
    assert node.loop.mux.mode.value == "hold"
    image_stamp, _ = node.loop.watchdog.latest_image()  # the newest frame the node accepted (SENSOR QoS may drop)
    limit_ns = image_stamp * 1e9 + 0.3e9
    ticks = [(conv.stamp_to_ns(m.header.stamp), abs(m.pose.position.x - msgs.HOME[0]) < 1e-9)
             for _, m in list(out["targets"].items)]
    first = next(i for i, (stamp, hold) in enumerate(ticks) if hold and stamp > last_image_ns)
    # the first hold is the first tick past max_image_age after that frame: never earlier, never a tick later
    assert ticks[first][0] > limit_ns, f"held {(limit_ns - ticks[first][0]) * 1e-9:.3f} s before the image aged"
    assert ticks[first - 1][0] <= limit_ns and not ticks[first - 1][1], "a tick past the limit still moved"


def test_takeover_passes_teleop_within_one_period_and_resume_returns(ros, stack, msgs, wait):
    node, feeder, out, _ = stack
    response = ros.call(Trigger, f"/{node.get_name()}/takeover")
    assert response.success and response.message == "teleop"
    delta = np.array([0.0, 0.001, 0.0, 0.0, 0.0, 0.0, 0.0])
    t_first = time.monotonic()
    for _ in range(25):
        feeder.teleop_pub.publish(conv.ee_delta_to_msg(delta, "teleop"))
        time.sleep(PERIOD)
    teleop = [(t, conv.ee_delta_from_msg(m)) for t, m in out["deltas"].since(t_first)
              if conv.ee_delta_from_msg(m)[1] == "teleop"]
    assert teleop, "no teleop delta passed"
    # while the operator's input stays live every tick after the first teleop one passes it (no hold, no policy)
    after = sources(out["deltas"], teleop[0][0])
    assert after and all(src == "teleop" for _, src in after[:-2]), after
    # a small delta passes unclamped (the first: later ones re-applied on extra ticks of a loaded machine walk
    # the target away from the feeder's fixed measured pose until the leash shortens them, as it should)
    np.testing.assert_allclose(teleop[0][1][0], delta, atol=1e-9)
    assert node.telemetry is not None and out["source"].items[-1][1].data == "teleop"
    response = resume(ros, node)
    assert response.success, response.message
    t_resume = time.monotonic()
    assert wait(lambda: any(s == "policy" for _, s in sources(out["deltas"], t_resume)), 1.0)
    t_policy = next(t for t, s in sources(out["deltas"], t_resume) if s == "policy")
    time.sleep(0.1)  # from the first policy tick on, the policy keeps control (no flapping back to teleop)
    assert all(src == "policy" for _, src in sources(out["deltas"], t_policy))
    assert wait(lambda: out["source"].items[-1][1].data == "policy", 1.0)


def test_resume_refused_when_unhealthy(ros, stack, wait):
    node, feeder, _, _ = stack
    feeder.make_image = None
    assert wait(lambda: node.loop.mux.mode.value == "hold", 1.0)
    response = resume(ros, node)
    assert not response.success and "image" in response.message


def test_measured_pose_from_a_best_effort_depth_1_publisher_reaches_the_node(ros, msgs, fake_policy, wait):
    """franka_robot_state_broadcaster publishes ~/current_pose with QoS(1).best_effort(): the node must hear it
    (a RELIABLE subscription never matches it: the node would wait for a pose forever and publish nothing)."""
    broadcaster_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                                 durability=DurabilityPolicy.VOLATILE)
    node = policy_node(ros, "mole_policy", lambda cfg: fake_policy)
    targets = ros.subscribe(PoseStamped, schema.TARGET_POSE_TOPIC, qos.RELIABLE)
    node.trigger_configure()
    node.trigger_activate()
    pub = ros.client.create_publisher(PoseStamped, schema.MEASURED_POSE_TOPIC, broadcaster_qos)
    try:
        assert wait(lambda: pub.get_subscription_count() > 0, 5.0), "our subscription never matched the publisher"
        t0 = time.monotonic()

        def published() -> bool:
            pub.publish(msgs.pose(ros.now_ns()))
            return len(targets.since(t0)) > 0

        assert wait(published, 5.0, step=0.01), "no measured pose received: no target published"
        hold = targets.since(t0)[-1][1].pose.position  # not engaged: holds the measured pose
        np.testing.assert_allclose([hold.x, hold.y, hold.z], msgs.HOME, atol=1e-9)
    finally:
        ros.client.destroy_publisher(pub)
        ros.remove(node)


def test_an_instruction_starts_the_gripper_afresh(ros, fake_policy, wait):
    """Each instruction is a new task: the gripper command of the previous one is forgotten (the next policy command
    switches at once, not after the confirmation ticks) and sent even if unchanged. Before, a scene reset between
    the demo's episodes left the hand open while the node, thinking it closed, never sent "close" again."""
    from std_msgs.msg import String

    from mole_inference.control.safety import Source
    from mole_inference.control.transforms import Pose

    node = policy_node(ros, "mole_policy", lambda cfg: fake_policy, {"control.safety.gripper_confirm_ticks": 5,
                                                                       "gripper": "topic"})
    node.trigger_configure()
    pub = ros.client.create_publisher(String, schema.INSTRUCTION_TOPIC, qos.LATCHED)
    try:
        envelope, here = node.loop.envelope, Pose(np.array([0.4, 0.0, 0.3]), np.array([1.0, 0.0, 0.0, 0.0]))
        assert envelope.config.gripper_confirm_ticks > 1

        def command(gripper: float):
            return envelope.apply(here, np.array([0, 0, 0, 0, 0, 0, gripper], dtype=float), Source.POLICY)

        assert command(0.0).gripper == 0.0 and node.gripper.send(0.0)  # closed, sent
        assert command(1.0).gripper == 0.0 and not node.gripper.send(0.0)  # debounced; unchanged: not sent
        pub.publish(String(data="touch the red cube"))
        # the callback asks the envelope, then the output (whose flag is thus set last)
        assert wait(lambda: node.gripper._resync, 5.0), "the instruction never reached the node"
        assert node.gripper.send(0.0)  # the unchanged state goes out once more ...
        assert not node.gripper.send(0.0)  # ... once
        assert command(1.0).gripper == 1.0  # and the first command after the instruction decides at once
    finally:
        ros.client.destroy_publisher(pub)
        ros.remove(node)
