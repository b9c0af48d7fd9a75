"""mole_policy with its model in a worker process (issue #11): the worker SIGKILLed mid-run -> the node holds,
says so on /diagnostics, restarts the worker and is resumable again; nothing raises in the node.

Ordered by events and polled conditions with generous deadlines, never by wall-clock bounds.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from mole_ros import conversions as conv

from mole_inference.runtime.process_policy import ProcessPolicy
from tests.ros.policy_stack import LOADED_MACHINE, Feeder, policy_node, resume, subscribe_outputs

pytestmark = pytest.mark.ros

sys.path.insert(0, str(Path(__file__).parents[1] / "runtime"))  # the worker imports the fakes from there
fakes = importlib.import_module("fake_policies")

DEADLINE = 60.0  # seconds: a bound on waiting for a spawn on a loaded machine, never a measurement


def worker_statuses(diag, name: str, since: float) -> list[DiagnosticStatus]:
    return [s for _, m in diag.since(since) for s in m.status if s.name == f"{name}: inference worker"]


def test_worker_killed_mid_run_holds_then_restarts_and_resumes(ros, msgs, wait, tmp_path):
    factory_args = {"marker_dir": str(tmp_path), "hold_restarts": True}
    node = policy_node(
        ros,
        "mole_policy_process",
        lambda cfg: ProcessPolicy(fakes.make_step, factory_args, timeout=30.0),
        {"engage_on_start": True, "diagnostics_period": 0.2, **LOADED_MACHINE},
    )
    out = subscribe_outputs(ros, "deltas", "diag")
    deltas, diag = out["deltas"], out["diag"]
    name = node.get_name()
    node.trigger_configure()
    policy = node.policy
    assert isinstance(policy, ProcessPolicy) and policy.ready
    node.trigger_activate()

    def sources(since: float) -> list[str]:
        return [conv.ee_delta_from_msg(m)[1] for _, m in deltas.since(since)]

    with Feeder(ros, msgs):
        start = time.monotonic()
        assert wait(lambda: "policy" in sources(start), DEADLINE), "the policy never drove"
        old = policy.worker_pid
        os.kill(old, signal.SIGKILL)
        assert wait(lambda: not policy.ready, DEADLINE), "the node never noticed the dead worker"
        down = time.monotonic()
        # the worker's next start waits for `release`: the node holds, and /diagnostics says why
        assert wait(lambda: "hold" in sources(down), DEADLINE)
        assert wait(
            lambda: any(
                s.level == DiagnosticStatus.ERROR and "SIGKILL" in s.message for s in worker_statuses(diag, name, down)
            ),
            DEADLINE,
        )
        held = time.monotonic()
        assert wait(lambda: len(sources(held)) >= 10, DEADLINE)
        assert set(sources(held)) == {"hold"}, "a step ran while the worker was down"
        (tmp_path / "release").touch()
        assert wait(lambda: policy.ready, DEADLINE)
        assert policy.worker_pid not in (0, old) and policy.restarts == 1
        assert wait(lambda: resume(ros, node).success, DEADLINE)
        back = time.monotonic()
        assert wait(lambda: "policy" in sources(back), DEADLINE), "the policy never drove again"
        assert wait(
            lambda: any(
                s.level == DiagnosticStatus.OK
                and dict((kv.key, kv.value) for kv in s.values).get("worker_restarts") == "1.000"
                for s in worker_statuses(diag, name, back)
            ),
            DEADLINE,
        )
    pid, shm = policy.worker_pid, Path("/dev/shm", policy.shm_name)
    assert shm.exists()
    ros.remove(node)  # destroy_node closes the worker process and frees its shared memory
    assert not policy.ready and not shm.exists() and not Path(f"/proc/{pid}").exists()
