"""Scripted-expert demonstrations written as episode bags through the recorder's code path (`EpisodeBagWriter`).

Each bag holds what the robot stack records during a teleoperated episode, on the same topics and types
(`mole_inference.data.schema`): the wrist image (rgb8) at `image_hz`, the instruction once, the measured and the
commanded target pose and the 7-DoF delta every control tick (with `dart`, the default, the expert's clean
action is recorded as the delta while a noisy one is executed: the labels are corrections, not noise), the
gripper command (width in m) when it changes, the active source, and the episode metadata. Episodes start from
a random TCP pose around home (`start_offset`, `start_yaw`), so the first frames, where the instruction's colour
decides where to go, come in many views. The expert stands in for a teleoperator, so deltas carry
source "teleop" and the operator is "scripted_expert"; `extra.sim` marks the bag as simulated.

The gripper value is binarized (0 closed / 1 open) as the robot's safety envelope does before sending.
Deltas are per control tick (default 50 Hz, as the robot's controller sends them); the training dataset resamples
them to the model's action_dt by summing consecutive ticks. Every timestamp comes from a sim clock starting at
`SIM_EPOCH_NS + seed * SEED_SPACING_NS`, so a seed always yields the same bag content.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mole_inference.config.base import check
from mole_inference.config.sim import expert_overrides, expert_settings
from mole_inference.data.bag_writer import EpisodeBagWriter
from mole_inference.data.episode_meta import EpisodeMetadata, new_episode_path
from mole_inference.data.images import header, rgb_to_image_msg
from mole_inference.data.schema import (
    ACTIVE_SOURCE_TOPIC,
    FLOAT64_TYPE,
    GRIPPER_COMMAND_TOPIC,
    IMAGE_TOPIC,
    INSTRUCTION_TOPIC,
    MEASURED_POSE_TOPIC,
    POSE_TYPE,
    TARGET_POSE_TOPIC,
    default_typestore,
)
from mole_inference.sim.tasks import TASKS, make_task

log = logging.getLogger(__name__)

SIM_EPOCH_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z: where the sim clock starts for seed 0
SEED_SPACING_NS = 60 * 10**9  # episodes of consecutive seeds never overlap (the longest task lasts 20 s)
BASE_FRAME = "fr3_link0"
CAMERA_FRAME = "wrist_camera"
OPERATOR = "scripted_expert"
SOURCE = "teleop"  # expert demonstrations stand in for teleoperated ones


@dataclass
class DemoConfig:
    """What `record_demos` records: tasks, kept episodes per task, rates, expert noise, failure policy."""

    tasks: tuple[str, ...] = tuple(TASKS)
    episodes: int = 10  # per task (successful ones, unless keep_failures)
    seed: int = 0  # first episode seed; retries and further episodes use seed + 1, seed + 2, ...
    control_hz: float = 50.0  # rate of poses and deltas (the robot's controller rate)
    image_hz: float = 10.0  # wrist camera rate; must divide control_hz
    noise_trans: float = 0.002  # m, std of the expert's translation noise per control tick
    noise_rot: float = 0.0  # rad, std of the expert's rotation noise per control tick (0: the EE tilt it would
    # perturb is nearly invisible in the wrist image, so its corrections are labels no policy can predict)
    dart: bool = True  # record the expert's clean action as the delta while executing the noisy one (DART)
    start_offset: float = 0.06  # m: random start TCP around home (SimConfig.start_offset); 0 starts at home
    start_yaw: float = 0.3  # rad: random start yaw (SimConfig.start_yaw)
    start_near_target: float = 0.0  # m: start above the target cube, off-centre by up to this (SimConfig)
    keep_failures: bool = False
    max_attempts: int = 3  # tries per requested episode before giving up on a task
    storage: str = "mcap"
    image_size: int = 224
    binarize_gripper: bool = True  # record/execute 0 or 1, as the robot's SafetyEnvelope sends by default
    grasp_turn: bool = True  # the expert turns to the cube's nearest face before grasping (SimConfig)
    release_tol: float = 0.008  # m, stack: the expert opens within this of its release pose (SimConfig)
    place_offset: float = 0.008  # m, stack: how far off the base's centre the expert puts the cube (SimConfig)
    grasp_hold: float | None = None  # s the expert stands still after closing; None: until held (SimConfig)
    grasp_offset: float = 0.012  # m, pick and stack: how far off the cube's centre the expert closes (SimConfig)
    linger: float | None = None  # s recorded after the task is done, the actor still acting; None: each task's
    # own `Task.linger` (stack 0.5 s: the release and the move away; pick 0.5 s: the rest of the lift; else 0)

    def __post_init__(self) -> None:
        self.tasks = tuple(self.tasks)
        check(len(self.tasks) > 0, "tasks", self.tasks, "name at least one task")
        for name in self.tasks:
            make_task(name)  # ConfigError with a "did you mean" on typos
        check(self.episodes >= 1, "episodes", self.episodes, "must be >= 1")
        check(self.seed >= 0, "seed", self.seed, "must be >= 0")
        check(self.control_hz > 0 and self.image_hz > 0, "image_hz", self.image_hz, "rates must be > 0")
        ratio = self.control_hz / self.image_hz
        check(ratio >= 1 and abs(ratio - round(ratio)) < 1e-6, "image_hz", self.image_hz,
              f"must divide control_hz={self.control_hz} (images are taken every n-th control tick)")
        check(self.noise_trans >= 0 and self.noise_rot >= 0, "noise_trans", (self.noise_trans, self.noise_rot),
              "noise must be >= 0")
        check(self.max_attempts >= 1, "max_attempts", self.max_attempts, "must be >= 1")
        check(self.linger is None or self.linger >= 0, "linger", self.linger, "must be >= 0 seconds")

    @property
    def control_dt(self) -> float:
        """Seconds per control tick."""
        return 1.0 / self.control_hz

    @property
    def image_every(self) -> int:
        """Control ticks per wrist image."""
        return round(self.control_hz / self.image_hz)


@dataclass
class EpisodeResult:
    """One recorded (or discarded) episode: where, outcome, message counts, size and time taken."""

    task: str
    seed: int
    instruction: str
    success: bool
    ticks: int
    images: int
    path: Path | None  # None when the bag was discarded (a failure without keep_failures)
    bytes: int
    wall_s: float


@dataclass
class DemoSummary:
    """All episodes tried by `record_demos`, kept or not, and the total wall time."""

    results: list[EpisodeResult] = field(default_factory=list)
    wall_s: float = 0.0

    def per_task(self) -> dict[str, dict[str, Any]]:
        """Per task: kept episodes, attempts, expert success rate, mean wall s per attempt, kept bag bytes."""
        out: dict[str, dict[str, Any]] = {}
        for task in dict.fromkeys(r.task for r in self.results):
            rows = [r for r in self.results if r.task == task]
            kept = [r for r in rows if r.path is not None]
            out[task] = {
                "kept": len(kept),
                "attempts": len(rows),
                "success_rate": sum(r.success for r in rows) / len(rows),
                "wall_s_per_episode": sum(r.wall_s for r in rows) / len(rows),
                "mean_ticks": float(np.mean([r.ticks for r in rows])),
                "bytes": sum(r.bytes for r in kept),
            }
        return out


def pose_msg(position: np.ndarray, quat_xyzw: np.ndarray, t_ns: int, frame_id: str = BASE_FRAME) -> Any:
    """A geometry_msgs/msg/PoseStamped stamped `t_ns` in `frame_id`."""
    ts = default_typestore()
    t = ts.types
    x, y, z = (float(v) for v in position)
    qx, qy, qz, qw = (float(v) for v in quat_xyzw)
    pose = t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=x, y=y, z=z),
                                       orientation=t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))
    return t[POSE_TYPE](header=header(t_ns, frame_id, ts), pose=pose)


def episode_start_ns(seed: int) -> int:
    """Sim-clock time (ns since epoch) at which the episode with `seed` starts."""
    return SIM_EPOCH_NS + seed * SEED_SPACING_NS


class Actor(Protocol):
    """Decides each control tick's action while `record_episode` writes the bag: the scripted expert
    (demonstrations) or a policy with expert takeovers (sim/interventions.py)."""

    notes: str

    def reset(self, env: Any, seed: int) -> None:
        """Start an episode (after `env.reset`)."""

    def act(self, env: Any, tick: int, frame: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, str]:
        """(executed action, recorded label, source) for this tick; `frame` is the wrist image when one was taken."""


class ExpertActor:
    """The scripted expert as the operator: executes its (noisy) action, labels it clean with DART."""

    notes = "scripted expert in the MuJoCo FR3 sim (stands in for teleoperation)"

    def __init__(self, dart: bool = True) -> None:
        self.dart = dart
        self._expert: Any = None

    def reset(self, env: Any, seed: int) -> None:
        """A fresh expert plan whose noise is seeded by the episode seed."""
        self._expert = env.make_expert(np.random.default_rng(seed))
        self._expert.reset()

    def act(self, env: Any, tick: int, frame: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, str]:
        """The expert's action; the label is its clean action with DART."""
        action = self._expert.act(env.state())
        return action, (self._expert.last_clean.copy() if self.dart else action.copy()), SOURCE


