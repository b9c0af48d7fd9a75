"""Episode bags -> one LeRobot v3.0 dataset (`mole-vla data export-lerobot`).

Rows sit on the dataset's fps grid from each episode's first camera frame: row k shows the camera frame
nearest to t0 + k / fps, and its `action` is the delta commanded over the next 1 / fps after that frame,
resampled from the recorded ticks exactly as the trainer resamples them (`training.windows`): motion summed,
gripper the last absolute command. So with fps = 1 / action_dt, the action chunk the trainer builds for a
frame is the actions of that row and the next ones. `observation.state` is the measured EE pose then
(xyz, rpy as in control/transforms.py; the first pose fills frames before it) and the gripper command in
force (1 = open). Extra per-frame features: `intervention` (True where the operator commanded, LeRobot's
DAgger convention), `action.source` (teleop/policy/hold) and `action.valid` (False for windows the trainer
leaves out of the loss). Episode rows also carry `mole/task` and `mole/bag`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mole_inference.control.transforms import quat_to_rpy
from mole_inference.data.action_windows import GRIPPER_OPEN, resample_windows
from mole_inference.data.episode import Episode
from mole_inference.data.lerobot import layout
from mole_inference.data.lerobot.layout import EpisodeRows
from mole_inference.data.lerobot.video import VideoFileWriter, video_info
from mole_inference.errors import InputError

log = logging.getLogger(__name__)

IMAGE_KEY = "observation.images.wrist"
STATE_NAMES = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
ACTION_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]


def frame_features(image_size: int) -> dict[str, dict[str, Any]]:
    """info.json features of an exported dataset (the video `info` block is filled in after encoding)."""
    return {
        IMAGE_KEY: {"dtype": "video", "shape": [image_size, image_size, 3], "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": [7], "names": STATE_NAMES},
        "action": {"dtype": "float32", "shape": [7], "names": ACTION_NAMES},
        "next.done": {"dtype": "bool", "shape": [1], "names": None},
        "intervention": {"dtype": "bool", "shape": [1], "names": None},
        "action.source": {"dtype": "string", "shape": [1], "names": None},
        "action.valid": {"dtype": "bool", "shape": [1], "names": None},
        **layout.DEFAULT_FEATURES,
    }


def _nearest(times: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Index of the time nearest to each query (ties: the earlier one); `times` sorted, non-empty."""
    j = np.searchsorted(times, query)
    lo, hi = np.clip(j - 1, 0, len(times) - 1), np.clip(j, 0, len(times) - 1)
    return np.where(np.abs(times[hi] - query) < np.abs(query - times[lo]), hi, lo)


def ee_state(episode: Episode, t_ns: np.ndarray) -> np.ndarray:
    """(K, 7) float32: measured xyz + rpy at each time (first pose before it), gripper command in force."""
    poses, out = episode.measured_poses, np.zeros((len(t_ns), 7), dtype=np.float32)
    if len(poses):
        i = np.clip(np.searchsorted(poses.t_ns, t_ns, side="right") - 1, 0, len(poses) - 1)
        out[:, :3] = poses.position[i]
        out[:, 3:6] = np.stack([quat_to_rpy(q) for q in poses.quat_xyzw[i]])
    else:
        log.warning("episode %s has no measured pose: observation.state pose is zero", episode.path.name)
    j = np.searchsorted(episode.delta_t_ns, t_ns, side="left") - 1
    out[:, 6] = np.where(j >= 0, episode.deltas[np.maximum(j, 0), -1] if len(episode.deltas) else GRIPPER_OPEN,
                         GRIPPER_OPEN)
    return out


def episode_rows(episode: Episode, fps: int, image_size: int) -> EpisodeRows:
    """One decoded episode on the fps grid (see module docstring); frames resized to `image_size`."""
    from mole_inference.policy.processing import resize_image

    frames = episode.camera()
    if not len(frames) or frames.rgb is None:
        raise InputError(f"episode {episode.path}: no decoded camera frames")
    period = 1e9 / fps
    count = math.floor(float(frames.t_ns[-1] - frames.t_ns[0]) / period + 0.5) + 1
    grid = frames.t_ns[0] + np.round(np.arange(count) * period).astype(np.int64)
    pick = _nearest(frames.t_ns, grid)
    if len(np.unique(pick)) < count:
        log.warning("episode %s: the camera is slower than %d fps, %d of %d rows repeat a frame",
                    episode.path.name, fps, count - len(np.unique(pick)), count)
    t = frames.t_ns[pick]
    win = resample_windows(episode.delta_t_ns, episode.deltas, episode.delta_sources, t, 1, round(period))
    instructions = [episode.instruction_at(int(x)) for x in t]
    if any(not text.strip() for text in instructions):
        raise InputError(f"episode {episode.path}: frames without an instruction (none recorded, none in metadata)")
    task = episode.metadata.task if episode.metadata and episode.metadata.task else instructions[0]
    images = np.stack([resize_image(frames.rgb[i], image_size) for i in pick])  # (K, S, S, 3)
    return EpisodeRows(name=str(episode.path), task=task, frames=images,
                       action=win.actions[:, 0].astype(np.float32), valid=win.mask[:, 0].copy(),
                       source=win.sources[:, 0].copy(), instructions=instructions, state=ee_state(episode, t))


