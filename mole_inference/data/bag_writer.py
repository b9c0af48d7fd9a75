"""`EpisodeBagWriter`: one rosbag2 bag (MCAP or sqlite3) per demonstration episode, tolerant to SIGKILL.

rosbags' writers keep everything since the last chunk (MCAP: up to 1 MiB, in memory, behind a buffered file)
or since the last commit (sqlite3: the whole bag, one transaction) off the disk, and write the MCAP summary,
footer and metadata.yaml only in `close()`. This writer therefore flushes on its own schedule: it closes the
pending MCAP chunk and flushes the file (or commits the sqlite3 transaction) every `chunk_bytes` of data and
every `flush_interval_s` seconds, so a SIGKILL loses at most the data since the last flush, and
`bag_recovery.recover_bag` turns what is on disk into a readable bag. SIGINT/SIGTERM should reach the caller's
`finally: writer.close()`, which writes a complete bag.

Bags target one ROS 2 distro's `ros2 bag` (`ros_distro`): see `rosbag2_versions` for what each reads.

The flushing touches two attributes of rosbags' storage writers (`McapWriter.close_chunk/chunk/bio`,
`Sqlite3Writer.conn`); tests/data pin that behaviour for the rosbags version in use.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mole_inference.data.episode_meta import EpisodeMetadata
from mole_inference.data.rosbag2_versions import check_distro, finish_metadata, writer_version
from mole_inference.data.schema import (
    EE_DELTA_TOPIC,
    EPISODE_TOPIC,
    EPISODE_TOPICS,
    FLOAT64_ARRAY_TYPE,
    STRING_TYPE,
    QosClass,
    decode_ee_delta,
    default_typestore,
    encode_ee_delta,
)
from mole_inference.errors import ConfigError, InputError

if TYPE_CHECKING:
    from rosbags.interfaces import Connection, Qos
    from rosbags.typesys.store import Typestore

log = logging.getLogger(__name__)

Storage = Literal["mcap", "sqlite3"]
EPISODE_CUSTOM_KEY = "mole.episode"  # metadata.yaml custom_data key holding the final EpisodeMetadata JSON


def qos_profile(qos: QosClass) -> Qos:
    """The offered QoS profile recorded for a topic of class "sensor", "state", "reliable" or "latched"."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    reliability, durability, depth = {
        "sensor": (QosReliability.BEST_EFFORT, QosDurability.VOLATILE, 5),
        "state": (QosReliability.BEST_EFFORT, QosDurability.VOLATILE, 1),  # as the robot's broadcaster offers it
        "reliable": (QosReliability.RELIABLE, QosDurability.VOLATILE, 10),
        "latched": (QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, 1),
        "tf": (QosReliability.RELIABLE, QosDurability.VOLATILE, 100),  # tf2_ros TransformBroadcaster
        "tf_static": (QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, 1),  # StaticTransformBroadcaster
    }[qos]
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth, reliability, durability, zero, zero, QosLiveliness.AUTOMATIC, zero, False)


