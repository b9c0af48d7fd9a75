"""MP4 video files as LeRobot writes them (PyAV): yuv420p, a keyframe every 2 frames, CRF 30.

LeRobot's default encoder is SVT-AV1 (`libsvtav1`, preset 12, fast-decode 0); H.264 (`libx264`) is its
other common choice and decodes faster. Episodes follow each other in one file; frame k of the file has
presentation time k / fps, so an episode spans [from_timestamp, to_timestamp) of its file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mole_inference.errors import BackendUnavailableError, InputError

CODECS = {"av1": "libsvtav1", "h264": "libx264"}


def _import_av() -> Any:
    try:
        import av
    except ImportError as err:
        raise BackendUnavailableError("LeRobot datasets need PyAV: pip install 'mole-inference[train]'") from err
    return av


def codec_options(codec: str) -> dict[str, str]:
    """Encoder options of LeRobot's default VideoEncoderConfig (g=2, crf=30) for `codec` (av1 or h264)."""
    if codec == "av1":
        return {"g": "2", "crf": "30", "preset": "12", "svtav1-params": "fast-decode=0"}
    if codec == "h264":
        return {"g": "2", "crf": "30"}
    raise InputError(f"video codec {codec!r}: choose one of {sorted(CODECS)}")


class VideoFileWriter:
    """Frames of consecutive episodes into one MP4 file; `bytes_written` grows as packets are muxed."""

    def __init__(self, path: Path, fps: int, width: int, height: int, codec: str = "av1") -> None:
        av = _import_av()
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner to stderr per file unless told not to
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.frames, self.bytes_written = path, 0, 0
        self._av = av
        self._container = av.open(str(path), "w")
        self._stream = self._container.add_stream(CODECS[codec], rate=fps, options=codec_options(codec))
        self._stream.pix_fmt = "yuv420p"
        self._stream.width, self._stream.height = width, height

    def write(self, rgb: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 frame."""
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        self._mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        self._mux(self._stream.encode())
        self._container.close()

    def _mux(self, packets: list) -> None:
        for packet in packets:
            self.bytes_written += packet.size
            self._container.mux(packet)


def video_info(path: Path) -> dict[str, Any]:
    """The `info` block LeRobot stores per video feature, read back from the encoded file."""
    av = _import_av()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = {"video.height": stream.height, "video.width": stream.width,
                "video.codec": stream.codec.canonical_name, "video.pix_fmt": stream.pix_fmt,
                "video.is_depth_map": False, "video.fps": int(stream.base_rate), "video.channels": 3,
                "has_audio": bool(container.streams.audio)}
    return info


def decode_at(path: Path, times_s: np.ndarray, tolerance_s: float,
              transform: Callable[[np.ndarray], np.ndarray]) -> list[np.ndarray]:
    """`transform(frame)` of the frame shown at each of `times_s` (seconds into the file), decoding the file once.

    A frame matches a wanted time within `tolerance_s` (LeRobot queries with 1e-4 s; callers pass half a
    frame period so a rounding of the time base never misses); only matched frames are kept in memory.
    """
    av = _import_av()
    if not path.is_file():
        raise InputError(f"video file {path} is missing")
    times_s = np.asarray(times_s, dtype=np.float64)
    order = np.argsort(times_s, kind="stable")
    wanted = times_s[order]
    out: list[np.ndarray | None] = [None] * len(times_s)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for k, frame in enumerate(container.decode(stream)):
            t = float(frame.time) if frame.time is not None else k / float(stream.base_rate)
            lo, hi = np.searchsorted(wanted, [t - tolerance_s, t + tolerance_s])
            if hi > lo:
                image = transform(frame.to_ndarray(format="rgb24"))
                for i in order[lo:hi]:
                    out[i] = image
            if len(wanted) and t > wanted[-1] + tolerance_s:
                break
    missing = [float(times_s[i]) for i, im in enumerate(out) if im is None]
    if missing:
        raise InputError(f"{path}: no frame at {len(missing)} timestamps (first {missing[0]:.4f} s)")
    return out  # type: ignore[return-value]
