"""Control-period jitter of `mole_policy` at 50 Hz while the model runs, and image-to-command latency.

    python benchmarks/control_jitter.py [--presets tiny small] [--seconds 10] [--feeder process|thread] [--out DIR]
        [--inference process thread | --in-process] [--kill-worker-after S] [--max-frame-wait 0 0.01]

For each preset (random weights) the policy node runs in this process with the executor `mole-vla stack` uses
(`--executor-threads 1`: a SingleThreadedExecutor, mole_ros.runner; N > 1: a MultiThreadedExecutor of N threads).
The model runs in the node's worker process (`inference_process: true`, the default), or with
`--in-process` on the node's inference thread, sharing the control loop's GIL (the behaviour before #11);
`--inference process thread` measures both, side by side, in one run. `--kill-worker-after S` SIGKILLs the worker
S seconds into the measurement and reports how long until a chunk arrived again (`recovery_s`). A feeder (by
default a separate process, like the camera driver and franka_ros2 on the robot) publishes 640x480 rgb8 frames
at 30 Hz, the measured pose at 100 Hz and an instruction. Reported:
- jitter: |interval between control-timer callbacks - 20 ms|, p50 / p99 / max in ms, after a warm-up;
- latency: image header stamp -> the first command computed from that image (ms);
- inference ms per call; with `--max-frame-wait` (the node's max_frame_wait, several values side by side) the
  frames skipped because they waited longer than that for the busy model.
No thresholds: this prints numbers (table, and JSON with --json).
With --out DIR it also writes control_jitter.json and the histograms behind the percentiles: control_jitter.png
(jitter per preset and mode) and control_latency.png (image-to-command latency and inference time).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np


def feed(domain_id: int, stop: threading.Event | None = None) -> None:
    """Publish frames (30 Hz), poses (100 Hz) and an instruction until `stop` (or forever in a subprocess)."""
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from mole_ros import conversions as conv
    from mole_ros import qos
    from rclpy.context import Context
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from mole_inference.data import schema

    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    node = rclpy.create_node("jitter_feeder", context=ctx)
    pose_pub = node.create_publisher(PoseStamped, schema.MEASURED_POSE_TOPIC, qos.RELIABLE)
    image_pub = node.create_publisher(Image, schema.IMAGE_TOPIC, qos.SENSOR)
    node.create_publisher(String, schema.INSTRUCTION_TOPIC, qos.LATCHED).publish(String(data="pick up the cup"))
    rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    pose = conv.Pose.from_arrays((0.5, 0.0, 0.4), (1.0, 0.0, 0.0, 0.0))
    i, t_next = 0, time.monotonic()
    try:
        while stop is None or not stop.is_set():
            now = node.get_clock().now().nanoseconds
            pose_pub.publish(conv.pose_to_msg(pose, now, "fr3_link0"))
            if i % 3 == 0:
                image_pub.publish(conv.rgb_to_image(rgb, now, "wrist_camera"))
            i += 1
            t_next += 0.01
            time.sleep(max(0.0, t_next - time.monotonic()))
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)


def measure(preset: str, seconds: float, warmup: float, domain_id: int, feeder: str, switch_interval: float,
            torch_threads: int, min_period: float = 0.0, inference: str = "process",
            kill_after: float | None = None, rt_priority: int = 0, executor_threads: int = 1,
            max_frame_wait: float = 0.0) -> dict:
    """Run the policy node on `preset` and return jitter / latency / inference statistics; `inference`: the
    model in the worker process ("process") or on the node's inference thread ("thread")."""
    import rclpy
    from mole_ros.policy_node import PolicyNode
    from mole_ros.runner import make_executor
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    node = PolicyNode(context=ctx, parameter_overrides=[
        Parameter("preset", value=preset), Parameter("engage_on_start", value=True),
        Parameter("python_switch_interval", value=switch_interval), Parameter("torch_threads", value=torch_threads),
        Parameter("min_inference_period", value=min_period), Parameter("max_frame_wait", value=max_frame_wait),
        Parameter("inference_process", value=inference == "process"),
        Parameter("control_rt_priority", value=rt_priority),
        # timing, not safety: a slow preset or a starved feeder must not make the watchdog stop the policy
        Parameter("control.watchdog.inference_deadline", value=10.0),
        Parameter("control.watchdog.max_chunk_age", value=10.0),
        Parameter("control.watchdog.max_image_age", value=10.0),
        Parameter("control.watchdog.max_pose_age", value=10.0)])
    node.trigger_configure()
    executor = make_executor(executor_threads, context=ctx)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    stop = threading.Event()
    if feeder == "process":
        proc = subprocess.Popen([sys.executable, __file__, "--feed", str(domain_id)])
    else:
        proc = None
        threading.Thread(target=feed, args=(domain_id, stop), daemon=True).start()
    node.trigger_activate()
    try:
        time.sleep(warmup)
        tel = node.telemetry
        tel.control.reset()
        tel.latency_ms.clear()
        tel.inference_ms.clear()
        end = time.monotonic() + seconds
        recovery = kill_worker(node, kill_after, end) if kill_after is not None else float("nan")
        time.sleep(max(0.0, end - time.monotonic()))
        restarts = getattr(node.policy, "restarts", 0)
        iv = np.array(tel.control.intervals)
        lat = np.array(tel.latency_ms)
        inf = np.array(tel.inference_ms)
        mode = node.loop.mux.mode.value
        skipped = node.worker.skipped
        rt = f"fifo {rt_priority}" if node._control is not None and node._control.rt_active else "normal"
    finally:
        stop.set()
        if proc is not None:
            proc.send_signal(2)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:  # a feeder that missed its SIGINT must not end the benchmark
                proc.kill()
                proc.wait()
        executor.shutdown(timeout_sec=2)
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    jitter = np.abs(iv - 0.02) * 1e3 if iv.size else np.array([np.nan])

    def pct(a: np.ndarray, q: float) -> float:
        return float(np.percentile(a, q)) if a.size else float("nan")

    return {"preset": preset, "inference": inference, "rt_priority": rt, "executor_threads": executor_threads,
            "max_frame_wait_ms": max_frame_wait * 1e3, "skipped_frames": int(skipped),
            "feeder": feeder, "ticks": int(iv.size),
            "mode_at_end": mode,
            "worker_restarts": int(restarts), "recovery_s": recovery,
            "rate_hz": float(1 / iv.mean()) if iv.size else float("nan"),
            "jitter_p50_ms": pct(jitter, 50), "jitter_p99_ms": pct(jitter, 99), "jitter_max_ms": float(jitter.max()),
            "inference_calls": int(inf.size), "inference_ms_p50": pct(inf, 50),
            "latency_ms_p50": pct(lat, 50), "latency_ms_p99": pct(lat, 99), "latency_samples": int(lat.size),
            "samples": {"jitter_ms": jitter.tolist(), "latency_ms": lat.tolist(), "inference_ms": inf.tolist()}}