class EpisodeBagWriter:
    """Write one episode as a rosbag2 directory at `path` (created; must not exist).

    Messages come either serialized (`write_raw`, e.g. a ROS subscription with raw=True) or as rosbags
    typestore objects (`write`). Topics are registered on first use with the QoS class from `schema`
    ("reliable" for topics not in the schema). The episode metadata is written on `/mole/episode` at start
    and again, updated with success/stop/notes, by `close`. Thread-safe: one lock around every write.
    """

    def __init__(
        self,
        path: str | Path,
        storage: Storage = "mcap",
        metadata: EpisodeMetadata | None = None,
        *,
        typestore: Typestore | None = None,
        start_ns: int | None = None,
        chunk_bytes: int = 1 << 20,
        flush_interval_s: float | None = 1.0,
        compress: bool = False,
        fsync: bool = False,
        ros_distro: str = "jazzy",
    ) -> None:
        from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer, WriterError

        if storage not in ("mcap", "sqlite3"):
            raise ConfigError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
        if not 0 < chunk_bytes <= 1 << 20:
            raise ConfigError(f"chunk_bytes must be in (0, 1 MiB] (rosbags closes chunks at 1 MiB), got {chunk_bytes}")
        if flush_interval_s is not None and flush_interval_s <= 0:
            raise ConfigError(f"flush_interval_s must be > 0 or None, got {flush_interval_s}")
        if compress and storage != "mcap":
            raise ConfigError("compress=True (zstd chunks) needs storage='mcap'")
        self.ros_distro = check_distro(ros_distro)
        self.path = Path(path)
        self.storage = storage
        self.typestore = typestore or default_typestore()
        self.chunk_bytes = chunk_bytes
        self.flush_interval_s = flush_interval_s
        self.fsync = fsync
        self.counts: dict[str, int] = {}
        self.flushed_counts: dict[str, int] = {}  # per-topic counts on disk as of the last flush
        self._connections: dict[str, Connection] = {}
        self._lock = threading.RLock()
        self._unflushed_bytes = 0
        self._last_flush = time.monotonic()
        self._max_t_ns = 0
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        try:
            self._writer: Any = Writer(self.path, version=writer_version(ros_distro), storage_plugin=plugin)
            if compress:
                self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
            self._writer.open()
        except WriterError as err:
            raise InputError(f"cannot create episode bag {self.path}: {err} (use new_episode_path())") from err
        self._open = True
        t0 = time.time_ns() if start_ns is None else start_ns
        meta = metadata or EpisodeMetadata()
        self.metadata = replace(meta, start_ns=meta.start_ns if meta.start_ns is not None else t0)
        self.write_text(EPISODE_TOPIC, self.metadata.to_json(), self.metadata.start_ns)
        self.flush()
        log.info("recording episode %s (%s)", self.path, storage)

    @property
    def is_open(self) -> bool:
        """False once `close` ran."""
        return self._open

    def register_topic(self, topic: str, msgtype: str, qos: QosClass | None = None) -> None:
        """Register a topic before its first message (optional; `write*` registers on first use)."""
        with self._lock:
            self._check_open()
            self._connection(topic, msgtype, qos)

    def write_raw(self, topic: str, msgtype: str, cdr_bytes: bytes | bytearray | memoryview, t_ns: int) -> None:
        """Write one CDR-serialized message received at `t_ns` (ns since epoch, the bag's log time)."""
        if not isinstance(cdr_bytes, (bytes, bytearray, memoryview)) or len(cdr_bytes) < 4:
            raise InputError(f"cdr_bytes for {topic} must be serialized CDR bytes, got {type(cdr_bytes).__name__}")
        if topic == EE_DELTA_TOPIC and msgtype == FLOAT64_ARRAY_TYPE:
            try:
                msg = self.typestore.deserialize_cdr(cdr_bytes, msgtype)
            except Exception as err:  # rosbags raises plain struct/index errors on garbage
                raise InputError(f"cannot deserialize {msgtype} on {topic}: {err}") from err
            decode_ee_delta(msg)
        self._write(topic, msgtype, cdr_bytes, t_ns)

    def write(self, topic: str, msg: Any, t_ns: int) -> None:
        """Serialize a rosbags typestore message object and write it at `t_ns`."""
        msgtype = getattr(msg, "__msgtype__", None)
        if not isinstance(msgtype, str):
            raise InputError(f"{topic}: expected a rosbags typestore message, got {type(msg).__name__}")
        if topic == EE_DELTA_TOPIC:
            decode_ee_delta(msg)
        self._check_type(topic, msgtype)
        try:
            data = self.typestore.serialize_cdr(msg, msgtype)
        except Exception as err:
            raise InputError(f"cannot serialize {msgtype} on {topic}: {err}") from err
        self._write(topic, msgtype, data, t_ns)

    def write_ee_delta(self, delta: Any, source: str, t_ns: int) -> None:
        """Write the 7-DoF delta actually sent and its source on `/mole/ee_delta`."""
        self.write(EE_DELTA_TOPIC, encode_ee_delta(delta, source, self.typestore), t_ns)

    def write_text(self, topic: str, text: str, t_ns: int) -> None:
        """Write a std_msgs/msg/String (instruction, active source, episode JSON)."""
        self.write(topic, self.typestore.types[STRING_TYPE](data=text), t_ns)

    def flush(self) -> None:
        """Put everything written so far on disk as a complete MCAP chunk / committed sqlite3 transaction."""
        with self._lock:
            self._check_open()
            storage = self._writer.storage
            if self.storage == "mcap":
                if storage.chunk.msgs:
                    storage.close_chunk()
                storage.bio.flush()
                if self.fsync:
                    os.fsync(storage.bio.fileno())
            else:
                storage.conn.commit()
            self.flushed_counts = dict(self.counts)
            self._unflushed_bytes = 0
            self._last_flush = time.monotonic()

    def close(self, success: bool | None = None, notes: str | None = None, t_ns: int | None = None) -> EpisodeMetadata:
        """Write the final episode metadata (stop time `t_ns`, default: last message time) and finish the bag.

        Idempotent: a second call returns the same metadata. Returns the metadata as written.
        """
        with self._lock:
            if not self._open:
                return self.metadata
            stop = self._max_t_ns if t_ns is None else t_ns
            self.metadata = replace(
                self.metadata,
                success=success if success is not None else self.metadata.success,
                stop_ns=stop,
                notes=notes if notes is not None else self.metadata.notes,
            )
            self.write_text(EPISODE_TOPIC, self.metadata.to_json(), stop)
            self._writer.set_custom_data(EPISODE_CUSTOM_KEY, self.metadata.to_json())
            self._writer.close()
            finish_metadata(self.path, self.ros_distro)
            self._open = False
            self.flushed_counts = dict(self.counts)
        log.info("closed episode %s: %d messages, success=%s", self.path, sum(self.counts.values()), success)
        return self.metadata

    def __enter__(self) -> EpisodeBagWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Close cleanly even on an exception (the data stays readable); the note records the error."""
        if exc is not None and self._open:
            self.close(notes=f"{self.metadata.notes} [recorder error: {type(exc).__name__}: {exc}]".strip())
        else:
            self.close()

    def _check_open(self) -> None:
        if not self._open:
            raise InputError(f"episode bag {self.path} is closed; open a new EpisodeBagWriter")

    def _check_type(self, topic: str, msgtype: str) -> None:
        spec = EPISODE_TOPICS.get(topic)
        if spec is not None and spec.msgtype != msgtype:
            raise InputError(f"topic {topic} carries {spec.msgtype}, got {msgtype}")
        conn = self._connections.get(topic)
        if conn is not None and conn.msgtype != msgtype:
            raise InputError(f"topic {topic} was registered as {conn.msgtype}, got {msgtype}")

    def _connection(self, topic: str, msgtype: str, qos: QosClass | None = None) -> Connection:
        self._check_type(topic, msgtype)
        if (conn := self._connections.get(topic)) is not None:
            return conn
        if not topic.startswith("/"):
            raise InputError(f"topic names must be absolute ('/...'), got {topic!r}")
        if msgtype not in self.typestore.fielddefs:
            raise InputError(
                f"unknown message type {msgtype!r} on {topic}; register it in the writer's typestore "
                "(typestore.register(get_types_from_msg(...)))"
            )
        spec = EPISODE_TOPICS.get(topic)
        qos = qos or (spec.qos if spec else "reliable")
        conn = self._writer.add_connection(
            topic, msgtype, typestore=self.typestore, offered_qos_profiles=[qos_profile(qos)]
        )
        self._connections[topic] = conn
        self.counts.setdefault(topic, 0)
        return conn

    def _write(self, topic: str, msgtype: str, data: bytes | bytearray | memoryview, t_ns: int) -> None:
        if isinstance(t_ns, bool) or not isinstance(t_ns, int) or t_ns < 0:
            raise InputError(f"t_ns must be a non-negative int (ns since epoch), got {t_ns!r}")
        with self._lock:
            self._check_open()
            conn = self._connection(topic, msgtype)
            self._writer.write(conn, t_ns, bytes(data) if isinstance(data, bytearray) else data)
            self.counts[topic] += 1
            self._max_t_ns = max(self._max_t_ns, t_ns)
            self._unflushed_bytes += len(data)
            self._maybe_flush()

    def _maybe_flush(self) -> None:
        # rosbags closes a chunk by itself past 1 MiB; flush then too so the file holds it whole.
        auto_closed = self.storage == "mcap" and not self._writer.storage.chunk.msgs
        due = self.flush_interval_s is not None and time.monotonic() - self._last_flush >= self.flush_interval_s
        if auto_closed or due or self._unflushed_bytes >= self.chunk_bytes:
            self.flush()
