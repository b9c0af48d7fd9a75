"""Closed-loop evaluation of a Policy in the MuJoCo FR3 sim: success per task, inference time, layers run.

Loop, per control step of `policy.action_dt` seconds (the env runs at the model's rate):
1. every `replan` steps, infer a chunk from the current wrist image and push it into a `ChunkScheduler`
   (the robot's chunk stepping; `ensemble=True` turns on its temporal ensemble over recent chunks);
2. the scheduler's action for this step goes through the robot's `SafetyEnvelope` (step, workspace and leash
   clamps scaled to action_dt), and the sim servos to exactly the target pose the envelope returns.
The default `replan=1` (a new chunk every step, its first action executed) is what the robot stack does when
inference keeps up with action_dt; sim time stands still during inference, so latency does not count here.

Determinism: episode j of every task uses layout seed `seed + j` (the same scenes for every router/checkpoint;
with the demos' `start_offset`/`start_yaw`, a demo's seed replays its exact start: layout, then start pose);
the policy's diffusion noise seeds come from a generator seeded with (seed, task index, j).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mole_inference.config.base import check
from mole_inference.config.sim import expert_overrides
from mole_inference.policy.contract import Policy, state_kwargs
from mole_inference.sim.tasks import TASKS, make_task

log = logging.getLogger(__name__)

MAX_SPEED = 0.25  # m/s: the envelope's per-step translation limit is MAX_SPEED * action_dt (robot default)
MAX_ANGULAR_SPEED = 2.5  # rad/s


@dataclass
class EvalConfig:
    """Which episodes to run and how actions are stepped; see the module docstring."""

    tasks: tuple[str, ...] = tuple(TASKS)
    episodes: int = 10  # per task
    seed: int = 0
    replan: int = 1  # control steps executed from each chunk before the next inference
    ensemble: bool = False  # temporal ensemble over overlapping chunks (ChunkScheduler)
    gripper_vote: bool = False  # gripper = weighted vote of the kept chunks covering the step (ChunkScheduler)
    gripper_lookahead: int = 0  # chunk steps a planned release is read ahead (SchedulerConfig.gripper_open_lookahead)
    ensemble_horizon: int = 4  # chunks kept for the ensemble and the gripper vote
    ensemble_decay: float = 0.5  # weights exp(-decay * i), i = 0 for the newest chunk
    max_seconds: float | None = None  # episode limit override (None: each task's own)
    video_episodes: int = 1  # first episodes per task whose wrist frames are kept for the strip
    start_offset: float = 0.0  # m, random start TCP around home (SimConfig); the demos' value replays their starts
    start_yaw: float = 0.0  # rad, random start yaw (SimConfig)
    grasp_turn: bool = True  # `--expert` only: whether the scripted expert turns before grasping
    release_tol: float = 0.008  # `--expert` only, m: stack's release tolerance (ScriptedExpert.release_tol)
    place_offset: float = 0.008  # `--expert` only, m: stack's placement spread (ScriptedExpert.place_offset)
    grasp_hold: float | None = None  # `--expert` only, s: the wait after closing (ScriptedExpert.grasp_hold)
    grasp_offset: float = 0.012  # `--expert` only, m: where grasps close (ScriptedExpert.grasp_offset)
    sticky_gripper: float = 0.0  # s a policy gripper switch is kept before the next (SafetyConfig); 0: off
    gripper_confirm: float = 0.0  # s the policy must ask for a gripper switch before it is sent (debounce); 0: off

    def __post_init__(self) -> None:
        self.tasks = tuple(self.tasks)
        check(len(self.tasks) > 0, "tasks", self.tasks, "name at least one task")
        for name in self.tasks:
            make_task(name)
        check(self.episodes >= 1, "episodes", self.episodes, "must be >= 1")
        check(self.seed >= 0, "seed", self.seed, "must be >= 0")
        check(self.replan >= 1, "replan", self.replan, "must be >= 1 (steps executed per chunk)")
        check(self.max_seconds is None or self.max_seconds > 0, "max_seconds", self.max_seconds, "must be > 0")
        check(self.ensemble_horizon >= 1, "ensemble_horizon", self.ensemble_horizon, "must be >= 1")
        check(self.ensemble_decay >= 0, "ensemble_decay", self.ensemble_decay, "must be >= 0")
        check(self.video_episodes >= 0, "video_episodes", self.video_episodes, "must be >= 0")
        check(self.sticky_gripper >= 0, "sticky_gripper", self.sticky_gripper, "must be >= 0 s")
        check(self.gripper_confirm >= 0, "gripper_confirm", self.gripper_confirm, "must be >= 0 s")
        check(self.gripper_lookahead >= 0, "gripper_lookahead", self.gripper_lookahead, "must be >= 0 steps")


@dataclass
class EpisodeOutcome:
    """One evaluated episode; `frames` (wrist RGB per step) only for strip episodes, never serialized."""

    task: str
    seed: int
    instruction: str
    success: bool
    steps: int
    inference_ms: list[float]
    layers_run: list[int]
    clamped_steps: int
    wall_s: float
    frames: list[np.ndarray] = field(default_factory=list, repr=False)
    routing: list[tuple[int, ...]] = field(default_factory=list, repr=False)  # layers run, per inference
    milestones: dict[str, bool] = field(default_factory=dict)  # task milestone -> reached at some step (tasks.py)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary of the episode."""
        return {"task": self.task, "seed": self.seed, "instruction": self.instruction, "success": self.success,
                "steps": self.steps, "inferences": len(self.inference_ms),
                "mean_layers_run": float(np.mean(self.layers_run)) if self.layers_run else 0.0,
                "clamped_steps": self.clamped_steps, "wall_s": round(self.wall_s, 3), "milestones": self.milestones}


