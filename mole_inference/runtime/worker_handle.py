"""One inference worker process as the proxy sees it: the handle that `ProcessPolicy` (process_policy.py) supervises.

`WorkerHandle` owns one spawned process and the proxy's end of its pipe: its start-up messages ("warm", then the
policy's attributes once built), one request/reply round trip with a timeout, and ending it (pipe closed, SIGTERM,
SIGKILL after `grace`) with a text that says how it exited. `WorkerResources` owns what must be released even if
the proxy is never closed: every started process (registered before it starts, by `launch`) and the shared-memory
frame buffer. Decisions about the policy (when to restart, promoting the spare, restart timings) stay in the proxy;
the child's side and the message protocol live in process_worker.py.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any

from mole_inference.errors import WorkerError
from mole_inference.runtime.process_worker import serve


@dataclass(eq=False)  # compared by identity (list.remove, `is`)
class WorkerHandle:
    """One started worker process and the proxy's end of its pipe; `grace`: seconds it gets to exit when asked."""

    process: Any  # multiprocessing SpawnProcess
    conn: Connection
    grace: float
    warm: bool = False  # its modules are imported (the "warm" message was received)
    failure: BaseException | None = None  # why it stopped while starting, once known

    @property
    def pid(self) -> int:
        """The process id (0 before it started)."""
        return self.process.pid or 0

    def exit_text(self) -> str:
        """How the process ended, for messages: "exit code N", "killed by SIGKILL" or "still running"."""
        code = self.process.exitcode
        if code is None:
            return "still running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    # ------------------------------------------------------------------ start-up
    def warm_up(self, timeout: float) -> bool:
        """True once the worker has imported its modules (waiting up to `timeout`); raises why it stopped instead."""
        if self.failure is not None:
            raise self.failure
        if not self.warm and self.receive(timeout)[0] is not None:
            self.warm = True  # the first message after start-up is "warm" (or an error, raised)
        if self.warm and not self.process.is_alive():  # a spare can die while it waits (OOM killer, a test)
            self.failure = WorkerError(f"inference worker (pid {self.pid}) exited ({self.exit_text()})")
            raise self.failure
        return self.warm

    def build(self, factory: Any, kwargs: dict[str, Any], deadline: float, startup_timeout: float) -> dict[str, Any]:
        """Send the factory to the warm worker and wait (until `deadline`) for its policy's attributes;
        `startup_timeout` only words the error."""
        with contextlib.suppress(OSError):  # it died: the receive below says how
            self.conn.send(("build", factory, kwargs))
        kind, payload = self.receive(max(0.0, deadline - time.monotonic()))
        if kind is None:
            raise WorkerError(f"inference worker (pid {self.pid}) not ready after {startup_timeout:g} s")
        return payload

    def receive(self, timeout: float) -> tuple[str | None, Any]:
        """The next start-up message within `timeout`, (None, None) if none; raises (and remembers) the worker's
        error, or a WorkerError saying how it exited."""
        try:
            if not self.conn.poll(timeout):
                return None, None
            kind, payload = self.conn.recv()
        except (EOFError, OSError):
            self.process.join(self.grace)  # reaped first: the exit code says how it ended
            kind = "error"
            payload = WorkerError(f"inference worker (pid {self.pid}) exited while starting ({self.exit_text()})")
        if kind == "error":
            self.failure = payload
            raise payload
        return kind, payload

    # ------------------------------------------------------------------ serving
    def ask(self, request: tuple, timeout: float) -> tuple[str, Any]:
        """Send `request`, wait up to `timeout` for the reply: ("ok" or "raised", payload); ("hung", None) if none
        came, ("died", None) if the pipe broke (the process is reaped first, so `exit_text` says how)."""
        try:
            self.conn.send(request)
            answered = self.conn.poll(timeout)  # EOF counts as readable: a crash returns at once
            kind, payload = self.conn.recv() if answered else ("hung", None)
        except (EOFError, OSError):
            self.process.join(self.grace)
            return "died", None
        return kind, payload

    # ------------------------------------------------------------------ ending
    def stop(self, polite: bool) -> None:
        """End the worker: polite = close the pipe and let it exit (it is idle); then SIGTERM, SIGKILL after grace."""
        proc = self.process
        if polite:
            self.conn.close()
            proc.join(self.grace)
        if proc.is_alive():
            proc.terminate()
            proc.join(self.grace)
        if proc.is_alive():
            proc.kill()
            proc.join()
        self.conn.close()
        proc.close()

    def kill(self) -> None:
        """SIGKILL a worker that may already be gone or closed (reaped later by whoever stops it)."""
        with contextlib.suppress(ValueError):  # process object already closed
            if self.process.is_alive():
                self.process.kill()


@dataclass
class WorkerResources:
    """What must be released even if the proxy is never closed: started processes and the shared memory."""

    workers: list[WorkerHandle] = field(default_factory=list)
    shm: SharedMemory | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def launch(self, ctx: Any, args: tuple, grace: float) -> WorkerHandle:
        """Start a worker process (registered here first) running process_worker.serve(conn, *args); it imports,
        says "warm" and waits to build. `ctx`: a "spawn" multiprocessing context."""
        parent, child = ctx.Pipe(duplex=True)
        process = ctx.Process(target=serve, args=(child, *args), name="mole_inference_worker", daemon=True)
        worker = WorkerHandle(process, parent, grace)
        with self.lock:
            self.workers.append(worker)
        try:
            process.start()
        except BaseException:
            with self.lock:
                self.workers.remove(worker)
            parent.close()
            raise
        finally:
            child.close()
        return worker

    def discard(self, worker: WorkerHandle) -> None:
        """Unregister `worker` and stop it at once (SIGTERM, SIGKILL after its grace)."""
        with self.lock:
            if worker in self.workers:
                self.workers.remove(worker)
        worker.stop(polite=False)

    def release(self) -> None:
        """Stop every worker and unlink the shared memory (close(), garbage collection, interpreter exit)."""
        with self.lock:
            workers, self.workers = self.workers, []
            shm, self.shm = self.shm, None
        for worker in workers:
            with contextlib.suppress(ValueError):  # already stopped and closed by a restart
                worker.stop(polite=True)
        if shm is not None:
            shm.close()
            shm.unlink()
