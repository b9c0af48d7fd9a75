"""`mole-vla demo`: the simulated FR3 and the whole control stack, narrated, with a filmstrip.

The nodes are those of `launch/config/sim.yaml` (sim bridge, policy, teleop, recorder), built by the same registry
as `mole-vla stack` (`mole_ros.stack`) and brought up as `mole_ros.runner.run_nodes` does, with a second params file
on top for the demo's choices (task, seed, episode length, checkpoint). The simulated robot runs in a child process
of its own, as the real FR3 is a machine of its own: its physics and rendering would otherwise share the interpreter
(and the GIL) with the policy node's 50 Hz control thread, and the demo would report the sim's load as the control
loop's jitter. The stack's nodes share this process (the model itself runs in the policy's inference worker). One
more node, `DemoMonitor`, only listens: episode events from the bridge, `/diagnostics` of the policy and the bridge,
the layers each inference ran (`/mole/routing`) and wrist frames for the strip. It prints one line per second and
ends the run after the last episode (or at the wall-clock budget, or on Ctrl-C); like an operator, it re-engages the
policy when the mux fell back to hold.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, String
from std_srvs.srv import Trigger

from mole_inference.data import schema
from mole_inference.errors import InputError
from mole_ros import conversions as conv
from mole_ros import qos
from mole_ros.sim_bridge_node import NODE_NAME as SIM_NODE_NAME  # also its name in mole_ros.stack.NODES
from mole_ros.sim_bridge_node import STATUS_QOS, STATUS_TOPIC, SimBridgeNode

MAX_STRIP_FRAMES = 96  # per episode; older frames are thinned out when more arrive
RESUME_PERIOD = 1.0  # s between re-engage attempts


@dataclass
class DemoSettings:
    """What `mole-vla demo` runs; `seconds` is the episode limit in simulated seconds (None: the task's own)."""

    task: str = "touch"
    episodes: int = 2
    seconds: float | None = None
    seed: int = 0
    checkpoint: str = ""  # '' = the shipped models/mole-tiny if present, else the tiny preset, random weights
    out: Path = Path("runs/demo")
    config: Path | None = None  # params file with the node list; default launch/config/sim.yaml
    verbose: bool = False
    budget: float = 0.0  # wall-clock seconds before giving up (0 = derived from episodes x seconds)


@dataclass
class Episode:
    """One episode as the monitor saw it."""

    index: int
    task: str
    instruction: str
    seed: int
    started: float
    start_ns: int = 0  # bridge clock at the start: frames stamped earlier belong to the previous episode
    outcome: str = ""  # success | timeout | reset | '' (still running when the demo stopped)
    sim_time: float = 0.0
    wall_time: float = 0.0
    frames: list = field(default_factory=list, repr=False)
    stride: int = 1
    seen: int = 0

    def add_frame(self, rgb: Any) -> None:
        """Keep every `stride`-th frame; when full, drop every other one and double the stride."""
        self.seen += 1
        if (self.seen - 1) % self.stride:
            return
        self.frames.append(rgb)
        if len(self.frames) >= MAX_STRIP_FRAMES:
            self.frames, self.stride = self.frames[::2], self.stride * 2


class DemoMonitor(Node):
    """Listens to the stack, narrates once per second, stops the process after `episodes` episodes."""

    def __init__(self, settings: DemoSettings, budget: float, **kwargs: Any) -> None:
        super().__init__("mole_demo", **kwargs)
        self.settings = settings
        self.budget = budget
        self.finished = threading.Event()
        self.startup_s = float("nan")  # process start -> monitoring began (model loading), set by run_demo
        self.t0 = time.monotonic()
        self.episodes: list[Episode] = []
        self.diag: dict[str, dict[str, str]] = {}
        self.samples: dict[str, list[float]] = {k: [] for k in ("control_hz", "inference_hz", "inference_ms",
                                                                "real_time_factor", "physics_hz", "camera_hz")}
        self.layers: list[int] = []
        self.routing: list[tuple[int, ...]] = []  # the layers each inference ran, in order
        self.total_layers = 0
        self.mode = ""
        self.resumes = 0
        self.stopped_by = ""
        self.robot_pid: int | None = None  # the sim process (None: the sim ran in this process, or never started)
        self._chunks_this_second: list[tuple[int, ...]] = []
        self._last_resume = 0.0
        inputs = MutuallyExclusiveCallbackGroup()
        sub = self.create_subscription
        sub(String, STATUS_TOPIC, self._on_status, STATUS_QOS, callback_group=inputs)
        sub(DiagnosticArray, "/diagnostics", self._on_diagnostics, qos.DIAGNOSTICS, callback_group=inputs)
        sub(Float32MultiArray, "/mole/routing", self._on_routing, qos.RELIABLE, callback_group=inputs)
        sub(String, schema.ACTIVE_SOURCE_TOPIC, self._on_source, qos.LATCHED, callback_group=inputs)
        sub(Image, schema.IMAGE_TOPIC, self._on_image, qos.SENSOR, callback_group=MutuallyExclusiveCallbackGroup(),
            raw=True)
        self._resume = self.create_client(Trigger, "/mole_policy/resume_policy")
        self.create_timer(1.0, self._on_second)

    # ------------------------------------------------------------------ inputs
    def _on_status(self, msg: String) -> None:
        event = json.loads(msg.data)
        now = time.monotonic()
        if event["event"] == "start":
            ep = Episode(event["episode"], event["task"], event["instruction"], event.get("seed", -1), now,
                         int(event.get("stamp_ns", 0)))
            self.episodes.append(ep)
            print(f"episode {ep.index}: {ep.task} (seed {ep.seed}): {ep.instruction!r}", flush=True)
            return
        if not self.episodes or self.episodes[-1].outcome:
            return
        ep = self.episodes[-1]
        ep.outcome, ep.sim_time, ep.wall_time = event["event"], float(event["sim_time"]), now - ep.started
        print(f"episode {ep.index}: {ep.outcome.upper()} after {ep.sim_time:.1f} s sim ({ep.wall_time:.1f} s wall)",
              flush=True)
        if sum(1 for e in self.episodes if e.outcome in ("success", "timeout")) >= self.settings.episodes:
            self.stop("done")

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:  # a node may send several ("mole_policy: control", "mole_policy: gripper")
            self.diag.setdefault(status.name.split(":")[0], {}).update({kv.key: kv.value for kv in status.values})

    def _on_routing(self, msg: Float32MultiArray) -> None:
        layers, probs = conv.routing_from_msg(msg)
        self.total_layers = probs.size
        self.layers.append(len(layers))
        self.routing.append(tuple(int(k) for k in layers))
        self._chunks_this_second.append(layers)

    def _on_source(self, msg: String) -> None:
        self.mode = msg.data

    def _on_image(self, data: bytes) -> None:
        if not self.episodes or self.episodes[-1].outcome:
            return
        try:
            frame = conv.parse_image_cdr(data, compressed=False)
            if frame.stamp_ns < self.episodes[-1].start_ns:
                return
            rgb = conv.image_to_rgb(frame)
        except InputError:
            return
        self.episodes[-1].add_frame(rgb)

    # ------------------------------------------------------------------ once per second
    def _on_second(self) -> None:
        elapsed = time.monotonic() - self.t0
        policy, sim = self.diag.get("mole_policy", {}), self.diag.get("mole_sim_bridge", {})
        for key, source, name in (("control_hz", policy, "rate_hz"), ("inference_hz", policy, "inference_hz"),
                                  ("inference_ms", policy, "inference_ms_mean"),
                                  ("real_time_factor", sim, "real_time_factor"), ("physics_hz", sim, "physics_hz"),
                                  ("camera_hz", sim, "camera_hz")):
            value = _float(source.get(name))
            if math.isfinite(value):
                self.samples[key].append(value)
        chunks, self._chunks_this_second = self._chunks_this_second, []
        if not self.episodes:  # still starting up (model loading, discovery)
            self._check_budget(elapsed)
            return
        ran = f"{len(chunks[-1])}/{self.total_layers} {list(chunks[-1])}" if chunks else "-"
        ep = self.episodes[-1]
        print(f"  [{elapsed:5.1f}s] ep {ep.index} sim {_float(sim.get('episode_time')):4.1f}s | "
              f"control {_float(policy.get('rate_hz')):5.1f} Hz {self.mode or '?':6s} | "
              f"inference {len(chunks)}/s {_float(policy.get('inference_ms_mean')):4.0f} ms | layers {ran} | "
              f"physics {_float(sim.get('physics_hz')):4.1f} Hz rtf {_float(sim.get('real_time_factor')):.2f} "
              f"camera {_float(sim.get('camera_hz')):4.1f} Hz", flush=True)
        if self.mode == "hold" and self.episodes and time.monotonic() - self._last_resume > RESUME_PERIOD:
            self._last_resume = time.monotonic()
            if self._resume.service_is_ready():
                self._resume.call_async(Trigger.Request()).add_done_callback(self._resumed)
        self._check_budget(elapsed)

    def _check_budget(self, elapsed: float) -> None:
        if elapsed > self.budget:
            print(f"wall-clock budget of {self.budget:.0f} s used up: stopping", flush=True)
            self.stop("budget")

    def _resumed(self, future: Any) -> None:
        response = future.result()
        if response is not None and response.success:
            self.resumes += 1
            print(f"  policy had fallen back to hold: re-engaged it (as an operator would, {self.resumes}x)",
                  flush=True)

    def stop(self, reason: str) -> None:
        """End the demo (any thread; also the SIGINT/SIGTERM handler): `run_demo` stops spinning."""
        if not self.stopped_by:
            self.stopped_by = reason
        self.finished.set()

    # ------------------------------------------------------------------ results
    def summary(self) -> dict[str, Any]:
        """Outcomes and mean rates (JSON-ready)."""
        done = [e for e in self.episodes if e.outcome in ("success", "timeout")]

        def mean(key: str) -> float:
            values = self.samples[key][1:] or self.samples[key]  # the first second includes the start-up
            return round(statistics.fmean(values), 3) if values else float("nan")

        return {
            "task": self.settings.task, "episodes": len(done), "successes": sum(e.outcome == "success" for e in done),
            "control_hz": mean("control_hz"), "inference_hz": mean("inference_hz"),
            "inference_ms": mean("inference_ms"), "physics_hz": mean("physics_hz"),
            "real_time_factor": mean("real_time_factor"), "camera_hz": mean("camera_hz"),
            "mean_layers_run": round(statistics.fmean(self.layers), 3) if self.layers else float("nan"),
            "total_layers": self.total_layers, "inferences": len(self.layers), "re_engaged": self.resumes,
            "wall_s": round(time.monotonic() - self.t0, 2), "startup_s": self.startup_s,
            "stopped_by": self.stopped_by or "unknown", "robot_pid": self.robot_pid,
            "per_episode": [{"episode": e.index, "instruction": e.instruction, "seed": e.seed,
                             "outcome": e.outcome or "unfinished", "sim_s": e.sim_time,
                             "wall_s": round(e.wall_time, 2)} for e in self.episodes],
        }


def _float(text: str | None) -> float:
    try:
        return float(text) if text is not None else float("nan")
    except ValueError:
        return float("nan")


def demo_params(settings: DemoSettings, checkpoint: str) -> dict[str, Any]:
    """The params file laid over sim.yaml: the demo's task, seed, episode length and checkpoint."""
    bridge = {"task": settings.task, "seed": settings.seed, "episode_seconds": float(settings.seconds or 0.0)}
    return {"mole_sim_bridge": {"ros__parameters": bridge},
            "mole_policy": {"ros__parameters": {"checkpoint": checkpoint, "engage_on_start": True}}}


def save_results(monitor: DemoMonitor, out: Path) -> tuple[dict[str, Any], Path | None]:
    """Write summary.json and strip.png (when frames were seen) under `out`."""
    from mole_inference.sim.strip import StripRow, save_strip

    summary = monitor.summary()
    rows = [StripRow(e.frames, f"{e.task} | {e.instruction} | {e.outcome or 'unfinished'}",
                     {"success": True, "timeout": False}.get(e.outcome)) for e in monitor.episodes if e.frames]
    strip = save_strip(out / "strip.png", rows) if rows else None
    summary["strip"] = str(strip) if strip else None
    summary["routing_png"] = _routing_png(monitor, out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary, strip


def _routing_png(monitor: DemoMonitor, out: Path) -> str | None:
    """routing.png: the layers every inference of the run ran (None without matplotlib or inferences)."""
    if not monitor.routing or monitor.total_layers <= 0:
        return None
    try:
        from mole_inference.analysis.plots import routing_png

        return str(routing_png(monitor.routing, monitor.total_layers, out / "routing.png", "mole-vla demo"))
    except ImportError:
        return None
    except Exception as err:  # a figure must never fail the demo
        logging.getLogger(__name__).warning("routing.png not written: %s", err)
        return None


def print_summary(summary: dict[str, Any], out: Path) -> None:
    """The closing lines."""
    print(f"\nsummary: {summary['successes']}/{summary['episodes']} success ({summary['task']}) | "
          f"control {summary['control_hz']:.1f} Hz | inference {summary['inference_hz']:.1f} Hz, "
          f"{summary['inference_ms']:.0f} ms | layers {summary['mean_layers_run']:.1f}/{summary['total_layers']} "
          f"| physics {summary['physics_hz']:.1f} Hz, real-time factor {summary['real_time_factor']:.2f} | "
          f"wall {summary['wall_s']:.1f} s", flush=True)
    print(f"strip: {summary['strip'] or '(no frames)'}   report: {out / 'summary.json'}", flush=True)


class SimProcess:
    """The sim bridge node in a child process (spawned: a fresh interpreter, its own rclpy context and GL
    context) on the same ROS graph; `close` asks it to stop its physics and exit, and kills it if it does not."""

    def __init__(self, args: list[str]) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._process = ctx.Process(target=run_sim_process, args=(args, self._stop), name="mole_sim", daemon=True)
        self._process.start()

    @property
    def pid(self) -> int | None:
        """The child's process id."""
        return self._process.pid

    def alive(self) -> bool:
        """Whether the child still runs."""
        return self._process.is_alive()

    @property
    def exitcode(self) -> int | None:
        """The child's exit code (None while it runs)."""
        return self._process.exitcode

    def close(self, timeout: float = 5.0) -> None:
        """Stop the child: ask, wait `timeout` s, then kill."""
        self._stop.set()
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(1.0)


def run_sim_process(args: list[str], stop: Any) -> None:
    """Child process body: the sim bridge alone until `stop` is set. Ctrl-C goes to the whole process group; the
    parent decides, so the child ignores SIGINT and stops when told."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from mole_ros.runner import make_executor

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = SimBridgeNode()
    executor = make_executor(1)
    executor.add_node(node)
    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
    finally:
        node.stop()
        executor.remove_node(node)
        node.destroy_node()
        executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown()


def quiesce(nodes: list[Node]) -> None:
    """Deactivate active lifecycle nodes (the policy's inference thread) before shutdown, so nothing publishes into
    a context that is going away (the sim runs in its own process: `SimProcess.close`)."""
    from lifecycle_msgs.msg import State as StateMsg
    from rclpy.lifecycle import LifecycleNode

    for node in nodes:
        if isinstance(node, LifecycleNode) and node._state_machine.current_state[0] == StateMsg.PRIMARY_STATE_ACTIVE:
            node.trigger_deactivate()


def run_demo(settings: DemoSettings) -> int:
    """Run the sim + stack until `settings.episodes` episodes ended (or Ctrl-C); print and save the results."""
    from mole_inference.config import models_dir
    from mole_inference.errors import ConfigError
    from mole_inference.sim.tasks import make_task
    from mole_ros.stack import config_dir, node_factory, node_names

    task = make_task(settings.task)  # ConfigError with a hint on typos, before anything starts
    config = settings.config or config_dir() / "sim.yaml"
    if not config.is_file():
        raise ConfigError(f"--config {config}: no such file")
    shipped = models_dir() / "mole-tiny"
    checkpoint = settings.checkpoint or (str(shipped) if shipped.is_dir() else "")
    if settings.checkpoint and not Path(settings.checkpoint).is_dir():
        raise ConfigError(f"--checkpoint {settings.checkpoint}: no such checkpoint folder")
    settings.out.mkdir(parents=True, exist_ok=True)
    overlay = settings.out / "demo_params.yaml"
    overlay.write_text(yaml.safe_dump(demo_params(settings, checkpoint), sort_keys=False))
    names = node_names(config)
    seconds = settings.seconds or task.max_seconds
    budget = settings.budget or 30.0 + 2.0 * settings.episodes * seconds
    print(f"mole-vla demo: task {settings.task}, {settings.episodes} episode(s) of up to {seconds:g} s, "
          f"nodes {', '.join(names)} (params: {config} + {overlay})", flush=True)
    if checkpoint:
        print(f"checkpoint: {checkpoint}", flush=True)
    else:
        bar = "!" * 100
        print(f"{bar}\n!!! NO CHECKPOINT: {shipped} is not there, so this runs the 'tiny' preset with RANDOM WEIGHTS.\n"
              f"!!! The whole loop runs (camera -> model -> targets -> arm), but the arm wanders: expect no "
              f"success.\n!!! Train one (mole-vla train) or pass --checkpoint PATH.\n{bar}", flush=True)
    args = ["--ros-args", "--params-file", str(config), "--params-file", str(overlay)]
    if not settings.verbose:
        args += ["--log-level", "warn"]
        logging.getLogger().setLevel(logging.WARNING)  # the demo's own lines say what happens
    started = time.monotonic()
    robot = [n for n in names if n == SIM_NODE_NAME]
    stack = [node_factory(n) for n in names if n != SIM_NODE_NAME]
    monitor = spin_demo(stack, args, settings, budget, robot_process=bool(robot))
    monitor.startup_s = round(time.monotonic() - started - (time.monotonic() - monitor.t0), 2)
    summary, _ = save_results(monitor, settings.out)
    print_summary(summary, settings.out)
    return 0


def spin_demo(factories: list[Callable[[], Node]], args: list[str], settings: DemoSettings,
              budget: float, robot_process: bool = False) -> DemoMonitor:
    """Like `runner.run_nodes`, but the demo decides when to stop: after the episodes, at the budget, or on
    SIGINT/SIGTERM (handled here, not by rclpy, so the sim and the policy are stopped before the context goes).
    `robot_process`: start the sim bridge in a child process (`SimProcess`) once the stack is up."""
    import rclpy
    from rclpy.lifecycle import LifecycleNode
    from rclpy.signals import SignalHandlerOptions

    from mole_ros.runner import EXECUTOR_THREADS, autostart, make_executor, shutdown_lifecycle

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    nodes: list[Node] = []
    monitor = None
    robot: SimProcess | None = None
    interrupted = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: interrupted.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    executor = make_executor(EXECUTOR_THREADS)
    try:
        for factory in factories:
            nodes.append(factory())
            executor.add_node(nodes[-1])
        for node in nodes:
            if isinstance(node, LifecycleNode):
                autostart(node)  # the policy loads its model here, before the sim clock starts
        monitor = DemoMonitor(settings, budget)
        executor.add_node(monitor)
        if robot_process:
            robot = SimProcess(args)
            monitor.robot_pid = robot.pid
        while not monitor.finished.is_set() and not interrupted.is_set():
            if robot is not None and not robot.alive():
                monitor.stop(f"the sim process exited (code {robot.exitcode})")
                break
            try:
                executor.spin_once(timeout_sec=0.1)
            except Exception as err:  # one failing callback must not end the demo
                monitor.get_logger().error(f"callback failed: {type(err).__name__}: {err}", throttle_duration_sec=1.0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if monitor is None:  # interrupted while starting
            monitor = DemoMonitor(settings, budget)
            nodes.append(monitor)
        if interrupted.is_set():
            print("interrupted: stopping", flush=True)
            monitor.stop("interrupted")
        quiesce(nodes)  # the policy holds and stops inferring first, then the robot goes
        if robot is not None:
            robot.close()
        for node in [monitor, *reversed(nodes)]:
            if isinstance(node, LifecycleNode):
                shutdown_lifecycle(node)
            executor.remove_node(node)
            node.destroy_node()
        executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown()
    return monitor