def record_episode(env: Any, seed: int, out: Path, config: DemoConfig, actor: Actor | None = None) -> EpisodeResult:
    """Run `actor` (default: the scripted expert) on `env` from `seed` and write one bag under `out` (deleted on
    failure unless kept). The active source is written at the start and at every switch."""
    from mole_inference.control.transforms import matrix_to_quat
    from mole_inference.sim.controller import GRIPPER_CLOSED, GRIPPER_OPEN, gripper_command_to_width

    actor = actor if actor is not None else ExpertActor(config.dart)
    t_start = time.perf_counter()
    env.reset(seed, render=False)
    actor.reset(env, seed)
    dt_ns = round(config.control_dt * 1e9)
    t0 = episode_start_ns(seed)
    meta = EpisodeMetadata(task=env.task.name, instruction=env.instruction, operator=OPERATOR, start_ns=t0,
                           notes=actor.notes,
                           extra={"sim": True, "seed": seed, "control_hz": config.control_hz,
                                  "image_hz": config.image_hz, "noise_trans": config.noise_trans,
                                  "noise_rot": config.noise_rot, "dart": config.dart,
                                  "start_offset": config.start_offset, "start_yaw": config.start_yaw,
                                  "start_near_target": config.start_near_target, **expert_settings(config)})
    path = new_episode_path(out, env.task.name, t0)
    float64 = default_typestore().types[FLOAT64_TYPE]
    ticks = images = 0
    last_gripper: float | None = None
    last_source: str | None = None
    # No time-based flushing: chunk boundaries then depend only on the data, so bags are reproducible.
    writer = EpisodeBagWriter(path, config.storage, meta, start_ns=t0, flush_interval_s=None)
    with writer:
        writer.write_text(INSTRUCTION_TOPIC, env.instruction, t0)
        linger = round((env.task.linger if config.linger is None else config.linger) * config.control_hz)
        end: int | None = None  # tick count to stop at, once the task is done (success: plus `linger` ticks)
        success = False
        while end is None or ticks < end:
            t = t0 + ticks * dt_ns
            pos, quat = env.scene.ee_pose()
            writer.write(MEASURED_POSE_TOPIC, pose_msg(pos, quat, t), t)
            frame = None
            if ticks % config.image_every == 0:
                frame = env.render("wrist")
                writer.write(IMAGE_TOPIC, rgb_to_image_msg(frame, t, CAMERA_FRAME), t)
                images += 1
            action, label, source = actor.act(env, ticks, frame)
            if source != last_source:
                writer.write_text(ACTIVE_SOURCE_TOPIC, source, t)
                last_source = source
            if config.binarize_gripper:  # what the robot's safety envelope sends (gripper_binarize)
                action[6] = label[6] = GRIPPER_OPEN if action[6] >= 0.5 else GRIPPER_CLOSED
            target_pos, target_rot = env.controller.target_from_delta(action)
            writer.write(TARGET_POSE_TOPIC, pose_msg(target_pos, matrix_to_quat(target_rot), t), t)
            writer.write_ee_delta(label, source, t)
            width = gripper_command_to_width(action[6])
            if width != last_gripper:  # like a gripper action client: a new goal only when the command changes
                writer.write(GRIPPER_COMMAND_TOPIC, float64(data=width), t)
                last_gripper = width
            _, done, info = env.step(action, render=False)
            ticks += 1
            if end is None and done:  # judged when it ends, not after lingering
                success = bool(info["success"])
                end = ticks + (linger if success else 0)
        t_end = t0 + ticks * dt_ns
        pos, quat = env.scene.ee_pose()
        writer.write(MEASURED_POSE_TOPIC, pose_msg(pos, quat, t_end), t_end)  # where the last delta led
        writer.close(success=success, t_ns=t_end)
    kept = success or config.keep_failures
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if kept else 0
    if not kept:
        shutil.rmtree(path)
    log.debug("%s seed %d: success=%s, %d ticks, %d images", env.task.name, seed, success, ticks, images)
    return EpisodeResult(env.task.name, seed, env.instruction, success, ticks, images, path if kept else None, size,
                         time.perf_counter() - t_start)


