"""QoS profiles per stream class, matching `mole_inference.data.schema` ("sensor", "state", "reliable", "latched")."""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

SENSOR = qos_profile_sensor_data  # best effort, keep last 5: cameras (a late frame is worse than none)
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)  # our own commands and deltas
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)  # instruction, active source, episode
DIAGNOSTICS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)

# Robot state. franka_ros2's franka_robot_state_broadcaster publishes `~/current_pose` and its other convenience
# topics (last_desired_pose, measured_joint_states, external wrench, ...) with `rclcpp::QoS(1).best_effort()`:
# keep last 1, BEST_EFFORT, volatile (read in frankaemika/franka_ros2,
# franka_robot_state_broadcaster/src/franka_robot_state_broadcaster.cpp, on_configure; older releases used
# SystemDefaultsQoS, i.e. reliable). A RELIABLE subscription never matches a best-effort publisher; a
# BEST_EFFORT subscription matches both, so every subscription to robot state uses ROBOT_STATE.
ROBOT_STATE_PUBLISHER = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                   reliability=ReliabilityPolicy.BEST_EFFORT,
                                   durability=DurabilityPolicy.VOLATILE)  # exactly the broadcaster's (sim bridge)
# depth 10 on our side only sizes the local queue: the recorder keeps every pose through an executor stall
ROBOT_STATE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.VOLATILE)

# TF as tf2_ros offers and takes it (geometry2 tf2_ros qos.hpp): /tf reliable, volatile, depth 100 both ways;
# /tf_static published reliable, transient local, depth 1 (StaticBroadcasterQoS: each broadcaster resends its
# whole set in one message) and listened to with depth 100 (StaticListenerQoS: one latched message per publisher).
TF = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                durability=DurabilityPolicy.VOLATILE)
TF_STATIC = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL)
TF_STATIC_LISTENER = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)

BY_CLASS = {"sensor": SENSOR, "state": ROBOT_STATE, "reliable": RELIABLE, "latched": LATCHED, "tf": TF,
            "tf_static": TF_STATIC_LISTENER}


def for_class(qos_class: str) -> QoSProfile:
    """The subscription profile for a schema QoS class name."""
    return BY_CLASS[qos_class]
