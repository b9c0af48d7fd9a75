"""ProcessPolicy: the model in a worker process; frames over shared memory; crash, hang, restart, warm spare and
cleanup.

Deterministic: every wait is a condition polled up to a generous deadline (a spawn on a busy 2-core machine can
take seconds); the only timing under test is ProcessPolicy's own `timeout`, which the fake's answers never near,
and the restart phases it records, judged against a sleep the worker's import is made to take (lower bounds).
The fakes' workers preload nothing (no torch import per process); the tiny-model test keeps the default.
"""

from __future__ import annotations

import gc
import importlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mole_inference.errors import CheckpointError, InputError, WorkerError
from mole_inference.runtime.process_policy import ProcessPolicy

sys.path.insert(0, str(Path(__file__).parent))  # spawned workers get this sys.path and import the fakes from it
fakes = importlib.import_module("fake_policies")

DEADLINE = 120.0  # seconds: only a bound on waiting, never a measurement
IMPORT_DELAY = 1.0  # seconds the fakes' module sleeps when a worker imports it (tests that set the env var)


def start(factory: Callable = fakes.make_echo, kwargs: dict | None = None, **options) -> ProcessPolicy:
    """A ProcessPolicy over a fake: no preloaded modules unless asked."""
    return ProcessPolicy(factory, kwargs, **{"preload": (), **options})


