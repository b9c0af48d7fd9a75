"""`mole-vla stack` as a separate process (tiny preset, random weights): the done-when check and SIGINT.

An external rclpy client sends images, an instruction and poses on the default topics; the stack must publish
target poses at 50 Hz from the policy, hold when the images stop, and leave a complete, readable episode bag
when it is interrupted mid-episode.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from mole_ros import conversions as conv
from mole_ros import qos
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray, String

from mole_inference.config import models_dir
from mole_inference.data import schema
from mole_inference.data.bag_reader import list_episodes, read_episode

pytestmark = pytest.mark.ros

CONFIG = """
mole_stack:
  ros__parameters:
    nodes: [mole_policy, mole_recorder]
mole_policy:
  ros__parameters:
    checkpoint: ""
    preset: tiny
    engage_on_start: true
    control:
      watchdog:
        max_pose_age: 0.3
mole_recorder:
  ros__parameters:
    output_dir: "{out}"
    flush_period: 0.5
"""


def test_stack_drives_holds_and_survives_sigint(ros, msgs, wait, tmp_path):
    config = tmp_path / "stack.yaml"
    config.write_text(CONFIG.format(out=tmp_path / "episodes"))
    # a models dir with only the tiny preset: random weights, whether or not a checkpoint is shipped
    (tmp_path / "models").mkdir()
    shutil.copy(models_dir() / "tiny.yaml", tmp_path / "models" / "tiny.yaml")
    env = dict(os.environ, ROS_DOMAIN_ID=str(ros.domain_id), MOLE_MODELS_DIR=str(tmp_path / "models"))
    proc = subprocess.Popen([sys.executable, "-m", "mole_inference.cli", "stack", "--config", str(config)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True).start()
    c = ros.client
    targets = ros.subscribe(PoseStamped, schema.TARGET_POSE_TOPIC, qos.RELIABLE)
    deltas = ros.subscribe(Float64MultiArray, schema.EE_DELTA_TOPIC, qos.RELIABLE)
    pose_pub = c.create_publisher(PoseStamped, schema.MEASURED_POSE_TOPIC, qos.RELIABLE)
    image_pub = c.create_publisher(Image, schema.IMAGE_TOPIC, qos.SENSOR)
    c.create_publisher(String, schema.INSTRUCTION_TOPIC, qos.LATCHED).publish(String(data="pick up the cup"))
    command_pub = c.create_publisher(String, "/mole/episode_command", qos.RELIABLE)
    camera_on, stop = threading.Event(), threading.Event()
    camera_on.set()

    sent = {"poses": 0, "images": 0}
    before = dict(sent)  # what was sent when the episode started (set at the start command)

    def feed() -> None:
        i = 0
        while not stop.is_set():
            pose_pub.publish(msgs.pose(ros.now_ns()))
            sent["poses"] += 1
            if i % 5 == 0 and camera_on.is_set():
                image_pub.publish(msgs.image(ros.now_ns(), size=96))
                sent["images"] += 1
            i += 1
            time.sleep(0.01)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()

    def source_of(m) -> str:
        return conv.ee_delta_from_msg(m)[1]

    try:
        engaged = wait(lambda: any(source_of(m) == "policy" for _, m in list(deltas.items)), 40.0)
        assert engaged, "stack never drove from the policy:\n" + "".join(log[-30:])
        command_pub.publish(String(data=json.dumps({"command": "start", "task": "cup", "operator": "ci"})))
        before = dict(sent)
        t0 = time.monotonic()
        time.sleep(2.0)  # record a stretch of driving (rates and jitter: benchmarks/control_jitter.py)
        assert wait(lambda: len(targets.since(t0)) >= 50, 20.0), "the stack stopped publishing targets"
        window = targets.since(t0)
        stamps = [conv.stamp_to_ns(m.header.stamp) for _, m in window]
        assert np.all(np.diff(stamps) > 0), "target stamps must increase tick by tick"
        # The policy drives; any other tick is a watchdog hold (a shared 2-core machine can starve the stack's
        # inference thread: 62 of 91 policy ticks were seen late in the whole suite, and with two training runs
        # beside the suite a whole 2 s stretch held). Holding then is correct; the policy must come back.
        assert wait(lambda: any(source_of(m) == "policy" for _, m in deltas.since(t0)), 20.0), \
            "the policy never drove after the start command:\n" + "".join(log[-30:])
        driven = [source_of(m) for _, m in deltas.since(t0)]
        assert set(driven) <= {"policy", "hold"}, driven

        camera_on.clear()  # images stop: hold the measured pose (the exact tick: test_policy_node.py)
        t_off = time.monotonic()
        assert wait(lambda: any(source_of(m) == "hold" for _, m in deltas.since(t_off)), 2.0)
        t_hold = time.monotonic()
        # holding never goes silent: targets keep coming (how many per second is the benchmark's business), all at
        # the latched measured pose, stamped tick after tick
        assert wait(lambda: len(targets.since(t_hold)) >= 10, 10.0), "stopped publishing instead of holding"
        held = targets.since(t_hold)
        assert all(abs(m.pose.position.x - msgs.HOME[0]) < 1e-9 for _, m in held)
        assert np.all(np.diff([conv.stamp_to_ns(m.header.stamp) for _, m in held]) > 0)
        assert proc.poll() is None
    finally:
        stop.set()
        feeder.join()
        proc.send_signal(signal.SIGINT)  # mid-episode
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("stack did not exit on SIGINT:\n" + "".join(log[-30:]))
    assert proc.returncode == 0, "".join(log[-30:])
    [bag] = list_episodes(tmp_path / "episodes")  # complete: has metadata.yaml
    ep = read_episode(bag, decode_images=False)
    assert ep.metadata.task == "cup" and "shut down mid-episode" in ep.metadata.notes
    during = {k: sent[k] - before[k] for k in sent}
    # against what the feeder sent from the start command to SIGINT (less what arrived before the recorder opened
    # the bag): poses and images reach the recorder best effort with depth 1, as from the robot, so some drop on a
    # loaded machine; most must arrive
    assert len(ep.measured_poses) >= 0.5 * during["poses"] > 0, (len(ep.measured_poses), during)
    assert len(ep.frames[schema.IMAGE_TOPIC]) >= 0.3 * during["images"] > 0, (len(ep.frames[schema.IMAGE_TOPIC]),
                                                                               during)
    # the deltas the stack published from the start command on (the test's reliable subscription saw them): on a
    # loaded machine a few miss the bag, as poses do; a fixed count (100) failed with training runs beside the suite
    published = len(deltas.since(t0))
    assert len(ep.deltas) >= 0.5 * published > 0, (len(ep.deltas), published)
    assert {"policy", "hold"} <= set(ep.delta_sources.tolist())
    assert ep.instructions == ["pick up the cup"]