@dataclass
class ExportResult:
    """What `export_lerobot` wrote."""

    root: Path
    episodes: int = 0
    frames: int = 0
    tasks: int = 0
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)


class LeRobotWriter:
    """Appends `EpisodeRows` to a new v3.0 dataset folder; `finish()` writes the meta files."""

    def __init__(self, root: str | Path, fps: int, image_size: int, codec: str = "av1",
                 robot_type: str = "franka_fr3", data_file_mb: float = layout.DATA_FILE_SIZE_MB,
                 video_file_mb: float = layout.VIDEO_FILE_SIZE_MB) -> None:
        layout.require_backends()
        self.root = Path(root)
        if self.root.exists() and any(self.root.iterdir()):
            raise InputError(f"--out {self.root} exists and is not empty: choose a new folder")
        if fps <= 0 or image_size <= 0 or image_size % 2:
            raise InputError(f"fps must be positive and image size a positive even number (yuv420p), "
                             f"got fps={fps}, image size={image_size}")
        self.fps, self.size, self.codec, self.robot_type = fps, image_size, codec, robot_type
        self.data_limit, self.video_limit = data_file_mb * 2**20, video_file_mb * 2**20
        self.features = frame_features(image_size)
        self.schema = self._schema()
        self.tasks: dict[str, int] = {}
        self.episodes: list[dict[str, Any]] = []
        self.stats: list[dict[str, dict[str, np.ndarray]]] = []
        self.frames = 0
        self.data_file, self.data_bytes, self._parquet = (0, 0), 0, None
        self.video_file, self._video = (0, 0), None

    def _schema(self) -> Any:
        import pyarrow as pa

        return pa.schema([(k, layout.arrow_type(f)) for k, f in self.features.items() if f["dtype"] != "video"])

    def add(self, rows: EpisodeRows, bag: str = "") -> None:
        """Write one episode's data rows and video frames and keep its episode record and statistics."""
        import pyarrow as pa

        ep, n = len(self.episodes), len(rows)
        if rows.frames.shape[1:] != (self.size, self.size, 3):
            raise InputError(f"episode {rows.name}: frames {rows.frames.shape[1:]}, dataset is {self.size} px")
        task_index = np.array([self.tasks.setdefault(text, len(self.tasks)) for text in rows.instructions])
        state = rows.state if rows.state is not None else np.zeros((n, 7), np.float32)
        cols = {
            "observation.state": state.astype(np.float32), "action": rows.action.astype(np.float32),
            "next.done": np.arange(n) == n - 1, "intervention": rows.source == "teleop",
            "action.source": rows.source.astype(str).tolist(), "action.valid": rows.valid.astype(bool),
            "timestamp": (np.arange(n) / self.fps).astype(np.float32), "frame_index": np.arange(n),
            "episode_index": np.full(n, ep), "index": self.frames + np.arange(n), "task_index": task_index,
        }
        arrays = [pa.FixedSizeListArray.from_arrays(pa.array(cols[f.name].reshape(-1)), f.type.list_size)
                  if pa.types.is_fixed_size_list(f.type) else pa.array(cols[f.name], f.type) for f in self.schema]
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        record = {"episode_index": ep, "tasks": list(dict.fromkeys(rows.instructions)), "length": n}
        record.update(self._write_data(table))
        record.update(self._write_video(rows.frames))
        stats = {k: layout.feature_stats(np.asarray(v, dtype=np.float64).reshape(n, -1))
                 for k, v in cols.items() if self.features[k]["dtype"] != "string"}
        stats[IMAGE_KEY] = layout.image_stats(rows.frames[layout.sample_indices(n)])
        record.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                       "mole/task": rows.task, "mole/bag": bag})
        record.update({f"stats/{k}/{s}": np.asarray(v).tolist() for k, st in stats.items() for s, v in st.items()})
        self.episodes.append(record)
        self.stats.append(stats)
        self.frames += n

    def _write_data(self, table: Any) -> dict[str, int]:
        import pyarrow.parquet as pq

        if self._parquet is not None and self.data_bytes + table.nbytes >= self.data_limit:
            self._parquet.close()
            self._parquet, self.data_bytes = None, 0
            self.data_file = layout.next_chunk_file(*self.data_file)
        if self._parquet is None:
            path = self.root / layout.DATA_PATH.format(chunk_index=self.data_file[0], file_index=self.data_file[1])
            path.parent.mkdir(parents=True, exist_ok=True)
            self._parquet = pq.ParquetWriter(path, self.schema, compression="snappy", use_dictionary=True)
        self._parquet.write_table(table)
        self.data_bytes += table.nbytes
        return {"data/chunk_index": self.data_file[0], "data/file_index": self.data_file[1],
                "dataset_from_index": self.frames, "dataset_to_index": self.frames + table.num_rows}

    def _write_video(self, frames: np.ndarray) -> dict[str, Any]:
        video = self._video
        if video is not None and video.frames:
            expected = video.bytes_written / video.frames * len(frames)  # LeRobot's own per-frame estimate
            if video.bytes_written + expected >= self.video_limit:
                video.close()
                video, self.video_file = None, layout.next_chunk_file(*self.video_file)
        if video is None:
            chunk, file = self.video_file
            path = self.root / layout.VIDEO_PATH.format(video_key=IMAGE_KEY, chunk_index=chunk, file_index=file)
            video = self._video = VideoFileWriter(path, self.fps, self.size, self.size, self.codec)
        start = video.frames
        for image in frames:
            video.write(image)
        prefix = f"videos/{IMAGE_KEY}/"
        return {prefix + "chunk_index": self.video_file[0], prefix + "file_index": self.video_file[1],
                prefix + "from_timestamp": start / self.fps, prefix + "to_timestamp": video.frames / self.fps}

    def finish(self) -> None:
        """Close the open files and write meta/episodes, meta/tasks.parquet, meta/stats.json, meta/info.json."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.episodes:
            raise InputError("no episode to write")
        self._parquet.close()
        self._video.close()
        path = self.root / layout.EPISODES_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self.episodes), path, compression="snappy")
        layout.write_tasks(list(self.tasks), self.root)
        layout.write_json(layout.stats_to_json(layout.aggregate_stats(self.stats)), self.root / layout.STATS_PATH)
        first = self.root / layout.VIDEO_PATH.format(video_key=IMAGE_KEY, chunk_index=0, file_index=0)
        self.features[IMAGE_KEY]["info"] = video_info(first)
        info = {
            "codebase_version": layout.CODEBASE_VERSION, "robot_type": self.robot_type,
            "total_episodes": len(self.episodes), "total_frames": self.frames, "total_tasks": len(self.tasks),
            "chunks_size": layout.CHUNKS_SIZE, "data_files_size_in_mb": max(1, math.ceil(self.data_limit / 2**20)),
            "video_files_size_in_mb": max(1, math.ceil(self.video_limit / 2**20)), "fps": self.fps,
            "splits": {"train": f"0:{len(self.episodes)}"}, "data_path": layout.DATA_PATH,
            "video_path": layout.VIDEO_PATH, "features": self.features,
        }
        layout.write_json(info, self.root / layout.INFO_PATH)


def export_lerobot(bags: str | Path | list[Path], out: str | Path, fps: int = 10, image_size: int = 224,
                   codec: str = "av1", progress: bool = True, **writer_kwargs: Any) -> ExportResult:
    """Every closed episode bag under `bags` (or the listed bag folders) -> a LeRobot v3.0 dataset at `out`."""
    from tqdm import tqdm

    from mole_inference.data.bag_reader import list_episodes, read_episode

    start = time.monotonic()
    paths = list(bags) if isinstance(bags, list) else list_episodes(bags)
    root = None if isinstance(bags, list) else Path(bags)
    if not paths:
        raise InputError(f"no closed episode bags under {bags}")
    writer = LeRobotWriter(out, fps, image_size, codec, **writer_kwargs)
    result = ExportResult(Path(out))
    for path in tqdm(paths, desc="export-lerobot", unit="episode", disable=not progress):
        episode = read_episode(path)
        if not len(episode.camera()):
            log.warning("skipping %s: no camera frames", path)
            result.skipped.append(str(path))
            continue
        name = str(path.relative_to(root)) if root is not None else path.name  # no local paths in shared files
        writer.add(episode_rows(episode, fps, image_size), bag=name)
    writer.finish()
    result.episodes, result.frames, result.tasks = len(writer.episodes), writer.frames, len(writer.tasks)
    result.seconds = time.monotonic() - start
    log.info("exported %d episodes, %d frames, %d tasks to %s in %.1f s", result.episodes, result.frames,
             result.tasks, out, result.seconds)
    return result
