"""`mole_camera`: OpenCV capture (GoPro as webcam, HDMI capture card, video file) -> sensor_msgs/Image.

A lifecycle node (it owns hardware): configure reads parameters, activate opens the device and starts the
capture thread, deactivate stops it and releases the device. Frames are stamped right after `read()`
returns (capture time as seen by this host; a GoPro's own 0.5-0.7 s pipeline delay is invisible here, so
the watchdog's `max_image_age` must be set with it in mind). When `read()` fails (unplugged, end of a file),
the device is released and reopened every `reconnect_period` seconds until it delivers again; a file loops.
The capture source is injectable (`capture_factory`) so tests use a fake device.
Diagnostics report the measured frame rate, the age of the newest frame and the reconnect count.
"""

from __future__ import annotations

import array
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from sensor_msgs.msg import CompressedImage, Image

from mole_inference.data import schema
from mole_ros import conversions as conv
from mole_ros import qos
from mole_ros.params import declare_config, help_field, read_config
from mole_ros.telemetry import ERROR, OK, WARN, diagnostic_array

NODE_NAME = "mole_camera"


class Capture(Protocol):
    """What the node needs from a cv2.VideoCapture-like object."""

    def isOpened(self) -> bool: ...
    def read(self) -> tuple[bool, Any]: ...
    def release(self) -> None: ...


@dataclass
class CameraConfig:
    """Parameters of `mole_camera`."""

    source: str = help_field("0", "device index ('0'), /dev/videoN, a video file, URL or GStreamer pipeline")
    width: int = help_field(640, "requested capture width (0 = device default)")
    height: int = help_field(480, "requested capture height (0 = device default)")
    fps: float = help_field(30.0, "requested rate; also the most frames published per second")
    fourcc: str = help_field("MJPG", "requested pixel format ('' = device default); GoPro webcams want MJPG")
    frame_id: str = help_field("wrist_camera", "header.frame_id")
    image_topic: str = help_field(schema.IMAGE_TOPIC, "sensor_msgs/Image out (bgr8, no colour conversion)")
    compressed_image_topic: str = help_field(schema.COMPRESSED_IMAGE_TOPIC, "CompressedImage out")
    publish_compressed: bool = help_field(False, "also publish JPEG (for remote viewers and small bags)")
    jpeg_quality: int = help_field(85, "JPEG quality")
    reconnect_period: float = help_field(1.0, "seconds between reopen attempts after a failure")
    max_frame_age: float = help_field(0.5, "diagnostics turn ERROR when the newest frame is older")


def opencv_capture(cfg: CameraConfig) -> Capture:
    """Open `cfg.source` with OpenCV and apply the requested format (best effort: devices may ignore it)."""
    import cv2

    source: int | str = int(cfg.source) if cfg.source.isdigit() else cfg.source
    cap = cv2.VideoCapture(source)
    if cfg.fourcc:
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*cfg.fourcc[:4].ljust(4)))
    if cfg.width and cfg.height:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
    cap.set(cv2.CAP_PROP_FPS, cfg.fps)
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of old ones
    return cap


