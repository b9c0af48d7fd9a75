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
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rclpy.node import Node
from rclpy.serialization import deserialize_message
from std_msgs.msg import String
from std_srvs.srv import Trigger

from mole_inference.data import schema
from mole_inference.data.bag_writer import EpisodeBagWriter
from mole_inference.data.episode_meta import EpisodeMetadata, new_episode_path, parse_json_object
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
        self._interventions = 0
        self._source: str | None = None
        for topic in cfg.topics:
            spec = schema.EPISODE_TOPICS.get(topic)
            if spec is None:
                known = sorted(schema.EPISODE_TOPICS)
                raise InputError(f"topic {topic!r} is not in the episode schema; known: {known}")
            # the measured pose is class "state": franka_robot_state_broadcaster publishes it BEST_EFFORT, keep
            # last 1 (franka_ros2 franka_robot_state_broadcaster.cpp), so we subscribe best effort (qos.py)
            self.create_subscription(conv.msg_class(spec.msgtype), topic, self._callback(topic, spec.msgtype),
                                     qos.for_class(spec.qos), raw=True)
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
        writer = EpisodeBagWriter(path, self.cfg.storage, meta, flush_interval_s=self.cfg.flush_period)
        self._interventions = 0
        for topic, (data, _) in self._latched.items():  # instruction and source as of the start
            writer.write_raw(topic, schema.EPISODE_TOPICS[topic].msgtype, data, t_ns)
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
        writer.metadata = dataclasses.replace(
            writer.metadata, extra={**writer.metadata.extra, "interventions": self._interventions})
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
        super().destroy_node()

    # ------------------------------------------------------------------ callbacks
    def _callback(self, topic: str, msgtype: str):
        latched = schema.EPISODE_TOPICS[topic].qos == "latched"

        def on_message(data: bytes) -> None:
            t_ns = self.get_clock().now().nanoseconds
            if latched:
                self._latched[topic] = (data, t_ns)
            if topic == schema.ACTIVE_SOURCE_TOPIC:
                self._count_intervention(data)
            writer = self.writer
            if writer is None:
                return
            try:
                writer.write_raw(topic, msgtype, data, t_ns)
            except InputError as err:
                self.get_logger().error(f"{topic}: message not recorded: {err}", throttle_duration_sec=2.0)

        return on_message

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
