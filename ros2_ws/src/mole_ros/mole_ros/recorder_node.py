"""`mole_recorder`: demonstration episodes as MCAP bags, written with `mole_inference.data.EpisodeBagWriter`.

Messages are taken serialized (`raw=True` subscriptions: no Python deserialization of images) and written with
their receive time as log time. Latched topics (instruction, active source) keep their newest message, which
is written at the start of each episode so every bag is self-contained. Interventions are labelled twice: each
commanded delta on `/mole/ee_delta` carries its source (policy / teleop / hold), and the number of switches to
teleop lands in the episode metadata (`extra.interventions`).

Episodes start and stop by service or topic, with metadata from parameters (std_srvs has no string service):
  ros2 param set /mole_recorder episode.task "pick the cup"; ros2 service call /mole_recorder/start_episode ...
  ros2 param set /mole_recorder episode.success true;        ros2 service call /mole_recorder/stop_episode ...
or one std_msgs/String JSON on `/mole/episode_command`:
  {"command": "start", "task": "...", "operator": "..."} / {"command": "stop", "success": true, "notes": "..."}
The bag is flushed every `flush_period` seconds, so a SIGKILL loses at most that much (run
`bag_recovery.recover_bag`); SIGINT / SIGTERM close the open episode cleanly on shutdown.

Besides the policy's inputs and outputs the default topics hold what retraining and debugging need on the
robot: joint states (arm + fingers), the gripper's joint states, the external wrench, camera_info, /tf and
/tf_static (every static transform seen is written at each episode start, like the latched topics). A topic
whose message package is not installed is skipped with a warning, not a crash. `ros_distro` picks the
rosbag2 metadata version (`humble` 5, `jazzy` 9) so `ros2 bag` of that distro reads the bags.
With `compress_images`, raw frames are JPEG-encoded on a worker thread and written as CompressedImage on
`<image_topic>/compressed`; frames received, written and dropped (worker busy) land in `extra.images`.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rclpy.node import Node
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import String
from std_srvs.srv import Trigger

from mole_inference.data import schema
from mole_inference.data.bag_writer import EpisodeBagWriter
from mole_inference.data.episode_meta import EpisodeMetadata, new_episode_path, parse_json_object
from mole_inference.data.rosbag2_versions import check_distro
from mole_inference.errors import InputError
from mole_ros import conversions as conv
from mole_ros import qos
from mole_ros.params import declare_config, help_field, read_config

NODE_NAME = "mole_recorder"
DEFAULT_TOPICS = [t for t in schema.EPISODE_TOPICS if t != schema.EPISODE_TOPIC]


@dataclass
class RecorderConfig:
    """Static parameters of `mole_recorder` (read once at start)."""

    output_dir: str = help_field("~/mole_episodes", "episode bags are created under this folder")
    storage: str = help_field("mcap", "mcap | sqlite3")
    topics: list = field(default_factory=lambda: list(DEFAULT_TOPICS),
                         metadata={"help": "topics recorded (names from the episode schema)"})
    flush_period: float = help_field(1.0, "seconds between flushes to disk (data lost on SIGKILL at most)")
    command_topic: str = help_field("/mole/episode_command", "std_msgs/String JSON start/stop commands in")
    ros_distro: str = help_field("jazzy", "humble | jazzy: the distro whose `ros2 bag` must read the bags "
                                          "(metadata version 5 or 9; a humble bag also plays on jazzy)")
    compress_images: bool = help_field(False, "record image_raw as JPEG CompressedImage on .../compressed")
    jpeg_quality: int = help_field(90, "JPEG quality of compress_images")
    max_state_rate: float = help_field(0.0, "at most this many messages per second per robot-state topic "
                                            "(0 = all; the broadcaster publishes at 1 kHz)")

    def __post_init__(self) -> None:
        check_distro(self.ros_distro)
        if not 1 <= self.jpeg_quality <= 100:
            raise InputError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.max_state_rate < 0:
            raise InputError(f"max_state_rate must be >= 0, got {self.max_state_rate}")


@dataclass
class EpisodeParams:
    """Per-episode metadata, read at each start/stop (dynamic parameters `episode.*`)."""

    task: str = help_field("", "task name (also in the bag's folder name)")
    operator: str = help_field("", "who demonstrated")
    success: str = help_field("", "'true' | 'false' | '' (unknown), read at stop")
    notes: str = help_field("", "free text, read at stop")


class RecorderNode(Node):
    """Records episode bags (see module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        declare_config(self, RecorderConfig())
        declare_config(self, EpisodeParams(), "episode.", dynamic=True)
        self.cfg = cfg = read_config(self, RecorderConfig)
        self.get_logger().info(f"config: {cfg}")
        self.writer: EpisodeBagWriter | None = None
        self.last_episode: Path | None = None
        self._latched: dict[str, tuple[bytes, int]] = {}
        self._tf_static: dict[bytes, int] = {}  # every distinct /tf_static message seen -> receive time
        self._interventions = 0
        self._source: str | None = None
        self._last_state_ns: dict[str, int] = {}
        self.skipped_topics: dict[str, str] = {}
        self.images = {"received": 0, "written": 0, "dropped": 0}
        self._jpeg_queue: queue.Queue = queue.Queue(maxsize=4)
        self._jpeg_thread: threading.Thread | None = None
        for topic in cfg.topics:
            spec = schema.EPISODE_TOPICS.get(topic)
            if spec is None:
                known = sorted(schema.EPISODE_TOPICS)
                raise InputError(f"topic {topic!r} is not in the episode schema; known: {known}")
            try:
                msg_type = conv.msg_class(spec.msgtype)
            except ImportError as err:  # e.g. tf2_msgs on a minimal install: record the rest
                self.skipped_topics[topic] = str(err)
                self.get_logger().warning(f"not recording {topic}: {spec.msgtype} is not installed ({err})")
                continue
            # robot state is class "state": franka_robot_state_broadcaster publishes it BEST_EFFORT, keep last 1
            # (franka_ros2 franka_robot_state_broadcaster.cpp), so we subscribe best effort (qos.py)
            self.create_subscription(msg_type, topic, self._callback(topic, spec.msgtype),
                                     qos.for_class(spec.qos), raw=True)
        if cfg.compress_images:
            self._jpeg_thread = threading.Thread(target=self._jpeg_loop, name="mole_recorder_jpeg", daemon=True)
            self._jpeg_thread.start()
        self._episode_pub = self.create_publisher(String, schema.EPISODE_TOPIC, qos.LATCHED)
        self.create_subscription(String, cfg.command_topic, self._on_command, qos.RELIABLE)
        self.create_service(Trigger, "~/start_episode", self._srv_start)
        self.create_service(Trigger, "~/stop_episode", self._srv_stop)
        self.create_timer(cfg.flush_period, self._flush)

    @property
    def recording(self) -> bool:
        """True while an episode is open."""
        return self.writer is not None

    # ------------------------------------------------------------------ episodes
    def start_episode(self, task: str = "", operator: str = "", extra: dict[str, Any] | None = None) -> Path:
        """Open a new episode bag; InputError if one is open already."""
        if self.writer is not None:
            raise InputError(f"already recording {self.writer.path}; stop it first")
        t_ns = self.get_clock().now().nanoseconds
        path = new_episode_path(Path(self.cfg.output_dir).expanduser(), task, t_ns)
        meta = EpisodeMetadata(task=task, operator=operator, start_ns=t_ns, extra=dict(extra or {}))
        writer = EpisodeBagWriter(path, self.cfg.storage, meta, flush_interval_s=self.cfg.flush_period,
                                  ros_distro=self.cfg.ros_distro)
        self._interventions = 0
        self.images = {"received": 0, "written": 0, "dropped": 0}
        for topic, (data, _) in self._latched.items():  # instruction and source as of the start
            writer.write_raw(topic, schema.EPISODE_TOPICS[topic].msgtype, data, t_ns)
        for data in list(self._tf_static):  # the camera mount and every other static frame
            writer.write_raw(schema.TF_STATIC_TOPIC, schema.TF_TYPE, data, t_ns)
        self.writer = writer
        self._episode_pub.publish(String(data=writer.metadata.to_json()))
        self.get_logger().info(f"episode started: {path}")
        return path

    def stop_episode(self, success: bool | None = None, notes: str = "") -> EpisodeMetadata:
        """Close the open episode; InputError if none is open."""
        writer = self.writer
        if writer is None:
            raise InputError("no episode is being recorded")
        self.writer = None
        extra = {**writer.metadata.extra, "interventions": self._interventions}
        if self.cfg.compress_images:
            self._drain_jpeg(writer)
            extra["images"] = dict(self.images)
            self.get_logger().info(f"images: {self.images['received']} received, {self.images['written']} written, "
                                   f"{self.images['dropped']} dropped")
        writer.metadata = dataclasses.replace(writer.metadata, extra=extra)
        meta = writer.close(success=success, notes=notes or None, t_ns=self.get_clock().now().nanoseconds)
        self.last_episode = writer.path
        self._episode_pub.publish(String(data=meta.to_json()))
        self.get_logger().info(f"episode stopped: {writer.path} ({sum(writer.counts.values())} messages, "
                               f"success={success}, interventions={self._interventions})")
        return meta

    def destroy_node(self) -> None:
        """Close an open episode cleanly (Ctrl-C / SIGTERM mid-episode leaves a complete bag)."""
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close(notes=f"{writer.metadata.notes} [recorder shut down mid-episode]".strip())
            self.last_episode = writer.path
            self.get_logger().warning(f"recorder shut down: episode {writer.path} closed")
        if self._jpeg_thread is not None:
            self._jpeg_queue.put(None)
            self._jpeg_thread.join(timeout=2.0)
            self._jpeg_thread = None
        super().destroy_node()

    # ------------------------------------------------------------------ callbacks
    def _callback(self, topic: str, msgtype: str):
        qos_class = schema.EPISODE_TOPICS[topic].qos
        min_gap_ns = int(1e9 / self.cfg.max_state_rate) if qos_class == "state" and self.cfg.max_state_rate else 0
        jpeg = self.cfg.compress_images and topic == schema.IMAGE_TOPIC

        def on_message(data: bytes) -> None:
            t_ns = self.get_clock().now().nanoseconds
            if qos_class == "latched":
                self._latched[topic] = (data, t_ns)
            elif qos_class == "tf_static" and data not in self._tf_static and len(self._tf_static) < 1000:
                self._tf_static[data] = t_ns
            if topic == schema.ACTIVE_SOURCE_TOPIC:
                self._count_intervention(data)
            writer = self.writer
            if writer is None:
                return
            if min_gap_ns:
                if t_ns - self._last_state_ns.get(topic, 0) < min_gap_ns:
                    return
                self._last_state_ns[topic] = t_ns
            if jpeg:
                self._enqueue_jpeg(data, t_ns)
                return
            try:
                writer.write_raw(topic, msgtype, data, t_ns)
            except InputError as err:
                self.get_logger().error(f"{topic}: message not recorded: {err}", throttle_duration_sec=2.0)

        return on_message

    # ------------------------------------------------------------------ JPEG
    def _enqueue_jpeg(self, data: bytes, t_ns: int) -> None:
        self.images["received"] += 1
        try:
            self._jpeg_queue.put_nowait((data, t_ns))
        except queue.Full:  # the encoder is behind: drop this frame, never block the executor
            self.images["dropped"] += 1

    def _jpeg_loop(self) -> None:
        while (item := self._jpeg_queue.get()) is not None:
            writer = self.writer
            if writer is not None:
                self._write_jpeg(writer, *item)
            self._jpeg_queue.task_done()
        self._jpeg_queue.task_done()

    def _drain_jpeg(self, writer: EpisodeBagWriter) -> None:
        """Encode what is still queued into `writer` (called at stop, before the bag closes)."""
        while True:
            try:
                item = self._jpeg_queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._jpeg_queue.put(None)
                break
            self._write_jpeg(writer, *item)
            self._jpeg_queue.task_done()
        self._jpeg_queue.join()  # the worker's frame in hand

    def _write_jpeg(self, writer: EpisodeBagWriter, data: bytes, t_ns: int) -> None:
        import cv2

        try:
            raw = conv.parse_image_cdr(data, compressed=False)
            bgr = conv.image_to_rgb(raw)[..., ::-1]
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality])
            if not ok:
                raise InputError("cv2.imencode failed")
            msg = CompressedImage(format="jpeg", data=buf.tobytes())
            msg.header.stamp, msg.header.frame_id = conv.ns_to_stamp(raw.stamp_ns), raw.frame_id
            writer.write_raw(schema.COMPRESSED_IMAGE_TOPIC, schema.COMPRESSED_IMAGE_TYPE, serialize_message(msg), t_ns)
            self.images["written"] += 1
        except InputError as err:  # a closed bag (episode just stopped) or a bad frame
            self.images["dropped"] += 1
            self.get_logger().error(f"frame not recorded: {err}", throttle_duration_sec=2.0)

    def _count_intervention(self, data: bytes) -> None:
        source = deserialize_message(data, String).data
        if self.writer is not None and source == "teleop" and self._source != "teleop":
            self._interventions += 1
        self._source = source

    def _flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def _episode_params(self) -> EpisodeParams:
        return read_config(self, EpisodeParams, "episode.")

    def _srv_start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        p = self._episode_params()
        try:
            response.message = str(self.start_episode(p.task, p.operator))
            response.success = True
        except InputError as err:
            response.success, response.message = False, str(err)
        return response

    def _srv_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        p = self._episode_params()
        success = {"true": True, "false": False}.get(p.success.strip().lower())
        try:
            meta = self.stop_episode(success, p.notes)
            response.success, response.message = True, meta.to_json()
        except InputError as err:
            response.success, response.message = False, str(err)
        return response

    def _on_command(self, msg: String) -> None:
        try:
            cmd = parse_json_object(msg.data, "episode command")
            kind = cmd.get("command")
            if kind == "start":
                self.start_episode(str(cmd.get("task", "")), str(cmd.get("operator", "")), cmd.get("extra"))
            elif kind == "stop":
                success = cmd.get("success")
                self.stop_episode(success if isinstance(success, bool) else None, str(cmd.get("notes", "")))
            else:
                raise InputError(f"command must be 'start' or 'stop', got {kind!r}")
        except InputError as err:
            self.get_logger().error(f"episode command rejected: {err}")


def main(args: list[str] | None = None) -> None:
    """Run `mole_recorder` alone."""
    from mole_ros.runner import run_nodes

    run_nodes([RecorderNode], args)


if __name__ == "__main__":
    main()
