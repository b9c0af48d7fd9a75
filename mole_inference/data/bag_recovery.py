"""`recover_bag`: make an episode bag cut off by SIGKILL (or a power cut) readable again.

A bag directory without metadata.yaml was not closed. Recovery:
- MCAP: `mcap_repair.repair_mcap` keeps every complete chunk (everything up to the writer's last flush) and
  appends indexes, summary and footer;
- sqlite3: opening the database read-write rolls back the uncommitted transaction (hot journal), leaving
  what the writer last committed;
then metadata.yaml is rebuilt from the storage file, with the last `/mole/episode` JSON in custom_data.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mole_inference.data.bag_writer import EPISODE_CUSTOM_KEY
from mole_inference.data.mcap_repair import repair_mcap
from mole_inference.data.schema import EPISODE_TOPIC, STRING_TYPE, default_typestore
from mole_inference.errors import InputError

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

log = logging.getLogger(__name__)
RECOVERED_CUSTOM_KEY = "mole.recovered"


@dataclass
class RecoveryReport:
    """Outcome of `recover_bag`: whether anything was repaired and the per-topic counts now readable."""

    path: Path
    storage: str
    repaired: bool
    message_counts: dict[str, int]
    dropped_bytes: int = 0


def storage_file(path: str | Path) -> Path:
    """The single .mcap or .db3 file of a bag directory; InputError if there is none or several."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path} is not a bag directory")
    files = sorted([*path.glob("*.mcap"), *path.glob("*.db3")])
    if len(files) != 1:
        raise InputError(f"{path} must hold exactly one .mcap or .db3 file, found {[f.name for f in files]}")
    return files[0]


def is_bag_complete(path: str | Path) -> bool:
    """True when the bag directory was closed (metadata.yaml exists)."""
    return (Path(path) / "metadata.yaml").is_file()


def _mcap_is_readable(file: Path) -> bool:
    from rosbags.rosbag2 import Reader, ReaderError

    try:
        with Reader(file):
            return True
    except (ReaderError, OSError, ValueError, IndexError):
        return False


def _rollback_sqlite(file: Path) -> None:
    # A read-write open replays the hot rollback journal; rosbags' reader opens immutable and would not.
    con = sqlite3.connect(file)
    try:
        (ok,) = con.execute("PRAGMA quick_check").fetchone()
        if ok != "ok":
            raise InputError(f"{file} is corrupt after rollback: {ok}")
        if con.execute("SELECT count(*) FROM messages").fetchone()[0] == 0:
            raise InputError(f"{file}: no message was committed before the recorder stopped; nothing to recover")
    except sqlite3.DatabaseError as err:
        raise InputError(f"{file} cannot be opened as sqlite3: {err}") from err
    finally:
        con.close()


def _last_episode_json(reader: Any, typestore: Typestore) -> str | None:
    conns = [c for c in reader.connections if c.topic == EPISODE_TOPIC and c.msgtype == STRING_TYPE]
    last = None
    for _, _, data in reader.messages(connections=conns) if conns else ():
        last = typestore.deserialize_cdr(data, STRING_TYPE).data
    return last


def write_metadata_yaml(
    path: str | Path,
    typestore: Typestore | None = None,
    custom_data: dict[str, str] | None = None,
    ros_distro: str = "jazzy",
) -> dict[str, int]:
    """Rebuild `<bag>/metadata.yaml` from the bag's storage file in the version `ros_distro`'s `ros2 bag` reads
    (Jazzy 9; Humble 5, built as 8 and downgraded: data/rosbag2_versions.py); return per-topic counts."""
    from rosbags.rosbag2 import Reader
    from rosbags.rosbag2.metadata import dump_qos_v8, dump_qos_v9
    from ruamel.yaml import YAML

    from mole_inference.data.rosbag2_versions import DISTRO_METADATA_VERSION, downgrade, writer_version

    built = writer_version(ros_distro)
    dump_qos = dump_qos_v9 if built == 9 else dump_qos_v8
    path = Path(path)
    file = storage_file(path)
    ts = typestore or default_typestore()
    with Reader(file) as reader:
        count = reader.message_count
        start = reader.start_time if count else 0
        duration = max(0, reader.end_time - 1 - start) if count else 0
        custom = dict(custom_data or {})
        if (episode := _last_episode_json(reader, ts)) is not None:
            custom.setdefault(EPISODE_CUSTOM_KEY, episode)
        topics = [
            {
                "topic_metadata": {
                    "name": c.topic,
                    "type": c.msgtype,
                    "serialization_format": c.ext.serialization_format,
                    "offered_qos_profiles": dump_qos(c.ext.offered_qos_profiles),
                    "type_description_hash": c.digest
                    or (ts.hash_rihs01(c.msgtype) if c.msgtype in ts.fielddefs else ""),
                },
                "message_count": c.msgcount,
            }
            for c in reader.connections
        ]
    counts = {t["topic_metadata"]["name"]: t["message_count"] for t in topics}
    info = {
        "version": built,
        "storage_identifier": "mcap" if file.suffix == ".mcap" else "sqlite3",
        "relative_file_paths": [file.name],
        "duration": {"nanoseconds": duration},
        "starting_time": {"nanoseconds_since_epoch": start},
        "message_count": count,
        "topics_with_message_count": topics,
        "compression_format": "",
        "compression_mode": "",
        "files": [
            {
                "path": file.name,
                "starting_time": {"nanoseconds_since_epoch": start},
                "duration": {"nanoseconds": duration},
                "message_count": count,
            }
        ],
        "custom_data": custom or None,
        "ros_distro": "rosbags",
    }
    if DISTRO_METADATA_VERSION[ros_distro] < built:
        info = downgrade(info, DISTRO_METADATA_VERSION[ros_distro])
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    text = StringIO()
    yaml.dump({"rosbag2_bagfile_information": info}, text)
    tmp = path / "metadata.yaml.tmp"
    tmp.write_text(text.getvalue(), "utf8")
    tmp.replace(path / "metadata.yaml")
    return counts


def recover_bag(path: str | Path, typestore: Typestore | None = None, ros_distro: str = "jazzy") -> RecoveryReport:
    """Make an unclosed episode bag readable (see module docstring); a closed bag is left untouched. The rebuilt
    metadata.yaml is in the version `ros_distro`'s `ros2 bag` reads (the recorder passes its own `ros_distro`).

    Raises InputError when nothing was flushed before the crash (no complete chunk / no committed row).
    """
    path = Path(path)
    file = storage_file(path)
    storage = "mcap" if file.suffix == ".mcap" else "sqlite3"
    if is_bag_complete(path):
        from rosbags.highlevel import AnyReader

        with AnyReader([path]) as reader:
            counts = {c.topic: c.msgcount for c in reader.connections}
        return RecoveryReport(path, storage, False, counts)
    dropped = 0
    if storage == "mcap" and not _mcap_is_readable(file):
        dropped = repair_mcap(file).dropped_bytes
    elif storage == "sqlite3":
        _rollback_sqlite(file)
    counts = write_metadata_yaml(path, typestore, {RECOVERED_CUSTOM_KEY: "true"}, ros_distro)
    log.warning("recovered unclosed bag %s: %s", path, counts)
    return RecoveryReport(path, storage, True, counts, dropped)
