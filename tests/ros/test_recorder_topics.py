"""mole_recorder: the robot-state topics franka_ros2 offers, Humble-readable bags, JPEG-compressed frames."""

from __future__ import annotations

import time

import pytest
import yaml
from geometry_msgs.msg import WrenchStamped
from mole_ros import conversions as conv
from mole_ros import qos
from mole_ros.recorder_node import RecorderNode
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, JointState

from mole_inference.data import schema
from mole_inference.data.bag_reader import read_episode
from tests.data.test_rosbag2_versions import read_as

pytestmark = pytest.mark.ros

# franka_robot_state_broadcaster's convenience topics: rclcpp::QoS(1).best_effort()
BROADCASTER = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.VOLATILE)
# franka_gripper_node: create_publisher<JointState>("~/joint_states", 1): reliable, depth 1
GRIPPER = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.VOLATILE)


def _joint_state(t_ns: int, names: list[str], positions: list[float]) -> JointState:
    msg = JointState(name=names, position=positions)
    msg.header.stamp = conv.ns_to_stamp(t_ns)
    return msg


def test_robot_state_topics_in_a_humble_bag(ros, msgs, wait, tmp_path):
    node = ros.add(RecorderNode("rec_state", context=ros.context, parameter_overrides=[
        Parameter("output_dir", value=str(tmp_path)), Parameter("ros_distro", value="humble")]))
    c = ros.client
    pubs = {
        schema.JOINT_STATES_TOPIC: c.create_publisher(JointState, schema.JOINT_STATES_TOPIC, qos.RELIABLE),
        schema.GRIPPER_JOINT_STATES_TOPIC: c.create_publisher(JointState, schema.GRIPPER_JOINT_STATES_TOPIC, GRIPPER),
        schema.EXTERNAL_WRENCH_TOPIC: c.create_publisher(WrenchStamped, schema.EXTERNAL_WRENCH_TOPIC, BROADCASTER),
        schema.CAMERA_INFO_TOPIC: c.create_publisher(CameraInfo, schema.CAMERA_INFO_TOPIC, qos.SENSOR),
    }
    assert wait(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), 5.0)
    path = node.start_episode(task="state")
    for i in range(5):
        t = ros.now_ns()
        pubs[schema.JOINT_STATES_TOPIC].publish(_joint_state(t, [f"fr3_joint{j}" for j in range(1, 8)], [0.1 * i] * 7))
        pubs[schema.GRIPPER_JOINT_STATES_TOPIC].publish(
            _joint_state(t, ["fr3_finger_joint1", "fr3_finger_joint2"], [0.02, 0.02]))  # width / 2 each
        wrench = WrenchStamped()
        wrench.header.stamp, wrench.wrench.force.z = conv.ns_to_stamp(t), -2.5
        pubs[schema.EXTERNAL_WRENCH_TOPIC].publish(wrench)
        info = CameraInfo(width=64, height=64, distortion_model="plumb_bob")
        info.header.stamp = conv.ns_to_stamp(t)
        pubs[schema.CAMERA_INFO_TOPIC].publish(info)
        time.sleep(0.03)
    assert wait(lambda: all(node.writer.counts.get(t, 0) == 5 for t in pubs), 5.0), node.writer.counts
    node.stop_episode()
    ros.remove(node)
    for p in pubs.values():
        c.destroy_publisher(p)

    doc = yaml.safe_load((path / "metadata.yaml").read_text())
    info = read_as("humble", doc)  # readable by Humble's ros2 bag (version 5) ...
    read_as("jazzy", doc)  # ... and by Jazzy's
    assert info["version"] == 5
    counts = {t["topic_metadata"]["name"]: t["message_count"] for t in info["topics_with_message_count"]}
    assert all(counts[t] == 5 for t in pubs)
    from rosbags.highlevel import AnyReader

    with AnyReader([path]) as reader:
        conns = [x for x in reader.connections if x.topic == schema.GRIPPER_JOINT_STATES_TOPIC]
        widths = [2 * reader.deserialize(d, c.msgtype).position[0] for c, _, d in reader.messages(connections=conns)]
    assert widths == pytest.approx([0.04] * 5)
    assert read_episode(path).metadata.task == "state"


def test_compressed_images_written_versus_received(ros, msgs, wait, tmp_path):
    pytest.importorskip("cv2")
    node = ros.add(RecorderNode("rec_jpeg", context=ros.context, parameter_overrides=[
        Parameter("output_dir", value=str(tmp_path)), Parameter("compress_images", value=True)]))
    pub = ros.client.create_publisher(Image, schema.IMAGE_TOPIC, qos.SENSOR)
    assert wait(lambda: pub.get_subscription_count() > 0, 5.0)
    path = node.start_episode(task="jpeg")
    for _ in range(8):
        pub.publish(msgs.image(ros.now_ns()))
        time.sleep(0.05)
    assert wait(lambda: node.images["received"] == 8, 5.0), node.images
    meta = node.stop_episode()
    ros.client.destroy_publisher(pub)
    ros.remove(node)
    images = meta.extra["images"]
    assert images["received"] == 8 and images["written"] + images["dropped"] == 8 and images["written"] >= 1
    ep = read_episode(path)
    assert len(ep.frames[schema.IMAGE_TOPIC]) == 0  # no raw frames in the bag
    jpeg = ep.frames[schema.COMPRESSED_IMAGE_TOPIC]
    assert len(jpeg) == images["written"] and jpeg.rgb.shape[1:] == (64, 64, 3)


def test_tf_topics_are_skipped_cleanly_without_tf2_msgs(ros, tmp_path):
    node = ros.add(RecorderNode("rec_tf", context=ros.context,
                                parameter_overrides=[Parameter("output_dir", value=str(tmp_path))]))
    try:
        import tf2_msgs.msg  # noqa: F401
    except ImportError:
        assert set(node.skipped_topics) == {schema.TF_TOPIC, schema.TF_STATIC_TOPIC}
    else:
        assert not node.skipped_topics
    ros.remove(node)


def test_tf_static_is_written_at_every_episode_start(ros, wait, tmp_path):
    tf2_msgs = pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs is not installed (ros-<distro>-tf2-msgs)")
    from geometry_msgs.msg import TransformStamped

    pub = ros.client.create_publisher(tf2_msgs.TFMessage, schema.TF_STATIC_TOPIC, qos.TF_STATIC)
    t = TransformStamped(child_frame_id="wrist_camera_optical_frame")
    t.header.frame_id = "fr3_hand"
    pub.publish(tf2_msgs.TFMessage(transforms=[t]))  # latched before the recorder exists
    node = ros.add(RecorderNode("rec_tf_static", context=ros.context,
                                parameter_overrides=[Parameter("output_dir", value=str(tmp_path))]))
    assert wait(lambda: len(node._tf_static) == 1, 5.0)
    paths = []
    for _ in range(2):
        paths.append(node.start_episode(task="tf"))
        node.stop_episode()
    ros.remove(node)
    from rosbags.highlevel import AnyReader

    for path in paths:
        with AnyReader([path]) as reader:
            conns = [x for x in reader.connections if x.topic == schema.TF_STATIC_TOPIC]
            assert sum(1 for _ in reader.messages(connections=conns)) == 1
