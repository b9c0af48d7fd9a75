"""InferenceWorker: runs the policy on the newest camera frame in its own thread, never in a ROS callback.

Subscriptions hand over frames with `submit` (a one-slot mailbox: an unprocessed frame is replaced by a newer
one, so the model always sees the newest image and a slow model never builds a queue). The thread decodes the
frame, calls `Policy.infer`, and pushes the chunk into the ControlLoop; the control timer never waits for it.
A failing call (bad frame, exception, NaN/inf in the chunk) drops the queued actions, so the loop holds on its
next tick, and is reported through `on_error`; the thread keeps running.

Fresh frames (`max_frame_wait` > 0). A frame that arrives while the model is busy waits in the mailbox, so the
next inference starts on an image up to one camera period old, and that age adds to every image-to-command
latency (a 260 ms model behind a 10 Hz camera: about 50 ms on average). With `max_frame_wait` set, a frame that
has waited longer than that (receipt by `submit` -> the thread takes it, on `clock`) is skipped, counted in
`skipped`, and the thread waits for the next one: fewer inferences per second for a model slower than the camera,
each from a fresher image. 0 (default): the newest frame at once.

For a model that reads the robot state (`Policy.uses_state`, `vision.state_input`) the node passes `state_at`:
each call then gets `state=state_at(stamp)`, the state when the frame was taken (mole_ros.state_input). A state
that is missing or too old (`state_at` raises InputError) means no inference for that frame: the same failure
path (drop queued actions, hold, report). Without `state_at`, `infer` is called without `state`, as before.

The policy is usually a `mole_inference.runtime.process_policy.ProcessPolicy`: the model runs in a worker process
and this thread only hands it the frame and waits on a pipe (no GIL held), so the control thread never queues
behind model work. A worker that crashed, hung past its deadline or is still restarting makes `infer` raise
WorkerError at once; that goes through the same failure path (drop queued actions, hold, report). With an
in-process policy (`inference_process: false`, tests) the model runs on this thread.

Generations. `set_instruction` (on a change), `clear`, `reset` and `stop` start a new generation and drop the
queued actions. Each inference is tagged with the generation current when it read its instruction; a chunk
whose generation is out of date when it finishes is dropped (counted in `stale`), so no step computed for an
old instruction or before a reset ever runs. The tag check and the push happen under the same lock as the
generation change and the clear, so there is no window between them.

`Policy.reset` never runs concurrently with `Policy.infer`: both run under one policy lock. A reset requested
while an inference is in flight is left pending and done by the worker thread before its next call; requested
while the model is idle, it runs at once on the caller's thread (the lock is only tried, never waited for, so
a ROS callback never blocks on a running inference).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mole_inference.control import ControlLoop
from mole_inference.errors import InputError
from mole_inference.policy.contract import ActionChunk, Policy
from mole_ros.conversions import image_to_rgb

ChunkCallback = Callable[[ActionChunk, float], None]
ErrorCallback = Callable[[str], None]
StateSource = Callable[[float], np.ndarray]  # frame stamp -> robot state then; InputError when it is unknown


class InferenceWorker:
    """One background thread: newest frame -> Policy.infer -> ControlLoop.push_chunk (see module docstring)."""

    def __init__(self, policy: Policy, loop: ControlLoop, clock: Callable[[], float], on_chunk: ChunkCallback,
                 on_error: ErrorCallback, max_image_side: int, torch_threads: int = 1,
                 min_period: float = 0.0, state_at: StateSource | None = None,
                 max_frame_wait: float = 0.0) -> None:
        self.policy = policy
        self.loop = loop
        self.clock = clock
        self.on_chunk = on_chunk
        self.on_error = on_error
        self.max_image_side = max_image_side
        self.torch_threads = torch_threads
        self.min_period = min_period
        self.state_at = state_at  # None: the model reads no state (infer is called without one)
        self.max_frame_wait = max_frame_wait  # s a frame may wait for a busy model (0: no limit); see docstring
        self._cond = threading.Condition()  # guards everything below and orders generation vs. push/clear
        self._policy_lock = threading.Lock()  # held around every policy.infer and policy.reset
        self._frame: tuple[Any, float] | None = None
        self._frame_received = 0.0  # clock() when the mailbox frame was submitted
        self._instruction = ""
        self._generation = 0
        self._reset_pending = False
        self._running = False
        self._epoch = 0  # a thread left over from a timed-out stop exits when it sees a newer epoch
        self._thread: threading.Thread | None = None
        self.calls = 0
        self.failures = 0
        self.stale = 0  # chunks dropped because their generation was out of date when they finished
        self.skipped = 0  # frames that waited longer than max_frame_wait for the model (never inferred)

    @property
    def generation(self) -> int:
        """The current generation (see module docstring)."""
        with self._cond:
            return self._generation

    def set_instruction(self, text: str) -> None:
        """Use `text` from the next inference on; a new instruction drops the queued actions and any chunk
        still being computed, and resets the policy before its next call."""
        with self._cond:
            if text == self._instruction:
                return  # the latched topic repeats itself: nothing dropped
            self._instruction = text
        self.reset()

    def clear(self) -> None:
        """Drop the queued actions and the result of any inference in flight."""
        with self._cond:
            self._generation += 1
            self.loop.clear_chunks()

    def reset(self) -> None:
        """`clear`, then reset the policy: now if it is idle, else on the worker thread before its next call."""
        with self._cond:
            self._generation += 1
            self._reset_pending = True
            self.loop.clear_chunks()
        if self._policy_lock.acquire(blocking=False):
            try:
                self._reset_if_pending()
            finally:
                self._policy_lock.release()

    def submit(self, msg: Any, stamp: float) -> None:
        """Offer a checked Image/CompressedImage taken at `stamp`; replaces any frame not yet started."""
        with self._cond:
            self._frame, self._frame_received = (msg, stamp), self.clock()
            self._cond.notify()

    def start(self) -> None:
        """Start the thread (idempotent); the policy is reset before its first call (a new episode)."""
        with self._cond:
            if self._running:
                return
            self._running = True
            self._epoch += 1
            self._generation += 1
            self._reset_pending = True
            epoch = self._epoch
        self._thread = threading.Thread(target=self._run, args=(epoch,), name="mole_inference", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the current call (waits up to `timeout` seconds); its result, if any, is dropped."""
        with self._cond:
            self._running = False
            self._frame = None
            self._generation += 1
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _reset_if_pending(self) -> None:
        """Reset the policy if a reset is pending; the caller holds the policy lock."""
        with self._cond:
            pending, self._reset_pending = self._reset_pending, False
        if pending:
            try:
                self.policy.reset()
            except Exception as err:  # a broken reset must not kill the thread nor the caller's callback
                self._fail(f"policy reset failed: {type(err).__name__}: {err}")

    def _alive(self, epoch: int) -> bool:
        return self._running and self._epoch == epoch

    def _next(self, epoch: int) -> tuple[Any, float] | None:
        with self._cond:
            while True:
                while self._alive(epoch) and (self._frame is None or not self._instruction):
                    self._cond.wait(0.5)
                if not self._alive(epoch):
                    return None
                frame, self._frame = self._frame, None
                if self.max_frame_wait <= 0 or self.clock() - self._frame_received <= self.max_frame_wait:
                    return frame
                self.skipped += 1  # waited too long for the busy model: take the next one

    def _run(self, epoch: int) -> None:
        if self.torch_threads > 0 and "torch" in sys.modules:
            # fewer intra-op threads: less contention with the control timer on small CPUs
            sys.modules["torch"].set_num_threads(self.torch_threads)
        while True:
            frame = self._next(epoch)
            if frame is None:
                return
            started = time.monotonic()
            self._infer(*frame)
            rest = self.min_period - (time.monotonic() - started)
            if rest > 0:
                time.sleep(rest)

    def _infer(self, msg: Any, stamp: float) -> None:
        try:
            rgb = image_to_rgb(msg, self.max_image_side)
        except InputError as err:
            self._fail(f"frame dropped: {err}")
            return
        extra: dict[str, np.ndarray] = {}  # no `state` argument at all for a model that reads none
        if self.state_at is not None:
            try:
                extra["state"] = self.state_at(stamp)
            except InputError as err:
                self._fail(f"no inference, holding: {err}")
                return
        with self._policy_lock:
            self._reset_if_pending()
            with self._cond:  # instruction and generation read together: the tag matches the instruction
                instruction, generation = self._instruction, self._generation
            self.loop.inference_started(self.clock())
            try:
                chunk = self.policy.infer(rgb, instruction, **extra)
            except Exception as err:  # any model failure: hold, report, keep serving
                self._fail(f"inference failed: {type(err).__name__}: {err}")
                return
            finally:
                self.loop.inference_finished(self.clock())
                self.calls += 1
        if not chunk.is_finite:
            self._fail("model produced NaN/inf actions: chunk dropped, holding")
            return
        with self._cond:  # checked and pushed under the lock that orders set_instruction/clear/reset
            if generation != self._generation:
                self.stale += 1
                return
            try:
                self.loop.push_chunk(chunk.actions, stamp, self.clock())
            except InputError as err:
                rejected = f"chunk rejected: {err}"
            else:
                rejected = ""
        if rejected:
            self._fail(rejected)
            return
        self.on_chunk(chunk, stamp)

    def _fail(self, message: str) -> None:
        self.failures += 1
        self.loop.clear_chunks()
        self.on_error(message)
