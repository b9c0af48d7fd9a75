"""InferenceWorker races (issue #10, item 10): a chunk computed for an old instruction (or before a reset / clear)
never reaches the loop, and Policy.reset never runs while Policy.infer does.

Deterministic: the fake policy's `infer` blocks until the test releases it, so the test chooses every
interleaving; a second inference call serves as the barrier proving the first result was handled (the worker is
one thread). Event waits carry a timeout only so that a broken worker fails the test instead of hanging it.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from mole_ros.inference_worker import InferenceWorker

from mole_inference.policy.contract import ActionChunk, Policy, RoutingDecision

pytestmark = pytest.mark.ros

HANG = 10.0  # s: only reached when the worker is broken


class GatedPolicy(Policy):
    """Call i of `infer` sets `entered[i]`, then blocks until `release(i)`; `log` records infer/reset in order
    and `overlaps` counts resets that ran while an inference was in progress."""

    action_dt = 0.1
    chunk_size = 4
    num_layers = 2

    def __init__(self, calls: int = 4) -> None:
        self.entered = [threading.Event() for _ in range(calls)]
        self._release = [threading.Event() for _ in range(calls)]
        self.log: list[str] = []
        self.overlaps = 0
        self._in_infer = False
        self._n = 0

    def release(self, i: int) -> None:
        """Let call i return."""
        self._release[i].set()

    def infer(self, image: np.ndarray, instruction: str, *, seed: int | None = None) -> ActionChunk:
        """See Policy.infer."""
        i, self._n = self._n, self._n + 1
        self._in_infer = True
        self.log.append(f"infer:{instruction}")
        self.entered[i].set()
        released = self._release[i].wait(HANG)
        self._in_infer = False
        assert released, f"infer call {i} never released"
        actions = np.zeros((self.chunk_size, 7))
        actions[:, 6] = float(i)  # which call produced the chunk
        return ActionChunk(actions, RoutingDecision((0,), np.ones(2) / 2, 2), {"total": 1.0}, self.action_dt)

    def reset(self) -> None:
        """See Policy.reset."""
        if self._in_infer:
            self.overlaps += 1
        self.log.append("reset")


class RecordingLoop:
    """The part of ControlLoop the worker uses; `queue` is what the control tick would step."""

    def __init__(self) -> None:
        self.queue: list[int] = []
        self.pushed: list[int] = []
        self.chunk_in = threading.Event()

    def inference_started(self, now: float) -> None:
        pass

    def inference_finished(self, now: float) -> None:
        pass

    def push_chunk(self, chunk: np.ndarray, image_stamp: float, now: float) -> bool:
        call = int(chunk[0, 6])
        self.queue.append(call)
        self.pushed.append(call)
        self.chunk_in.set()
        return True

    def clear_chunks(self) -> None:
        self.queue.clear()


@pytest.fixture
def rig(msgs):
    policy, loop = GatedPolicy(), RecordingLoop()
    errors: list[str] = []
    worker = InferenceWorker(policy, loop, clock=lambda: 0.0, on_chunk=lambda c, s: None,
                             on_error=errors.append, max_image_side=640, torch_threads=0)
    frame = msgs.image(0)
    yield policy, loop, worker, frame, errors
    for i in range(len(policy.entered)):
        policy.release(i)
    worker.stop(HANG)


def first_call_in_flight(policy, worker, frame, instruction="pick up the red block"):
    worker.set_instruction(instruction)
    worker.start()
    worker.submit(frame, 0.0)
    assert policy.entered[0].wait(HANG)


def barrier(policy, worker, frame, i):
    """Submit a frame and wait until call i runs: every result before it has been handled."""
    worker.submit(frame, 0.0)
    assert policy.entered[i].wait(HANG)


def test_chunk_of_the_old_instruction_is_dropped(rig):
    policy, loop, worker, frame, errors = rig
    first_call_in_flight(policy, worker, frame)
    worker.set_instruction("open the drawer")  # while call 0 (old instruction) runs
    policy.release(0)
    barrier(policy, worker, frame, 1)
    assert loop.pushed == [] and loop.queue == []  # call 0's chunk never reached the loop
    assert worker.stale == 1 and errors == []
    assert policy.log[-1] == "infer:open the drawer"
    policy.release(1)
    assert loop.chunk_in.wait(HANG)
    assert loop.queue == [1]  # the new instruction's chunk runs


@pytest.mark.parametrize("drop", ["clear", "reset"])
def test_clear_and_reset_drop_the_chunk_in_flight(rig, drop):
    policy, loop, worker, frame, _ = rig
    first_call_in_flight(policy, worker, frame)
    getattr(worker, drop)()
    policy.release(0)
    barrier(policy, worker, frame, 1)
    assert loop.pushed == [] and worker.stale == 1


def test_reset_waits_for_the_inference_in_flight(rig):
    policy, _, worker, frame, _ = rig
    first_call_in_flight(policy, worker, frame)
    before = list(policy.log)
    worker.set_instruction("open the drawer")
    assert policy.log == before and before[-2:] == ["reset", "infer:pick up the red block"]  # reset pending
    policy.release(0)
    barrier(policy, worker, frame, 1)
    assert policy.log == [*before, "reset", "infer:open the drawer"]  # done by the worker, before call 1
    assert policy.overlaps == 0


def test_reset_of_an_idle_policy_runs_at_once(rig):
    policy, _, worker, _, _ = rig
    worker.set_instruction("pick up the red block")  # thread not started: the model is idle
    assert policy.log == ["reset"]
    worker.set_instruction("pick up the red block")  # the latched topic repeats itself: nothing happens
    assert policy.log == ["reset"] and worker.generation == 1


def test_result_of_a_call_outliving_stop_is_dropped(rig):
    policy, loop, worker, frame, _ = rig
    first_call_in_flight(policy, worker, frame)
    old = worker._thread
    worker.stop(timeout=0.0)  # the call hangs past the stop timeout
    worker.start()  # reactivation: a new thread, the old one still inside infer
    policy.release(0)
    old.join(HANG)
    assert not old.is_alive()  # the leftover thread exits instead of serving next to the new one
    assert loop.pushed == [] and worker.stale == 1
    barrier(policy, worker, frame, 1)
    assert policy.overlaps == 0 and policy.log[-2:] == ["reset", "infer:pick up the red block"]


class StampLoop(RecordingLoop):
    """Also records the image stamp of every chunk pushed."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[float] = []

    def push_chunk(self, chunk: np.ndarray, image_stamp: float, now: float) -> bool:
        self.stamps.append(image_stamp)
        return super().push_chunk(chunk, image_stamp, now)