def kill_worker(node, after: float, end: float) -> float:
    """Sleep `after` s, SIGKILL the node's inference worker, return the seconds until the next chunk (NaN: none
    before monotonic time `end`, or the model runs in-process)."""
    import signal

    time.sleep(after)
    pid = getattr(node.policy, "worker_pid", 0)
    if not pid:
        return float("nan")
    chunks = len(node.telemetry.inference_times)
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    while time.monotonic() < end:
        if node.policy.restarts and len(node.telemetry.inference_times) != chunks:
            return time.monotonic() - killed
        time.sleep(0.005)
    return float("nan")


def write_results(rows: list[dict], out: str) -> list[str]:
    """control_jitter.json (rows with their samples) and the jitter / latency histograms as PNG in `out`."""
    from pathlib import Path

    from mole_inference.analysis.plots import histogram_png

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "control_jitter.json").write_text(json.dumps(rows, indent=1) + "\n")
    def label(r: dict) -> str:  # rows without a mode (idle, or written before the process worker) by preset
        return f"{r['preset']} ({r['inference']})" if r.get("inference") else r["preset"]

    jitter = {label(r): r["samples"]["jitter_ms"] for r in rows}
    timing = {}
    for r in rows:
        timing[f"{label(r)} image to command"] = r["samples"]["latency_ms"]
        timing[f"{label(r)} inference"] = r["samples"]["inference_ms"]
    return [str(folder / "control_jitter.json"),
            str(histogram_png(jitter, folder / "control_jitter.png", "control period jitter |interval - 20 ms|",
                              "jitter (ms)")),
            str(histogram_png(timing, folder / "control_latency.png", "image-to-command latency and inference",
                              "time (ms)"))]


def main() -> None:
    """CLI."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", nargs="+", default=["tiny", "small"])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=4.0)
    p.add_argument("--feeder", choices=["process", "thread"], default="process")
    p.add_argument("--switch-interval", type=float, default=0.0005, help="python_switch_interval (0 = 5 ms default)")
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--min-inference-period", type=float, default=0.0, help="seconds between inference starts")
    p.add_argument("--inference", nargs="+", choices=["process", "thread"], default=["process"],
                   help="where the model runs: the node's worker process and/or its inference thread (before #11)")
    p.add_argument("--in-process", action="store_true", help="same as --inference thread")
    p.add_argument("--rt-priority", nargs="+", type=int, default=[0],
                   help="control_rt_priority values to compare (0 = normal scheduling; SCHED_FIFO needs rtprio)")
    p.add_argument("--executor-threads", nargs="+", type=int, default=[1],
                   help="executor threads to compare (1: SingleThreadedExecutor, the nodes' default)")
    p.add_argument("--max-frame-wait", nargs="+", type=float, default=[0.0],
                   help="max_frame_wait of the node (s; several values: measured side by side)")
    p.add_argument("--kill-worker-after", type=float, help="SIGKILL the worker this many seconds into the run")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", help="folder for control_jitter.json + histogram PNGs (needs matplotlib)")
    p.add_argument("--feed", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
    if args.feed is not None:
        feed(args.feed)
        return
    domain = 1 + os.getpid() % 100
    modes = ["thread"] if args.in_process else args.inference
    rows = [measure(preset, args.seconds, args.warmup, domain, args.feeder, args.switch_interval, args.torch_threads,
                    args.min_inference_period, mode, args.kill_worker_after, rt, threads, wait)
            for preset in args.presets for mode in modes for rt in args.rt_priority
            for threads in args.executor_threads for wait in args.max_frame_wait]
    if args.out:
        print("wrote " + ", ".join(write_results(rows, args.out)))
    rows = [{k: v for k, v in r.items() if k != "samples"} for r in rows]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    cols = ["preset", "inference", "rt_priority", "executor_threads", "max_frame_wait_ms", "skipped_frames",
            "ticks", "rate_hz", "jitter_p50_ms", "jitter_p99_ms", "jitter_max_ms", "inference_ms_p50",
            "latency_ms_p50", "latency_ms_p99", "worker_restarts", "recovery_s", "mode_at_end"]
    print(" | ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r[c]:>14.2f}" if isinstance(r[c], float) else f"{r[c]!s:>14}" for c in cols))


if __name__ == "__main__":
    main()
