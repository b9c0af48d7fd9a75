"""Episode bags read as Humble's and Jazzy's `ros2 bag` read metadata.yaml (ros2/rosbag2, metadata_io.cpp).

`read_as` models each distro's YAML decoder field by field: what it requires at a given version, and of what
YAML kind (Humble: `offered_qos_profiles.as<std::string>()` with integer enums; Jazzy: a string with integer
enums up to version 8, a list with enum names from version 9). A bag passes when every required field is
there with the kind the C++ `as<T>()` would accept.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from mole_inference.data import schema
from mole_inference.data.bag_reader import read_episode
from mole_inference.data.bag_writer import EpisodeBagWriter
from mole_inference.data.episode_meta import EpisodeMetadata
from mole_inference.data.rosbag2_versions import DISTRO_METADATA_VERSION, downgrade
from mole_inference.errors import ConfigError
from tests.data.test_episode_bags import pose_msg

pytest.importorskip("rosbags")

QOS_KEYS = {
    "history",
    "depth",
    "reliability",
    "durability",
    "deadline",
    "lifespan",
    "liveliness",
    "liveliness_lease_duration",
    "avoid_ros_namespace_conventions",
}


class DecodeError(Exception):
    """What yaml-cpp's TypedBadConversion / InvalidNode would be in the C++ reader."""


def _need(node: dict, key: str, kind: type | tuple[type, ...]):
    if key not in node:
        raise DecodeError(f"missing {key!r}")
    if not isinstance(node[key], kind):
        raise DecodeError(f"{key!r} is {type(node[key]).__name__}, decoder wants {kind}")
    return node[key]


def _qos(profiles: list, named_enums: bool) -> None:
    for p in profiles:
        assert set(p) >= QOS_KEYS, p
        for key in ("history", "reliability", "durability", "liveliness"):
            _need(p, key, str if named_enums else int)


def read_as(distro: str, doc: dict) -> dict:
    """Decode `rosbag2_bagfile_information` as `distro`'s rosbag2 does; DecodeError where it would throw."""
    info = doc["rosbag2_bagfile_information"]
    version = _need(info, "version", int)
    for key in ("storage_identifier",):
        _need(info, key, str)
    _need(_need(info, "duration", dict), "nanoseconds", int)
    _need(_need(info, "starting_time", dict), "nanoseconds_since_epoch", int)
    _need(info, "message_count", int)
    _need(info, "relative_file_paths", list)
    for t in _need(info, "topics_with_message_count", list):
        meta = _need(t, "topic_metadata", dict)
        _need(t, "message_count", int)
        for key in ("name", "type", "serialization_format"):
            _need(meta, key, str)
        if version >= 4:
            if distro == "humble" or version < 9:  # Humble: always as<std::string>()
                text = _need(meta, "offered_qos_profiles", str)
                _qos(yaml.safe_load(text) or [], named_enums=False)
            else:
                _qos(_need(meta, "offered_qos_profiles", list), named_enums=True)
        if distro == "jazzy" and version >= 7:
            _need(meta, "type_description_hash", str)
    if version >= 3:
        _need(info, "compression_format", str)
        _need(info, "compression_mode", str)
    if version >= 5:
        for f in _need(info, "files", list):
            _need(f, "path", str)
            _need(f, "message_count", int)
    if distro == "jazzy" and version >= 6:
        _need(info, "custom_data", dict)
    if distro == "jazzy" and version >= 8:
        _need(info, "ros_distro", str)
    return info


def _write_bag(path, distro: str) -> None:
    with EpisodeBagWriter(path, metadata=EpisodeMetadata(task="t"), ros_distro=distro, start_ns=1) as w:
        w.write_text(schema.INSTRUCTION_TOPIC, "pick", 10)
        w.write_ee_delta(np.zeros(7), "policy", 20)
        w.write(schema.MEASURED_POSE_TOPIC, pose_msg(30, (0.4, 0.0, 0.3), (1.0, 0.0, 0.0, 0.0)), 30)


@pytest.mark.parametrize("target", ["humble", "jazzy"])
def test_metadata_version_per_target_distro(tmp_path, target):
    _write_bag(tmp_path / "bag", target)
    doc = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())
    info = doc["rosbag2_bagfile_information"]
    assert info["version"] == DISTRO_METADATA_VERSION[target] == {"humble": 5, "jazzy": 9}[target]
    if target == "humble":  # nothing newer than version 5 describes the topics
        assert "ros_distro" not in info
        assert all("type_description_hash" not in t["topic_metadata"] for t in info["topics_with_message_count"])


def test_a_humble_bag_reads_on_humble_and_jazzy_and_back_in_python(tmp_path):
    _write_bag(tmp_path / "bag", "humble")
    doc = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())
    for distro in ("humble", "jazzy"):
        info = read_as(distro, doc)
    pose_qos = next(
        yaml.safe_load(t["topic_metadata"]["offered_qos_profiles"])
        for t in info["topics_with_message_count"]
        if t["topic_metadata"]["name"] == schema.MEASURED_POSE_TOPIC
    )
    assert pose_qos[0]["reliability"] == 2 and pose_qos[0]["depth"] == 1  # rmw BEST_EFFORT = 2, as the robot offers
    ep = read_episode(tmp_path / "bag")  # rosbags reads it, episode metadata included
    assert ep.instructions == ["pick"] and ep.metadata.task == "t" and len(ep.measured_poses) == 1


def test_a_jazzy_bag_is_what_humble_cannot_read(tmp_path):
    """Why the target matters: Humble's as<std::string>() throws on version 9's QoS list."""
    _write_bag(tmp_path / "bag", "jazzy")
    doc = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())
    read_as("jazzy", doc)
    with pytest.raises(DecodeError, match="offered_qos_profiles"):
        read_as("humble", doc)


def test_bad_distro_and_downgrade_inputs_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="ros_distro"):
        EpisodeBagWriter(tmp_path / "bag", ros_distro="foxy")
    with pytest.raises(ConfigError, match="version-8"):
        downgrade({"version": 9}, 5)


@pytest.mark.parametrize("target", ["humble", "jazzy"])
def test_a_recovered_bag_gets_the_metadata_its_distro_reads(tmp_path, target):
    """recover_bag(ros_distro=...) rebuilds metadata.yaml after a crash in the version that distro reads."""
    import shutil

    from mole_inference.data.bag_recovery import recover_bag, storage_file

    _write_bag(tmp_path / "bag", "jazzy")
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    shutil.copy(storage_file(tmp_path / "bag"), crashed / "crashed.mcap")  # no metadata.yaml: never closed
    assert recover_bag(crashed, ros_distro=target).repaired
    doc = yaml.safe_load((crashed / "metadata.yaml").read_text())
    assert doc["rosbag2_bagfile_information"]["version"] == DISTRO_METADATA_VERSION[target]
    for distro in ("humble", "jazzy") if target == "humble" else ("jazzy",):
        read_as(distro, doc)
    assert read_episode(crashed).instructions == ["pick"]
