"""Scripted expert: reads privileged state, plans TCP waypoints per task, and emits EE deltas each tick.

The plan is a generator of waypoints re-evaluated every tick against the current state (closed loop), so
injected action noise gets corrected and the recorded demonstrations contain recoveries. `last_clean` is the
action before the noise: DART (Laskey et al. 2017) executes the noisy action and records the clean one, so the
labels are the expert's corrections rather than the noise itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from mole_inference.control.transforms import (
    matrix_to_rotvec,
    matrix_to_rpy,
    quat_normalize,
    quat_to_matrix,
    rotvec_to_matrix,
    wrap_angle,
)
from mole_inference.sim.controller import GRIPPER_CLOSED, GRIPPER_OPEN, HOME_ROT
from mole_inference.sim.scene import CUBE_HALF, SceneState
from mole_inference.sim.tasks import PickTask, PushForwardTask, StackTask, Task, TouchTask

log = logging.getLogger(__name__)

HOVER_Z = 0.13  # m: TCP height for moving above the objects
LOW_LEVEL_Z = 0.07  # m: lowest TCP height for re-centring above a cube with open fingers (tips clear its top)
MAX_SPEED = 0.25  # m/s
MAX_ANGULAR_SPEED = 1.5  # rad/s
GRASP_SETTLE = 0.06  # s the fingers hold the cube before the expert lifts (grasp_hold None)
GRASP_HOLD_MAX = 0.6  # s: the longest it waits for them
PUSH_GRIPPER = 0.4  # fingers ~3 cm apart: a two-point contact that keeps a pushed cube square
RESPONSE_TIME = 0.1  # s: fraction of the remaining error closed per tick is control_dt / RESPONSE_TIME


@dataclass(frozen=True)
class Waypoint:
    """Desired TCP position (m), yaw about the base z axis (rad, EE pointing down) and gripper command."""

    pos: np.ndarray
    yaw: float
    gripper: float


def ee_yaw(rot: np.ndarray) -> float:
    """Yaw of a pointing-down EE orientation (0 at the home pose)."""
    return float(np.arctan2(rot[1, 0], rot[0, 0]))


def grasp_yaw(state: SceneState, name: str, near: float = 0.0) -> float:
    """EE yaw that puts the fingers on two faces of cube `name`: its yaw modulo 90 degrees, nearest `near` (the
    EE's current yaw gives the smallest turn, which the wrist camera shows: the cube's edges against the image's)."""
    rot = quat_to_matrix(quat_normalize(state.objects[name].quat))
    yaw = float(np.arctan2(rot[1, 0], rot[0, 0]))
    return near + wrap_angle((yaw - near) * 4.0) / 4.0  # four-fold symmetry of a cube about z


class ScriptedExpert:
    """Privileged-state expert for the tasks in `tasks.py`; `act(state)` returns a 7-D EE delta."""

    def __init__(self, task: Task, control_dt: float = 0.1, noise_trans: float = 0.0, noise_rot: float = 0.0,
                 rng: np.random.Generator | None = None, grasp_turn: bool = True, release_tol: float = 0.008,
                 place_offset: float = 0.008, grasp_hold: float | None = None, grasp_offset: float = 0.012) -> None:
        self.task = task
        # After closing on a cube: with None, lift once the fingers have held it for GRASP_SETTLE (the lift starts
        # 0.1 s after closing in this sim; at most GRASP_HOLD_MAX). A fixed wait (the recordings before stage BB
        # stood still 0.6 s) shows a policy frames of a closed hand standing still that look like the frames of the
        # lift's start: replanning every 0.1 s from "somewhere in the wait", policies crept upward or held the cube
        # on the table until time ran out (traced on tuning layouts). Waiting on what the fingers do keeps the wait
        # visible in the image.
        self.grasp_hold = grasp_hold
        # Pick and stack: each grasp closes with the TCP up to `grasp_offset` (m) off the cube's centre in x/y (a
        # uniform draw per attempt; the fingers open 8 cm around a 4 cm cube, so the grasp still holds). An expert
        # that closed only within 5 mm of the centre taught a policy that hovers 5-20 mm off to keep centring and
        # never closes (traced on tuning stack layouts: 18 s at the cube, fingers open). 0: centred, as the
        # recordings before stage BB.
        self.grasp_offset = grasp_offset
        # Stack's release. Success allows the cube 2 cm off the base's centre; an expert that always centred it to
        # 1 mm and opened only within 3 mm of a pose 6 mm up taught a policy that lands the cube 3-8 mm off centre
        # to keep adjusting and never let go (traced on tuning layouts: cube resting on the base, hand closed).
        # So each attempt aims the cube at a point up to `place_offset` (m) from the base's centre in x/y, drawn
        # from `rng`, and opens within `release_tol` (m) of the pose 2 mm above resting there: the demonstrations
        # show "near enough: open" over a spread of offsets. Recordings before stage T: 0.003 and 0 (6 mm up).
        self.release_tol = release_tol
        self.place_offset = place_offset
        # Turn to the cube's nearest face before grasping; without it the fingers (8 cm) close across the cube at
        # any yaw (4 cm, 5.7 cm corner to corner), and the close-up wrist views show cubes at every angle, as a
        # policy that does not turn will see them.
        self.grasp_turn = grasp_turn
        self.control_dt = control_dt
        self.noise_trans = noise_trans  # m, std of Gaussian noise added to each translation delta
        self.noise_rot = noise_rot  # rad, std of noise added to each rotation delta
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self._state: SceneState | None = None
        self._plan: Iterator[Waypoint] | None = None
        self._last: Waypoint | None = None
        self.last_clean: np.ndarray | None = None  # the last action before noise (DART's label)

    def reset(self) -> None:
        """Start a new plan for the task's current episode (call after `task.reset`)."""
        planners: dict[type, Callable[[], Iterator[Waypoint]]] = {
            TouchTask: self._touch, PushForwardTask: self._push, PickTask: self._pick, StackTask: self._stack,
        }
        self._plan = planners[type(self.task)]()
        self._last = None

    def act(self, state: SceneState) -> np.ndarray:
        """EE delta [dx, dy, dz, droll, dpitch, dyaw, gripper] towards the current waypoint."""
        if self._plan is None:
            self.reset()
        self._state = state
        waypoint = next(self._plan, None) or self._last
        if waypoint is None:
            waypoint = Waypoint(state.ee_pos, ee_yaw(state.ee_rot), GRIPPER_OPEN)
        self._last = waypoint
        return self._delta(state, waypoint)

    @property
    def waypoint_pos(self) -> np.ndarray | None:
        """Where the plan's current waypoint puts the TCP (None before the first `act`)."""
        return None if self._last is None else np.asarray(self._last.pos, dtype=float)

    def _delta(self, state: SceneState, wp: Waypoint) -> np.ndarray:
        gain = min(1.0, self.control_dt / RESPONSE_TIME)
        step = gain * (wp.pos - state.ee_pos)
        step *= min(1.0, MAX_SPEED * self.control_dt / max(np.linalg.norm(step), 1e-9))
        rotvec = gain * matrix_to_rotvec(down_rot(wp.yaw) @ state.ee_rot.T)
        rotvec *= min(1.0, MAX_ANGULAR_SPEED * self.control_dt / max(np.linalg.norm(rotvec), 1e-9))
        self.last_clean = np.concatenate([step, matrix_to_rpy(rotvec_to_matrix(rotvec)), [wp.gripper]])
        if self.noise_trans > 0:
            step = step + self.rng.normal(0.0, self.noise_trans, 3)
        if self.noise_rot > 0:
            rotvec = rotvec + self.rng.normal(0.0, self.noise_rot, 3)
        rpy = matrix_to_rpy(rotvec_to_matrix(rotvec))
        return np.concatenate([step, rpy, [wp.gripper]])

    # -- plan building blocks ---------------------------------------------------------------------
    def _move(self, where: Callable[[SceneState], np.ndarray], yaw: Callable[[SceneState], float],
              gripper: float, tol: float = 0.008, timeout: float = 4.0) -> Iterator[Waypoint]:
        """Yield waypoints until the TCP is within `tol` of `where(state)` (or `timeout` seconds pass)."""
        for _ in range(self._ticks(timeout)):
            s = self._state
            target, target_yaw = where(s), yaw(s)
            yaw_err = abs(wrap_angle(ee_yaw(s.ee_rot) - target_yaw))
            if np.linalg.norm(target - s.ee_pos) < tol and yaw_err < 0.05:
                return
            yield Waypoint(target, target_yaw, gripper)

    def _hold(self, seconds: float, gripper: float) -> Iterator[Waypoint]:
        """Stay where the TCP is (at the pose of the first tick) while the gripper acts."""
        s = self._state
        wp = Waypoint(s.ee_pos.copy(), ee_yaw(s.ee_rot), gripper)
        for _ in range(self._ticks(seconds)):
            yield wp

    def _close_on(self, name: str) -> Iterator[Waypoint]:
        """Close where the TCP is until both fingers have held `name` for GRASP_SETTLE (at most GRASP_HOLD_MAX: a
        missed grasp lifts the empty hand, and the plan's loop tries again)."""
        held = 0
        for wp in self._hold(GRASP_HOLD_MAX, GRIPPER_CLOSED):
            yield wp
            held = held + 1 if self._state.held(name) else 0
            if held >= self._ticks(GRASP_SETTLE):
                return

    def _ticks(self, seconds: float) -> int:
        return max(1, int(np.ceil(seconds / self.control_dt)))

    def _above(self, name: str, height: float, aim: np.ndarray | None = None) -> Callable[[SceneState], np.ndarray]:
        """TCP target `height` above the table over `name`'s centre (plus `aim` in x/y)."""
        shift = np.zeros(2) if aim is None else aim
        return lambda s: np.array([*(s.objects[name].pos[:2] + shift), height])

    def _carry(self, held: str, base: str, height: float,
               aim: np.ndarray | None = None) -> Callable[[SceneState], np.ndarray]:
        """TCP target that puts the held cube's centre `height` above the centre of `base` (plus `aim` in x/y)."""
        shift = np.array([*(aim if aim is not None else (0.0, 0.0)), height])

        def where(s: SceneState) -> np.ndarray:
            offset = s.objects[held].pos - s.ee_pos  # compensates slip of the cube in the fingers
            return s.objects[base].pos + shift - offset

        return where

    def _grasp(self, name: str) -> Iterator[Waypoint]:
        """Go above `name` without turning, turn there to its nearest grasp yaw (the cube fills more of the wrist
        view above it than from afar, so the turn is what the image shows), descend around it, close, lift."""
        start = ee_yaw(self._state.ee_rot)
        # From above HOVER_Z (every demonstration's start) this is "go above it at HOVER_Z"; from lower (a policy
        # that descended beside the cube, when the expert takes over) it re-centres at the height it is at, no
        # lower than LOW_LEVEL_Z, instead of climbing back: the correction stays where the mistake was made.
        def level_above(s: SceneState) -> np.ndarray:
            return np.array([*s.objects[name].pos[:2], np.clip(s.ee_pos[2], LOW_LEVEL_Z, HOVER_Z)])

        yield from self._move(level_above, lambda s: start, GRIPPER_OPEN, tol=0.01)
        level = float(np.clip(self._state.ee_pos[2], LOW_LEVEL_Z, HOVER_Z))
        near = ee_yaw(self._state.ee_rot)
        yaw = (lambda s: grasp_yaw(s, name, near)) if self.grasp_turn else (lambda s: near)
        aim = self._disc(self.grasp_offset)
        yield from self._move(self._above(name, level, aim), yaw, GRIPPER_OPEN, tol=0.01)
        yield from self._move(self._above(name, CUBE_HALF, aim), yaw, GRIPPER_OPEN, tol=0.005)
        if self.grasp_hold is None:
            yield from self._close_on(name)
        else:
            yield from self._hold(self.grasp_hold, GRIPPER_CLOSED)
        yield from self._move(lambda s: np.array([*s.ee_pos[:2], HOVER_Z]), yaw, GRIPPER_CLOSED, tol=0.01)

    # -- per-task plans (each loops: a failed attempt is retried until the episode ends) ------------
    def _touch(self) -> Iterator[Waypoint]:
        # Touching needs no particular yaw: keep the start yaw, so the wrist view does not turn on the way.
        name = self.task.target
        start_yaw = ee_yaw(self._state.ee_rot) if self._state is not None else 0.0
        yaw = lambda s: start_yaw  # noqa: E731
        while True:
            yield from self._move(self._above(name, HOVER_Z), yaw, GRIPPER_CLOSED, tol=0.01)
            # Aim a little below the cube's top face: the episode ends on the first contact.
            yield from self._move(self._above(name, 2 * CUBE_HALF - 0.01), yaw, GRIPPER_CLOSED, tol=0.003,
                                  timeout=2.0)

    def _push(self) -> Iterator[Waypoint]:
        name = self.task.target
        goal_x = self.task.initial_pos(name)[0] + self.task.push_distance + 0.04
        zero = lambda s: 0.0  # noqa: E731

        def behind(s: SceneState, z: float = HOVER_Z) -> np.ndarray:
            return np.array([s.objects[name].pos[0] - 0.075, s.objects[name].pos[1], z])

        while True:
            yield from self._move(behind, zero, PUSH_GRIPPER, tol=0.01)
            yield from self._move(lambda s: behind(s, 0.02), zero, PUSH_GRIPPER, tol=0.005)
            # Two fingertips a few cm apart push the back face; steering on the cube's y keeps it straight.
            yield from self._move(lambda s: np.array([goal_x, s.objects[name].pos[1], 0.02]), zero, PUSH_GRIPPER,
                                  tol=0.01, timeout=6.0)
            yield from self._move(lambda s: np.array([*s.ee_pos[:2], HOVER_Z]), zero, PUSH_GRIPPER, tol=0.01)

    def _pick(self) -> Iterator[Waypoint]:
        while True:
            yield from self._grasp(self.task.target)
            yield from self._hold(0.5, GRIPPER_CLOSED)

    def _stack(self) -> Iterator[Waypoint]:
        top, base = self.task.target, self.task.base
        while True:
            yield from self._grasp(top)
            if not self._state.held(top):
                continue
            # carry without turning: a centred cube rests on the base at any yaw
            carried = ee_yaw(self._state.ee_rot)
            yaw = lambda s, carried=carried: carried  # noqa: E731
            aim = self._disc(self.place_offset)
            yield from self._move(self._carry(top, base, HOVER_Z, aim), yaw, GRIPPER_CLOSED, tol=0.008)
            clearance = 0.006 if self.place_offset == 0 else 0.002  # recordings before stage T: 6 mm up
            yield from self._move(self._carry(top, base, 2 * CUBE_HALF + clearance, aim), yaw, GRIPPER_CLOSED,
                                  tol=self.release_tol)
            yield from self._hold(0.5, GRIPPER_OPEN)
            yield from self._move(lambda s: np.array([*s.ee_pos[:2], HOVER_Z]), yaw, GRIPPER_OPEN, tol=0.01)


    def _disc(self, radius: float) -> np.ndarray:
        """An x/y offset uniform in a disc of `radius` (m): where a grasp closes or a stack puts the cube relative
        to the centre (no draw when 0, so older recordings replay with the same noise)."""
        if radius == 0:
            return np.zeros(2)
        r, phi = radius * np.sqrt(self.rng.uniform()), self.rng.uniform(0.0, 2 * np.pi)
        return np.array([r * np.cos(phi), r * np.sin(phi)])


def down_rot(yaw: float) -> np.ndarray:
    """EE rotation pointing down with the given yaw about the base z axis."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ HOME_ROT
