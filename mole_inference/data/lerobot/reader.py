"""A local LeRobot v3.x dataset folder -> one `EpisodeRows` per episode (ours or a community one).

Keys: the camera defaults to `observation.images.wrist`, else the dataset's only camera; the action to
`action`, which must be 7-D (a 7-DoF EE delta with an absolute gripper, as MoLe predicts). A feature that is
missing or does not fit raises InputError naming it and the flag that picks another (`--image-key`,
`--action-key`, `--state-key`). Video frames are found at episode from_timestamp + row timestamp, as
LeRobot's reader queries them; image features (PNG/JPEG bytes in the parquet) are decoded too. Datasets
without our extra columns read as all-valid rows commanded by "teleop" (`intervention` False -> "policy").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mole_inference.data.lerobot import layout
from mole_inference.data.lerobot.layout import EpisodeRows
from mole_inference.data.lerobot.video import decode_at
from mole_inference.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_IMAGE_KEY = "observation.images.wrist"
ACTION_DIM = 7


def resolve_keys(info: dict[str, Any], image_key: str | None, action_key: str | None, state_key: str | None
                 ) -> tuple[str, str, str | None]:
    """(image, action, state) feature keys, or InputError naming the feature and the flag to pass."""
    features = info.get("features", {})
    cameras = sorted(k for k, f in features.items() if f.get("dtype") in ("video", "image"))
    if image_key is None:
        if DEFAULT_IMAGE_KEY in cameras or len(cameras) != 1:
            image_key = DEFAULT_IMAGE_KEY
        else:
            image_key = cameras[0]
            log.info("LeRobot dataset: using its only camera %s", image_key)
    if image_key not in cameras:
        raise InputError(f"LeRobot dataset has no camera feature {image_key!r}; cameras: {cameras or 'none'}: "
                         "pass --image-key with one of them")
    action_key = action_key or "action"
    action = features.get(action_key)
    if action is None or action.get("dtype") not in ("float32", "float64"):
        numeric = sorted(k for k, f in features.items() if str(f.get("dtype", "")).startswith("float"))
        raise InputError(f"LeRobot dataset has no float feature {action_key!r} for the action; float features: "
                         f"{numeric}: pass --action-key")
    if list(action.get("shape", [])) != [ACTION_DIM]:
        raise InputError(f"LeRobot feature {action_key!r} has shape {action.get('shape')}; MoLe needs a 7-D "
                         "EE delta [dx, dy, dz, droll, dpitch, dyaw, gripper]: pass --action-key naming one")
    if state_key is not None and state_key not in features:
        raise InputError(f"LeRobot dataset has no feature {state_key!r}; features: {sorted(features)}: "
                         "pass --state-key with one of them (or leave it out)")
    return image_key, action_key, state_key


def _read_parquets(folder: Path, columns: list[str] | None = None) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = sorted(folder.glob("chunk-*/file-*.parquet"))
    if not paths:
        raise InputError(f"no parquet files under {folder}")
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in paths], promote_options="default")


def _fixed(column: Any, width: int) -> np.ndarray:
    """(N, width) float64 from a list/fixed-size-list column."""
    return np.asarray(column.to_pylist(), dtype=np.float64).reshape(-1, width)


def _image_decoder(size: int | None) -> Callable[[np.ndarray], np.ndarray]:
    from mole_inference.policy.processing import resize_image

    return (lambda rgb: resize_image(rgb, size)) if size else (lambda rgb: rgb)


def _decode_image_cells(cells: list[dict | None], root: Path, key: str, transform: Callable) -> list[np.ndarray]:
    import cv2

    out = []
    for cell in cells:
        data = (cell or {}).get("bytes")
        if data is None and (cell or {}).get("path"):
            data = (root / cell["path"]).read_bytes()
        if data is None:
            raise InputError(f"LeRobot image feature {key!r} has a row without bytes or path")
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        out.append(transform(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    return out


def read_lerobot(root: str | Path, image_key: str | None = None, action_key: str | None = None,
                 state_key: str | None = None, image_size: int | None = None) -> tuple[dict, list[EpisodeRows]]:
    """(info.json, episodes) of the dataset at `root`; frames resized to `image_size` when given."""
    layout.require_backends()
    root = Path(root)
    info = layout.read_info(root)
    image_key, action_key, state_key = resolve_keys(info, image_key, action_key, state_key)
    features, fps = info["features"], float(info["fps"])
    tasks = layout.read_tasks(root)
    episodes = _read_parquets(root / layout.EPISODES_DIR)
    episodes = episodes.select([c for c in episodes.column_names if not c.startswith("stats/")])
    episodes = sorted(episodes.to_pylist(), key=lambda e: e["episode_index"])
    wanted = ["episode_index", "frame_index", "timestamp", "task_index", action_key]
    optional = [k for k in ("action.valid", "action.source", "intervention", state_key) if k and k in features]
    is_image = features[image_key]["dtype"] == "image"
    data = _read_parquets(root / "data", wanted + optional + ([image_key] if is_image else []))
    data = data.sort_by([("episode_index", "ascending"), ("frame_index", "ascending")])
    ep_col = data.column("episode_index").to_numpy()
    bounds = np.searchsorted(ep_col, [[e["episode_index"]] for e in episodes], side="left").ravel()
    ends = np.searchsorted(ep_col, [[e["episode_index"]] for e in episodes], side="right").ravel()
    transform = _image_decoder(image_size)
    frames = _frames(root, info, image_key, episodes, data, bounds, ends, transform) if not is_image else None
    out = []
    for k, ep in enumerate(episodes):
        rows = data.slice(bounds[k], ends[k] - bounds[k])
        if not rows.num_rows:
            raise InputError(f"LeRobot episode {ep['episode_index']} has no data rows")
        n = rows.num_rows
        if is_image:
            images = _decode_image_cells(rows.column(image_key).to_pylist(), root, image_key, transform)
        else:
            images = frames[k]
        names = rows.column_names
        valid = rows.column("action.valid").to_numpy(zero_copy_only=False) if "action.valid" in names \
            else np.ones(n, bool)
        if "action.source" in names:
            source = np.array(rows.column("action.source").to_pylist(), dtype="<U6")
        elif "intervention" in names:
            source = np.where(rows.column("intervention").to_numpy(zero_copy_only=False), "teleop", "policy")
        else:
            source = np.full(n, "teleop", dtype="<U6")  # community demonstrations: a person commanded
        instructions = [tasks[int(i)] for i in rows.column("task_index").to_pylist()]
        state = None
        if state_key:
            state = np.asarray(rows.column(state_key).to_pylist(), dtype=np.float32).reshape(n, -1)
        out.append(EpisodeRows(
            name=f"{root}#episode_{ep['episode_index']:06d}", task=ep.get("mole/task") or ep["tasks"][0],
            frames=np.stack(images), action=_fixed(rows.column(action_key), ACTION_DIM).astype(np.float32),
            valid=valid.astype(bool), source=source.astype("<U6"), instructions=instructions, state=state))
    log.info("LeRobot dataset %s: %d episodes, %d frames at %g fps", root, len(out), data.num_rows, fps)
    return info, out


def _frames(root: Path, info: dict, key: str, episodes: list[dict], data: Any, bounds: np.ndarray,
            ends: np.ndarray, transform: Callable) -> list[list[np.ndarray]]:
    """Video frames per episode; each video file is decoded once."""
    prefix = f"videos/{key}/"
    fps = float(info["fps"])
    timestamps = data.column("timestamp").to_numpy().astype(np.float64)
    by_file: dict[tuple[int, int], list[int]] = {}
    for k, ep in enumerate(episodes):
        by_file.setdefault((ep[prefix + "chunk_index"], ep[prefix + "file_index"]), []).append(k)
    out: list[list[np.ndarray]] = [[] for _ in episodes]
    template = info.get("video_path") or layout.VIDEO_PATH
    for (chunk, file), eps in sorted(by_file.items()):
        path = root / template.format(video_key=key, chunk_index=chunk, file_index=file)
        times = [episodes[k][prefix + "from_timestamp"] + timestamps[bounds[k]:ends[k]] for k in eps]
        images = decode_at(path, np.concatenate(times), 0.5 / fps, transform)
        start = 0
        for k, t in zip(eps, times, strict=True):
            out[k], start = images[start:start + len(t)], start + len(t)
    return out
