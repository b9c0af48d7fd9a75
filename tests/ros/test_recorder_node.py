"""mole_recorder: episodes written through real subscriptions read back with rosbags, message for message."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from mole_ros import conversions as conv
from mole_ros import qos
from mole_ros.recorder_node import RecorderNode
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Float64, Float64MultiArray, String
from std_srvs.srv import Trigger

from mole_inference.data import schema
from mole_inference.data.bag_reader import list_episodes, read_episode

pytestmark = pytest.mark.ros


def test_episode_counts_sources_and_metadata(ros, msgs, wait, tmp_path):
    node = ros.add(RecorderNode(context=ros.context, parameter_overrides=[
        Parameter("output_dir", value=str(tmp_path)), Parameter("flush_period", value=0.2)]))
    c = ros.client
    pubs = {
        "image": c.create_publisher(Image, schema.IMAGE_TOPIC, qos.SENSOR),
        "instruction": c.create_publisher(String, schema.INSTRUCTION_TOPIC, qos.LATCHED),
        "pose": c.create_publisher(PoseStamped, schema.MEASURED_POSE_TOPIC, qos.RELIABLE),
        "delta": c.create_publisher(Float64MultiArray, schema.EE_DELTA_TOPIC, qos.RELIABLE),
        "gripper": c.create_publisher(Float64, schema.GRIPPER_COMMAND_TOPIC, qos.RELIABLE),
        "source": c.create_publisher(String, schema.ACTIVE_SOURCE_TOPIC, qos.LATCHED),
        "command": c.create_publisher(String, "/mole/episode_command", qos.RELIABLE),
    }
    assert wait(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), 5.0)
    pubs["instruction"].publish(String(data="stack the red block"))
    pubs["source"].publish(String(data="policy"))
    assert wait(lambda: len(node._latched) == 2, 10.0)
    for _ in range(3):  # before the episode: not recorded
        pubs["pose"].publish(msgs.pose(ros.now_ns()))
    time.sleep(0.1)

    node.set_parameters([Parameter("episode.task", value="stack"), Parameter("episode.operator", value="ada")])
    assert ros.call(Trigger, "/mole_recorder/start_episode").success
    assert not ros.call(Trigger, "/mole_recorder/start_episode").success  # one episode at a time
    sources = ["policy"] * 6 + ["teleop"] * 3 + ["hold"] * 1
    for i in range(20):
        pubs["pose"].publish(msgs.pose(ros.now_ns()))
        if i % 4 == 0:
            pubs["image"].publish(msgs.image(ros.now_ns()))
            time.sleep(0.005)
        if i < len(sources):
            pubs["delta"].publish(conv.ee_delta_to_msg(np.full(7, i / 100), sources[i]))
        if i == 6:
            pubs["source"].publish(String(data="teleop"))  # an intervention
        if i == 10:
            pubs["source"].publish(String(data="policy"))
        if i in (2, 12):
            pubs["gripper"].publish(Float64(data=0.04))
        time.sleep(0.01)
    expected = {schema.MEASURED_POSE_TOPIC: 20, schema.IMAGE_TOPIC: 5, schema.EE_DELTA_TOPIC: 10,
                schema.GRIPPER_COMMAND_TOPIC: 2, schema.INSTRUCTION_TOPIC: 1, schema.ACTIVE_SOURCE_TOPIC: 3}
    assert wait(lambda: all(node.writer.counts.get(t, 0) == n for t, n in expected.items()), 10.0), node.writer.counts
    node.set_parameters([Parameter("episode.success", value="true"), Parameter("episode.notes", value="clean")])
    stop = ros.call(Trigger, "/mole_recorder/stop_episode")
    assert stop.success and json.loads(stop.message)["success"] is True

    [path] = list_episodes(tmp_path)
    assert path.name.endswith("_stack")
    ep = read_episode(path)
    assert len(ep.frames[schema.IMAGE_TOPIC]) == 5
    assert ep.frames[schema.IMAGE_TOPIC].rgb.shape == (5, 64, 64, 3)
    assert len(ep.measured_poses) == 20 and len(ep.deltas) == 10 and len(ep.gripper_width) == 2
    assert ep.instructions == ["stack the red block"]
    assert ep.active_sources == ["policy", "teleop", "policy"]
    assert ep.delta_sources.tolist() == sources  # every commanded delta keeps its label
    np.testing.assert_allclose(ep.deltas[:, 0], np.arange(10) / 100)
    meta = ep.metadata
    assert (meta.task, meta.operator, meta.success, meta.notes) == ("stack", "ada", True, "clean")
    assert meta.extra["interventions"] == 1
    assert not ep.recovered

    # a second episode by JSON command; destroying the node mid-episode still closes it
    pubs["command"].publish(String(data=json.dumps({"command": "start", "task": "wipe"})))
    assert wait(lambda: node.recording, 2.0)
    pubs["pose"].publish(msgs.pose(ros.now_ns()))
    assert wait(lambda: node.writer.counts.get(schema.MEASURED_POSE_TOPIC) == 1, 2.0)
    ros.remove(node)
    second = [p for p in list_episodes(tmp_path) if p != path]
    assert len(second) == 1
    ep2 = read_episode(second[0])
    assert len(ep2.measured_poses) == 1 and ep2.instructions == ["stack the red block"]
    assert "shut down mid-episode" in ep2.metadata.notes


def test_records_the_measured_pose_from_a_best_effort_depth_1_publisher(ros, msgs, wait, tmp_path):
    """franka_robot_state_broadcaster publishes ~/current_pose with QoS(1).best_effort(): a RELIABLE subscription
    never matches it, and the bags would have no poses."""
    from rosbags.highlevel import AnyReader
    from rosbags.interfaces import QosReliability

    broadcaster_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                                 durability=DurabilityPolicy.VOLATILE)
    node = ros.add(RecorderNode("mole_recorder_best_effort", context=ros.context, parameter_overrides=[
        Parameter("output_dir", value=str(tmp_path)), Parameter("flush_period", value=0.2)]))
    pub = ros.client.create_publisher(PoseStamped, schema.MEASURED_POSE_TOPIC, broadcaster_qos)
    try:
        assert wait(lambda: pub.get_subscription_count() > 0, 5.0), "the recorder never matched the publisher"
        path = node.start_episode(task="qos")
        for _ in range(10):
            pub.publish(msgs.pose(ros.now_ns()))
            time.sleep(0.02)
        assert wait(lambda: node.writer.counts.get(schema.MEASURED_POSE_TOPIC, 0) == 10, 3.0), node.writer.counts
        node.stop_episode()
    finally:
        ros.client.destroy_publisher(pub)
        ros.remove(node)
    assert len(read_episode(path).measured_poses) == 10
    with AnyReader([path]) as reader:  # replayed (ros2 bag play) as the robot offers it
        [offered] = [c.ext.offered_qos_profiles[0] for c in reader.connections
                     if c.topic == schema.MEASURED_POSE_TOPIC]
    assert offered.reliability == QosReliability.BEST_EFFORT and offered.depth == 1
