"""Control-loop telemetry: timer jitter, inference timings, image-to-command latency, DiagnosticArray."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from mole_ros.conversions import ns_to_stamp


class PeriodStats:
    """Intervals between timer callbacks (monotonic seconds) over a sliding window; jitter = |interval - period|."""

    def __init__(self, period: float, window: int = 3000) -> None:
        self.period = period
        self.intervals: deque[float] = deque(maxlen=window)
        self._last: float | None = None

    def tick(self, t: float) -> None:
        """Record a callback that started at monotonic time `t`."""
        if self._last is not None:
            self.intervals.append(t - self._last)
        self._last = t

    def reset(self) -> None:
        """Forget everything (after a pause, e.g. deactivate)."""
        self.intervals.clear()
        self._last = None

    def summary(self) -> dict[str, float]:
        """rate_hz, jitter p50/p99/max in ms (NaN before two ticks)."""
        if not self.intervals:
            return {"rate_hz": float("nan"), "jitter_p50_ms": float("nan"), "jitter_p99_ms": float("nan"),
                    "jitter_max_ms": float("nan")}
        iv = np.fromiter(self.intervals, dtype=np.float64)
        jitter = np.abs(iv - self.period) * 1e3
        return {"rate_hz": float(1.0 / iv.mean()), "jitter_p50_ms": float(np.percentile(jitter, 50)),
                "jitter_p99_ms": float(np.percentile(jitter, 99)), "jitter_max_ms": float(jitter.max())}


class Telemetry:
    """What the policy node reports: inference ms and rate, layers run, image age, latency, counters."""

    def __init__(self, period: float, window: int = 200) -> None:
        self.control = PeriodStats(period)
        self.inference_ms: deque[float] = deque(maxlen=window)
        self.inference_times: deque[float] = deque(maxlen=window)
        self.latency_ms: deque[float] = deque(maxlen=window)  # image stamp -> first command from that image
        self.layers: tuple[int, ...] = ()
        self.total_layers = 0
        self.bad_frames = 0
        self.failed_inferences = 0
        self._pending_stamp: float | None = None
        self._lock = threading.Lock()

    def chunk_done(self, total_ms: float, layers: tuple[int, ...], total_layers: int, image_stamp: float,
                   now: float) -> None:
        """The worker pushed a chunk computed from the image at `image_stamp` (worker thread)."""
        with self._lock:
            self.inference_ms.append(total_ms)
            self.inference_times.append(now)
            self.layers, self.total_layers = layers, total_layers
            self._pending_stamp = image_stamp

    def command_sent(self, now: float, from_policy: bool) -> None:
        """A command went out at `now`; the first policy command after a new chunk closes a latency sample."""
        with self._lock:
            if from_policy and self._pending_stamp is not None:
                self.latency_ms.append((now - self._pending_stamp) * 1e3)
                self._pending_stamp = None

    def values(self) -> dict[str, float | str]:
        """Everything as name -> value (for diagnostics and benchmarks)."""
        with self._lock:
            inf = list(self.inference_ms)
            times = list(self.inference_times)
            lat = list(self.latency_ms)
            layers, total = self.layers, self.total_layers
        out: dict[str, float | str] = dict(self.control.summary())
        out["inference_ms_last"] = inf[-1] if inf else float("nan")
        out["inference_ms_mean"] = float(np.mean(inf)) if inf else float("nan")
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        out["inference_hz"] = (len(times) - 1) / span if span > 0 else float("nan")
        out["latency_ms_last"] = lat[-1] if lat else float("nan")
        out["latency_ms_p50"] = float(np.percentile(lat, 50)) if lat else float("nan")
        out["layers_run"] = ",".join(str(i) for i in layers)
        out["layers_active"] = float(len(layers))
        out["layers_total"] = float(total)
        out["bad_frames"] = float(self.bad_frames)
        out["failed_inferences"] = float(self.failed_inferences)
        return out


def diagnostic_array(name: str, hardware_id: str, level: bytes, message: str,
                     values: dict[str, float | str], t_ns: int) -> DiagnosticArray:
    """One DiagnosticStatus (`level`: OK/WARN/ERROR, bytes in rclpy) in a stamped DiagnosticArray; floats get 3
    decimals."""
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id)
    status.values = [KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in values.items()]
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = ns_to_stamp(t_ns)
    return msg


OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
