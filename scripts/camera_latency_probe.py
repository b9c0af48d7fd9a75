"""Measure the wrist camera's pipeline latency (exposure -> read() on this host) with a flashing window.

Point the camera at this host's screen, run

    python scripts/camera_latency_probe.py --source udp://@0.0.0.0:8554     # or 0, /dev/video2, ...

and keep the window in view: it flips black/white every `--period` seconds (longer than twice the latency) and
the camera's mean brightness is logged at each read(). The printed latency (median over the flips, see
`mole_inference.data.camera_calibration.estimate_latency`) includes the monitor's own delay (one or two refresh
periods, ~10-30 ms at 60 Hz), so it slightly overestimates; set `mole_camera.latency` to it.
Needs an OpenCV with highgui (python3-opencv on the workstation; opencv-python-headless cannot show windows).
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from mole_inference.data.camera_calibration import estimate_latency


def main() -> None:
    """Flash, capture, print the latency estimate."""
    import cv2

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="0", help="as mole_camera's `source` parameter")
    parser.add_argument("--period", type=float, default=2.0, help="seconds between flips (> 2 x latency)")
    parser.add_argument("--flips", type=int, default=12)
    args = parser.parse_args()

    source = int(args.source) if args.source.isdigit() else args.source
    backend = cv2.CAP_FFMPEG if "://" in args.source else cv2.CAP_ANY
    cap = cv2.VideoCapture(source, backend)
    if not cap.isOpened():
        raise SystemExit(f"cannot open {args.source!r}")
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    frame_times: list[float] = []
    brightness: list[float] = []
    stop = threading.Event()

    def capture() -> None:
        while not stop.is_set():
            ok, frame = cap.read()
            if ok:
                frame_times.append(time.time())
                brightness.append(float(frame.mean()))

    thread = threading.Thread(target=capture, daemon=True)
    thread.start()
    cv2.namedWindow("latency", cv2.WINDOW_NORMAL)
    cv2.setWindowProperty("latency", cv2.WND_PROP_FULLSCREEN, cv2.WINDOW_FULLSCREEN)
    black, white = np.zeros((480, 640), np.uint8), np.full((480, 640), 255, np.uint8)
    cv2.imshow("latency", black)
    cv2.waitKey(int(args.period * 1000))
    flips = []
    for i in range(args.flips):
        cv2.imshow("latency", white if i % 2 == 0 else black)
        cv2.waitKey(1)  # the frame is handed to the compositor here
        flips.append(time.time())
        cv2.waitKey(int(args.period * 1000))
    stop.set()
    thread.join(timeout=2.0)
    cap.release()
    cv2.destroyAllWindows()
    latency = estimate_latency(flips, frame_times, brightness)
    print(f"{len(frame_times)} frames, {len(flips)} flips: latency {latency:.3f} s")
    print(f"set mole_camera.latency: {latency:.2f}")


if __name__ == "__main__":
    main()
