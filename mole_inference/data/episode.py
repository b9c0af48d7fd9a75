"""`Episode`: one demonstration as numpy arrays, plus time alignment (what the policy saw -> what was sent).

All times are the bag's log time in ns (receive time on the recorder), the one clock every topic shares;
header stamps are kept alongside for images and poses. Alignment is zero-order hold: the pose "at" t is the
latest one at or before t; the actions "after" t are the next `n` deltas logged at or after t, i.e. at the
rate the controller sent them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mole_inference.data.episode_meta import EpisodeMetadata
from mole_inference.data.schema import COMPRESSED_IMAGE_TOPIC, EE_DELTA_DIM, IMAGE_TOPIC
from mole_inference.errors import InputError


def _empty_i64() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


@dataclass
class Frames:
    """Camera frames of one topic: log times (N,), header stamps (N,), RGB uint8 (N, H, W, 3) or None."""

    topic: str
    t_ns: np.ndarray = field(default_factory=_empty_i64)
    stamp_ns: np.ndarray = field(default_factory=_empty_i64)
    rgb: np.ndarray | list[np.ndarray] | None = None  # a list only when frame sizes differ

    def __len__(self) -> int:
        return len(self.t_ns)


@dataclass
class Poses:
    """PoseStamped series: log times (M,), header stamps (M,), position (M, 3), quaternion xyzw (M, 4)."""

    t_ns: np.ndarray = field(default_factory=_empty_i64)
    stamp_ns: np.ndarray = field(default_factory=_empty_i64)
    position: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    quat_xyzw: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))

    def __len__(self) -> int:
        return len(self.t_ns)

    def as_array(self) -> np.ndarray:
        """`[x, y, z, qx, qy, qz, qw]` per pose, (M, 7)."""
        return np.concatenate([self.position, self.quat_xyzw], axis=1)


class ActionWindow(NamedTuple):
    """The next n commanded deltas: actions (n, 7), valid mask (n,), sources (n,) ("" where padded)."""

    actions: np.ndarray
    mask: np.ndarray
    sources: np.ndarray


@dataclass
class AlignedSamples:
    """One row per camera frame: the frame, the pose then, the next n actions, and the instruction."""

    frame_index: np.ndarray  # (F,) index into Frames
    t_ns: np.ndarray  # (F,)
    pose: np.ndarray  # (F, 7), NaN before the first measured pose
    actions: np.ndarray  # (F, n, 7)
    action_mask: np.ndarray  # (F, n) bool
    action_sources: np.ndarray  # (F, n) str
    instruction: list[str]  # (F,)


@dataclass
class Episode:
    """One episode bag read into numpy; see module docstring for the time conventions."""

    path: Path
    metadata: EpisodeMetadata | None = None
    frames: dict[str, Frames] = field(default_factory=dict)
    instruction_t_ns: np.ndarray = field(default_factory=_empty_i64)
    instructions: list[str] = field(default_factory=list)
    measured_poses: Poses = field(default_factory=Poses)
    target_poses: Poses = field(default_factory=Poses)
    delta_t_ns: np.ndarray = field(default_factory=_empty_i64)
    deltas: np.ndarray = field(default_factory=lambda: np.zeros((0, EE_DELTA_DIM)))  # (K, 7)
    delta_sources: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="<U6"))  # (K,)
    gripper_t_ns: np.ndarray = field(default_factory=_empty_i64)
    gripper_width: np.ndarray = field(default_factory=lambda: np.zeros(0))
    source_t_ns: np.ndarray = field(default_factory=_empty_i64)
    active_sources: list[str] = field(default_factory=list)
    recovered: bool = False  # the bag was cut off and rebuilt by recover_bag

    def camera(self, topic: str | None = None) -> Frames:
        """Frames of `topic`, default the raw wrist camera if it has frames, else the compressed one."""
        if topic is None:
            raw = self.frames.get(IMAGE_TOPIC)
            topic = IMAGE_TOPIC if raw is not None and len(raw) else COMPRESSED_IMAGE_TOPIC
        if topic not in self.frames:
            raise InputError(f"episode {self.path.name} has no frames on {topic}; has {sorted(self.frames)}")
        return self.frames[topic]

    def instruction_at(self, t_ns: int) -> str:
        """The latest instruction at or before t (the first one before any, metadata's if none recorded)."""
        if not self.instructions:
            return self.metadata.instruction if self.metadata else ""
        i = int(np.searchsorted(self.instruction_t_ns, t_ns, side="right")) - 1
        return self.instructions[max(i, 0)]

    def pose_at(self, t_ns: int, max_age_ns: int | None = None) -> np.ndarray:
        """Measured pose `[x, y, z, qx, qy, qz, qw]` at t (latest at or before); NaN if none or too old."""
        poses = self.measured_poses
        i = int(np.searchsorted(poses.t_ns, t_ns, side="right")) - 1
        if i < 0 or (max_age_ns is not None and t_ns - int(poses.t_ns[i]) > max_age_ns):
            return np.full(7, np.nan)
        return np.concatenate([poses.position[i], poses.quat_xyzw[i]])

    def actions_after(self, t_ns: int, n: int) -> ActionWindow:
        """The next `n` deltas logged at or after t; past the end, hold (no motion, last gripper)."""
        if n <= 0:
            raise InputError(f"n must be positive, got {n}")
        i = int(np.searchsorted(self.delta_t_ns, t_ns, side="left"))
        got = self.deltas[i : i + n]
        actions = np.zeros((n, EE_DELTA_DIM))
        actions[: len(got)] = got
        last_gripper = got[-1, 6] if len(got) else (self.deltas[-1, 6] if len(self.deltas) else 0.0)
        actions[len(got) :, 6] = last_gripper
        mask = np.zeros(n, dtype=bool)
        mask[: len(got)] = True
        sources = np.full(n, "", dtype="<U6")
        sources[: len(got)] = self.delta_sources[i : i + n]
        return ActionWindow(actions, mask, sources)

    def aligned_samples(self, n_actions: int, topic: str | None = None) -> AlignedSamples:
        """For each frame of `topic` (see `camera`): pose then, next `n_actions` actions, instruction."""
        frames = self.camera(topic)
        windows = [self.actions_after(int(t), n_actions) for t in frames.t_ns]
        count = len(frames)
        return AlignedSamples(
            frame_index=np.arange(count),
            t_ns=frames.t_ns.copy(),
            pose=np.stack([self.pose_at(int(t)) for t in frames.t_ns]) if count else np.zeros((0, 7)),
            actions=np.stack([w.actions for w in windows]) if count else np.zeros((0, n_actions, EE_DELTA_DIM)),
            action_mask=np.stack([w.mask for w in windows]) if count else np.zeros((0, n_actions), dtype=bool),
            action_sources=np.stack([w.sources for w in windows]) if count else np.zeros((0, n_actions), "<U6"),
            instruction=[self.instruction_at(int(t)) for t in frames.t_ns],
        )