@pytest.mark.parametrize("max_frame_wait", [0.0, 0.05])
def test_a_frame_that_waited_too_long_for_the_busy_model_is_skipped_for_the_next(msgs, max_frame_wait):
    """Frame 1 arrives 10 ms into a 200 ms inference. By default it is the next one inferred (190 ms old by
    then); with max_frame_wait 50 ms it is skipped and the next inference waits for frame 2."""
    now = [0.0]
    policy, loop = GatedPolicy(), StampLoop()
    worker = InferenceWorker(policy, loop, clock=lambda: now[0], on_chunk=lambda c, s: None, on_error=print,
                             max_image_side=640, torch_threads=0, max_frame_wait=max_frame_wait)
    frame = msgs.image(0)
    try:
        worker.set_instruction("pick up the red block")
        worker.start()
        worker.submit(frame, 0.0)
        assert policy.entered[0].wait(HANG)
        now[0] = 0.01
        worker.submit(frame, 1.0)  # stamps name the frames
        now[0] = 0.2
        policy.release(0)
        if max_frame_wait > 0:
            deadline = time.monotonic() + HANG  # the worker takes frame 1 and skips it: then frame 2 comes
            while worker.skipped == 0 and time.monotonic() < deadline:
                time.sleep(0.001)
            worker.submit(frame, 2.0)  # the next camera frame, fresh
        assert policy.entered[1].wait(HANG)
        policy.release(1)
        while len(loop.stamps) < 2:
            assert loop.chunk_in.wait(HANG)
            loop.chunk_in.clear()
        if max_frame_wait > 0:
            assert loop.stamps == [0.0, 2.0] and worker.skipped == 1
        else:
            assert loop.stamps == [0.0, 1.0] and worker.skipped == 0
    finally:
        for i in range(len(policy.entered)):
            policy.release(i)
        worker.stop(HANG)
