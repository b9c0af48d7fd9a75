"""`mole_sim_bridge`: the MuJoCo FR3 (`mole_inference.sim.SimEnv`) on the robot's topics, in real time.

Out, like the robot: the wrist image on `/wrist_camera/image_raw` (rgb8, sensor-data QoS, `camera_rate` Hz), the
measured TCP pose on `/franka_robot_state_broadcaster/current_pose` (best effort, keep last 1, as the broadcaster
publishes it) and the finger joints on `/franka_gripper/joint_states` every physics tick, and, like a user, the
task's instruction on `/mole/instruction` (latched; `publish_instruction: false` to type your own). In, like the
controllers: absolute targets on `/cartesian_impedance_controller/target_pose`, and finger widths
(std_msgs/Float64, m) on `/mole/gripper/command`. So the policy node cannot tell sim from robot.

Controller (`controller`): `impedance` (default) follows the target like CRISP's cartesian_impedance_controller
on the robot, in torque, with the gains of `controllers_yaml` (launch/config/controllers/fr3.yaml, the file the
robot launch uses): the arm lags a moving target and sags under a load or a push
(`mole_inference.sim.impedance`). `kinematic` is the sim's ideal IK servo (`mole-vla sim eval`, training data).

Episodes: each ends on the task's success predicate or its time limit; the outcome goes out on
`/mole/sim/status` (std_msgs/String JSON, `event`: start | success | timeout | reset) and the next episode
starts with the next seed (`seed + episode index`). `~/reset` (std_srvs/Trigger) starts a new one at once.

Time: the physics and the camera run on the node's own thread, paced by the wall clock (the ROS nodes use wall
time; every message is stamped with this node's clock). It is a thread, not executor timers, because it owns the
MuJoCo data and the renderer's GL context, which is bound to the thread that made it. A late tick catches up a
few ticks, a long stall is dropped rather than replayed (`mole_inference.sim.bridge.RealTimePacer`). ROS
callbacks only store commands: a bad target (NaN, outside the workspace, far from the measured pose) is refused
with a throttled warning and the arm holds its previous target.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger

from mole_inference.config.base import check, positive
from mole_inference.data import schema
from mole_inference.errors import ConfigError, InputError
from mole_inference.sim.bridge import RealTimePacer, TargetLimits, check_target
from mole_ros import conversions as conv
from mole_ros import qos
from mole_ros.params import declare_config, help_field, read_config
from mole_ros.telemetry import OK, WARN, diagnostic_array

NODE_NAME = "mole_sim_bridge"
STATUS_TOPIC = "/mole/sim/status"
FINGER_JOINTS = ("fr3_finger_joint1", "fr3_finger_joint2")  # franka_gripper's joint_states names
# episode events: reliable, and the last few kept for late joiners (a monitor that subscribes after the start)
STATUS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)


@dataclass
class SimBridgeConfig:
    """Parameters of `mole_sim_bridge` (read once at start)."""

    task: str = help_field("pick", "sim task: touch | push_forward | pick | stack")
    seed: int = help_field(0, "layout seed of the first episode; episode i uses seed + i")
    control_dt: float = help_field(0.02, "control tick in seconds (0.02 = 50 Hz, the impedance controller's "
                                         "target rate); a multiple of the 0.002 s (500 Hz) physics step")
    controller: str = help_field("impedance", "how the arm follows targets: impedance (torque, like CRISP on the "
                                              "robot) | kinematic (ideal IK servo)")
    controllers_yaml: str = help_field("", "controller_manager params with the cartesian_impedance_controller "
                                           "gains ('' = launch/config/controllers/fr3.yaml of mole_ros)")
    camera_rate: float = help_field(15.0, "wrist frames per second")
    image_size: int = help_field(224, "square wrist image side in pixels")
    episode_seconds: float = help_field(0.0, "episode time limit in simulated seconds (0 = the task's own)")
    auto_reset: bool = help_field(True, "start the next episode when one ends (else hold until ~/reset)")
    publish_instruction: bool = help_field(True, "publish each episode's instruction (latched), as a user would")
    max_catchup: int = help_field(3, "most physics ticks run in one late timer callback; more debt is dropped")
    max_target_distance: float = help_field(0.15, "targets farther than this (m) from the measured pose are refused")
    workspace_min: tuple = help_field((0.05, -0.7, -0.05), "targets outside this box (base frame, m) are refused")
    workspace_max: tuple = help_field((0.95, 0.7, 1.0), "upper corner of the accepted target box")
    reset_grace: float = help_field(0.5, "seconds after a reset in which refused targets are not logged (the "
                                         "policy still aims from the previous episode's pose)")
    gripper_open_width: float = help_field(0.08, "finger width (m) of a fully open command")
    frame_id: str = help_field("fr3_link0", "frame of the measured pose")
    camera_frame_id: str = help_field("wrist_camera", "frame of the images")
    image_topic: str = help_field(schema.IMAGE_TOPIC, "sensor_msgs/Image out (rgb8)")
    pose_topic: str = help_field(schema.MEASURED_POSE_TOPIC, "measured TCP PoseStamped out")
    gripper_state_topic: str = help_field("/franka_gripper/joint_states", "finger JointState out")
    instruction_topic: str = help_field(schema.INSTRUCTION_TOPIC, "std_msgs/String out (latched)")
    status_topic: str = help_field(STATUS_TOPIC, "episode events, std_msgs/String JSON out")
    target_pose_topic: str = help_field(schema.TARGET_POSE_TOPIC, "absolute PoseStamped targets in")
    gripper_command_topic: str = help_field(schema.GRIPPER_COMMAND_TOPIC, "std_msgs/Float64 finger width in (m)")
    diagnostics_period: float = help_field(1.0, "seconds between /diagnostics messages")
    wait_for_stack: bool = help_field(False, "start the sim clock only once a subscriber is matched on "
                                             "pose_topic and a publisher exists on target_pose_topic (the stack "
                                             "hears the robot and commands it; across processes after discovery)")

    def __post_init__(self) -> None:
        positive(self, "control_dt", "camera_rate", "image_size", "max_target_distance", "gripper_open_width",
                 "diagnostics_period")
        check(self.episode_seconds >= 0, "episode_seconds", self.episode_seconds, "must be >= 0 (0 = task's own)")
        check(self.max_catchup >= 1, "max_catchup", self.max_catchup, "must be >= 1")
        check(self.controller in ("impedance", "kinematic"), "controller", self.controller,
              "must be 'impedance' or 'kinematic'")


class SimBridgeNode(Node):
    """Owns a SimEnv and plays the FR3 + its controllers on the robot's topics (see module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        declare_config(self, SimBridgeConfig())
        self.cfg = cfg = read_config(self, SimBridgeConfig)
        self.limits = TargetLimits(tuple(cfg.workspace_min), tuple(cfg.workspace_max), cfg.max_target_distance)
        from mole_inference.sim.env import make_env  # MuJoCo loads here, not at import

        overrides: dict[str, Any] = {"max_seconds": cfg.episode_seconds} if cfg.episode_seconds > 0 else {}
        if cfg.controller == "impedance":
            overrides["impedance"] = self._impedance_config()
        self.env = make_env(cfg.task, seed=cfg.seed, control_dt=cfg.control_dt, cameras=(),
                            image_size=cfg.image_size, controller=cfg.controller, **overrides)
        self.get_logger().info(f"config: {cfg}")
        self.pacer = RealTimePacer(cfg.control_dt, cfg.max_catchup)
        self.episode = -1
        self.outcomes: list[dict[str, Any]] = []
        self.rejected = 0
        self.commands = 0
        self._command: tuple[np.ndarray, np.ndarray] | None = None  # newest accepted target (pos, rot)
        self._gripper = 1.0
        self._target: tuple[np.ndarray, np.ndarray] | None = None
        self._measured = np.zeros(3)
        self._reset_at = 0.0
        self._frames: deque[float] = deque(maxlen=64)
        self._render_failed = False
        self._ended = False

        services, commands = MutuallyExclusiveCallbackGroup(), MutuallyExclusiveCallbackGroup()
        pub = self.create_publisher
        self._image_pub = pub(Image, cfg.image_topic, qos.SENSOR)
        # exactly like franka_robot_state_broadcaster (best effort, keep last 1, see qos.py), so a subscriber
        # that could not hear the robot cannot hear the sim either
        self._pose_pub = pub(PoseStamped, cfg.pose_topic, qos.ROBOT_STATE_PUBLISHER)
        self._joint_pub = pub(JointState, cfg.gripper_state_topic, qos.RELIABLE)
        self._instruction_pub = pub(String, cfg.instruction_topic, qos.LATCHED) if cfg.publish_instruction else None
        self._status_pub = pub(String, cfg.status_topic, STATUS_QOS)
        self._diag_pub = pub(DiagnosticArray, "/diagnostics", qos.DIAGNOSTICS)
        self.create_subscription(PoseStamped, cfg.target_pose_topic, self._on_target, qos.RELIABLE,
                                 callback_group=commands)
        self.create_subscription(Float64, cfg.gripper_command_topic, self._on_gripper, qos.RELIABLE,
                                 callback_group=commands)
        self.create_service(Trigger, "~/reset", self._srv_reset, callback_group=services)
        self.create_timer(cfg.diagnostics_period, self._on_diagnostics, callback_group=services)
        self._stop, self._reset_requested, self._reset_done = threading.Event(), threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="mole_sim", daemon=True)
        # the sim clock starts when the executor spins, i.e. after the other nodes (the policy's model) are up
        self._starter = self.create_timer(0.0 if not cfg.wait_for_stack else 0.1, self._start_thread,
                                          callback_group=services)

    def _impedance_config(self) -> Any:
        """CRISP gains from `controllers_yaml` (default: the robot's fr3.yaml); built-in defaults without one."""
        from mole_inference.config.sim import ImpedanceConfig
        from mole_inference.sim.impedance import impedance_config_from_ros_params
        from mole_ros.launch_description import launch_file
        from mole_ros.stack import config_dir

        if self.cfg.controllers_yaml:
            path = Path(self.cfg.controllers_yaml)
        else:
            try:
                path = launch_file("config", "controllers", "fr3.yaml")
            except OSError:  # ament_index_python without AMENT_PREFIX_PATH (no sourced workspace)
                path = config_dir() / "controllers" / "fr3.yaml"
        if not path.is_file():
            if self.cfg.controllers_yaml:
                raise ConfigError(f"controllers_yaml={self.cfg.controllers_yaml!r} does not exist")
            self.get_logger().warning(f"{path} not found: impedance gains are the built-in copy of fr3.yaml's")
            return ImpedanceConfig()
        impedance = impedance_config_from_ros_params(path)
        self.get_logger().info(f"impedance gains from {path}: {impedance}")
        return impedance

    def _start_thread(self) -> None:
        if self.cfg.wait_for_stack and (self._pose_pub.get_subscription_count() == 0
                                        or self.count_publishers(self.cfg.target_pose_topic) == 0):
            self.get_logger().info("waiting for the stack: a pose subscriber and a target publisher",
                                   once=True)
            return
        self.destroy_timer(self._starter)
        if not self._thread.is_alive() and not self._stop.is_set():
            physics_hz = 1 / float(self.env.scene.model.opt.timestep)
            self.get_logger().info(f"simulation running: {self.cfg.controller} controller, {physics_hz:g} Hz "
                                   f"physics, {1 / self.cfg.control_dt:g} Hz control, "
                                   f"{self.cfg.camera_rate:g} Hz camera")
            self._thread.start()

    # ------------------------------------------------------------------ episodes
    def _start_episode(self) -> None:
        self.episode += 1
        self._ended = False
        seed = self.cfg.seed + self.episode
        obs = self.env.reset(seed, render=False)
        self._command = None
        self._gripper = 1.0
        self._target = self.env.scene.ee_matrix()
        self._measured = obs["ee_pose"][:3].copy()
        self._reset_at = time.monotonic()
        if self._instruction_pub is not None:
            self._instruction_pub.publish(String(data=self.env.instruction))
        self.get_logger().info(f"episode {self.episode}: {self.env.task.name} seed {seed}: {self.env.instruction!r}")
        self._publish_state(obs)
        self._status("start", seed=seed)

    def _status(self, event: str, **extra: Any) -> dict[str, Any]:
        status = {"event": event, "episode": self.episode, "task": self.env.task.name,
                  "instruction": self.env.instruction, "steps": self.env.steps,
                  "sim_time": round(self.env.steps * self.env.control_dt, 3),
                  "stamp_ns": self.get_clock().now().nanoseconds, **extra}
        self._status_pub.publish(String(data=json.dumps(status)))
        return status

    def _end_episode(self, event: str) -> None:
        status = self._status(event, seed=self.cfg.seed + self.episode, commands=self.commands)
        self.outcomes.append(status)
        self.get_logger().info(f"episode {self.episode} {event} after {status['sim_time']:.1f} s sim")
        if self.cfg.auto_reset:
            self._start_episode()
        else:
            self._ended = True

    # ------------------------------------------------------------------ the sim thread
    def _run(self) -> None:
        """Physics at `control_dt` and frames at `camera_rate`, paced by the wall clock, until destroy_node."""
        frame_period = 1.0 / self.cfg.camera_rate
        next_frame = time.monotonic()
        try:
            self._start_episode()
            while not self._stop.is_set():
                now = time.monotonic()
                try:
                    if self._reset_requested.is_set():
                        self._status("reset")
                        self._start_episode()
                        self._reset_requested.clear()
                        self._reset_done.set()
                    n = self.pacer.due(now)
                    for _ in range(n):
                        if self._step():
                            break  # a new episode started: its first tick waits for the next deadline
                    self.pacer.ran(now, n)
                    if now >= next_frame:
                        self._publish_frame()
                        next_frame = max(next_frame + frame_period, time.monotonic())  # late frames are skipped
                except Exception as err:  # never let one tick end the simulation: hold and report
                    if not self.context.ok():
                        return  # shutting down: publishers are gone
                    self.get_logger().error(f"sim tick failed: {type(err).__name__}: {err}", throttle_duration_sec=1.0)
                self._stop.wait(max(0.0, min(self.pacer.next_due, next_frame) - time.monotonic()))
        finally:
            self.env.close()  # the GL context belongs to this thread

    def _step(self) -> bool:
        """One physics tick towards the newest accepted target; True when an episode ended."""
        if self._command is not None:
            self._target, self._command = self._command, None
        if self._ended:  # auto_reset off: keep servoing (the arm stays live), judge nothing until ~/reset
            self.env.controller.servo_to(*self._target, self._gripper)
            self._publish_state(self.env.observe(render=False))
            return False
        obs, done, info = self.env.step_to(*self._target, self._gripper, render=False)
        self._measured = obs["ee_pose"][:3].copy()
        self._publish_state(obs)
        if done:
            self._end_episode("success" if info["success"] else "timeout")
        return done

    def _publish_state(self, obs: dict[str, Any]) -> None:
        now_ns = self.get_clock().now().nanoseconds
        pose = conv.Pose.from_arrays(obs["ee_pose"][:3], obs["ee_pose"][3:])
        self._pose_pub.publish(conv.pose_to_msg(pose, now_ns, self.cfg.frame_id))
        joints = JointState(name=list(FINGER_JOINTS), position=[obs["gripper_width"] / 2.0] * 2)
        joints.header.stamp = conv.ns_to_stamp(now_ns)
        self._joint_pub.publish(joints)

    def _publish_frame(self) -> None:
        try:
            rgb = self.env.render("wrist")
        except Exception as err:  # no GL context, ...: keep the physics and poses going
            if not self._render_failed:
                self.get_logger().error(f"wrist render failed ({type(err).__name__}: {err}); no images")
            self._render_failed = True
            return
        self._frames.append(time.monotonic())
        self._image_pub.publish(conv.rgb_to_image(rgb, self.get_clock().now().nanoseconds, self.cfg.camera_frame_id))

    def _on_diagnostics(self) -> None:
        values = self.values()
        level = OK if values["real_time_factor"] > 0.9 else WARN
        message = f"episode {self.episode} {self.env.task.name}"
        self._diag_pub.publish(diagnostic_array(f"{self.get_name()}: sim", "mujoco_fr3", level, message, values,
                                                self.get_clock().now().nanoseconds))

    def values(self) -> dict[str, float]:
        """Rates and counters: physics Hz, real-time factor, camera Hz, dropped ticks, refused commands."""
        frames = list(self._frames)
        camera_hz = (len(frames) - 1) / (frames[-1] - frames[0]) if len(frames) > 1 else float("nan")
        return {"physics_hz": self.pacer.rate_hz(), "real_time_factor": self.pacer.real_time_factor(),
                "camera_hz": camera_hz, "late_ticks": float(self.pacer.late),
                "dropped_ticks": float(self.pacer.dropped), "commands": float(self.commands),
                "rejected_commands": float(self.rejected), "episode": float(self.episode),
                "episode_time": self.env.steps * self.env.control_dt}

    def _srv_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._reset_done.clear()
        self._reset_requested.set()
        response.success = self._reset_done.wait(2.0)  # the sim thread resets between two ticks
        response.message = self.env.instruction if response.success else "sim thread did not answer in 2 s"
        return response

    # ------------------------------------------------------------------ commands (store only)
    def _on_target(self, msg: PoseStamped) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        try:
            target = check_target(np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w]), self._measured,
                                  self.limits)
        except InputError as err:
            self.rejected += 1
            if time.monotonic() - self._reset_at > self.cfg.reset_grace:
                self.get_logger().warning(f"target refused, holding: {err}", throttle_duration_sec=1.0)
            return
        self.commands += 1
        self._command = target

    def _on_gripper(self, msg: Float64) -> None:
        width = float(msg.data)
        if not np.isfinite(width):
            self.rejected += 1
            self.get_logger().warning(f"gripper width {width} refused", throttle_duration_sec=1.0)
            return
        self._gripper = float(np.clip(width / self.cfg.gripper_open_width, 0.0, 1.0))

    def stop(self) -> None:
        """Stop the simulation (the thread releases the renderer); the node publishes nothing more."""
        if not hasattr(self, "_thread"):  # __init__ failed (bad config): nothing was started
            return
        self._stop.set()
        if self._thread.ident is None:  # never started: nothing rendered, but the model's data is ours
            self.env.close()
        elif self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def destroy_node(self) -> None:
        """Stop the sim thread before the node goes away."""
        self.stop()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Run `mole_sim_bridge` alone (the policy, teleop, ... run elsewhere)."""
    from mole_ros.runner import run_nodes

    run_nodes([SimBridgeNode], args)


if __name__ == "__main__":
    main()
