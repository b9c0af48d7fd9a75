"""Gym-like facade over scene + controller + task, for the ROS sim bridge and the `mole-vla sim` commands.

    env = make_env("pick", seed=0)
    obs = env.reset()                      # obs["instruction"] == "pick up the red cube", ...
    obs, done, info = env.step(action)     # action = [dx, dy, dz, droll, dpitch, dyaw, gripper]

Observation keys: `wrist_rgb` (and `front_rgb` when configured; (H, W, 3) uint8), `ee_pose` ((7,) float64:
x, y, z in m, qx, qy, qz, qw, base frame, like franka_ros2 current_pose), `gripper_width` (float, m),
`instruction` (str). Images are rendered only for the configured cameras, and only when `render` is true.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from mole_inference.config.sim import SimConfig
from mole_inference.sim.controller import GRIPPER_OPEN, HOME_POS, EEDeltaController
from mole_inference.sim.expert import HOVER_Z, ScriptedExpert, down_rot
from mole_inference.sim.scene import FR3Scene, SceneState
from mole_inference.sim.tasks import make_task

START_NEAR_Z = (0.05, HOVER_Z)  # m: TCP heights of a start_near_target start (fingertips clear the cube's top)

log = logging.getLogger(__name__)


class SimEnv:
    """One simulated FR3 episode at a time: `reset()` -> obs, `step(action)` -> (obs, done, info)."""

    def __init__(self, config: SimConfig, seed: int | None = None) -> None:
        self.config = config
        self.task = make_task(config.task)
        self.scene = FR3Scene(physics_dt=config.physics_dt, image_size=config.image_size)
        if config.controller == "impedance":  # torque control like CRISP on the robot; see sim.impedance
            from mole_inference.sim.impedance import CartesianImpedanceController

            self.controller: EEDeltaController = CartesianImpedanceController(
                self.scene, config.control_dt, config.impedance)
        else:
            self.controller = EEDeltaController(self.scene, control_dt=config.control_dt)
        self.rng = np.random.default_rng(seed)
        self.steps = 0
        self.success = False
        if config.max_seconds is not None:
            self.task.max_seconds = config.max_seconds
        self.max_steps = self.task.max_steps(config.control_dt)

    @property
    def instruction(self) -> str:
        """The current episode's instruction."""
        return self.task.instruction

    @property
    def control_dt(self) -> float:
        """Seconds of simulated time per `step`."""
        return self.controller.control_dt

    def reset(self, seed: int | None = None, render: bool = True) -> dict[str, Any]:
        """Start an episode: new layout and instruction (from `seed`, else the env's generator), home pose."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.scene.mujoco.mj_resetData(self.scene.model, self.scene.data)
        instruction = self.task.reset(self.rng)
        for name, p in self.task.layout.items():
            self.scene.place_object(name, p.x, p.y, p.yaw)
        self.controller.reset(GRIPPER_OPEN, *self._start_pose())
        self.steps = 0
        self.success = False
        log.debug("reset %s: %r", self.task.name, instruction)
        return self.observe(render)

    def _start_pose(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Random start pose drawn after the layout (a seed's layout does not depend on it); None: home."""
        c = self.config
        if c.start_near_target > 0:
            target = self.task.layout[self.task.target]
            xy = np.array([target.x, target.y]) + self.rng.uniform(-c.start_near_target, c.start_near_target, 2)
            pos = np.array([*xy, self.rng.uniform(*START_NEAR_Z)])
        elif c.start_offset > 0 or c.start_yaw > 0:
            box = np.array([c.start_offset, c.start_offset, c.start_offset / 2])
            pos = HOME_POS + self.rng.uniform(-box, box)
        else:
            return None, None
        return pos, down_rot(float(self.rng.uniform(-c.start_yaw, c.start_yaw)))

    def step(self, action: np.ndarray, render: bool = True) -> tuple[dict[str, Any], bool, dict[str, Any]]:
        """Apply one EE delta for one control tick; done on success or at the episode's step limit."""
        self.controller.step(action)
        return self._advance(render)

    def step_to(self, position: np.ndarray, rotation: np.ndarray, gripper: float,
                render: bool = True) -> tuple[dict[str, Any], bool, dict[str, Any]]:
        """Servo one control tick towards an absolute TCP target (base frame, (3,) m and (3, 3) rotation), like
        the robot's impedance controller following `target_pose`; otherwise the same as `step`."""
        self.controller.servo_to(np.asarray(position, dtype=float), np.asarray(rotation, dtype=float), gripper)
        return self._advance(render)

    def _advance(self, render: bool) -> tuple[dict[str, Any], bool, dict[str, Any]]:
        self.steps += 1
        self.success = self.task.success(self.scene.state())
        timeout = self.steps >= self.max_steps
        info = {"success": self.success, "timeout": timeout and not self.success, "step": self.steps,
                "time": self.steps * self.control_dt, "task": self.task.name}
        return self.observe(render), self.success or timeout, info

    def observe(self, render: bool = True) -> dict[str, Any]:
        """Current observation; images for the configured cameras when `render` is true."""
        pos, quat = self.scene.ee_pose()
        obs: dict[str, Any] = {
            "ee_pose": np.concatenate([pos, quat]),
            "gripper_width": self.scene.gripper_width(),
            "instruction": self.task.instruction,
        }
        if render:
            for camera in self.config.cameras:
                obs[f"{camera}_rgb"] = self.scene.render(camera)
        return obs

    def render(self, camera: str = "wrist") -> np.ndarray:
        """RGB image (H, W, 3) uint8 of `camera` ('wrist' or 'front') now."""
        return self.scene.render(camera)

    def state(self) -> SceneState:
        """Privileged state (object poses, contacts) for experts and evaluation."""
        return self.scene.state()

    def make_expert(self, rng: np.random.Generator | None = None, noisy: bool = True,
                    control_dt: float | None = None) -> ScriptedExpert:
        """A scripted expert for this env's task (call its `reset()` after each env reset); `noisy=False`: without
        the config's DART noise (an operator's clean corrections, `sim eval --expert`); `control_dt`: the period
        it acts at, when not the env's (a policy's action period)."""
        cfg = self.config
        return ScriptedExpert(self.task, control_dt or self.control_dt, cfg.expert_noise_trans if noisy else 0.0,
                              cfg.expert_noise_rot if noisy else 0.0, rng if rng is not None else self.rng,
                              grasp_turn=cfg.expert_grasp_turn, release_tol=cfg.expert_release_tol,
                              place_offset=cfg.expert_place_offset, grasp_hold=cfg.expert_grasp_hold,
                              grasp_offset=cfg.expert_grasp_offset)

    def close(self) -> None:
        """Release the renderer's GL context."""
        self.scene.close()

    def __enter__(self) -> SimEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_env(task_name: str = "pick", seed: int | None = None, **overrides: Any) -> SimEnv:
    """Build a SimEnv for `task_name`; `overrides` are SimConfig fields (control_dt=0.02 for 50 Hz, ...)."""
    from mole_inference.config.base import from_dict

    config = from_dict(SimConfig, {"task": task_name, **overrides})
    log.info("sim env: %s", dataclasses.asdict(config))
    return SimEnv(config, seed)


def run_expert_episode(env: SimEnv, seed: int, render: bool = False) -> bool:
    """Reset with `seed`, roll out the scripted expert until done; True on success."""
    env.reset(seed, render=render)
    expert = env.make_expert()
    expert.reset()
    done, info = False, {"success": False}
    while not done:
        _, done, info = env.step(expert.act(env.state()), render=render)
    return bool(info["success"])
