"""Which rosbag2 metadata version each ROS 2 distro's `ros2 bag` writes and reads, and writing bags for it.

Read in ros2/rosbag2 (branches humble and jazzy): `rosbag2_storage/include/rosbag2_storage/bag_metadata.hpp`
(`BagMetadata::version`: Humble 5, Jazzy 9) and the YAML decoders in
`rosbag2_storage/src/rosbag2_storage/metadata_io.cpp` (+ `yaml.hpp`, `qos.cpp` on Jazzy):

- no reader checks an upper bound on `version`; each decodes the fields its version has and ignores others;
- `offered_qos_profiles` (version >= 4) is a YAML *string* holding a list of profiles with integer enums up to
  version 8, and a YAML *list* with enum names ("keep_last", "best_effort") from version 9 on. Humble reads it
  with `as<std::string>()`, which throws on a list: a version-9 bag (what rosbags and Jazzy write) is unreadable
  by Humble's `ros2 bag info/play`. Humble also takes the QoS string from the MCAP channel metadata and parses
  integer enums from it when playing;
- Jazzy reads versions >= 4 (string or list, integer or named enums), so a version-5 bag plays on both.

So a bag for Humble is written by rosbags as version 8 (integer-enum QoS strings in metadata.yaml, in the MCAP
channel metadata and in the MCAP's embedded copy of the metadata, which Jazzy's MCAP reader decodes with its
own version) and its metadata.yaml is then rewritten as the version-5 layout Humble writes itself. Our
`custom_data` (episode JSON) stays in the file: version-5 readers never look at it, rosbags still reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mole_inference.errors import ConfigError

# the metadata.yaml version each distro's own recorder writes (bag_metadata.hpp on the distro's branch)
DISTRO_METADATA_VERSION = {"humble": 5, "jazzy": 9}
# fields only present from a version on: never written for an older target (type_description_hash: 7, ros_distro: 8)
TOPIC_FIELDS_SINCE = {"type_description_hash": 7}
BAG_FIELDS_SINCE = {"ros_distro": 8}


def check_distro(ros_distro: str) -> str:
    """The distro name, validated ("humble" or "jazzy")."""
    if ros_distro not in DISTRO_METADATA_VERSION:
        raise ConfigError(f"ros_distro must be one of {sorted(DISTRO_METADATA_VERSION)}, got {ros_distro!r}")
    return ros_distro


def writer_version(ros_distro: str) -> int:
    """The version rosbags writes for `ros_distro` (rosbags writes 8 or 9; 8 has Humble's QoS encoding)."""
    return 8 if DISTRO_METADATA_VERSION[check_distro(ros_distro)] < 9 else 9


def downgrade(info: dict[str, Any], version: int) -> dict[str, Any]:
    """A `rosbag2_bagfile_information` mapping of version 8 rewritten as `version` (4..8): fields newer than
    `version` dropped, the QoS strings kept (same encoding from 4 to 8)."""
    if info.get("version") != 8 or not 4 <= version <= 8:
        raise ConfigError(f"can only downgrade version-8 metadata to 4..8, got {info.get('version')} -> {version}")
    out = {k: v for k, v in info.items() if BAG_FIELDS_SINCE.get(k, 0) <= version}
    out["version"] = version
    out["topics_with_message_count"] = [
        {
            **t,
            "topic_metadata": {k: v for k, v in t["topic_metadata"].items() if TOPIC_FIELDS_SINCE.get(k, 0) <= version},
        }
        for t in info.get("topics_with_message_count") or []
    ]
    return out


def finish_metadata(path: str | Path, ros_distro: str) -> None:
    """After rosbags closed the bag at `path`: rewrite metadata.yaml in the version `ros_distro` writes."""
    import yaml

    version = DISTRO_METADATA_VERSION[check_distro(ros_distro)]
    if version == writer_version(ros_distro):
        return
    meta = Path(path) / "metadata.yaml"
    doc = yaml.safe_load(meta.read_text())
    doc["rosbag2_bagfile_information"] = downgrade(doc["rosbag2_bagfile_information"], version)
    tmp = meta.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    tmp.replace(meta)
