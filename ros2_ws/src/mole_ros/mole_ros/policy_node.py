"""`mole_policy`: the lifecycle node that turns camera frames + an instruction into FR3 target poses.

configure: read parameters into typed configs once, load the model, create the ControlLoop, publishers,
subscriptions and services. activate: start the inference thread and the fixed-rate control thread (control_thread.py).
deactivate: stop both (output stops, explicitly). cleanup: drop the model.

The model runs in a worker process (`inference_process`, default true: `mole_inference.runtime.process_policy`),
so the control thread never waits for the GIL behind it and torch/CUDA live only in the worker; the inference
thread then only copies frames into shared memory and waits on a pipe. A worker that dies or hangs past
`inference_timeout` is killed and restarted; meanwhile inference fails at once, the queued actions are dropped and
the control loop holds, and /diagnostics ("<node>: inference worker") says restarting, with the reason.
`inference_process: false`, and any injected `policy_factory` (tests), keep the model on the inference thread.

The teleop mux lives here, inside `mole_inference.control.ControlLoop`, not in a node of its own: the mux needs
the watchdog's health and the scheduler's next action at the same instant, every tick. As a separate node it
would add a topic hop (latency, a second place that must hold when the other dies) and a second 50 Hz timer
that could fall out of phase. The teleop node only publishes deltas on `/mole/teleop/delta`; switching is done
by this node's `~/takeover`, `~/resume_policy` and `~/hold` services (std_srvs/Trigger), and the active source
is published (latched) on `/mole/active_source`.

Bad input never kills the node: a malformed frame is dropped with a throttled error (the watchdog then holds
once frames are older than `control.watchdog.max_image_age`); a failing or NaN inference drops the queued
actions, so the next tick holds. Hold = the measured pose latched when the hold began (clamped into the
workspace) is published as the target every tick (`mole_inference.control.safety`); activation starts afresh.

Robot-side checks (`robot.*`, `robot_checks` / `robot_monitor`): after each activation nothing at all is published
until the measured pose and the controller's own end-effector pose (`robot.reference_pose_topic`) agree within
`robot.frame_tolerance` / `robot.frame_angle_tolerance`; if they disagree the node publishes nothing until the
next activation and says which frames and by how much (log and /diagnostics). A controller that is not active
(`robot.require_controller`), a robot mode other than idle/move or current errors (`robot.watch_robot_state`), or
a silent robot state, switch the mux to hold with the reason; `~/resume_policy` and `~/takeover` are refused
until every check passes again. /diagnostics carries one status per check ("<node>: frames", ": controller",
": robot state").

A model that reads the robot state (`Policy.uses_state`, `vision.state_input`) gets, with each frame, the measured
pose at the frame's stamp (mole_ros.state_input: from `pose_topic`, the same subscription the control loop uses).
No pose, or none within `control.watchdog.max_pose_age` of the frame, means no inference for that frame: the queued
actions are dropped (hold), the reason is logged (throttled) and shown on /diagnostics ("<node>: state input").
Models without the option are called exactly as before.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float32MultiArray, Float64MultiArray, String
from std_srvs.srv import Trigger

from mole_inference.config.control import ControlConfig
from mole_inference.control import ControlLoop, Pose, Source, SwitchEvent
from mole_inference.data import schema
from mole_inference.errors import ConfigError, InputError
from mole_inference.policy.contract import ActionChunk, Policy
from mole_inference.policy.processing import MAX_IMAGE_SIDE
from mole_inference.runtime.process_policy import TORCH_PRELOAD, ProcessPolicy
from mole_ros import conversions as conv
from mole_ros import qos
from mole_ros.control_thread import ControlThread
from mole_ros.gripper import GripperOutput, GripperSettings, resolve_mode
from mole_ros.inference_worker import InferenceWorker
from mole_ros.params import declare_config, help_field, read_config
from mole_ros.robot_checks import ERROR as CHECK_ERROR
from mole_ros.robot_checks import OK as CHECK_OK
from mole_ros.robot_checks import RobotChecksConfig
from mole_ros.robot_monitor import RobotBackends, RobotMonitor
from mole_ros.state_input import StateInput
from mole_ros.telemetry import ERROR, OK, WARN, Telemetry, diagnostic_array

NODE_NAME = "mole_policy"
PolicyFactory = Callable[["PolicyNodeConfig"], Policy]


@dataclass
class PolicyNodeConfig:
    """Parameters of `mole_policy` besides the control stack (`control.*`, see ControlConfig)."""

    checkpoint: str = help_field("", "checkpoint folder; '' = `preset` if set, else <models>/mole-tiny if present, "
                                     "else the tiny preset")
    preset: str = help_field("", "model preset with random weights (benchmarks, wiring tests); '' = none")
    backend: str = help_field("torch", "inference backend")
    device: str = help_field("cpu", "torch device, e.g. cpu or cuda:0")
    dtype: str = help_field("float32", "float32 | bfloat16 | float16")
    router: str = help_field("", "override the checkpoint's router type ('' = keep)")
    inference_process: bool = help_field(True, "run the model in a supervised worker process (false: on a thread "
                                          "of this process, sharing the control loop's GIL)")
    inference_niceness: int = help_field(5, "added to the worker process's OS nice value (0-19), so the control "
                                              "loop's process wins a busy CPU (inference_process)")
    inference_timeout: float = help_field(10.0, "seconds one inference may take in the worker process before it "
                                                "is killed and restarted (inference_process)")
    control_rt_priority: int = help_field(0, "SCHED_FIFO priority of the control thread (1-99; 0 = normal "
                                             "scheduling); needs rtprio permission, else a warning and normal")
    torch_threads: int = help_field(1, "intra-op threads of the model (0 = torch default)")
    min_inference_period: float = help_field(0.0, "seconds between inference starts at least (0 = back to back)")
    max_frame_wait: float = help_field(0.0, "seconds a frame may wait for a busy model; an older one is skipped "
                                            "and the next frame awaited (0 = the newest frame at once)")
    python_switch_interval: float = help_field(0.0005, "sys.setswitchinterval while active (0 = leave as is): "
                                               "how long the inference thread may hold the GIL before the "
                                               "control timer gets it")
    engage_on_start: bool = help_field(False, "hand control to the policy once, when it first becomes healthy")
    output: str = help_field("pose", "pose (PoseStamped target) | twist (TwistStamped delta / dt)")
    frame_id: str = help_field("fr3_link0", "frame of the targets when the measured pose has none")
    max_image_side: int = help_field(MAX_IMAGE_SIDE, "larger frames are rejected")
    diagnostics_period: float = help_field(1.0, "seconds between /diagnostics messages")
    gripper: str = help_field("auto", "auto (franka if franka_msgs imports) | franka | topic | none")
    gripper_action_ns: str = help_field("/franka_gripper", "franka_gripper action namespace")
    gripper_open_width: float = help_field(0.08, "finger width in metres for gripper command 1 (open)")
    gripper_speed: float = help_field(0.1, "m/s")
    gripper_force: float = help_field(20.0, "grasp force in N")
    image_topic: str = help_field(schema.IMAGE_TOPIC, "sensor_msgs/Image in")
    compressed_image_topic: str = help_field(schema.COMPRESSED_IMAGE_TOPIC, "sensor_msgs/CompressedImage in")
    instruction_topic: str = help_field(schema.INSTRUCTION_TOPIC, "std_msgs/String in (latched)")
    pose_topic: str = help_field(schema.MEASURED_POSE_TOPIC, "measured EE PoseStamped in")
    teleop_topic: str = help_field("/mole/teleop/delta", "teleop deltas in (ee_delta encoding)")
    target_pose_topic: str = help_field(schema.TARGET_POSE_TOPIC, "PoseStamped target out")
    twist_topic: str = help_field("/cartesian_controller/target_twist", "TwistStamped out (output=twist)")
    ee_delta_topic: str = help_field(schema.EE_DELTA_TOPIC, "applied delta + source out")
    gripper_topic: str = help_field(schema.GRIPPER_COMMAND_TOPIC, "std_msgs/Float64 width out (gripper=topic)")
    routing_topic: str = help_field(schema.ROUTING_TOPIC, "Float32MultiArray (2, K): layers run, router probs")
    active_source_topic: str = help_field(schema.ACTIVE_SOURCE_TOPIC, "mux mode out (latched)")

    def __post_init__(self) -> None:
        if self.output not in ("pose", "twist"):
            raise ConfigError(f"output={self.output!r}: expected 'pose' or 'twist'")
        if self.gripper not in ("auto", "franka", "topic", "none"):
            raise ConfigError(f"gripper={self.gripper!r}: expected auto, franka, topic or none")
        if not 0 <= self.inference_niceness <= 19:
            raise ConfigError(f"inference_niceness={self.inference_niceness!r}: expected 0..19")
        if not 0 <= self.control_rt_priority <= 99:
            raise ConfigError(f"control_rt_priority={self.control_rt_priority!r}: expected 0 (off) .. 99")
        if not self.max_frame_wait >= 0:
            raise ConfigError(f"max_frame_wait={self.max_frame_wait!r}: expected seconds >= 0 (0 = off)")
        if not self.inference_timeout > 0:
            raise ConfigError(f"inference_timeout={self.inference_timeout!r}: expected seconds > 0")


def load_policy_kwargs(cfg: PolicyNodeConfig) -> dict[str, str | None]:
    """Arguments of `mole_inference.runtime.load_policy`: the checkpoint named in `cfg`, else `cfg.preset` (random
    weights) if set, else the shipped `mole-tiny`, else the tiny preset with random weights."""
    from mole_inference.config import models_dir

    shipped = models_dir() / "mole-tiny"
    checkpoint = cfg.checkpoint or ("" if cfg.preset or not shipped.is_dir() else str(shipped))
    model = {"checkpoint": checkpoint} if checkpoint else {"preset": cfg.preset or "tiny"}
    return {**model, "backend": cfg.backend, "device": cfg.device, "dtype": cfg.dtype, "router": cfg.router or None}


def load_policy_for(cfg: PolicyNodeConfig) -> Policy:
    """The policy `load_policy_kwargs` names: in a worker process if `cfg.inference_process`, else in this one."""
    from mole_inference.runtime import load_policy

    if cfg.inference_process:
        # the worker and its warm spare preload torch + the model code only for the torch backend
        preload = TORCH_PRELOAD if cfg.backend == "torch" else ()
        return ProcessPolicy(load_policy, load_policy_kwargs(cfg), timeout=cfg.inference_timeout,
                             threads=cfg.torch_threads, preload=preload, niceness=cfg.inference_niceness)
    return load_policy(**load_policy_kwargs(cfg))


class PolicyNode(LifecycleNode):
    """Lifecycle node: camera + instruction + measured pose in, 50 Hz targets out (see module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, *, policy_factory: PolicyFactory | None = None,
                 robot_backends: RobotBackends | None = None, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.policy_factory = policy_factory or load_policy_for
        self.robot_backends = robot_backends  # None: controller_manager_msgs / franka_msgs (tests inject fakes)
        declare_config(self, PolicyNodeConfig())
        declare_config(self, ControlConfig(), "control.", skip=("control.scheduler.action_dt",))
        declare_config(self, RobotChecksConfig(), "robot.")
        self.monitor: RobotMonitor | None = None
        self.cfg: PolicyNodeConfig | None = None
        self.policy: Policy | None = None
        self.loop: ControlLoop | None = None
        self.worker: InferenceWorker | None = None
        self.telemetry: Telemetry | None = None
        self.state_input: StateInput | None = None  # the measured pose at each frame, for a state-input model
        self._entities: list = []
        self._diag_timers: list = []  # not `_timers`: that is rclpy Node's own list of every timer
        self._control: ControlThread | None = None  # the fixed-rate control loop (its own thread)
        self._measured: tuple[Pose, str] | None = None
        self._image_stamp: float | None = None
        self._engage_pending = False
        self._active = False
        self._switch_interval = sys.getswitchinterval()

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Read parameters, load the model, create the loop and all ROS entities."""
        policy = None
        try:
            cfg = read_config(self, PolicyNodeConfig)
            ctl = read_config(self, ControlConfig, "control.", skip=("control.scheduler.action_dt",))
            robot = read_config(self, RobotChecksConfig, "robot.")
            resolve_mode(cfg.gripper)  # gripper: franka without franka_msgs fails here, with the reason
            RobotMonitor.check_config(robot, self.robot_backends)  # likewise a robot check without its msgs
            t0 = time.monotonic()
            policy = self.policy_factory(cfg)
            ctl = dataclasses.replace(ctl, scheduler=dataclasses.replace(ctl.scheduler, action_dt=policy.action_dt))
        except Exception as err:  # ConfigError, CheckpointError, ...: stay unconfigured, say why
            if isinstance(policy, ProcessPolicy):
                policy.close()
            self.get_logger().error(f"configure failed: {type(err).__name__}: {err}")
            return TransitionCallbackReturn.FAILURE
        self.cfg, self.policy = cfg, policy
        where = (f"{policy.policy_type} in worker process {policy.worker_pid}" if isinstance(policy, ProcessPolicy)
                 else f"{type(policy).__name__} on the inference thread")
        self.get_logger().info(f"model {where} ready in {time.monotonic() - t0:.1f} s "
                               f"(action_dt={policy.action_dt}, layers={policy.num_layers}); config: {cfg}; "
                               f"control: {ctl}; robot: {robot}")
        self.loop = ControlLoop(ctl, on_switch=self._on_switch, now=self._now())
        self.telemetry = Telemetry(ctl.scheduler.control_dt)
        self.state_input = None
        if policy.uses_state:
            watchdog = ctl.watchdog  # a frame older than max_image_age is held anyway: no older pose is needed
            self.state_input = StateInput(watchdog.max_pose_age, watchdog.max_image_age + watchdog.max_pose_age,
                                          cfg.pose_topic)
            self.get_logger().info(f"the model reads the robot state: the measured pose on {cfg.pose_topic} at each "
                                   f"frame's stamp, within {watchdog.max_pose_age:g} s")
        self.worker = InferenceWorker(policy, self.loop, self._now, self._on_chunk, self._on_worker_error,
                                      cfg.max_image_side, cfg.torch_threads, cfg.min_inference_period,
                                      state_at=self.state_input.at if self.state_input is not None else None,
                                      max_frame_wait=cfg.max_frame_wait)
        self.monitor = RobotMonitor(self, robot, cfg.pose_topic, MutuallyExclusiveCallbackGroup(),
                                    self.robot_backends)
        self._create_entities(cfg)
        return TransitionCallbackReturn.SUCCESS

    def _create_entities(self, cfg: PolicyNodeConfig) -> None:
        inputs, services = MutuallyExclusiveCallbackGroup(), MutuallyExclusiveCallbackGroup()
        pub, sub = self.create_publisher, self.create_subscription
        if cfg.output == "pose":
            self._target_pub = pub(PoseStamped, cfg.target_pose_topic, qos.RELIABLE)
        else:
            self._target_pub = pub(TwistStamped, cfg.twist_topic, qos.RELIABLE)
        self._delta_pub = pub(Float64MultiArray, cfg.ee_delta_topic, qos.RELIABLE)
        self._routing_pub = pub(Float32MultiArray, cfg.routing_topic, qos.RELIABLE)
        self._source_pub = pub(String, cfg.active_source_topic, qos.LATCHED)
        self._diag_pub = pub(DiagnosticArray, "/diagnostics", qos.DIAGNOSTICS)
        safety = self.loop.config.safety
        self.gripper = GripperOutput(self, GripperSettings(cfg.gripper, cfg.gripper_topic, cfg.gripper_action_ns,
                                                           cfg.gripper_open_width, cfg.gripper_speed,
                                                           cfg.gripper_force, safety.gripper_close_below,
                                                           safety.gripper_open_above))
        self._entities = [
            # raw: frames are parsed in place (conversions.parse_image_cdr), never built as Python messages
            sub(Image, cfg.image_topic, self._on_image, qos.SENSOR, callback_group=inputs, raw=True),
            sub(CompressedImage, cfg.compressed_image_topic, self._on_compressed, qos.SENSOR, callback_group=inputs,
                raw=True),
            sub(String, cfg.instruction_topic, self._on_instruction, qos.LATCHED, callback_group=inputs),
            # franka_robot_state_broadcaster publishes ~/current_pose BEST_EFFORT, keep last 1 (franka_ros2,
            # franka_robot_state_broadcaster.cpp): a RELIABLE subscription would never receive it (qos.py)
            sub(PoseStamped, cfg.pose_topic, self._on_pose, qos.ROBOT_STATE, callback_group=inputs),
            sub(Float64MultiArray, cfg.teleop_topic, self._on_teleop, qos.RELIABLE, callback_group=inputs),
            self.create_service(Trigger, "~/takeover", self._srv_takeover, callback_group=services),
            self.create_service(Trigger, "~/resume_policy", self._srv_resume, callback_group=services),
            self.create_service(Trigger, "~/hold", self._srv_hold, callback_group=services),
        ]

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Start inference and the control timer."""
        cfg, loop = self.cfg, self.loop
        if cfg.python_switch_interval > 0:
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(cfg.python_switch_interval)
        self._engage_pending = cfg.engage_on_start
        self.telemetry.control.reset()
        loop.reset("activate", self._now())  # afresh: mux to its start mode, no chunk/target/latch from before
        self.monitor.start()  # the frame check runs afresh: nothing is published until it passes
        self._active = True
        self.worker.start()
        self.gripper.start()  # goals leave from its own thread; absent action servers are reported
        self._control = ControlThread(loop.config.scheduler.control_dt, self._on_tick,
                                      rt_priority=cfg.control_rt_priority)
        self._control.start()
        self._diag_timers = [self.create_timer(cfg.diagnostics_period, self._on_diagnostics)]
        self._source_pub.publish(String(data=loop.mux.mode.value))
        self.get_logger().info(f"active: {loop.config.scheduler.control_rate_hz:g} Hz, mode {loop.mux.mode.value}")
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Stop the control timer and inference (the controller keeps its last target)."""
        self._stop_output()
        self.get_logger().info("deactivated: no more targets are published")
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Destroy entities and drop the model."""
        self._destroy_all()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """Same as cleanup, from any state."""
        self._stop_output()
        self._destroy_all()
        return TransitionCallbackReturn.SUCCESS

    def _stop_output(self) -> None:
        self._active = False
        if self._control is not None:
            self._control.stop()
            self._control = None
        for timer in self._diag_timers:
            self.destroy_timer(timer)
        self._diag_timers = []
        if self.worker is not None:
            self.worker.stop()
        if self.monitor is not None:
            self.monitor.stop()
        if self.cfg is not None:
            self.gripper.stop()
        if self.cfg is not None and self.cfg.python_switch_interval > 0:
            sys.setswitchinterval(self._switch_interval)

    def _destroy_all(self) -> None:
        for entity in self._entities:
            entity.destroy()
        self._entities = []
        if self.cfg is not None:
            for p in (self._target_pub, self._delta_pub, self._routing_pub, self._source_pub, self._diag_pub):
                self.destroy_publisher(p)
            self.gripper.destroy()
        if self.monitor is not None:
            self.monitor.destroy()
        if isinstance(self.policy, ProcessPolicy):
            self.policy.close()  # the worker process and its shared memory
        self.policy = self.loop = self.worker = self.cfg = self.monitor = self.state_input = None

    def destroy_node(self) -> None:
        """Stop the timer, the inference thread and the worker process before the node goes away."""
        self._stop_output()
        if isinstance(self.policy, ProcessPolicy):
            self.policy.close()
        super().destroy_node()

    # ------------------------------------------------------------------ inputs
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_image(self, data: bytes) -> None:
        self._frame(data, compressed=False)

    def _on_compressed(self, data: bytes) -> None:
        self._frame(data, compressed=True)

    def _frame(self, data: bytes, compressed: bool) -> None:
        try:
            msg = conv.parse_image_cdr(data, compressed)
            conv.check_image_msg(msg, self.cfg.max_image_side)
        except InputError as err:
            self.telemetry.bad_frames += 1
            self.get_logger().error(f"bad camera frame dropped: {err}", throttle_duration_sec=1.0)
            return
        received = self._now()
        stamp = msg.stamp_ns * 1e-9 or received  # unstamped frames: arrival time
        self._image_stamp = stamp
        accepted = self.loop.image_received(stamp, received)  # False: stamped in the future (logged)
        if self._active and accepted:
            self.worker.submit(msg, stamp)

    def _on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        if not text:
            self.get_logger().error("empty instruction ignored", throttle_duration_sec=1.0)
            return
        self.get_logger().info(f"instruction: {text!r}")
        self.worker.set_instruction(text)
        # a new task: the hand may have been reset since the last command; the first command decides and is sent
        self.loop.envelope.forget_gripper()
        self.gripper.resync()

    def _on_pose(self, msg: PoseStamped) -> None:
        received = self._now()
        stamp = conv.stamp_to_sec(msg.header.stamp) or received
        self._measured = (conv.pose_from_msg(msg), msg.header.frame_id or self.cfg.frame_id)
        state_input = self.state_input  # read once: cleanup may drop it meanwhile
        if state_input is not None:
            state_input.add_pose(stamp, self._measured[0])
        self.loop.pose_received(stamp, received)
        self.monitor.measured_pose(self._measured[0], self._measured[1], stamp)

    def _on_teleop(self, msg: Float64MultiArray) -> None:
        try:
            delta, _ = conv.ee_delta_from_msg(msg)
        except InputError as err:
            self.get_logger().error(f"bad teleop delta ignored: {err}", throttle_duration_sec=1.0)
            return
        self.loop.set_teleop(delta, self._now())

    def _on_chunk(self, chunk: ActionChunk, image_stamp: float) -> None:
        if not self.context.ok():  # the worker can finish after Ctrl-C shut the context down
            return
        r = chunk.routing
        self.telemetry.chunk_done(chunk.timings_ms.get("total", float("nan")), r.layers, r.total_layers,
                                  image_stamp, self._now())
        self._routing_pub.publish(conv.routing_to_msg(r))

    def _on_worker_error(self, message: str) -> None:
        self.telemetry.failed_inferences += 1
        self.get_logger().error(message, throttle_duration_sec=1.0)

    def _on_switch(self, event: SwitchEvent) -> None:
        text = f"mux {event.previous.value} -> {event.mode.value}: {event.reason}"
        if event.automatic:  # one severity per call site (rclpy)
            self.get_logger().warning(text)
        else:
            self.get_logger().info(text)
        self._source_pub.publish(String(data=event.mode.value))

    # ------------------------------------------------------------------ control timer
    def _on_tick(self) -> None:
        self.telemetry.control.tick(time.perf_counter())
        if not self._active:
            return
        if self._measured is None:
            self.get_logger().warning("no measured pose yet: nothing to hold, no target published",
                                      throttle_duration_sec=2.0)
            return
        checks = self.monitor.checks
        if not checks.output_allowed():  # frames not (yet) shown to agree: a target could move the arm by the gap
            self.get_logger().warning(f"no target published: {checks.status(self._now())[0].message}",
                                      throttle_duration_sec=2.0)
            return
        now_ns = self.get_clock().now().nanoseconds
        now = now_ns * 1e-9
        pose, frame_id = self._measured
        fault = checks.fault(now)
        if fault is not None:  # reflex, user stop, controller gone: hold (logged once by the mux switch)
            self.loop.mux.fault_hold(f"robot: {fault}", now)
        try:
            cmd = self.loop.tick(now, pose)
        except Exception as err:  # never let one tick kill the timer: hold instead
            self.get_logger().error(f"control tick failed ({type(err).__name__}: {err}): holding",
                                    throttle_duration_sec=1.0)
            try:
                cmd = self.loop.envelope.hold(pose, "control tick failed")
            except InputError:
                return  # no valid measured pose was ever seen: there is nothing safe to publish
        if self.cfg.output == "pose":
            self._target_pub.publish(conv.command_to_pose(cmd, now_ns, frame_id))
        else:
            self._target_pub.publish(conv.command_to_twist(cmd, self.loop.config.scheduler.control_dt, now_ns,
                                                           frame_id))
        self._delta_pub.publish(conv.ee_delta_to_msg(cmd.delta, cmd.source.value))
        self.gripper.send(cmd.gripper)
        self.telemetry.command_sent(now, cmd.source is Source.POLICY)
        if (self._engage_pending and self.loop.last_health is not None and self.loop.last_health.ok
                and checks.engage_refusal(now) is None):
            self._engage_pending = False
            self.loop.resume_policy("engage_on_start", now)

    def _on_diagnostics(self) -> None:
        loop = self.loop
        health = loop.last_health
        values = self.telemetry.values()
        values["mode"] = loop.mux.mode.value
        values["image_age_ms"] = self._image_age_ms()
        values["missed_deadlines"] = float(loop.watchdog.missed_deadlines)
        level, message = OK, f"{loop.mux.mode.value}"
        if health is not None and not health.ok:
            level, message = (WARN if loop.mux.mode.value != "policy" else ERROR), health.reason
        diag = diagnostic_array(f"{self.get_name()}: control", "mole_vla", level, message, values,
                                self.get_clock().now().nanoseconds)
        ok, text = self.gripper.status()
        gripper = {"goals_sent": str(self.gripper.goals_sent), "failures": str(self.gripper.failures)}
        diag.status.extend(diagnostic_array(f"{self.get_name()}: gripper", "mole_vla", OK if ok else ERROR, text,
                                            gripper, 0).status)
        checks = self.monitor.checks.status(self._now())
        if self.state_input is not None:
            checks.append(self.state_input.check())
        for check in checks:
            level = OK if check.level == CHECK_OK else (ERROR if check.level == CHECK_ERROR else WARN)
            diag.status.extend(diagnostic_array(f"{self.get_name()}: {check.name}", "mole_vla", level,
                                                check.message, check.values, 0).status)
        if isinstance(self.policy, ProcessPolicy):
            worker = self.policy.status()
            text = (f"pid {self.policy.worker_pid}" if self.policy.ready
                    else f"{worker['worker_state']}, holding: {worker['worker_last_error']}")
            diag.status.extend(diagnostic_array(f"{self.get_name()}: inference worker", "mole_vla",
                                                OK if self.policy.ready else ERROR, text, worker, 0).status)
        self._diag_pub.publish(diag)

    def _image_age_ms(self) -> float:
        stamp = self._image_stamp
        return float("nan") if stamp is None else (self._now() - stamp) * 1e3

    # ------------------------------------------------------------------ services
    def _engage_refused(self, service: str, response: Trigger.Response) -> bool:
        """Fill `response` and log when a robot-side check refuses an engage now."""
        refusal = self.monitor.checks.engage_refusal(self._now())
        if refusal is None:
            return False
        self.get_logger().warning(f"{service} refused: {refusal}")
        response.success, response.message = False, f"refused: {refusal}"
        return True

    def _srv_takeover(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self._engage_refused("~/takeover", response):
            return response
        self.loop.takeover("service ~/takeover", self._now())
        response.success, response.message = True, self.loop.mux.mode.value
        return response

    def _srv_resume(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self._engage_refused("~/resume_policy", response):
            return response
        ok = self.loop.resume_policy("service ~/resume_policy", self._now())
        health = self.loop.watchdog.check(self._now())
        response.success = ok
        response.message = self.loop.mux.mode.value if ok else f"refused: {health.reason or 'not healthy'}"
        return response

    def _srv_hold(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.loop.request_hold("service ~/hold", self._now())
        response.success, response.message = True, self.loop.mux.mode.value
        return response


def main(args: list[str] | None = None) -> None:
    """Run `mole_policy` alone, configured and activated (a launch file may manage the lifecycle instead)."""
    from mole_ros.runner import run_nodes

    run_nodes([PolicyNode], args)


if __name__ == "__main__":
    main()
