"""LeRobot v3.0 files: path templates, feature schema, info.json, tasks.parquet and LeRobot-style statistics.

Values follow LeRobot's code (see the package docstring): chunks of at most 1000 files, data files rolled
over at 100 MB and video files at 200 MB, the five default per-frame features, per-episode statistics with
quantiles q01/q10/q50/q90/q99 and their aggregate (weighted mean/std, min/max, quantiles as the envelope of
the episodes' quantiles). Image statistics sample frames as LeRobot does. Two differences, both small:
per-episode quantiles are exact (`np.quantile`) where LeRobot bins a histogram, and frames wider than 300 px
are not subsampled before their statistics.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mole_inference.errors import BackendUnavailableError, InputError

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_FILE_SIZE_MB = 100
VIDEO_FILE_SIZE_MB = 200
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
EPISODES_PATH = EPISODES_DIR + "/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)

DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}


def require_backends() -> None:
    """BackendUnavailableError unless pyarrow and PyAV are installed (the `train` extra)."""
    missing = [name for name in ("pyarrow", "av") if importlib.util.find_spec(name) is None]
    if missing:
        raise BackendUnavailableError(f"LeRobot datasets need {' and '.join(missing)}: "
                                      "pip install 'mole-inference[train]'")


def next_chunk_file(chunk_index: int, file_index: int, chunks_size: int = CHUNKS_SIZE) -> tuple[int, int]:
    """The (chunk, file) after this one: a chunk folder holds at most `chunks_size` files."""
    return (chunk_index + 1, 0) if file_index == chunks_size - 1 else (chunk_index, file_index + 1)


def arrow_type(feature: dict[str, Any]) -> Any:
    """The Arrow type LeRobot's `datasets` features give a non-video feature (shape (1,) -> scalar)."""
    import pyarrow as pa

    dtype, shape = feature["dtype"], list(feature["shape"])
    scalar = {"string": pa.string(), "bool": pa.bool_()}.get(dtype) or pa.from_numpy_dtype(np.dtype(dtype))
    if shape == [1]:
        return scalar
    if len(shape) == 1:
        return pa.list_(scalar, shape[0])
    raise InputError(f"feature {feature} has shape {shape}: only (1,) and (n,) are written here")


def write_json(data: dict, path: Path) -> None:
    """Indented JSON, as LeRobot writes its meta files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4, ensure_ascii=False) + "\n")


def read_info(root: Path) -> dict[str, Any]:
    """meta/info.json of a v3.x dataset; InputError for a missing file or another major version."""
    path = root / INFO_PATH
    if not path.is_file():
        raise InputError(f"{root} is not a LeRobot dataset: no {INFO_PATH}")
    info = json.loads(path.read_text())
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3."):
        raise InputError(f"{root} is a LeRobot {version or 'unversioned'} dataset; this reader needs v3.x "
                         "(convert v2.1 with lerobot's convert_dataset_v21_to_v30 script)")
    return info


def write_tasks(tasks: list[str], root: Path) -> None:
    """meta/tasks.parquet: column task_index, and the task text as the pandas index named "task".

    LeRobot writes a pandas DataFrame indexed by task; the "pandas" schema metadata below is what pandas
    itself stores, so `pd.read_parquet` gives the same frame without pandas being needed here.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    path = root / TASKS_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def read_tasks(root: Path) -> dict[int, str]:
    """task_index -> task text from meta/tasks.parquet (the index column is "task", or unnamed)."""
    import pyarrow.parquet as pq

    table = pq.read_table(root / TASKS_PATH)
    text_col = next((c for c in ("task", "__index_level_0__") if c in table.column_names), None)
    if text_col is None or "task_index" not in table.column_names:
        raise InputError(f"{root / TASKS_PATH} has columns {table.column_names}; expected task_index and task")
    return dict(zip(table.column("task_index").to_pylist(), table.column(text_col).to_pylist(), strict=True))


def feature_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot statistics of (N, D) values over N: min, max, mean, std, count (1,), q01..q99 (D,)."""
    values = np.asarray(values, dtype=np.float64)
    stats = {"min": values.min(axis=0), "max": values.max(axis=0), "mean": values.mean(axis=0),
             "std": values.std(axis=0), "count": np.array([len(values)])}
    qs = np.quantile(values, QUANTILES, axis=0) if len(values) > 1 else [stats["mean"]] * len(QUANTILES)
    stats.update({f"q{round(q * 100):02d}": np.asarray(v) for q, v in zip(QUANTILES, qs, strict=True)})
    return stats


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel statistics of (N, H, W, 3) uint8 frames on a [0, 1] scale, shaped (3, 1, 1) like LeRobot's."""
    pixels = frames.reshape(-1, frames.shape[-1]).astype(np.float64) / 255.0  # (N*H*W, 3)
    stats = feature_stats(pixels)
    count = np.array([len(frames)])
    return {k: count if k == "count" else v.reshape(-1, 1, 1) for k, v in stats.items()}


def sample_indices(n: int) -> np.ndarray:
    """Frames LeRobot samples from an episode for image statistics (100 up to ~500 frames, then n ** 0.75)."""
    count = min(n, max(100, min(int(n ** 0.75), 10_000)))
    return np.round(np.linspace(0, n - 1, count)).astype(int)


def aggregate_stats(per_episode: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Dataset statistics from episode statistics, as LeRobot's `aggregate_stats` combines them."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in sorted({k for ep in per_episode for k in ep}):
        parts = [ep[key] for ep in per_episode if key in ep]
        counts = np.stack([p["count"] for p in parts]).astype(np.float64)  # (E, 1)
        means = np.stack([p["mean"] for p in parts])
        w = counts.reshape(counts.shape + (1,) * (means.ndim - counts.ndim))
        total = counts.sum(axis=0)
        mean = (means * w).sum(axis=0) / total
        var = ((np.stack([p["std"] for p in parts]) ** 2 + (means - mean) ** 2) * w).sum(axis=0) / total
        agg = {"min": np.min([p["min"] for p in parts], axis=0), "max": np.max([p["max"] for p in parts], axis=0),
               "mean": mean, "std": np.sqrt(var), "count": counts.sum(axis=0).astype(np.int64)}
        for q in (k for k in parts[0] if k.startswith("q") and k[1:].isdigit()):
            stacked = np.stack([p[q] for p in parts])
            agg[q] = stacked.min(axis=0) if int(q[1:]) <= 50 else stacked.max(axis=0)
        out[key] = agg
    return out


def stats_to_json(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    """Nested lists, as LeRobot's `serialize_dict` writes meta/stats.json."""
    return {k: {s: np.asarray(v).tolist() for s, v in feat.items()} for k, feat in stats.items()}


@dataclass
class EpisodeRows:
    """One episode as LeRobot rows at the dataset fps: what export writes and `reader.read_lerobot` returns.

    frames (K, H, W, 3) uint8; action (K, A) float32 (ours: the 7-DoF delta over the next 1/fps, gripper
    absolute); valid (K,) bool, False where that window held no full action (hold, or the episode's trailing
    partial window); source (K,) who commanded it (teleop/policy/hold); one instruction per row; task name.
    """

    name: str
    task: str
    frames: np.ndarray
    action: np.ndarray
    valid: np.ndarray
    source: np.ndarray
    instructions: list[str]
    state: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.action)
