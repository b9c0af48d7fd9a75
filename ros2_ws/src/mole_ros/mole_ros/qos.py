"""QoS profiles per stream class, matching `mole_inference.data.schema` ("sensor", "reliable", "latched")."""

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
                      durability=DurabilityPolicy.VOLATILE)  # commands, poses, deltas
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)  # instruction, active source, episode
DIAGNOSTICS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)

BY_CLASS = {"sensor": SENSOR, "reliable": RELIABLE, "latched": LATCHED}


def for_class(qos_class: str) -> QoSProfile:
    """The profile for a schema QoS class name."""
    return BY_CLASS[qos_class]
