"""Episode -> training samples: each camera frame paired with the next `chunk_size` actions at `action_dt`.

The recorder logs one delta per control tick (50 Hz on the robot; the simulation may log at the policy rate,
10 Hz), while the model predicts one action per `action_dt` (0.1 s). Each recorded translation/rotation delta
is the motion of its own tick (a rate split per tick, see control/scheduler.py), so one model action is the
SUM of the ticks inside its `action_dt` window, and its gripper (an absolute command, 1 = open) is the LAST
value in the window.

Windows. For a frame logged at t_f, let a be the log time of the first delta at or after t_f. Action j covers
the deltas with log time in [a - tick/2 + j * dt, a - tick/2 + (j + 1) * dt) (tick = median tick period),
so ticks that land near a window edge because of logging jitter are not split unpredictably: at 50 Hz each
window holds 5 ticks, at 10 Hz exactly one. A window with no tick (the episode ended, or a gap) is "hold":
zero motion, the previous gripper value, `mask` False. So is the episode's trailing window when it holds fewer
ticks than a full window (dt / tick): its summed motion covers only part of `action_dt`, and training on it
would teach the model to slow down before the episode's end (at 50 Hz, 1-4 of 5 ticks gave 5-12 mm steps where
a full window moves ~28 mm). Windows followed by a later tick are complete whatever their count (logging
jitter). A window's source is the majority source of its ticks
(ties: teleop, then policy, then hold); a sample's source is that of its first window.

Subgoals (for `training.goal_weight`, beyond the paper). Each frame also gets the base-frame offset from the
measured end-effector pose at the frame to the measured pose at the episode's next gripper-command change (a
grasp or a release), or at its last delta when no change follows: where the demonstrator's hand went next and
how it turned to get there (position offset in m, then the base-frame rotation vector in rad from the frame's
orientation to the subgoal's; for a gripper pointing down its z component is the grasp yaw). It needs only what
every recorded episode has (measured poses and the gripper command), so it labels robot demonstrations the same
way as simulated ones. NaN where a pose is missing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mole_inference.control.transforms import matrix_to_rotvec, quat_normalize, quat_to_matrix
from mole_inference.data.action_windows import ActionWindows, resample_windows
from mole_inference.data.episode import Episode
from mole_inference.errors import InputError
from mole_inference.model.state_input import STATE_DIM

log = logging.getLogger(__name__)

GOAL_DIM = 6  # subgoal label: position offset (3, m) and rotation vector (3, rad), base frame


@dataclass
class EpisodeSamples:
    """One episode's samples: frames (F, H, W, 3) uint8 and their windows, instruction per frame, task name."""

    path: Path
    task: str
    frames: np.ndarray
    windows: ActionWindows
    instructions: list[str] = field(default_factory=list)
    goals: np.ndarray | None = None  # (F, 6) offset (m) and rotation vector (rad) to the next subgoal; NaN: unknown
    states: np.ndarray | None = None  # (F, 7) measured EE pose at each frame (robot_states); NaN: unknown

    @property
    def sample_sources(self) -> np.ndarray:
        """Who commanded the first action after each frame (F,)."""
        return self.windows.sources[:, 0]


def episode_samples(episode: Episode, n: int, dt_s: float, topic: str | None = None) -> EpisodeSamples:
    """All (frame, instruction, next n actions at dt_s) samples of a decoded episode."""
    frames = episode.camera(topic)
    if frames.rgb is None or isinstance(frames.rgb, list):
        raise InputError(f"episode {episode.path}: frames must be decoded and all the same size")
    windows = resample_windows(episode.delta_t_ns, episode.deltas, episode.delta_sources, frames.t_ns, n,
                               round(dt_s * 1e9))
    instructions = [episode.instruction_at(int(t)) for t in frames.t_ns]
    if any(not text.strip() for text in instructions):
        raise InputError(f"episode {episode.path}: frames without an instruction (none recorded, none in metadata)")
    task = (episode.metadata.task if episode.metadata and episode.metadata.task else instructions[0]) if len(
        instructions) else ""
    return EpisodeSamples(episode.path, task, frames.rgb, windows, instructions, subgoal_offsets(episode, frames.t_ns),
                          robot_states(episode, frames.t_ns))


def robot_states(episode: Episode, frame_t_ns: np.ndarray) -> np.ndarray:
    """(F, 7) the state at each frame as the robot node feeds it to a `vision.state_input` model: the latest
    measured pose at or before the frame (the first one for frames before any), NaN if the episode has none."""
    t = np.asarray(frame_t_ns, dtype=np.int64)
    out = np.full((len(t), STATE_DIM), np.nan)
    poses = episode.measured_poses
    if len(poses.t_ns):
        i = np.clip(np.searchsorted(poses.t_ns, t, side="right") - 1, 0, None)
        out[:, :3], out[:, 3:7] = poses.position[i], poses.quat_xyzw[i]
    return out


def subgoal_offsets(episode: Episode, frame_t_ns: np.ndarray) -> np.ndarray:
    """(F, 6) from each frame's measured EE pose to the measured pose at the next gripper-command change after it
    (else at the episode's last delta): position offset (3, m, base frame) and the base-frame rotation vector of
    R_goal R_frame^T (3, rad); NaN rows where either pose is unknown."""
    out = np.full((len(frame_t_ns), GOAL_DIM), np.nan)
    t = np.asarray(episode.delta_t_ns)
    if len(t) == 0 or len(frame_t_ns) == 0:
        return out
    grip = np.asarray(episode.deltas)[:, 6]
    keys = t[1:][np.diff(grip) != 0]  # (G,) log times of the first delta with a new gripper command
    keys = np.append(keys, t[-1])
    for i, tf in enumerate(np.asarray(frame_t_ns)):
        key = keys[np.searchsorted(keys, tf, side="right")] if tf < keys[-1] else keys[-1]
        goal, here = episode.pose_at(int(key)), episode.pose_at(int(tf))
        if np.isfinite(goal).all() and np.isfinite(here).all():
            turn = quat_to_matrix(quat_normalize(goal[3:])) @ quat_to_matrix(quat_normalize(here[3:])).T
            out[i] = np.concatenate([goal[:3] - here[:3], matrix_to_rotvec(turn)])
    return out
