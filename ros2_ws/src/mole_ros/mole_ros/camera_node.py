"""`mole_camera`: OpenCV capture (UVC/V4L2 webcam, HDMI capture card, GoPro UDP stream, file) -> Image.

A lifecycle node (it owns hardware): configure reads parameters and the calibration, activate opens the
device, starts the capture thread and publishes the static TF of the camera mount, deactivate stops it and
releases the device. Each frame is stamped `time read() returned - latency`: `latency` is the camera's own
pipeline delay (a webcam-mode GoPro: 0.5-0.7 s; measure it with scripts/camera_latency_probe.py), so header
stamps are capture times and the scheduler and watchdog downstream age frames from the moment of exposure.
Every frame goes out with a sensor_msgs/CameraInfo of the same stamp and frame on the sibling `camera_info`
topic (calibration YAML, else an uncalibrated pinhole from `horizontal_fov_deg`).
When `read()` fails (unplugged, end of a file, stream gone), the device is released and reopened every
`reconnect_period` seconds until it delivers again; a file loops. A source that cannot be opened is an
ERROR on /diagnostics and in the log, never a crash. The capture source is injectable (`capture_factory`).
"""

from __future__ import annotations

import array
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TransformStamped
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from mole_inference.data import schema
from mole_inference.data.camera_calibration import (
    CameraIntrinsics,
    load_calibration,
    pinhole_from_fov,
    quaternion_from_rpy,
)
from mole_inference.errors import ConfigError
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

    source: str = help_field("0", "device index ('0'), /dev/videoN (UVC webcam, HDMI capture card), a video file, "
                                  "a stream URL (GoPro webcam: udp://@0.0.0.0:8554) or a GStreamer pipeline")
    backend: str = help_field("auto", "auto | v4l2 | ffmpeg | gstreamer | any (auto: V4L2 for devices, FFMPEG "
                                      "for URLs, GStreamer for pipelines with '!')")
    latency: float = help_field(0.0, "seconds from exposure to read() returning; frames are stamped read time "
                                     "minus this (GoPro webcam mode: 0.5-0.7 s, measure yours)")
    width: int = help_field(640, "requested capture width (0 = device default)")
    height: int = help_field(480, "requested capture height (0 = device default)")
    fps: float = help_field(30.0, "requested rate; also the most frames published per second")
    fourcc: str = help_field("MJPG", "requested pixel format ('' = device default); GoPro webcams want MJPG")
    frame_id: str = help_field("wrist_camera_optical_frame", "header.frame_id: the optical frame (z forward, "
                                                             "x right, y down)")
    image_topic: str = help_field(schema.IMAGE_TOPIC, "sensor_msgs/Image out (bgr8, no colour conversion)")
    camera_info_topic: str = help_field("", "CameraInfo out ('' = the sibling 'camera_info' of image_topic)")
    calibration_file: str = help_field("", "camera_calibration_parsers YAML ('' = uncalibrated pinhole)")
    horizontal_fov_deg: float = help_field(90.0, "horizontal field of view of the uncalibrated pinhole")
    publish_tf: bool = help_field(True, "publish the static TF parent_frame -> frame_id on /tf_static")
    parent_frame: str = help_field("fr3_hand", "the frame the camera is mounted on (flange: fr3_link8)")
    mount_xyz: list = field(default_factory=lambda: [0.0, 0.0, 0.0],
                            metadata={"help": "optical frame origin in parent_frame, metres"})
    mount_rpy: list = field(default_factory=lambda: [0.0, 0.0, 0.0],
                            metadata={"help": "optical frame orientation in parent_frame, rad (URDF rpy)"})
    compressed_image_topic: str = help_field(schema.COMPRESSED_IMAGE_TOPIC, "CompressedImage out")
    publish_compressed: bool = help_field(False, "also publish JPEG (for remote viewers and small bags)")
    jpeg_quality: int = help_field(85, "JPEG quality")
    reconnect_period: float = help_field(1.0, "seconds between reopen attempts after a failure")
    max_frame_age: float = help_field(0.5, "diagnostics turn ERROR when the newest frame is older (host "
                                           "time since read(), latency excluded)")

    def __post_init__(self) -> None:
        if not 0.0 <= self.latency < 5.0:
            raise ConfigError(f"latency must be in [0, 5) seconds, got {self.latency}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {sorted(BACKENDS)}, got {self.backend!r}")
        for name in ("mount_xyz", "mount_rpy"):
            if len(getattr(self, name)) != 3:
                raise ConfigError(f"{name} must have 3 values, got {getattr(self, name)!r}")
        if self.fps <= 0:
            raise ConfigError(f"fps must be > 0, got {self.fps}")

    def info_topic(self) -> str:
        """`camera_info_topic`, or the `camera_info` sibling of `image_topic` (image_transport's convention)."""
        return self.camera_info_topic or f"{self.image_topic.rsplit('/', 1)[0]}/camera_info"