@dataclass
class EvalReport:
    """All outcomes of `evaluate` plus what produced them; `to_dict` is the JSON report."""

    config: EvalConfig
    action_dt: float
    num_layers: int
    episodes: list[EpisodeOutcome] = field(default_factory=list)
    wall_s: float = 0.0

    def per_task(self) -> dict[str, dict[str, Any]]:
        """Per task: episodes, successes, success rate with its Wilson 95 % interval, mean steps, and the share
        of episodes that reached each of the task's milestones (in the task's order)."""
        out = {}
        for task in self.config.tasks:
            rows = [e for e in self.episodes if e.task == task]
            if rows:
                wins = sum(e.success for e in rows)
                names = list(dict.fromkeys(k for e in rows for k in e.milestones))
                out[task] = {"episodes": len(rows), "successes": wins, "success_rate": wins / len(rows),
                             "ci95": list(wilson_interval(wins, len(rows))),
                             "mean_steps": float(np.mean([e.steps for e in rows])),
                             "clamped_share": sum(e.clamped_steps for e in rows) / max(1, sum(e.steps for e in rows)),
                             "milestones": {k: sum(e.milestones.get(k, False) for e in rows) / len(rows)
                                            for k in names}}
        return out

    @property
    def inference_ms(self) -> list[float]:
        """Wall time of every inference, in ms."""
        return [ms for e in self.episodes for ms in e.inference_ms]

    @property
    def layers_run(self) -> list[int]:
        """Decoder layers run by every inference."""
        return [k for e in self.episodes for k in e.layers_run]

    def to_dict(self, **meta: Any) -> dict[str, Any]:
        """The JSON report; `meta` (checkpoint, preset, router, ...) is merged in at the top level."""
        ms, layers = self.inference_ms, self.layers_run
        successes = [e.success for e in self.episodes]
        return {
            **meta,
            "seed": self.config.seed, "tasks": list(self.config.tasks), "episodes_per_task": self.config.episodes,
            "replan": self.config.replan, "ensemble": self.config.ensemble, "gripper_vote": self.config.gripper_vote,
            "gripper_lookahead": self.config.gripper_lookahead,
            "ensemble_horizon": self.config.ensemble_horizon, "ensemble_decay": self.config.ensemble_decay,
            "action_dt": self.action_dt,
            "start_offset": self.config.start_offset, "start_yaw": self.config.start_yaw,
            "sticky_gripper": self.config.sticky_gripper, "gripper_confirm": self.config.gripper_confirm,
            "max_seconds": self.config.max_seconds,
            "success_rate": float(np.mean(successes)) if successes else 0.0,
            "ci95": list(wilson_interval(sum(successes), len(successes))),
            "per_task": self.per_task(),
            "inference_ms": {"mean": statistics.fmean(ms) if ms else 0.0,
                             "median": statistics.median(ms) if ms else 0.0, "count": len(ms)},
            "inference_hz": 1000.0 / statistics.fmean(ms) if ms else 0.0,
            "mean_layers_run": statistics.fmean(layers) if layers else 0.0,
            "total_layers": self.num_layers,
            "wall_s": round(self.wall_s, 3),
            "wall_s_per_episode": round(self.wall_s / max(1, len(self.episodes)), 3),
            "episodes": [e.to_dict() for e in self.episodes],
        }


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95 % for z = 1.96) of a success rate; (0, 1) when n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def safety_envelope(action_dt: float, sticky_gripper: float = 0.0, gripper_confirm: float = 0.0) -> Any:
    """The robot's SafetyEnvelope with per-tick limits scaled from the robot's 50 Hz defaults to `action_dt`.

    Deltas integrate onto the previous target (leashed to the measured pose), as on the robot and as the
    demonstrations were recorded; integrating from the measured pose loses the servo lag every step.
    """
    from mole_inference.config.control import SafetyConfig
    from mole_inference.control.safety import SafetyEnvelope

    step, rot = MAX_SPEED * action_dt, min(MAX_ANGULAR_SPEED * action_dt, 3.0)
    return SafetyEnvelope(SafetyConfig(max_step_translation=step, max_step_rotation=rot,
                                       max_target_distance=max(0.03, 1.5 * step),
                                       max_target_angle=min(max(0.2, 1.5 * rot), 3.0), integrate_from="target",
                                       gripper_min_hold_ticks=round(sticky_gripper / action_dt),
                                       gripper_confirm_ticks=max(1, round(gripper_confirm / action_dt))))