class CameraNode(LifecycleNode):
    """Captures on its own thread and publishes each frame stamped at capture (see module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, *,
                 capture_factory: Callable[[CameraConfig], Capture] | None = None, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.capture_factory = capture_factory or opencv_capture
        declare_config(self, CameraConfig())
        self.cfg: CameraConfig | None = None
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        self._pubs: list = []
        self._timer = None
        self.frames = 0
        self.reconnects = 0
        self.last_stamp_ns: int | None = None
        self._frame_times: list[float] = []

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Read parameters, create publishers."""
        try:
            self.cfg = cfg = read_config(self, CameraConfig)
        except Exception as err:
            self.get_logger().error(f"configure failed: {err}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"config: {cfg}")
        self._image_pub = self.create_publisher(Image, cfg.image_topic, qos.SENSOR)
        self._jpeg_pub = (self.create_publisher(CompressedImage, cfg.compressed_image_topic, qos.SENSOR)
                          if cfg.publish_compressed else None)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", qos.DIAGNOSTICS)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Start the capture thread and the diagnostics timer."""
        self._running.set()
        self._thread = threading.Thread(target=self._capture_loop, name="mole_camera", daemon=True)
        self._thread.start()
        self._timer = self.create_timer(1.0, self._on_diagnostics)
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Stop capturing and release the device."""
        self._stop()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Drop publishers."""
        for pub in (self._image_pub, self._jpeg_pub, self._diag_pub):
            if pub is not None:
                self.destroy_publisher(pub)
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """Stop capturing."""
        self._stop()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        """Release the device before the node goes away."""
        self._stop()
        super().destroy_node()

    def _stop(self) -> None:
        self._running.clear()
        if self._thread is not None:
            self._thread.join(timeout=3.0)
            self._thread = None
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None

    # ------------------------------------------------------------------ capture thread
    def _open(self) -> Capture | None:
        try:
            cap = self.capture_factory(self.cfg)
            if cap is not None and cap.isOpened():
                return cap
            if cap is not None:
                cap.release()
        except Exception as err:  # a driver error must not end the thread
            self.get_logger().error(f"opening {self.cfg.source!r} raised {err}", throttle_duration_sec=5.0)
        return None

    def _capture_loop(self) -> None:
        cfg = self.cfg
        cap: Capture | None = None
        min_period = 1.0 / cfg.fps if cfg.fps > 0 else 0.0
        next_frame = time.monotonic()
        while self._running.is_set():
            if cap is None:
                cap = self._open()
                if cap is None:
                    self.get_logger().error(f"camera {cfg.source!r} unavailable; retrying every "
                                            f"{cfg.reconnect_period:g} s", throttle_duration_sec=5.0)
                    self._running.wait(cfg.reconnect_period)
                    continue
                self.get_logger().info(f"camera {cfg.source!r} open")
            ok, frame = cap.read()
            stamp_ns = self.get_clock().now().nanoseconds  # capture time: right after read() returns
            if not ok or frame is None or getattr(frame, "size", 0) == 0:
                self.get_logger().warning(f"camera {cfg.source!r} dropped out; reconnecting", throttle_duration_sec=5.0)
                cap.release()
                cap = None
                self.reconnects += 1
                self._running.wait(cfg.reconnect_period)
                continue
            self._publish(frame, stamp_ns)
            next_frame = max(next_frame + min_period, time.monotonic())
            self._running.wait(max(0.0, next_frame - time.monotonic()))
        if cap is not None:
            cap.release()

    def _publish(self, bgr: Any, stamp_ns: int) -> None:
        cfg = self.cfg
        if bgr.ndim == 2:  # grey devices
            import cv2

            bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
        self._image_pub.publish(conv.bgr_to_image(bgr, stamp_ns, cfg.frame_id))
        if self._jpeg_pub is not None:
            import cv2

            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
            if ok:
                msg = CompressedImage(format="jpeg")
                msg.header.stamp = conv.ns_to_stamp(stamp_ns)
                msg.header.frame_id = cfg.frame_id
                msg.data = array.array("B", buf.tobytes())
                self._jpeg_pub.publish(msg)
        self.frames += 1
        self.last_stamp_ns = stamp_ns
        self._frame_times = [*self._frame_times[-59:], stamp_ns * 1e-9]

    def frame_age(self) -> float | None:
        """Seconds since the newest frame was captured (None before the first)."""
        if self.last_stamp_ns is None:
            return None
        return (self.get_clock().now().nanoseconds - self.last_stamp_ns) * 1e-9

    def _on_diagnostics(self) -> None:
        age = self.frame_age()
        times = self._frame_times
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        if age is None:
            level, message = WARN, "no frame yet"
        elif age > self.cfg.max_frame_age:
            level, message = ERROR, f"newest frame is {age:.2f} s old"
        else:
            level, message = OK, "streaming"
        values = {"frame_age_ms": float("nan") if age is None else age * 1e3, "fps": fps,
                  "frames": float(self.frames), "reconnects": float(self.reconnects), "source": self.cfg.source}
        self._diag_pub.publish(diagnostic_array(f"{self.get_name()}: capture", self.cfg.source, level, message,
                                                values, self.get_clock().now().nanoseconds))


def main(args: list[str] | None = None) -> None:
    """Run `mole_camera` alone, configured and activated."""
    from mole_ros.runner import run_nodes

    run_nodes([CameraNode], args)


if __name__ == "__main__":
    main()
