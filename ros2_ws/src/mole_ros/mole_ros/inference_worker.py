"""InferenceWorker: runs the policy on the newest camera frame in its own thread, never in a ROS callback.

Subscriptions hand over frames with `submit` (a one-slot mailbox: an unprocessed frame is replaced by a newer
one, so the model always sees the newest image and a slow model never builds a queue). The thread decodes the
frame, calls `Policy.infer`, and pushes the chunk into the ControlLoop; the control timer never waits for it.
A failing call (bad frame, exception, NaN/inf in the chunk) drops the queued actions, so the loop holds on its
next tick, and is reported through `on_error`; the thread keeps running.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from mole_inference.control import ControlLoop
from mole_inference.errors import InputError
from mole_inference.policy.contract import ActionChunk, Policy
from mole_ros.conversions import image_to_rgb

ChunkCallback = Callable[[ActionChunk, float], None]
ErrorCallback = Callable[[str], None]


class InferenceWorker:
    """One background thread: newest frame -> Policy.infer -> ControlLoop.push_chunk (see module docstring)."""

    def __init__(self, policy: Policy, loop: ControlLoop, clock: Callable[[], float], on_chunk: ChunkCallback,
                 on_error: ErrorCallback, max_image_side: int, torch_threads: int = 1,
                 min_period: float = 0.0) -> None:
        self.policy = policy
        self.loop = loop
        self.clock = clock
        self.on_chunk = on_chunk
        self.on_error = on_error
        self.max_image_side = max_image_side
        self.torch_threads = torch_threads
        self.min_period = min_period
        self._cond = threading.Condition()
        self._frame: tuple[Any, float] | None = None
        self._instruction = ""
        self._running = False
        self._thread: threading.Thread | None = None
        self.calls = 0
        self.failures = 0

    def set_instruction(self, text: str) -> None:
        """Use `text` from the next inference on; a new instruction drops the queued actions."""
        with self._cond:
            changed = text != self._instruction
            self._instruction = text
        if changed:
            self.loop.clear_chunks()
            self.policy.reset()

    def submit(self, msg: Any, stamp: float) -> None:
        """Offer a checked Image/CompressedImage taken at `stamp`; replaces any frame not yet started."""
        with self._cond:
            self._frame = (msg, stamp)
            self._cond.notify()

    def start(self) -> None:
        """Start the thread (idempotent)."""
        if self._thread is not None:
            return
        self._running = True
        self._thread = threading.Thread(target=self._run, name="mole_inference", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the current call (waits up to `timeout` seconds)."""
        with self._cond:
            self._running = False
            self._frame = None
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _next(self) -> tuple[Any, float, str] | None:
        with self._cond:
            while self._running and (self._frame is None or not self._instruction):
                self._cond.wait(0.5)
            if not self._running:
                return None
            (msg, stamp), self._frame = self._frame, None
            return msg, stamp, self._instruction

    def _run(self) -> None:
        if self.torch_threads > 0 and "torch" in sys.modules:
            # fewer intra-op threads: less contention with the control timer on small CPUs
            sys.modules["torch"].set_num_threads(self.torch_threads)
        while True:
            job = self._next()
            if job is None:
                return
            started = time.monotonic()
            self._infer(*job)
            rest = self.min_period - (time.monotonic() - started)
            if rest > 0:
                time.sleep(rest)

    def _infer(self, msg: Any, stamp: float, instruction: str) -> None:
        try:
            rgb = image_to_rgb(msg, self.max_image_side)
        except InputError as err:
            self._fail(f"frame dropped: {err}")
            return
        self.loop.inference_started(self.clock())
        try:
            chunk = self.policy.infer(rgb, instruction)
        except Exception as err:  # any model failure: hold, report, keep serving
            self._fail(f"inference failed: {type(err).__name__}: {err}")
            return
        finally:
            self.loop.inference_finished(self.clock())
            self.calls += 1
        if not chunk.is_finite:
            self._fail("model produced NaN/inf actions: chunk dropped, holding")
            return
        try:
            self.loop.push_chunk(chunk.actions, stamp, self.clock())
        except InputError as err:
            self._fail(f"chunk rejected: {err}")
            return
        self.on_chunk(chunk, stamp)

    def _fail(self, message: str) -> None:
        self.failures += 1
        self.loop.clear_chunks()
        self.on_error(message)