def wait_until(predicate: Callable[[], bool], timeout: float = DEADLINE) -> bool:
    """Poll `predicate` until it holds or `timeout` passes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def dead(pid: int) -> bool:
    """The process is gone or a zombie (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return fields[0] in ("Z", "X")


def shm_exists(name: str) -> bool:
    return Path("/dev/shm", name.lstrip("/")).exists()


def workers_alive() -> list[str]:
    return [p.name for p in mp.active_children() if p.name == "mole_inference_worker"]


def frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def expected_row(image: np.ndarray, instruction: str, seed: int | None, resets: int, pid: int) -> list[float]:
    return [image.mean(), image.shape[0], image.shape[1], len(instruction), -1 if seed is None else seed, resets, pid]


@pytest.fixture
def markers(tmp_path) -> Path:
    return tmp_path


@pytest.fixture
def proxy(markers):
    policy = start(fakes.make_echo, {"marker_dir": str(markers)}, timeout=30.0, grace=2.0)
    yield policy
    policy.close()


def test_round_trip_runs_the_policy_in_another_process(proxy):
    image = frame(48, 64)
    chunk = proxy.infer(image, "pick up the cup", seed=7)
    pid = proxy.worker_pid
    assert pid not in (0, os.getpid()) and proxy.ready
    np.testing.assert_allclose(chunk.actions, np.tile(expected_row(image, "pick up the cup", 7, 0, pid), (4, 1)))
    assert chunk.actions.shape == (4, 7) and chunk.action_dt == 0.05
    assert chunk.routing.layers == (0, 2) and chunk.routing.total_layers == 3
    np.testing.assert_allclose(chunk.routing.probs, [0.2, 0.5, 0.8], rtol=1e-6)
    assert chunk.timings_ms["total"] == 0.5 and chunk.timings_ms["roundtrip"] >= 0.0
    assert (proxy.action_dt, proxy.chunk_size, proxy.num_layers, proxy.policy_type) == (0.05, 4, 3, "EchoPolicy")
    # a non-contiguous view is copied in as the frame it shows
    view = frame(40, 80, seed=1)[:, ::2]
    np.testing.assert_allclose(proxy.infer(view, "x").actions[0, :3], [view.mean(), 40, 40])
    assert proxy.status()["worker_state"] == "ready" and proxy.calls == 2


def test_frames_larger_than_the_buffer_grow_it(markers):
    # an optional preload that is not installed is skipped
    with start(fakes.make_echo, image_bytes=100, preload=("no_such_module_for_mole_tests",)) as proxy:
        small, large = frame(4, 5), frame(120, 160, seed=2)
        assert proxy.infer(small, "a").actions[0, 0] == pytest.approx(small.mean())
        first = proxy.shm_name
        assert proxy.infer(large, "a").actions[0, 0] == pytest.approx(large.mean())
        assert proxy.shm_name != first and not shm_exists(first)  # the old segment is unlinked at once
        np.testing.assert_allclose(proxy.infer(small, "a").actions[0, :3], [small.mean(), 4, 5])
        assert proxy.restarts == 0


def test_bad_input_raises_input_error_and_the_worker_keeps_serving(proxy):
    pid = proxy.worker_pid
    for bad in (
        frame(8, 8).astype(np.float32),
        frame(8, 8)[..., 0],
        np.zeros((0, 8, 3), np.uint8),
        np.zeros((8, 8, 4), np.uint8),
        [[0, 0, 0]],
    ):
        with pytest.raises(InputError, match="image"):
            proxy.infer(bad, "pick")
    with pytest.raises(InputError, match="instruction"):
        proxy.infer(frame(8, 8), None)
    with pytest.raises(InputError, match="refuses"):  # raised by the policy inside the worker, same type here
        proxy.infer(frame(8, 8), "raise")
    assert proxy.infer(frame(8, 8), "ok").actions[0, 6] == pid and proxy.restarts == 0


STATE = [0.45, -0.05, 0.3, 1.0, 0.0, 0.0, 0.0]  # the measured pose: x, y, z (m), quaternion xyzw


def test_the_robot_state_reaches_the_worker_and_uses_state_is_the_workers_models():
    with start(fakes.make_state_echo) as proxy:
        assert proxy.uses_state  # reported by the worker: the parent never builds the model
        chunk = proxy.infer(frame(8, 8), "pick", state=np.array(STATE))
        np.testing.assert_array_equal(chunk.actions, np.tile([*STATE, proxy.worker_pid], (4, 1)))
        # any sequence of numbers travels as float64
        assert proxy.infer(frame(8, 8), "pick", state=tuple(STATE)).actions[0, :7].tolist() == STATE


def test_a_model_without_state_input_ignores_the_state(proxy):
    assert not proxy.uses_state
    image = frame(8, 8)
    with_state = proxy.infer(image, "pick", seed=3, state=np.array(STATE)).actions
    np.testing.assert_array_equal(with_state, proxy.infer(image, "pick", seed=3).actions)


def test_a_missing_or_bad_state_raises_input_error_and_the_worker_keeps_serving():
    with start(fakes.make_state_echo) as proxy:
        pid = proxy.worker_pid
        with pytest.raises(InputError, match="reads the robot state"):  # raised in the worker, same type here
            proxy.infer(frame(8, 8), "pick")
        for bad in (STATE[:6], [*STATE[:6], float("nan")]):
            with pytest.raises(InputError, match="7 finite values"):
                proxy.infer(frame(8, 8), "pick", state=bad)
        with pytest.raises(InputError, match="robot state: expected numbers"):  # not numbers: refused here
            proxy.infer(frame(8, 8), "pick", state=["x"] * 7)
        # no crash, no restart: the same worker answers the next good request
        assert proxy.infer(frame(8, 8), "pick", state=STATE).actions[0, 7] == pid
        assert proxy.worker_pid == pid and proxy.restarts == 0 and proxy.status()["worker_state"] == "ready"


def test_reset_is_forwarded(proxy):
    image = frame(8, 8)
    assert proxy.infer(image, "a").actions[0, 5] == 0
    proxy.reset()
    proxy.reset()
    assert proxy.infer(image, "a").actions[0, 5] == 2


def test_killed_worker_raises_worker_error_then_restarts(markers):
    proxy = start(fakes.make_echo, {"marker_dir": str(markers), "hold_restarts": True}, grace=2.0)
    try:
        image = frame(16, 16)
        old = proxy.worker_pid
        proxy.infer(image, "a")
        os.kill(old, signal.SIGKILL)
        assert wait_until(lambda: dead(old))
        with pytest.raises(WorkerError, match=rf"pid {old}.*died.*SIGKILL"):
            proxy.infer(image, "a")
        # restarting (the fake's second start waits for `release`): calls fail at once, reset is a no-op
        assert not proxy.ready and proxy.worker_pid == 0 and proxy.status()["worker_state"] == "restarting"
        with pytest.raises(WorkerError, match=r"restarting after.*SIGKILL"):
            proxy.infer(image, "a")
        proxy.reset()
        assert "SIGKILL" in proxy.last_error
        (markers / "release").touch()
        assert wait_until(lambda: proxy.ready)
        chunk = proxy.infer(image, "a")
        assert proxy.worker_pid not in (0, old) and chunk.actions[0, 6] == proxy.worker_pid
        assert proxy.restarts == 1 and (markers / "starts").read_text() == "2"
    finally:
        proxy.close()
    assert not workers_alive()


def test_worker_killed_mid_inference_fails_that_call(proxy, markers):
    raised: list[BaseException] = []

    def call() -> None:
        try:
            proxy.infer(frame(16, 16), "block")
        except BaseException as err:
            raised.append(err)

    caller = threading.Thread(target=call)
    caller.start()
    assert wait_until(lambda: (markers / "blocked").exists())
    old = proxy.worker_pid
    os.kill(old, signal.SIGKILL)
    caller.join(DEADLINE)
    assert not caller.is_alive() and len(raised) == 1 and isinstance(raised[0], WorkerError)
    assert "during inference" in str(raised[0])
    assert wait_until(lambda: proxy.ready)
    assert proxy.infer(frame(16, 16), "a").actions[0, 6] == proxy.worker_pid != old


def test_hang_past_the_deadline_kills_and_restarts(markers):
    with start(fakes.make_echo, {"marker_dir": str(markers)}, timeout=2.0, grace=1.0) as proxy:
        old = proxy.worker_pid
        with pytest.raises(WorkerError, match=r"longer than 2 s.*killed"):
            proxy.infer(frame(16, 16), "block")
        assert wait_until(lambda: dead(old))
        assert wait_until(lambda: proxy.ready)
        assert proxy.infer(frame(16, 16), "a").actions[0, 6] == proxy.worker_pid != old
        assert proxy.restarts == 1


def test_close_leaves_no_process_and_no_shared_memory():
    proxy = start(fakes.make_echo)
    proxy.infer(frame(8, 8), "a")
    assert wait_until(lambda: proxy.spare_state() == "warm")
    pid, spare, name = proxy.worker_pid, proxy.spare_pid, proxy.shm_name
    assert shm_exists(name) and spare not in (0, pid)
    proxy.close()
    assert dead(pid) and dead(spare) and not shm_exists(name) and not workers_alive()
    assert proxy.spare_pid == 0
    with pytest.raises(WorkerError, match="closed"):
        proxy.infer(frame(8, 8), "a")
    proxy.close()  # idempotent


def test_garbage_collection_releases_the_worker_and_the_buffer():
    proxy = start(fakes.make_echo)
    pid, spare, name = proxy.worker_pid, proxy.spare_pid, proxy.shm_name
    del proxy
    gc.collect()
    assert dead(pid) and dead(spare) and not shm_exists(name) and not workers_alive()


def test_close_during_a_restart_ends_the_starting_worker(markers, caplog):
    proxy = start(fakes.make_echo, {"marker_dir": str(markers), "hold_restarts": True})
    old, name = proxy.worker_pid, proxy.shm_name
    os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: dead(old))
    with pytest.raises(WorkerError):
        proxy.infer(frame(8, 8), "a")
    assert wait_until(lambda: (markers / "starts").read_text() == "2")  # the new worker is blocked in its factory
    proxy.close()
    assert not workers_alive() and not shm_exists(name)
    assert not [r.message for r in caplog.records if "restart failed" in r.message]  # a close is not a failure


