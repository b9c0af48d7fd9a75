"""End-effector delta control of the simulated FR3: damped-least-squares IK onto the joint position servos.

Action convention (the same numbers mean the same motion on the robot):
    action = [dx, dy, dz, droll, dpitch, dyaw, gripper]
    - dx, dy, dz: translation of the EE (TCP) in metres, expressed in the robot base frame;
    - droll, dpitch, dyaw: rotation in radians, R_delta = Rz(dyaw) @ Ry(dpitch) @ Rx(droll) applied in the
      base frame on the left: R_target = R_delta @ R_measured (the EE rotates about base axes through the TCP);
    - gripper: absolute command in [0, 1], GRIPPER_OPEN = 1 (0.08 m apart), GRIPPER_CLOSED = 0; values in
      between command a proportional width. A robot driving franka Grasp/Move may threshold at 0.5.
The delta is added to the previous target while the arm is within REANCHOR_POS / REANCHOR_ROT of it, so
servo lag does not eat into commanded motion (a zero delta holds the pose exactly); when the arm is further
off (blocked by contact) the delta is added to the measured pose instead, as the robot's CRISP-style
controller does, so a blocked arm does not wind up.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from mole_inference.control.transforms import matrix_to_rotvec, rpy_to_matrix
from mole_inference.sim.scene import GRIPPER_MAX_WIDTH, SEED_QPOS

if TYPE_CHECKING:
    from mole_inference.sim.scene import FR3Scene

log = logging.getLogger(__name__)

ACTION_DIM = 7
GRIPPER_OPEN = 1.0
GRIPPER_CLOSED = 0.0
# Home: TCP 0.25 m above the table, pointing straight down, EE x axis along base x (franka's usual pose).
HOME_POS = np.array([0.45, 0.0, 0.25])
HOME_ROT = np.diag([1.0, -1.0, -1.0])  # quaternion xyzw (1, 0, 0, 0)
REANCHOR_POS = 0.01  # m
REANCHOR_ROT = 0.05  # rad


class DampedLeastSquaresIK:
    """Iterative DLS IK on `mj_jacSite` for the TCP site, with a null-space pull towards a rest posture."""

    def __init__(self, scene: FR3Scene, damping: float = 0.02, max_iters: int = 30,
                 pos_tol: float = 1e-4, rot_tol: float = 1e-3, rest_gain: float = 0.05) -> None:
        self.scene = scene
        self.mj = scene.mujoco
        self.data = self.mj.MjData(scene.model)  # scratch copy: solving never disturbs the simulation
        self.damping = damping
        self.max_iters = max_iters
        self.pos_tol = pos_tol
        self.rot_tol = rot_tol
        self.rest_gain = rest_gain
        self.rest_q = SEED_QPOS.copy()
        m = scene.model
        jnt = [m.dof_jntid[d] for d in scene.arm_dof]
        self.lower = m.jnt_range[jnt, 0] + 1e-3
        self.upper = m.jnt_range[jnt, 1] - 1e-3
        self._jacp = np.zeros((3, m.nv))
        self._jacr = np.zeros((3, m.nv))

    def forward_kinematics(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCP position and rotation matrix for arm joint positions `q`."""
        self.data.qpos[self.scene.arm_qpos] = q
        self.mj.mj_kinematics(self.scene.model, self.data)
        site = self.scene.ee_site
        return self.data.site_xpos[site].copy(), self.data.site_xmat[site].reshape(3, 3).copy()

    def solve(self, q_init: np.ndarray, target_pos: np.ndarray, target_rot: np.ndarray) -> np.ndarray:
        """Joint positions (7,) putting the TCP at `target_pos` with orientation `target_rot`, from `q_init`."""
        m, d, site, dofs = self.scene.model, self.data, self.scene.ee_site, self.scene.arm_dof
        q = np.clip(np.asarray(q_init, dtype=float).copy(), self.lower, self.upper)
        lam2 = self.damping**2
        for _ in range(self.max_iters):
            pos, rot = self.forward_kinematics(q)
            err = np.concatenate([target_pos - pos, matrix_to_rotvec(target_rot @ rot.T)])  # (6,)
            if np.linalg.norm(err[:3]) < self.pos_tol and np.linalg.norm(err[3:]) < self.rot_tol:
                break
            self.mj.mj_comPos(m, d)
            self.mj.mj_jacSite(m, d, self._jacp, self._jacr, site)
            jac = np.vstack([self._jacp[:, dofs], self._jacr[:, dofs]])  # (6, 7)
            jjt = jac @ jac.T + lam2 * np.eye(6)
            dq = jac.T @ np.linalg.solve(jjt, err)
            # Null-space term keeps the elbow near the rest posture over long episodes.
            null = np.eye(7) - jac.T @ np.linalg.solve(jjt, jac)
            dq += null @ (self.rest_gain * (self.rest_q - q))
            step = np.max(np.abs(dq))
            if step > 0.2:
                dq *= 0.2 / step
            q = np.clip(q + dq, self.lower, self.upper)
        return q


