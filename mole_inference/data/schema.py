"""What an episode bag contains: topic names, message types, QoS classes, and the ee-delta convention.

Topic names follow DESIGN.md (every one is a node parameter; these are the defaults). The commanded 7-DoF
delta travels as std_msgs/msg/Float64MultiArray with `data = [dx, dy, dz, droll, dpitch, dyaw, gripper]`
and `layout.dim[0] = (label=<source>, size=7, stride=7)`, where source is "policy", "teleop" or "hold";
`encode_ee_delta` / `decode_ee_delta` are the one place that knows this.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mole_inference.errors import InputError

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

# "state": robot state as franka_robot_state_broadcaster offers it (best effort, keep last 1); see mole_ros.qos
# "tf" / "tf_static": as tf2_ros offers /tf (reliable, depth 100) and /tf_static (reliable, transient local)
QosClass = Literal["sensor", "state", "reliable", "latched", "tf", "tf_static"]

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
STRING_TYPE = "std_msgs/msg/String"
POSE_TYPE = "geometry_msgs/msg/PoseStamped"
FLOAT64_TYPE = "std_msgs/msg/Float64"
FLOAT64_ARRAY_TYPE = "std_msgs/msg/Float64MultiArray"
FLOAT32_ARRAY_TYPE = "std_msgs/msg/Float32MultiArray"
DIAGNOSTIC_ARRAY_TYPE = "diagnostic_msgs/msg/DiagnosticArray"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
WRENCH_TYPE = "geometry_msgs/msg/WrenchStamped"
TF_TYPE = "tf2_msgs/msg/TFMessage"

IMAGE_TOPIC = "/wrist_camera/image_raw"
COMPRESSED_IMAGE_TOPIC = "/wrist_camera/image_raw/compressed"
INSTRUCTION_TOPIC = "/mole/instruction"
MEASURED_POSE_TOPIC = "/franka_robot_state_broadcaster/current_pose"
TARGET_POSE_TOPIC = "/cartesian_impedance_controller/target_pose"
EE_DELTA_TOPIC = "/mole/ee_delta"
GRIPPER_COMMAND_TOPIC = "/mole/gripper/command"
ACTIVE_SOURCE_TOPIC = "/mole/active_source"
EPISODE_TOPIC = "/mole/episode"
ROUTING_TOPIC = "/mole/routing"
DIAGNOSTICS_TOPIC = "/diagnostics"
CAMERA_INFO_TOPIC = "/wrist_camera/camera_info"
# franka_ros2 (franka_bringup/launch/franka.launch.py): joint_state_publisher merges franka/joint_states (the
# joint_state_broadcaster, remapped) and franka_gripper/joint_states into /joint_states at joint_state_rate (30 Hz)
JOINT_STATES_TOPIC = "/joint_states"
# franka_gripper_node: ~/joint_states, depth 1, two finger joints at width / 2 each (gripper_action_server.cpp)
GRIPPER_JOINT_STATES_TOPIC = "/franka_gripper/joint_states"
# franka_robot_state_broadcaster: O_F_ext_hat_K (estimated external wrench on the stiffness frame, expressed in
# the base frame), QoS(1).best_effort() like ~/current_pose, at the controller rate (1 kHz)
EXTERNAL_WRENCH_TOPIC = "/franka_robot_state_broadcaster/external_wrench_in_base_frame"
TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"

EE_DELTA_DIM = 7
EE_DELTA_SOURCES = ("policy", "teleop", "hold")

# Stores.ROS2_JAZZY: these message definitions (and so their RIHS01 hashes) match Humble/Jazzy/Kilted.
DEFAULT_STORE = "ros2_jazzy"


@dataclass(frozen=True)
class TopicSpec:
    """One topic of an episode bag: name, message type and the QoS class it is offered with."""

    name: str
    msgtype: str
    qos: QosClass


EPISODE_TOPICS: dict[str, TopicSpec] = {
    spec.name: spec
    for spec in (
        TopicSpec(IMAGE_TOPIC, IMAGE_TYPE, "sensor"),
        TopicSpec(COMPRESSED_IMAGE_TOPIC, COMPRESSED_IMAGE_TYPE, "sensor"),
        TopicSpec(INSTRUCTION_TOPIC, STRING_TYPE, "latched"),
        TopicSpec(MEASURED_POSE_TOPIC, POSE_TYPE, "state"),
        TopicSpec(TARGET_POSE_TOPIC, POSE_TYPE, "reliable"),
        TopicSpec(EE_DELTA_TOPIC, FLOAT64_ARRAY_TYPE, "reliable"),
        TopicSpec(GRIPPER_COMMAND_TOPIC, FLOAT64_TYPE, "reliable"),
        TopicSpec(ACTIVE_SOURCE_TOPIC, STRING_TYPE, "latched"),
        TopicSpec(EPISODE_TOPIC, STRING_TYPE, "latched"),
        TopicSpec(CAMERA_INFO_TOPIC, CAMERA_INFO_TYPE, "sensor"),
        TopicSpec(JOINT_STATES_TOPIC, JOINT_STATE_TYPE, "state"),
        TopicSpec(GRIPPER_JOINT_STATES_TOPIC, JOINT_STATE_TYPE, "state"),
        TopicSpec(EXTERNAL_WRENCH_TOPIC, WRENCH_TYPE, "state"),
        TopicSpec(TF_TOPIC, TF_TYPE, "tf"),
        TopicSpec(TF_STATIC_TOPIC, TF_TYPE, "tf_static"),
    )
}

# recorded when the robot side publishes them (franka_ros2, the camera node, tf); the simulated demos
# (sim/demos.py) write the rest of EPISODE_TOPICS only
ROBOT_STATE_TOPICS = frozenset({CAMERA_INFO_TOPIC, JOINT_STATES_TOPIC, GRIPPER_JOINT_STATES_TOPIC,
                                EXTERNAL_WRENCH_TOPIC, TF_TOPIC, TF_STATIC_TOPIC})

# Published by the live stack but not part of an episode bag (record them with `ros2 bag record` to replay them):
# routing = Float32MultiArray (2, K), row 0 = 1.0 where the layer ran, row 1 = router probabilities
# (mole_ros.conversions.routing_to_msg); diagnostics = the policy node's timings (mole_ros.telemetry).
TELEMETRY_TOPICS: dict[str, TopicSpec] = {
    spec.name: spec
    for spec in (
        TopicSpec(ROUTING_TOPIC, FLOAT32_ARRAY_TYPE, "reliable"),
        TopicSpec(DIAGNOSTICS_TOPIC, DIAGNOSTIC_ARRAY_TYPE, "reliable"),
    )
}


@functools.cache
def default_typestore() -> Typestore:
    """The rosbags typestore episode bags are written with (ROS 2 Jazzy definitions), built once."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores(DEFAULT_STORE))