def test_a_factory_error_is_raised_by_the_constructor_with_nothing_left_behind():
    before = {p.name for p in Path("/dev/shm").glob("psm_*")}
    with pytest.raises(CheckpointError, match=r"no model\.safetensors"):
        start(fakes.fail_to_build, {"reason": "no model.safetensors"})
    assert not workers_alive()
    assert {p.name for p in Path("/dev/shm").glob("psm_*")} <= before


def kill_and_wait_restarted(proxy: ProcessPolicy) -> int:
    """SIGKILL the serving worker, let a call notice it, wait until a worker serves again; the old pid."""
    old = proxy.worker_pid
    os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: dead(old))
    with pytest.raises(WorkerError, match="SIGKILL"):
        proxy.infer(frame(8, 8), "a")
    assert wait_until(lambda: proxy.ready)
    return old


def test_a_promoted_spare_skips_the_spawn_and_import_a_cold_restart_pays(markers, monkeypatch):
    monkeypatch.setenv(fakes.IMPORT_DELAY_ENV, str(IMPORT_DELAY))  # every worker's import of the fakes is slow
    (markers / "cold").mkdir()
    with start(fakes.make_echo, {"marker_dir": str(markers / "cold")}, spare=False) as cold:
        assert cold.spare_state() == "off" and cold.spare_pid == 0
        kill_and_wait_restarted(cold)
        st = cold.status()
        assert st["worker_restart_from"] == "cold" and st["worker_restart_spawn_s"] >= IMPORT_DELAY
        assert st["worker_restart_build_s"] > 0
        assert st["worker_restart_s"] >= st["worker_restart_stop_s"] + IMPORT_DELAY + st["worker_restart_build_s"]
    (markers / "warm").mkdir()
    with start(fakes.make_echo, {"marker_dir": str(markers / "warm")}) as warm:
        assert warm.status()["worker_restart_from"] == "none" and warm.last_restart is None
        assert wait_until(lambda: warm.spare_state() == "warm")
        spare = warm.spare_pid
        assert (markers / "warm" / "starts").read_text() == "1"  # the spare imported, but built nothing
        old = kill_and_wait_restarted(warm)
        st = warm.status()
        assert warm.worker_pid == spare and warm.infer(frame(8, 8), "a").actions[0, 6] == spare
        assert st["worker_restart_from"] == "spare" and st["worker_restart_spawn_s"] == 0.0
        assert st["worker_restart_build_s"] > 0 and warm.restarts == 1
        assert st["worker_restart_s"] >= st["worker_restart_stop_s"] + st["worker_restart_build_s"]
        # the next spare comes up in the background
        assert wait_until(lambda: warm.spare_state() == "warm")
        assert warm.spare_pid not in (0, old, spare) and (markers / "warm" / "starts").read_text() == "2"
    assert not workers_alive()


