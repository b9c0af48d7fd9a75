"""The inference worker process: what runs in the child that `ProcessPolicy` (process_policy.py) spawns.

The child imports the preload and the factory's module, says "warm", waits for the factory (a warm spare waits
here, without building), builds the policy and then answers one request at a time until the proxy closes its end
of the pipe. It needs no torch itself: the preload and the factory bring it in. Ctrl-C is ignored here (it hits
the whole process group); the proxy decides when the worker ends.

Protocol: tuples over one duplex Pipe, the first item says what the message is.
  start-up, child -> proxy: ("warm", None), then ("ready", info) once built (info: action_dt, chunk_size,
      num_layers, policy_type, uses_state), or ("error", exception) instead of either; the child then exits.
  proxy -> child: ("build", factory, kwargs) once, then ("infer", shm_name, shape, instruction, seed, state) or
      ("reset",); state: None or the robot state as a float64 array (7 values: pickled with the request).
  reply, child -> proxy: ("ok", payload) or ("raised", exception), the policy's own error (the worker keeps
      serving). The "infer" payload is `chunk_to_wire(chunk)`; `chunk_from_wire` rebuilds the ActionChunk.
The frame itself never goes over the pipe: it is read from the named shared-memory segment (re-attached when the
proxy grows it). Exceptions that do not survive pickling travel as WorkerError("Type: text").

This module must not import process_policy (the proxy imports it: the wire format is shared from here).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import signal
import sys
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from mole_inference.errors import WorkerError
from mole_inference.policy.contract import ActionChunk, RoutingDecision


# ---------------------------------------------------------------------------------------------------- wire format
def chunk_to_wire(chunk: ActionChunk) -> tuple[Any, ...]:
    """The payload of an "infer" reply: the chunk as plain values (arrays, a tuple, a dict, numbers)."""
    r = chunk.routing
    return (chunk.actions, r.layers, r.probs, r.total_layers, chunk.timings_ms, chunk.action_dt)


def chunk_from_wire(payload: tuple[Any, ...], **timings_ms: float) -> ActionChunk:
    """The ActionChunk an "infer" reply carries, its timings extended by `timings_ms` (the proxy's round trip)."""
    actions, layers, probs, total_layers, timings, action_dt = payload
    timings = dict(timings)
    timings.update(timings_ms)
    return ActionChunk(actions, RoutingDecision(tuple(layers), probs, total_layers), timings, action_dt)


# ---------------------------------------------------------------------------------------------------- the child
def _portable(err: BaseException) -> BaseException:
    """`err` if it survives pickling (our typed errors do), else a WorkerError carrying its type and text."""
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:
        return WorkerError(f"{type(err).__name__}: {err}")
    return err


def _import(modules: tuple[str, ...], optional: tuple[str, ...]) -> None:
    """Import `optional` (skipped when it cannot be imported: the build then says why, if it needs it), then
    `modules` (a failure is the factory's error)."""
    for name in optional:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    for name in modules:
        importlib.import_module(name)


def serve(conn: Connection, modules: tuple[str, ...], optional: tuple[str, ...], threads: int,
          niceness: int = 0) -> None:
    """Worker process main: lower its priority by `niceness`, import, say "warm", wait for the factory (a spare
    waits here), build, then answer requests until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C hits the whole process group: the proxy decides
    if niceness > 0:  # on a machine with few cores the control loop's process must win the CPU over the model
        os.nice(niceness)
    try:
        _import(modules, optional)
    except BaseException as err:
        conn.send(("error", _portable(err)))
        return
    conn.send(("warm", None))
    try:
        _, factory, kwargs = conn.recv()  # ("build", factory, kwargs); unpickling the factory may fail
    except (EOFError, OSError):
        return  # a spare that was never promoted: the proxy closed its end
    except BaseException as err:
        conn.send(("error", _portable(err)))
        return
    try:
        policy = factory(**kwargs)
        if threads > 0 and "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
        info = {
            "action_dt": policy.action_dt,
            "chunk_size": policy.chunk_size,
            "num_layers": policy.num_layers,
            "policy_type": type(policy).__name__,
            "uses_state": bool(policy.uses_state),
        }
    except BaseException as err:
        conn.send(("error", _portable(err)))
        return
    conn.send(("ready", info))
    shm: SharedMemory | None = None
    try:
        while True:
            try:
                request = conn.recv()
            except (EOFError, OSError):
                return  # the proxy closed its end (close()) or died
            try:
                if request[0] == "infer":
                    _, name, shape, instruction, seed, state = request
                    if shm is None or shm.name != name:
                        if shm is not None:
                            shm.close()
                        shm = SharedMemory(name)
                    # a copy: the policy owns its input, the buffer is the proxy's to overwrite
                    image = np.ndarray(shape, np.uint8, buffer=shm.buf).copy()
                    # state only when given: a policy written before `state` existed keeps working without one
                    extra = {} if state is None else {"state": state}
                    chunk = policy.infer(image, instruction, seed=seed, **extra)
                    reply = ("ok", chunk_to_wire(chunk))
                else:  # "reset"
                    policy.reset()
                    reply = ("ok", None)
            except Exception as err:  # the policy's own failure: report it, keep serving
                reply = ("raised", _portable(err))
            conn.send(reply)
    finally:
        if shm is not None:
            shm.close()