class EEDeltaController:
    """Applies one 7-D EE delta per control tick: IK to the target, then ramps the joint servos over the tick."""

    def __init__(self, scene: FR3Scene, control_dt: float = 0.1) -> None:
        physics_dt = float(scene.model.opt.timestep)
        substeps = round(control_dt / physics_dt)
        if substeps < 1 or abs(substeps * physics_dt - control_dt) > 1e-9:
            raise ValueError(
                f"control_dt={control_dt!r}: must be a positive multiple of the physics step {physics_dt}"
            )
        self.scene = scene
        self.control_dt = control_dt
        self.substeps = substeps
        self.ik = DampedLeastSquaresIK(scene)
        m = scene.model
        # Position servos apply kp (q_ref - q) - kv qdot; adding (kv / kp) * qdot_ref to the reference
        # turns that into a PD tracker of the ramp, so the arm keeps up with the commanded motion.
        self._kv_over_kp = -m.actuator_biasprm[scene.arm_act, 2] / m.actuator_gainprm[scene.arm_act, 0]
        self.home_q = self.ik.solve(SEED_QPOS, HOME_POS, HOME_ROT)
        self._target: tuple[np.ndarray, np.ndarray] | None = None

    def reset(self, gripper: float = GRIPPER_OPEN, pos: np.ndarray | None = None,
              rot: np.ndarray | None = None) -> None:
        """Put the arm at rest at the home pose (TCP above the table, pointing down), or at `pos`/`rot` (IK)."""
        q = self.home_q
        if pos is not None or rot is not None:
            q = self.ik.solve(self.home_q, HOME_POS if pos is None else pos, HOME_ROT if rot is None else rot)
        self.scene.set_robot(q, gripper)
        self.scene.forward()
        self._target = self.scene.ee_matrix()

    def target_from_delta(self, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Target TCP position and rotation: reference pose plus the delta (see module docstring)."""
        pos, rot = self.scene.ee_matrix()
        if self._target is not None:
            last_pos, last_rot = self._target
            close = np.linalg.norm(last_pos - pos) < REANCHOR_POS
            if close and np.linalg.norm(matrix_to_rotvec(last_rot @ rot.T)) < REANCHOR_ROT:
                pos, rot = last_pos, last_rot
        return pos + delta[:3], rpy_to_matrix(delta[3:6]) @ rot

    def step(self, action: np.ndarray) -> None:
        """Advance one control tick with `action` = [dx, dy, dz, droll, dpitch, dyaw, gripper]."""
        action = np.asarray(action, dtype=float)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"action has shape {action.shape}; expected ({ACTION_DIM},)")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action {action} contains NaN or inf")
        target_pos, target_rot = self.target_from_delta(action)
        self.servo_to(target_pos, target_rot, action[6])

    def servo_to(self, target_pos: np.ndarray, target_rot: np.ndarray, gripper: float) -> None:
        """Solve IK for an absolute TCP target and run one tick of physics towards it."""
        scene, mj = self.scene, self.scene.mujoco
        q_now = scene.data.qpos[scene.arm_qpos].copy()
        q_goal = self.ik.solve(q_now, target_pos, target_rot)
        self._target = (np.asarray(target_pos, dtype=float).copy(), np.asarray(target_rot, dtype=float).copy())
        q_start = scene.data.ctrl[scene.arm_act].copy()
        qdot_ref = (q_goal - q_start) / self.control_dt
        scene.data.ctrl[scene.gripper_act] = float(np.clip(gripper, 0.0, 1.0)) * 255.0
        for k in range(1, self.substeps + 1):
            ramp = q_start + (k / self.substeps) * (q_goal - q_start)
            feedforward = self._kv_over_kp * qdot_ref if k < self.substeps else 0.0
            scene.data.ctrl[scene.arm_act] = ramp + feedforward
            mj.mj_step(scene.model, scene.data)
        scene.data.ctrl[scene.arm_act] = q_goal


def gripper_command_to_width(command: float) -> float:
    """Finger separation (m) the sim servos to for a gripper command in [0, 1]."""
    return float(np.clip(command, 0.0, 1.0)) * GRIPPER_MAX_WIDTH