def validate_ee_delta(delta: Any, source: str) -> np.ndarray:
    """Check a 7-DoF delta and its source; return it as float64 (7,) or raise InputError."""
    if source not in EE_DELTA_SOURCES:
        raise InputError(f"ee_delta source must be one of {EE_DELTA_SOURCES}, got {source!r}")
    arr = np.asarray(delta, dtype=np.float64)
    if arr.shape != (EE_DELTA_DIM,):
        raise InputError(f"ee_delta must have shape ({EE_DELTA_DIM},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"ee_delta must be finite, got {arr.tolist()}")
    return arr


def encode_ee_delta(delta: Any, source: str, typestore: Typestore | None = None) -> Any:
    """Build the std_msgs/msg/Float64MultiArray for a delta `[dx..dyaw, gripper]` sent by `source`."""
    arr = validate_ee_delta(delta, source)
    ts = typestore or default_typestore()
    dim = ts.types["std_msgs/msg/MultiArrayDimension"](label=source, size=EE_DELTA_DIM, stride=EE_DELTA_DIM)
    layout = ts.types["std_msgs/msg/MultiArrayLayout"](dim=[dim], data_offset=0)
    return ts.types[FLOAT64_ARRAY_TYPE](layout=layout, data=arr)


def decode_ee_delta(msg: Any) -> tuple[np.ndarray, str]:
    """Read `(delta (7,), source)` from a Float64MultiArray made by `encode_ee_delta`; else InputError."""
    dims = getattr(getattr(msg, "layout", None), "dim", None)
    if not dims:
        raise InputError("ee_delta message has no layout.dim[0] carrying its source")
    source = dims[0].label
    return validate_ee_delta(msg.data, source), source
