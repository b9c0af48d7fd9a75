"""`mole-vla demo` as a user runs it (separate process, tiny preset with random weights, no display).

It must finish its episodes, print the per-second lines and the summary, write the strip and the JSON report,
and exit 0; Ctrl-C mid-episode must still print the summary and exit 0.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mole_inference.config import models_dir

if importlib.util.find_spec("mujoco") is None or importlib.util.find_spec("franky_sim") is None:
    pytest.skip("mujoco / franky-sim not installed (pip install 'mole-inference[sim]')", allow_module_level=True)

pytestmark = [pytest.mark.ros, pytest.mark.sim]


def start_demo(ros, tmp_path: Path, *args: str) -> tuple[subprocess.Popen, list[str]]:
    """`mole-vla demo ARGS --out tmp/out` on the test's domain, with a models dir holding only the tiny preset."""
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    shutil.copy(models_dir() / "tiny.yaml", models / "tiny.yaml")
    env = dict(os.environ, ROS_DOMAIN_ID=str(ros.domain_id), MOLE_MODELS_DIR=str(models))
    proc = subprocess.Popen([sys.executable, "-m", "mole_inference.cli", "demo", *args, "--out", str(tmp_path / "out")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    return proc, lines


def assert_robot_process_gone(summary: dict, demo_pid: int) -> None:
    """The simulated robot ran in a process of its own (not the stack's), and it did not outlive the demo."""
    pid = summary["robot_pid"]
    assert isinstance(pid, int) and pid != demo_pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return
    raise AssertionError(f"the sim process {pid} outlived the demo")


def test_demo_runs_episodes_and_writes_the_strip(ros, tmp_path):
    proc, lines = start_demo(ros, tmp_path, "--task", "touch", "--episodes", "1", "--seconds", "2")
    try:
        rc = proc.wait(timeout=60)
    finally:
        proc.kill()
    out = "".join(lines)
    assert rc == 0, out
    assert "RANDOM WEIGHTS" in out  # said loudly: no checkpoint in this models dir
    assert "episode 0: touch" in out and ("TIMEOUT" in out or "SUCCESS" in out), out
    assert "layers 4/8" in out, out  # the tiny preset's STAR router runs 4 of 8 layers
    assert "summary: " in out, out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["episodes"] == 1 and summary["stopped_by"] == "done"
    assert summary["inferences"] >= 1 and summary["total_layers"] == 8
    assert summary["control_hz"] > 25, summary
    assert_robot_process_gone(summary, proc.pid)
    assert (tmp_path / "out" / "strip.png").stat().st_size > 1000
    if summary["routing_png"] is not None:  # written whenever matplotlib (the plot extra) is installed
        assert (tmp_path / "out" / "routing.png").stat().st_size > 1000


def test_demo_handles_ctrl_c(ros, tmp_path):
    proc, lines = start_demo(ros, tmp_path, "--episodes", "3", "--seconds", "30")
    try:
        # the sim runs in a process of its own: wait until its clock and camera are seen (a per-second line with
        # a sim time and a camera rate), then one more second of frames for the strip
        running = re.compile(r"ep 0 sim +\d+\.\ds .*camera +\d")
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not any(running.search(line) for line in lines):
            time.sleep(0.1)
        first = next((i for i, line in enumerate(lines) if running.search(line)), None)
        assert first is not None, "".join(lines)
        while time.monotonic() < deadline and not any("ep 0 sim" in line for line in lines[first + 1:]):
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=20)
    finally:
        proc.kill()
    out = "".join(lines)
    assert rc == 0, out
    assert "summary: 0/0" in out, out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["stopped_by"] == "interrupted"
    assert summary["per_episode"][0]["outcome"] == "unfinished"
    assert_robot_process_gone(summary, proc.pid)
    assert (tmp_path / "out" / "strip.png").is_file()