def command_to_env_delta(env: Any, command: Any, gripper: float) -> np.ndarray:
    """The env action whose target equals the envelope's absolute target (the controller's reference may be
    its previous target, not the measured pose the envelope integrated from)."""
    from mole_inference.control.transforms import matrix_to_rpy, quat_to_matrix

    ref_pos, ref_rot = env.controller.target_from_delta(np.zeros(7))
    rpy = matrix_to_rpy(quat_to_matrix(command.quaternion) @ ref_rot.T)
    return np.concatenate([command.position - ref_pos, rpy, [gripper]])


def run_episode(env: Any, policy: Policy, config: EvalConfig, task_index: int, episode: int,
                keep_frames: bool = False) -> EpisodeOutcome:
    """Roll out one episode of `env`'s task in closed loop through `policy` (see module docstring)."""
    from mole_inference.config.control import SchedulerConfig
    from mole_inference.control.safety import Source
    from mole_inference.control.scheduler import ChunkScheduler
    from mole_inference.control.transforms import Pose
    from mole_inference.sim.controller import GRIPPER_OPEN

    t_start = time.perf_counter()
    dt = policy.action_dt
    seed = config.seed + episode
    noise_rng = np.random.default_rng([config.seed, task_index, episode])
    scheduler = ChunkScheduler(SchedulerConfig(control_rate_hz=1.0 / dt, action_dt=dt, ensemble=config.ensemble,
                                               gripper_ensemble=config.gripper_vote,
                                               gripper_open_lookahead=config.gripper_lookahead,
                                               ensemble_horizon=config.ensemble_horizon,
                                               ensemble_decay=config.ensemble_decay))
    envelope = safety_envelope(dt, config.sticky_gripper, config.gripper_confirm)
    policy.reset()
    obs = env.reset(seed, render=True)
    frames = [obs["wrist_rgb"]] if keep_frames else []
    inference_ms: list[float] = []
    layers: list[int] = []
    routing: list[tuple[int, ...]] = []
    clamped = step = 0
    done, info = False, {"success": False}
    milestones = dict.fromkeys(env.task.milestone_names, False)
    while not done:
        now = step * dt
        if step % config.replan == 0:
            t0 = time.perf_counter()
            chunk = policy.infer(obs["wrist_rgb"], obs["instruction"], seed=int(noise_rng.integers(2**31 - 1)),
                                 **state_kwargs(policy, obs["ee_pose"]))
            inference_ms.append((time.perf_counter() - t0) * 1e3)
            layers.append(chunk.routing.num_active)
            routing.append(tuple(chunk.routing.layers))
            if chunk.is_finite:
                scheduler.push(chunk.actions, now, now)
            else:
                log.warning("%s episode %d step %d: non-finite chunk dropped (hold)", env.task.name, episode, step)
        measured = Pose.from_arrays(obs["ee_pose"][:3], obs["ee_pose"][3:])
        command = envelope.apply(measured, scheduler.next_action(now), Source.POLICY)
        clamped += bool(command.flags)
        gripper = command.gripper if command.gripper is not None else GRIPPER_OPEN
        render = keep_frames or (step + 1) % config.replan == 0
        obs, done, info = env.step(command_to_env_delta(env, command, gripper), render=render)
        if keep_frames:
            frames.append(obs["wrist_rgb"])
        if milestones:  # tasks with one act have none: no state snapshot per step
            for name, now_reached in env.task.milestones(env.state()).items():
                milestones[name] = milestones[name] or now_reached
        step += 1
    return EpisodeOutcome(env.task.name, seed, env.instruction, bool(info["success"]), step, inference_ms, layers,
                          clamped, time.perf_counter() - t_start, frames, routing, milestones)


