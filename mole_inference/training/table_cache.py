"""A training set as one file: the `SampleTable` of a dataset, frames already resized, in a `.npz`.

Reading episode bags costs about 0.2 s each (decoding every frame, resampling actions), so a few thousand
episodes take minutes before the first step; a cache file loads in seconds and is one file to copy to a training
machine. `mole-vla data cache` writes it, `mole-vla train --data cache:FILE` reads it.

Frames are stored one encoded image each in a single byte array (`frame_bytes` + `frame_offsets`): `png`
(lossless, the default; about 7 KB per 112 px frame of the sim), `webp:Q` (lossy, Q in 1..100; about 1.4 KB at
90, 1.05 KB at 85, for a training set that must travel through a small pipe, as LeRobot's video-encoded datasets
do) or `raw`. Everything else is stored exactly (deflated: the overlapping action chunks shrink about 15x). The
file records what the samples were built for (image size, chunk size, action_dt, which sources were kept) and
loading refuses a config that needs anything else: rebuild the cache.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from mole_inference.config.model import ModelConfig
from mole_inference.errors import InputError
from mole_inference.training.dataset import SampleTable

log = logging.getLogger(__name__)

CACHE_PREFIX = "cache:"
FORMAT = 1
_ARRAYS = ("actions", "action_mask", "source", "instruction_id", "task_id", "episode_id")
_OPTIONAL = ("frame_index", "goals", "states")


def parse_codec(codec: str) -> tuple[str, int]:
    """'png' | 'raw' | 'webp:Q' -> (name, quality); InputError otherwise."""
    name, _, q = codec.partition(":")
    if name in ("png", "raw") and not q:
        return name, 0
    if name == "webp" and q.isdigit() and 1 <= int(q) <= 100:
        return name, int(q)
    raise InputError(f"image codec {codec!r}: expected one of png, raw, webp:Q with Q in 1..100")


def _encode(frame: np.ndarray, name: str, quality: int) -> bytes:
    import cv2

    if name == "raw":
        return frame.tobytes()
    bgr = frame[..., ::-1]
    params = [cv2.IMWRITE_WEBP_QUALITY, quality] if name == "webp" else []
    ok, buf = cv2.imencode(f".{name}", bgr, params)
    if not ok:
        raise InputError(f"could not encode a {frame.shape} frame as {name}")
    return buf.tobytes()


def _decode(data: np.ndarray, name: str, size: int) -> np.ndarray:
    import cv2

    if name == "raw":
        return data.reshape(size, size, 3)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape != (size, size, 3):
        raise InputError(f"a cached frame does not decode to {size}x{size}x3 ({name})")
    return np.ascontiguousarray(bgr[..., ::-1])


def _kept_sources(weights: dict[str, float]) -> list[str]:
    return sorted(s for s, w in weights.items() if w > 0)


def save_table(table: SampleTable, path: str | Path, cfg: ModelConfig, codec: str = "png") -> Path:
    """Write `table` (built for `cfg`) to `path` (.npz); returns the path written."""
    name, quality = parse_codec(codec)
    path = Path(path)
    if path.suffix != ".npz":
        raise InputError(f"cache file {path}: the name must end in .npz")
    blobs = [_encode(f, name, quality) for f in table.frames]
    offsets = np.cumsum([0] + [len(b) for b in blobs], dtype=np.int64)
    meta = {"format": FORMAT, "codec": codec, "image_size": int(table.frames.shape[1]),
            "chunk_size": cfg.action_head.chunk_size, "action_dt": cfg.action_dt,
            "kept_sources": _kept_sources(cfg.training.source_weights), "instructions": table.instructions,
            "tasks": table.tasks, "episodes": [str(p) for p in table.episodes]}
    arrays = {k: getattr(table, k) for k in _ARRAYS}
    arrays.update({k: getattr(table, k) for k in _OPTIONAL if getattr(table, k) is not None})
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, meta=np.array(json.dumps(meta)), frame_offsets=offsets,
                        frame_bytes=np.frombuffer(b"".join(blobs), np.uint8), **arrays)
    log.info("cache %s: %d samples, %.1f MB of frames (%s)", path, len(table), offsets[-1] / 1e6, codec)
    return path


def load_table_cache(path: str | Path, cfg: ModelConfig) -> SampleTable:
    """Read a cache file written by `save_table` for a config compatible with `cfg` (module docstring)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"cache file {path} does not exist (write one with `mole-vla data cache`)")
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        if meta.get("format") != FORMAT:
            raise InputError(f"cache file {path}: format {meta.get('format')}, this version reads {FORMAT}")
        want = {"image_size": cfg.vision.image_size, "chunk_size": cfg.action_head.chunk_size,
                "action_dt": cfg.action_dt, "kept_sources": _kept_sources(cfg.training.source_weights)}
        wrong = [f"{k} {meta[k]} (config: {v})" for k, v in want.items() if meta[k] != v]
        if wrong:
            raise InputError(f"cache file {path} was built for another config: {', '.join(wrong)}; rebuild it with "
                             "`mole-vla data cache` and this config")
        name, _ = parse_codec(meta["codec"])
        blob, offsets = z["frame_bytes"], z["frame_offsets"]
        size = meta["image_size"]
        frames = np.stack([_decode(blob[offsets[i]:offsets[i + 1]], name, size) for i in range(len(offsets) - 1)])
        arrays = {k: z[k] for k in _ARRAYS}
        optional = {k: (z[k] if k in z.files else None) for k in _OPTIONAL}
    table = SampleTable(frames, **arrays, instructions=meta["instructions"], tasks=meta["tasks"],
                        episodes=[Path(p) for p in meta["episodes"]], **optional)
    log.info("dataset: cache %s (%s), %d episodes, %d samples, %d tasks %s", path, meta["codec"],
             len(table.episodes), len(table), len(table.tasks), table.tasks)
    return table