def test_a_lost_spare_means_a_cold_restart_then_a_new_spare(markers):
    with start(fakes.make_echo, {"marker_dir": str(markers)}) as proxy:
        assert wait_until(lambda: proxy.spare_state() == "warm")
        spare = proxy.spare_pid
        os.kill(spare, signal.SIGKILL)
        assert wait_until(lambda: proxy.spare_state() == "lost")
        kill_and_wait_restarted(proxy)
        st = proxy.status()
        assert st["worker_restart_from"] == "cold" and st["worker_restart_spawn_s"] > 0
        assert proxy.worker_pid != spare
        assert wait_until(lambda: proxy.spare_state() == "warm") and proxy.spare_pid not in (0, spare)
    assert not workers_alive()


def test_close_stops_a_spare_still_importing(markers, monkeypatch):
    proxy = start(fakes.make_echo, {"marker_dir": str(markers)})
    try:
        assert wait_until(lambda: proxy.spare_state() == "warm")
        first = proxy.spare_pid
        monkeypatch.setenv(fakes.IMPORT_DELAY_ENV, "3600")  # the next spare never finishes importing
        kill_and_wait_restarted(proxy)
        assert proxy.worker_pid == first
        assert wait_until(lambda: proxy.spare_pid not in (0, first))
        spare, name = proxy.spare_pid, proxy.shm_name
        assert proxy.spare_state() == "starting"
    finally:
        proxy.close()
    assert dead(first) and dead(spare) and not shm_exists(name) and not workers_alive()


@pytest.mark.slow
def test_tiny_model_matches_the_in_process_policy():
    """Same preset (seeded random weights), same image and seed: the worker's chunk equals the in-process one."""
    pytest.importorskip("torch")
    from mole_inference.runtime import load_policy

    image = frame(120, 160, seed=3)
    local = load_policy(preset="tiny")
    with ProcessPolicy(load_policy, {"preset": "tiny"}, threads=1) as remote:
        assert (remote.action_dt, remote.chunk_size, remote.num_layers) == (
            local.action_dt,
            local.chunk_size,
            local.num_layers,
        )
        got = remote.infer(image, "pick up the red cube", seed=5)
    want = local.infer(image, "pick up the red cube", seed=5)
    np.testing.assert_allclose(got.actions, want.actions, atol=1e-6, rtol=0)
    assert got.routing.layers == want.routing.layers
    np.testing.assert_allclose(got.routing.probs, want.routing.probs, atol=1e-6)


@pytest.mark.slow
def test_tiny_state_input_model_matches_the_in_process_policy():
    """A real `vision.state_input` model in the worker: uses_state is reported, the state reaches the model (two
    poses, two chunks, each equal to the in-process one), and a missing state is an InputError, not a restart."""
    pytest.importorskip("torch")
    image, other = frame(120, 160, seed=3), [0.55, 0.1, 0.2, 0.0, 1.0, 0.0, 0.0]
    local = fakes.make_tiny_state_model()
    with ProcessPolicy(fakes.make_tiny_state_model, threads=1) as remote:
        assert remote.uses_state and local.uses_state
        got = [remote.infer(image, "pick up the red cube", seed=5, state=s).actions for s in (STATE, other)]
        with pytest.raises(InputError, match="reads the robot state"):
            remote.infer(image, "pick up the red cube", seed=5)
        assert remote.restarts == 0 and remote.ready
    want = [local.infer(image, "pick up the red cube", seed=5, state=s).actions for s in (STATE, other)]
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    assert not np.allclose(got[0], got[1], atol=1e-4), "the state never reached the model"
