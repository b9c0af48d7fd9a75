"""A fixed-rate control thread: calls `tick()` on absolute deadlines, outside the rclpy executor.

Executor timers in rclpy fire only when an executor thread gets round to them; with image, pose and service
callbacks in the same process their period stretches by tens of milliseconds. This thread sleeps to the next
deadline itself (publishing from any thread is safe in rclpy), so only the GIL stands between it and its period.
A late tick is not repeated: the next deadline is the next one still in the future (no bursts after a stall).

`rt_priority` > 0 asks Linux for SCHED_FIFO at that priority for this thread only, so a busy CPU (the model's
worker process, a compiler, a browser) cannot delay the tick: on a few cores the OS scheduler, not the GIL, is
what stretches the period once the model runs in its own process. franka_ros2 workstations already allow it
(the realtime group with `rtprio 99` in /etc/security/limits.conf, as libfranka's setup asks); where it is not
permitted the thread says so once and runs at normal priority (`rt_active` tells which).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class ControlThread:
    """Runs `tick` every `period` seconds on its own thread until `stop()`."""

    def __init__(self, period: float, tick: Callable[[], None], name: str = "mole_control",
                 rt_priority: int = 0) -> None:
        if period <= 0:
            raise ValueError(f"period={period!r}: must be > 0")
        if not 0 <= rt_priority <= 99:
            raise ValueError(f"rt_priority={rt_priority!r}: must be 0 (off) .. 99")
        self.period = period
        self.rt_priority = rt_priority
        self.rt_active = False  # SCHED_FIFO was granted to the thread
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.skipped = 0  # deadlines missed entirely (the thread was stalled longer than a period)

    def start(self) -> None:
        """Start ticking one period from now."""
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop and join (no tick runs after this returns, unless the join timed out)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _go_realtime(self) -> None:
        """SCHED_FIFO for the calling thread (pid 0 is the calling thread on Linux), or a warning why not."""
        if self.rt_priority <= 0:
            return
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.rt_priority))
            self.rt_active = True
        except (AttributeError, OSError) as exc:  # not Linux, or no rtprio allowance for this user
            log.warning("control thread stays at normal priority (SCHED_FIFO %d refused: %s); on the robot's PC add "
                        "the user to a group with 'rtprio 99' in /etc/security/limits.conf", self.rt_priority, exc)

    def _run(self) -> None:
        self._go_realtime()
        deadline = time.monotonic() + self.period
        while not self._stop.is_set():
            delay = deadline - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            try:
                self._tick()
            except Exception:  # the tick handles its own errors; this only keeps the clock alive
                log.exception("control tick raised")
            deadline += self.period
            now = time.monotonic()
            if deadline <= now:  # stalled past whole periods: skip them, keep the phase
                missed = int((now - deadline) / self.period) + 1
                self.skipped += missed
                deadline += missed * self.period
