"""Read episode bags (rosbags AnyReader, MCAP or sqlite3) into `Episode` arrays; find episodes on disk."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mole_inference.data.bag_recovery import RECOVERED_CUSTOM_KEY, is_bag_complete
from mole_inference.data.bag_writer import EPISODE_CUSTOM_KEY
from mole_inference.data.episode import Episode, Frames, Poses
from mole_inference.data.episode_meta import EpisodeMetadata
from mole_inference.data.images import decode_image, stamp_ns
from mole_inference.data.schema import (
    ACTIVE_SOURCE_TOPIC,
    COMPRESSED_IMAGE_TOPIC,
    EE_DELTA_TOPIC,
    EPISODE_TOPIC,
    GRIPPER_COMMAND_TOPIC,
    IMAGE_TOPIC,
    INSTRUCTION_TOPIC,
    MEASURED_POSE_TOPIC,
    TARGET_POSE_TOPIC,
    decode_ee_delta,
    default_typestore,
)
from mole_inference.errors import InputError

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

log = logging.getLogger(__name__)


def list_episodes(root: str | Path, include_incomplete: bool = False) -> list[Path]:
    """Episode bag directories under `root` (any depth), sorted by path, i.e. by time for our names.

    Unclosed bags (no metadata.yaml: the recorder crashed) are left out unless `include_incomplete`;
    `bag_recovery.recover_bag` makes them readable. Symlinked folders are followed (a training set is often
    a folder of links to recording sessions), each real folder once.
    """
    import os

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"episode root {root} is not a directory")
    found, seen = set(), set()
    for here, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(here)
        if real in seen:  # a link cycle, or two links to one folder
            dirs.clear()
            continue
        seen.add(real)
        if "metadata.yaml" in files or (include_incomplete and any(f.endswith((".mcap", ".db3")) for f in files)):
            found.add(Path(here))
    return sorted(found)


def _open(path: Path, typestore: Typestore | None) -> Any:
    from rosbags.highlevel import AnyReader

    if not path.is_dir():
        raise InputError(f"{path} is not an episode bag directory")
    if not is_bag_complete(path):
        raise InputError(f"{path} was not closed (no metadata.yaml); run bag_recovery.recover_bag({str(path)!r})")
    return AnyReader([path], default_typestore=typestore or default_typestore())


def iter_images(
    path: str | Path, topic: str = IMAGE_TOPIC, typestore: Typestore | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Stream `(log time ns, RGB (H, W, 3))` for one image topic without holding the episode in memory."""
    with _open(Path(path), typestore) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        for conn, t, data in reader.messages(connections=conns) if conns else ():
            yield t, decode_image(reader.deserialize(data, conn.msgtype))


def _custom_data(path: Path) -> dict[str, str]:
    import yaml  # PyYAML's C loader: ~20x faster than ruamel's pure-Python one on a bag's metadata

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    doc = yaml.load((path / "metadata.yaml").read_text(), Loader=loader) or {}
    info = doc.get("rosbag2_bagfile_information", {})
    return dict(info.get("custom_data") or {})


def _stack(images: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    if images and all(im.shape == images[0].shape for im in images):
        return np.stack(images)  # (N, H, W, 3)
    return images if images else np.zeros((0, 0, 0, 3), dtype=np.uint8)


def _poses(rows: list[tuple[int, Any]]) -> Poses:
    if not rows:
        return Poses()
    return Poses(
        t_ns=np.array([t for t, _ in rows], dtype=np.int64),
        stamp_ns=np.array([stamp_ns(m) for _, m in rows], dtype=np.int64),
        position=np.array([[m.pose.position.x, m.pose.position.y, m.pose.position.z] for _, m in rows]),
        quat_xyzw=np.array(
            [[m.pose.orientation.x, m.pose.orientation.y, m.pose.orientation.z, m.pose.orientation.w] for _, m in rows]
        ),
    )


def read_episode(path: str | Path, decode_images: bool = True, typestore: Typestore | None = None) -> Episode:
    """Read one closed (or recovered) episode bag. `decode_images=False` keeps only frame times (fast)."""
    path = Path(path)
    frames = {topic: Frames(topic) for topic in (IMAGE_TOPIC, COMPRESSED_IMAGE_TOPIC)}
    rgb: dict[str, list[np.ndarray]] = {topic: [] for topic in frames}
    times: dict[str, list[tuple[int, Any]]] = {}
    stamps: dict[str, list[int]] = {topic: [] for topic in frames}
    with _open(path, typestore) as reader:
        for conn, t, data in reader.messages():
            msg = reader.deserialize(data, conn.msgtype)
            times.setdefault(conn.topic, []).append((t, msg))
            if conn.topic in frames:
                stamps[conn.topic].append(stamp_ns(msg))
                if decode_images:
                    rgb[conn.topic].append(decode_image(msg))
                times[conn.topic][-1] = (t, None)  # drop the undecoded message early
    for topic, f in frames.items():
        f.t_ns = np.array([t for t, _ in times.get(topic, [])], dtype=np.int64)
        f.stamp_ns = np.array(stamps[topic], dtype=np.int64)
        f.rgb = _stack(rgb[topic]) if decode_images else None

    def texts(topic: str) -> tuple[np.ndarray, list[str]]:
        rows = times.get(topic, [])
        return np.array([t for t, _ in rows], dtype=np.int64), [m.data for _, m in rows]

    deltas = [(t, *decode_ee_delta(m)) for t, m in times.get(EE_DELTA_TOPIC, [])]
    custom = _custom_data(path)
    episode_json = texts(EPISODE_TOPIC)[1] or [custom[k] for k in (EPISODE_CUSTOM_KEY,) if k in custom]
    meta = EpisodeMetadata.from_json(episode_json[-1]) if episode_json else None
    instruction_t, instructions = texts(INSTRUCTION_TOPIC)
    source_t, sources = texts(ACTIVE_SOURCE_TOPIC)
    gripper = times.get(GRIPPER_COMMAND_TOPIC, [])
    episode = Episode(
        path=path,
        metadata=meta,
        frames=frames,
        instruction_t_ns=instruction_t,
        instructions=instructions,
        measured_poses=_poses(times.get(MEASURED_POSE_TOPIC, [])),
        target_poses=_poses(times.get(TARGET_POSE_TOPIC, [])),
        delta_t_ns=np.array([d[0] for d in deltas], dtype=np.int64),
        deltas=np.stack([d[1] for d in deltas]) if deltas else np.zeros((0, 7)),
        delta_sources=np.array([d[2] for d in deltas], dtype="<U6"),
        gripper_t_ns=np.array([t for t, _ in gripper], dtype=np.int64),
        gripper_width=np.array([m.data for _, m in gripper], dtype=np.float64),
        source_t_ns=source_t,
        active_sources=sources,
        recovered=custom.get(RECOVERED_CUSTOM_KEY) == "true",
    )
    log.debug("read episode %s: %d frames, %d deltas", path.name, len(episode.camera()), len(deltas))
    return episode