def record_demos(out: str | Path, config: DemoConfig,
                 on_episode: Callable[[EpisodeResult], None] | None = None, actor: Actor | None = None) -> DemoSummary:
    """Record `config.episodes` expert episodes per task under `out`/<task>/, retrying seeds after failures.

    `on_episode` is called after every attempt (progress bars); `actor` replaces the scripted expert (e.g. a
    policy with expert takeovers). Tasks that keep failing stop after
    `episodes * max_attempts` attempts with a warning.
    """
    from mole_inference.sim.env import make_env

    out = Path(out)
    summary = DemoSummary()
    t_start = time.perf_counter()
    for task in config.tasks:
        task_dir = out / task
        task_dir.mkdir(parents=True, exist_ok=True)
        env = make_env(task, seed=config.seed, control_dt=config.control_dt, image_size=config.image_size,
                       cameras=("wrist",), expert_noise_trans=config.noise_trans, expert_noise_rot=config.noise_rot,
                       start_offset=config.start_offset, start_yaw=config.start_yaw,
                       start_near_target=config.start_near_target, **expert_overrides(config))
        with env:
            kept = attempts = 0
            while kept < config.episodes and attempts < config.episodes * config.max_attempts:
                result = record_episode(env, config.seed + attempts, task_dir, config, actor)
                attempts += 1
                kept += result.path is not None
                summary.results.append(result)
                if on_episode is not None:
                    on_episode(result)
        if kept < config.episodes:
            log.warning("%s: kept only %d of %d episodes after %d attempts", task, kept, config.episodes, attempts)
    summary.wall_s = time.perf_counter() - t_start
    return summary
