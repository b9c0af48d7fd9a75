"""ProcessPolicy: the Policy contract served by a worker process, so the caller's interpreter does no model work.

Why a process: the model's Python-level work (the layer loop, the DDIM steps) holds the GIL in many short slices,
and a 50 Hz control thread in the same interpreter waits for it (issue #11: p99 jitter of 40 ms with `tiny`).
Here the caller's thread only copies the frame and then waits on a pipe, which releases the GIL.

Layout. One worker process, started with the "spawn" context (no inherited torch, CUDA or thread state; daemon),
imports `preload` (by default torch and the transformers files the backbones use) and the factory's module, then
builds the real policy with `factory(**kwargs)`; the factory must be importable by the child (a module-level
function such as `mole_inference.runtime.load_policy`), so torch and CUDA live only in the worker. Frames go
through one shared-memory buffer owned by the proxy (grown when a larger frame comes, never pickled); the request
(segment name, shape, instruction, seed, the robot state: 7 floats, pickled with it) and the reply (actions,
routing, timings) go over a Pipe. One request at a time (a lock); the caller serializes `infer` and `reset` anyway
(mole_ros.inference_worker). The child's side and the message protocol live in process_worker.py, one worker
process's handle (launch, start-up messages, a request round trip, stopping it) and the cleanup registry in
worker_handle.py; this module is the proxy that decides when to start, promote and replace workers. `uses_state`
is what the worker's policy reported when it was built, like `action_dt` and `chunk_size`.

Warm spare (`spare=True`). A second process is started once the worker is ready; it imports the same modules and
then waits, without building a policy (no second copy of the weights, only the imported code). A restart promotes
it: it receives the factory and kwargs, builds, serves; a new spare is started once it is ready. So a restart pays
the build only, not the interpreter start and the torch import. `status()` says how the last restart went: from
failure detection to ready, and within it stopping the old worker, spawn + import (0 for a warm spare) and build.

Faults. The worker exiting (EOF, broken pipe) or not answering within `timeout` seconds: it is killed (SIGTERM,
SIGKILL after `grace`), a new one is started on a background thread, and the call raises WorkerError saying what
happened. Until the new worker is ready every call raises WorkerError at once (the caller holds) instead of
waiting; `reset` is then a no-op, since the new worker starts with a fresh policy. An exception raised by the
policy itself (e.g. InputError, also for a missing or bad robot state) is re-raised here with its type, and the
worker keeps serving.

Cleanup. `close()` (also run on garbage collection and at exit, via weakref.finalize) stops the worker and the
spare and unlinks the shared memory; `status()` and the attributes `ready`, `restarts`, `last_error`, `worker_pid`
feed diagnostics.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from mole_inference.errors import InputError, WorkerError
from mole_inference.policy.contract import ActionChunk, Policy
from mole_inference.runtime.process_worker import chunk_from_wire
from mole_inference.runtime.worker_handle import WorkerHandle, WorkerResources

log = logging.getLogger(__name__)

PolicyFactory = Callable[..., Policy]
DEFAULT_IMAGE_BYTES = 480 * 640 * 3  # a VGA rgb8 frame: the usual wrist camera needs no growth
# What a torch policy imports while it builds: torch (~1.3 s here) and the transformers model files the backbones
# use (~2.3 s, imported lazily by the model's constructors); with these imported a `tiny` build takes ~0.15 s.
TORCH_PRELOAD = (
    "torch",
    "transformers.models.llama.modeling_llama",
    "transformers.models.dinov2.modeling_dinov2",
    "transformers.models.siglip.modeling_siglip",
    "mole_inference.runtime.torch_backend",
)


@dataclass(frozen=True)
class RestartTiming:
    """How the last restart went: `source` "spare" (a warm spare promoted) or "cold" (a new process); seconds from
    failure detection to ready (`total_s`), and within it: stopping the old worker, spawn + import (0 for a warm
    spare), build. `total_s` also counts retries after a failed start."""

    source: str
    total_s: float
    stop_s: float
    spawn_s: float
    build_s: float


class ProcessPolicy(Policy):
    """A Policy whose model runs in a supervised worker process (see module docstring).

    `factory(**kwargs)` builds the real policy in the worker; `timeout`: seconds one call may take before the
    worker counts as hung; `startup_timeout`: seconds to import and build the policy; `threads`: torch intra-op
    threads in the worker (0 = torch default); `spare`: keep a warm spare process for fast restarts; `preload`:
    modules the worker (and the spare) import before the factory's own module, skipped when not installed. The
    constructor waits until the worker is ready and re-raises its error.
    """

    def __init__(
        self,
        factory: PolicyFactory,
        kwargs: dict[str, Any] | None = None,
        *,
        timeout: float = 10.0,
        startup_timeout: float = 600.0,
        threads: int = 0,
        grace: float = 1.0,
        image_bytes: int = DEFAULT_IMAGE_BYTES,
        spare: bool = True,
        preload: tuple[str, ...] = TORCH_PRELOAD,
        niceness: int = 0,
    ) -> None:
        if timeout <= 0 or startup_timeout <= 0 or grace <= 0:
            raise ValueError(f"timeout={timeout}, startup_timeout={startup_timeout}, grace={grace}: must be > 0")
        self.factory, self.kwargs = factory, dict(kwargs or {})
        self.timeout, self.startup_timeout, self.threads, self.grace = timeout, startup_timeout, threads, grace
        self.spare, self.preload = spare, tuple(preload)
        self.niceness = niceness  # added to the worker's OS nice value: the caller's control loop wins the CPU
        # the factory's module by name: a spare imports it before it knows the factory ("__main__" is there already)
        self._modules = () if factory.__module__ in (None, "__main__") else (factory.__module__,)
        self.restarts = 0  # workers started after the first
        self.last_restart: RestartTiming | None = None
        self.calls = 0
        self.last_error = ""
        self._ctx = mp.get_context("spawn")
        self._lock = threading.Lock()  # one request on the pipe at a time; guards _worker
        self._closed = threading.Event()
        self._restarter: threading.Thread | None = None
        self._spare: WorkerHandle | None = None  # started, not built; guarded by _spare_lock
        self._spare_lock = threading.Lock()
        self._res = WorkerResources(shm=SharedMemory(create=True, size=max(int(image_bytes), 1)))
        self._finalizer = weakref.finalize(self, self._res.release)
        try:
            self._worker: WorkerHandle | None
            self._worker, _, spawn_s, build_s = self._start()
        except BaseException:
            self._finalizer()
            raise
        log.info(
            "inference worker ready (pid %d): spawn+import %.2f s, build %.2f s", self.worker_pid, spawn_s, build_s
        )
        self._start_spare()
        self.policy_type = self._info["policy_type"]
        self.action_dt = self._info["action_dt"]
        self.chunk_size = self._info["chunk_size"]
        self.num_layers = self._info["num_layers"]

    # ------------------------------------------------------------------ state
    @property
    def ready(self) -> bool:
        """True while a worker is up and serving (False while it restarts, and after close)."""
        return self._worker is not None and not self._closed.is_set()

    @property
    def worker_pid(self) -> int:
        """The serving worker's pid (0 while restarting or closed)."""
        worker = self._worker
        return worker.pid if worker is not None else 0

    @property
    def shm_name(self) -> str:
        """Name of the shared-memory segment that carries frames ('' after close)."""
        shm = self._res.shm
        return shm.name if shm is not None else ""

    @property
    def spare_pid(self) -> int:
        """The spare's pid (0 when there is none: off, promoted and not yet replaced, or closed)."""
        spare = self._spare
        return spare.pid if spare is not None else 0

    def spare_state(self) -> str:
        """The spare: off, none (promoted, the next not started yet), starting (importing), warm, or lost."""
        if not self.spare:
            return "off"
        with self._spare_lock:
            spare = self._spare
            if spare is None or self._closed.is_set():
                return "none"
            try:
                return "warm" if spare.warm_up(0.0) else "starting"
            except Exception:
                return "lost"  # died or failed to import: the next restart starts cold

    def status(self) -> dict[str, str | float]:
        """Diagnostics: ready, pid, restarts, calls, last error, spare, how the last restart went (key -> value)."""
        state = "closed" if self._closed.is_set() else ("ready" if self.ready else "restarting")
        timing = self.last_restart or RestartTiming("none", 0.0, 0.0, 0.0, 0.0)
        return {
            "worker_state": state,
            "worker_pid": float(self.worker_pid),
            "worker_restarts": float(self.restarts),
            "worker_calls": float(self.calls),
            "worker_last_error": self.last_error or "none",
            "worker_spare": self.spare_state(),
            "worker_restart_from": timing.source,
            "worker_restart_s": timing.total_s,
            "worker_restart_stop_s": timing.stop_s,
            "worker_restart_spawn_s": timing.spawn_s,
            "worker_restart_build_s": timing.build_s,
        }

    @property
    def uses_state(self) -> bool:
        """Whether the worker's model reads the robot state (`vision.state_input`), as the worker reported it."""
        return bool(self._info.get("uses_state", False))

    # ------------------------------------------------------------------ Policy contract
    def infer(self, image: np.ndarray, instruction: str, *, seed: int | None = None,
              state: np.ndarray | None = None) -> ActionChunk:
        """See Policy.infer; raises WorkerError when the worker crashed, hung or is restarting. `state` goes to
        the worker with the request; the worker's policy checks it (InputError comes back as InputError)."""
        image = _check_image(image)
        if not isinstance(instruction, str):
            raise InputError(f"instruction: expected str, got {type(instruction).__name__}")
        if seed is not None and not isinstance(seed, (int, np.integer)):
            raise InputError(f"seed: expected int or None, got {type(seed).__name__}")
        state = _state_array(state)
        with self._lock:
            worker = self._serving()
            name = self._write_image(image)
            t0 = time.perf_counter()
            request = ("infer", name, image.shape, instruction, None if seed is None else int(seed), state)
            reply = self._call(worker, request, "inference")
            self.calls += 1
        return chunk_from_wire(reply, roundtrip=(time.perf_counter() - t0) * 1e3)

    def reset(self) -> None:
        """Reset the worker's policy; a no-op while it restarts (the new one starts fresh)."""
        with self._lock:
            if self._closed.is_set():
                raise WorkerError("inference worker closed")
            if self._worker is None:
                return
            self._call(self._worker, ("reset",), "reset")

    def close(self) -> None:
        """Stop the worker, the spare (and any restart in progress) and free the shared memory; idempotent."""
        self._closed.set()
        with self._res.lock:
            starting = [w for w in self._res.workers if w is not self._worker]
        for worker in starting:  # the spare, or a restart waiting for its worker to build: end them now
            worker.kill()
        if self._restarter is not None:
            self._restarter.join()
        with self._spare_lock:
            self._spare = None  # killed above or stopped by the finalizer below
        if not self._lock.acquire(timeout=self.grace):  # a call in flight, maybe hung: end it rather than wait
            worker = self._worker
            if worker is not None:
                worker.kill()
            self._lock.acquire()
        try:
            self._worker = None
            self._finalizer()
        finally:
            self._lock.release()

    def __enter__(self) -> ProcessPolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _serving(self) -> WorkerHandle:
        """The serving worker, or WorkerError at once (closed, or restarting); the caller holds the lock."""
        if self._closed.is_set():
            raise WorkerError("inference worker closed")
        if self._worker is None:
            raise WorkerError(f"inference worker restarting after: {self.last_error}")
        return self._worker

    def _write_image(self, image: np.ndarray) -> str:
        """Copy `image` into the shared buffer, replacing it by a larger one first if needed; its name."""
        res = self._res
        if image.nbytes > res.shm.size:
            grown = SharedMemory(create=True, size=image.nbytes)
            with res.lock:
                old, res.shm = res.shm, grown
            old.close()  # the worker keeps its mapping of the old one until it attaches the new name
            old.unlink()
            log.info("frame buffer grown to %d bytes for a %s frame", image.nbytes, image.shape)
        view = np.ndarray(image.shape, np.uint8, buffer=res.shm.buf)
        view[...] = image
        del view  # no exported pointer may outlive the call (SharedMemory.close would refuse)
        return res.shm.name

    def _call(self, worker: WorkerHandle, request: tuple, what: str) -> Any:
        """Send `request`, wait up to `timeout` for the reply; a dead or hung worker is replaced (WorkerError)."""
        kind, payload = worker.ask(request, self.timeout)
        if kind == "died":
            self._replace(worker, f"inference worker (pid {worker.pid}) died during {what} ({worker.exit_text()})")
        if kind == "hung":
            self._replace(
                worker, f"{what} took longer than {self.timeout:g} s: inference worker (pid {worker.pid}) killed"
            )
        if kind == "raised":
            raise payload
        return payload

    def _replace(self, worker: WorkerHandle, reason: str) -> None:
        """Drop `worker`, restart in the background, raise WorkerError(reason); the caller holds the lock."""
        detected = time.monotonic()
        self._worker = None
        if self._closed.is_set():  # close() ended the call: nothing to restart, nothing to report
            raise WorkerError("inference worker closed")
        self.last_error = reason
        log.error("%s; restarting it", reason)
        self._restarter = threading.Thread(
            target=self._restart, args=(worker, detected), name="mole_worker_restart", daemon=True
        )
        self._restarter.start()
        raise WorkerError(f"{reason}; restarting it, hold meanwhile")

    def _restart(self, old: WorkerHandle, detected: float) -> None:
        """Background: kill `old`, then start workers (the spare first; backing off on failure) until one is ready
        or closed; then start the next spare."""
        self._res.discard(old)
        stopped = time.monotonic()
        delay = 0.5
        while not self._closed.is_set():
            try:
                worker, source, spawn_s, build_s = self._start()
            except Exception as err:
                if self._closed.is_set():
                    return  # close() ended the worker it was starting
                self.last_error = f"restart failed: {type(err).__name__}: {err}"
                log.error("inference worker %s; retrying in %.1f s", self.last_error, delay)
                if self._closed.wait(delay):
                    return
                delay = min(2 * delay, 30.0)
                continue
            with self._lock:
                if self._closed.is_set():
                    return  # closed while it started: close() left it to the finalizer, which stops it
                self._worker = worker
                self.restarts += 1
                timing = RestartTiming(source, time.monotonic() - detected, stopped - detected, spawn_s, build_s)
                self.last_restart = timing
            log.warning("inference worker restarted (pid %d) from %s: %s", worker.pid, source, timing)
            self._start_spare()
            return

    def _start(self) -> tuple[WorkerHandle, str, float, float]:
        """A ready worker: the spare promoted (if there is a usable one) or a new process; with its source and the
        seconds spent in spawn + import (0 for a warm spare) and in build. Re-raises the factory's error."""
        t0 = time.monotonic()
        deadline = t0 + self.startup_timeout
        with self._spare_lock:
            worker, self._spare = self._spare, None
        source, waited = "spare", False
        if worker is not None:
            try:
                waited = not worker.warm_up(0.0)  # not warm yet: wait for its imports (counted as spawn)
                if waited and not worker.warm_up(max(0.0, deadline - time.monotonic())):
                    raise WorkerError(f"not warm after {self.startup_timeout:g} s")
            except Exception as err:
                self._res.discard(worker)
                if self._closed.is_set():
                    raise
                log.warning("spare inference worker (pid %d) unusable (%s): starting a new one", worker.pid, err)
                worker = None
        if worker is None:
            source, waited, worker = "cold", True, self._launch()
        try:
            if not worker.warm_up(max(0.0, deadline - time.monotonic())):
                raise WorkerError(f"inference worker (pid {worker.pid}) not ready after {self.startup_timeout:g} s")
            t1 = time.monotonic()
            self._info = worker.build(self.factory, self.kwargs, deadline, self.startup_timeout)
        except BaseException:
            self._res.discard(worker)
            raise
        return worker, source, (t1 - t0) if waited else 0.0, time.monotonic() - t1

    def _start_spare(self) -> None:
        """Start the next spare (it imports on its own; nobody waits for it), unless off or closed."""
        if not self.spare or self._closed.is_set():
            return
        try:
            spare = self._launch()
        except Exception as err:  # a restart then starts cold; nothing else depends on the spare
            log.warning("spare inference worker not started: %s: %s", type(err).__name__, err)
            return
        with self._spare_lock:
            self._spare = spare

    def _launch(self) -> WorkerHandle:
        """Start a worker process with this policy's settings; it imports, says "warm" and waits to build."""
        args = (self._modules, self.preload, self.threads, self.niceness)
        return self._res.launch(self._ctx, args, self.grace)


def _state_array(state: Any) -> np.ndarray | None:
    """`state` as a float64 array to send (its length and values are the worker's policy's to check), or None;
    InputError for something that is not numbers, so nothing unpicklable or odd reaches the pipe."""
    if state is None:
        return None
    try:
        return np.array(state, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"robot state: expected numbers (the measured pose [x, y, z, qx, qy, qz, qw]), got "
                         f"{type(state).__name__} ({err})") from None


def _check_image(image: Any) -> np.ndarray:
    """The contract's image: an (H, W, 3) uint8 array with H, W > 0; InputError naming what is wrong otherwise."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"image: expected a numpy array (H, W, 3) uint8, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(f"image: expected dtype uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"image: expected shape (H, W, 3), got {image.shape}")
    return image