BACKENDS = {"auto", "v4l2", "ffmpeg", "gstreamer", "any"}


def capture_args(source: str, backend: str) -> tuple[int | str, str]:
    """What to pass cv2.VideoCapture and which backend: digits are V4L2 device indices, URLs go to FFMPEG."""
    target: int | str = int(source) if source.isdigit() else source
    if backend != "auto":
        return target, backend
    if isinstance(target, int) or source.startswith("/dev/video"):
        return target, "v4l2"
    if "://" in source:
        return target, "ffmpeg"  # udp://@0.0.0.0:8554 (GoPro webcam), rtsp://, http://
    if "!" in source:
        return target, "gstreamer"
    return target, "any"  # a video file


def opencv_capture(cfg: CameraConfig) -> Capture:
    """Open `cfg.source` with OpenCV and apply the requested format (best effort: devices may ignore it)."""
    import cv2

    source, backend = capture_args(cfg.source, cfg.backend)
    api = {"v4l2": cv2.CAP_V4L2, "ffmpeg": cv2.CAP_FFMPEG, "gstreamer": cv2.CAP_GSTREAMER, "any": cv2.CAP_ANY}
    cap = cv2.VideoCapture(source, api[backend])
    if backend != "v4l2":  # streams and files: their format is the sender's
        return cap
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
        self.last_error: str = ""
        self._frame_times: list[float] = []
        self._image_pub = self._info_pub = self._tf_pub = self._jpeg_pub = self._diag_pub = None

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Read parameters, create publishers."""
        try:
            self.cfg = cfg = read_config(self, CameraConfig)
        except Exception as err:
            self.get_logger().error(f"configure failed: {err}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"config: {cfg}")
        try:
            self._intrinsics = load_calibration(cfg.calibration_file) if cfg.calibration_file else None
        except ConfigError as err:
            self.get_logger().error(f"configure failed: {err}")
            return TransitionCallbackReturn.FAILURE
        self._info_cache: dict[tuple[int, int], CameraInfo] = {}
        self._image_pub = self.create_publisher(Image, cfg.image_topic, qos.SENSOR)
        self._info_pub = self.create_publisher(CameraInfo, cfg.info_topic(), qos.SENSOR)
        self._tf_pub = self._create_tf_publisher() if cfg.publish_tf else None
        self._jpeg_pub = (self.create_publisher(CompressedImage, cfg.compressed_image_topic, qos.SENSOR)
                          if cfg.publish_compressed else None)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", qos.DIAGNOSTICS)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Start the capture thread and the diagnostics timer."""
        if self._tf_pub is not None:
            from tf2_msgs.msg import TFMessage

            self._tf_pub.publish(TFMessage(transforms=[self.static_transform()]))
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
        for pub in (self._image_pub, self._info_pub, self._tf_pub, self._jpeg_pub, self._diag_pub):
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
        _, backend = capture_args(self.cfg.source, self.cfg.backend)
        try:
            cap = self.capture_factory(self.cfg)
            if cap is not None and cap.isOpened():
                self.last_error = ""
                return cap
            if cap is not None:
                cap.release()
            hint = ("is the GoPro in webcam mode and streaming to this host?" if backend == "ffmpeg"
                    else "check `v4l2-ctl --list-devices` and that no other process holds it")
            self.last_error = f"cannot open {self.cfg.source!r} with the {backend} backend ({hint})"
        except Exception as err:  # a driver error must not end the thread
            self.last_error = f"opening {self.cfg.source!r} raised {type(err).__name__}: {err}"
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
                    self.get_logger().error(f"camera unavailable: {self.last_error}; retrying every "
                                            f"{cfg.reconnect_period:g} s", throttle_duration_sec=5.0)
                    self._running.wait(cfg.reconnect_period)
                    continue
                self.get_logger().info(f"camera {cfg.source!r} open")
            ok, frame = cap.read()
            # capture time = read() return time minus the camera's own pipeline delay
            stamp_ns = self.get_clock().now().nanoseconds - int(cfg.latency * 1e9)
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
        info = self.camera_info(bgr.shape[1], bgr.shape[0])
        info.header.stamp = conv.ns_to_stamp(stamp_ns)
        self._info_pub.publish(info)
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
        """Host seconds since the newest frame was read (None before the first; the latency is not included)."""
        if self.last_stamp_ns is None:
            return None
        return (self.get_clock().now().nanoseconds - self.last_stamp_ns) * 1e-9 - self.cfg.latency

    # ------------------------------------------------------------------ calibration
    def intrinsics(self, width: int, height: int) -> CameraIntrinsics:
        """The calibration for frames of this size (a calibration file of another size is used as is)."""
        if self._intrinsics is not None:
            if (self._intrinsics.width, self._intrinsics.height) != (width, height):
                self.get_logger().error(
                    f"calibration is for {self._intrinsics.width}x{self._intrinsics.height}, frames are "
                    f"{width}x{height}: recalibrate or set width/height", throttle_duration_sec=30.0)
            return self._intrinsics
        return pinhole_from_fov(width, height, self.cfg.horizontal_fov_deg)

    def camera_info(self, width: int, height: int) -> CameraInfo:
        """The CameraInfo sent with a frame of this size (stamp left to the caller), built once per size."""
        msg = self._info_cache.get((width, height))
        if msg is None:
            cal = self.intrinsics(width, height)
            msg = CameraInfo(width=width, height=height, distortion_model=cal.distortion_model,
                             d=list(cal.d), k=list(cal.k), r=list(cal.r), p=list(cal.p))
            msg.header.frame_id = self.cfg.frame_id
            self._info_cache[(width, height)] = msg
        return msg

    def _create_tf_publisher(self):
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            x, y, z = self.cfg.mount_xyz
            roll, pitch, yaw = self.cfg.mount_rpy
            self.get_logger().error(
                "tf2_msgs is not installed: no static TF for the camera. Install ros-$ROS_DISTRO-tf2-msgs or run "
                f"`ros2 run tf2_ros static_transform_publisher --x {x} --y {y} --z {z} --roll {roll} "
                f"--pitch {pitch} --yaw {yaw} --frame-id {self.cfg.parent_frame} "
                f"--child-frame-id {self.cfg.frame_id}`")
            return None
        return self.create_publisher(TFMessage, "/tf_static", qos.TF_STATIC)

    def static_transform(self) -> TransformStamped:
        """The camera mount parent_frame -> frame_id, as published (in a TFMessage) on /tf_static."""
        cfg = self.cfg
        t = TransformStamped()
        t.header.stamp = self.get_clock().now().to_msg()
        t.header.frame_id, t.child_frame_id = cfg.parent_frame, cfg.frame_id
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = map(float, cfg.mount_xyz)
        q = quaternion_from_rpy(*map(float, cfg.mount_rpy))
        t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z, t.transform.rotation.w = q
        return t

    def _on_diagnostics(self) -> None:
        age = self.frame_age()
        times = self._frame_times
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        if self.last_error:
            level, message = ERROR, self.last_error
        elif age is None:
            level, message = WARN, "no frame yet"
        elif age > self.cfg.max_frame_age:
            level, message = ERROR, f"newest frame is {age:.2f} s old"
        else:
            level, message = OK, "streaming"
        values = {"frame_age_ms": float("nan") if age is None else age * 1e3, "fps": fps,
                  "frames": float(self.frames), "reconnects": float(self.reconnects), "source": self.cfg.source,
                  "latency_s": self.cfg.latency}
        self._diag_pub.publish(diagnostic_array(f"{self.get_name()}: capture", self.cfg.source, level, message,
                                                values, self.get_clock().now().nanoseconds))


def main(args: list[str] | None = None) -> None:
    """Run `mole_camera` alone, configured and activated."""
    from mole_ros.runner import run_nodes

    run_nodes([CameraNode], args)


if __name__ == "__main__":
    main()