def evaluate(policy: Policy, config: EvalConfig,
             on_episode: Callable[[EpisodeOutcome], None] | None = None) -> EvalReport:
    """Run `config.episodes` closed-loop episodes per task; `on_episode` is called after each (progress)."""
    from mole_inference.sim.env import make_env

    report = EvalReport(config, policy.action_dt, policy.num_layers)
    t_start = time.perf_counter()
    for task_index, task in enumerate(config.tasks):
        overrides = {"max_seconds": config.max_seconds} if config.max_seconds is not None else {}
        overrides.update(start_offset=config.start_offset, start_yaw=config.start_yaw, **expert_overrides(config))
        with make_env(task, seed=config.seed, control_dt=policy.action_dt, cameras=("wrist",), **overrides) as env:
            if hasattr(policy, "env"):  # the scripted expert (sim eval --expert) reads the sim's state
                policy.env = env
            for j in range(config.episodes):
                outcome = run_episode(env, policy, config, task_index, j, keep_frames=j < config.video_episodes)
                report.episodes.append(outcome)
                if on_episode is not None:
                    on_episode(outcome)
    report.wall_s = time.perf_counter() - t_start
    return report


def strip_rows(report: EvalReport) -> list[Any]:
    """StripRows for the episodes that kept frames: caption 'task | instruction | success/failure'."""
    from mole_inference.sim.strip import StripRow

    return [StripRow(e.frames, f"{e.task} | {e.instruction} | {'success' if e.success else 'failure'} "
                               f"({e.steps} steps)", e.success)
            for e in report.episodes if e.frames]
