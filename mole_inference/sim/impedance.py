"""Cartesian impedance control of the simulated FR3, like CRISP's `cartesian_impedance_controller` on the robot.

The robot does not follow a target pose exactly: CRISP (utiasDSL/crisp_controllers src/cartesian_controller.cpp)
commands joint torques every 1 kHz update,

    tau = J^T (K e - D J dq) + N (K_ns (q_ref - q) - D_ns dq) + tau_joint_limits + C(q, dq) dq,

with e the pose error to an EMA-filtered target (clipped per axis), N = I - J^+ J the kinematic nullspace
projector, q_ref the posture at activation, the nullspace term clipped to +-max_tau, and the change of tau per
update limited to max_delta_tau. Gravity is compensated by libfranka (CRISP's use_gravity_compensation is false
on a Franka); here MuJoCo's body gravcomp plays libfranka's part (arm and hand only, not what the hand holds).
So the arm lags a moving target (tracking takes a few hundred ms), sags under a load or a push (F / K), and
may rest a millimetre or two off: the joint friction libfranka leaves uncompensated (`residual_friction` of
franky-sim's frictionloss) against a 400 N/m spring.

Here the law runs once per physics step (physics_dt = 2 ms: 500 Hz); the per-update target filter weight and
torque-rate limit are rescaled from the robot's `update_rate` so that they mean the same per second. The arm's
position servos are turned into plain torque motors for this mode (`use_torque_actuators`); the kinematic
controller (`EEDeltaController`) keeps the servos.

Deliberate difference: CRISP's setStiffnessAndDamping tests `if (params_.nullspace.damping)`, so its default
-1.0 becomes a *negative* nullspace damping of -1 * weight; here a negative value means 2 * sqrt(stiffness), as
the parameter's description says. The damped pseudo-inverse, s / (s^2 + eps^2), is CRISP's pseudo_inverse.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mole_inference.config.base import from_dict, load_yaml
from mole_inference.config.sim import ImpedanceConfig
from mole_inference.control.transforms import matrix_to_rotvec, rotvec_to_matrix
from mole_inference.errors import ConfigError
from mole_inference.sim.controller import GRIPPER_OPEN, EEDeltaController

if TYPE_CHECKING:
    from mole_inference.sim.scene import FR3Scene

log = logging.getLogger(__name__)

CONTROLLER_NAME = "cartesian_impedance_controller"
AXES = ("x", "y", "z", "rx", "ry", "rz")
# CRISP's own defaults (src/cartesian_impedance_controller.yaml) for keys a params file leaves out
CRISP_DEFAULTS: dict[str, Any] = {
    "k_pos": 500.0,
    "k_rot": 30.0,
    "d": -1.0,
    "clip_pos": 0.1,
    "clip_rot": 0.5,
    "nullspace.stiffness": 1.0,
    "nullspace.damping": -1.0,
    "nullspace.max_tau": 5.0,
    "nullspace.regularization": 1e-6,
    "filter.target_pose": 0.1,
    "use_coriolis_compensation": False,
    "use_gravity_compensation": False,
    "use_local_jacobian": False,
    "limit_error": True,
    "limit_torques": True,
    "max_delta_tau": 0.5,
}
JOINT_LIMIT_RANGE = 0.3  # rad from a limit where CRISP's get_joint_limit_torque starts pushing back
JOINT_LIMIT_TORQUE = 5.0  # Nm at the limit


def impedance_config_from_ros_params(path: str | Path) -> ImpedanceConfig:
    """ImpedanceConfig from a controller_manager params file (launch/config/controllers/fr3.yaml layout)."""
    data = load_yaml(path)
    root = data.get("/**", data)
    try:
        params = root[CONTROLLER_NAME]["ros__parameters"]
    except (KeyError, TypeError):
        raise ConfigError(f"{path}: no {CONTROLLER_NAME}.ros__parameters (under '/**' or at top level)") from None
    manager = (root.get("controller_manager") or {}).get("ros__parameters") or {}
    task, nullspace, filters = params.get("task") or {}, params.get("nullspace") or {}, params.get("filter") or {}
    clip = task.get("error_clip") or {}

    def get(section: dict, key: str, default_key: str) -> Any:
        return section.get(key, CRISP_DEFAULTS[default_key])

    values = {
        "stiffness": [task.get(f"k_{kind}_{a}", CRISP_DEFAULTS[f"k_{kind}"]) for kind in ("pos", "rot") for a in "xyz"],
        "damping": [task.get(f"d_{kind}_{a}", CRISP_DEFAULTS["d"]) for kind in ("pos", "rot") for a in "xyz"],
        "error_clip": [clip.get(a, CRISP_DEFAULTS["clip_pos" if len(a) == 1 else "clip_rot"]) for a in AXES],
        "nullspace_stiffness": get(nullspace, "stiffness", "nullspace.stiffness"),
        "nullspace_damping": get(nullspace, "damping", "nullspace.damping"),
        "nullspace_max_tau": get(nullspace, "max_tau", "nullspace.max_tau"),
        "nullspace_regularization": get(nullspace, "regularization", "nullspace.regularization"),
        "target_filter": get(filters, "target_pose", "filter.target_pose"),
        **{
            key: get(params, key, key)
            for key in (
                "use_coriolis_compensation",
                "use_gravity_compensation",
                "use_local_jacobian",
                "limit_error",
                "limit_torques",
                "max_delta_tau",
            )
        },
        "update_rate": manager.get("update_rate", 1000.0),
    }
    values = {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in values.items()}
    values = {k: [float(x) for x in v] if isinstance(v, list) else v for k, v in values.items()}
    return from_dict(ImpedanceConfig, values, f"{path}: {CONTROLLER_NAME}")


def use_torque_actuators(scene: FR3Scene) -> None:
    """Turn the arm's position servos into torque motors (ctrl = Nm), limited to the joints' actuator ranges."""
    m = scene.model
    act = scene.arm_act
    m.actuator_gainprm[act, :] = 0.0
    m.actuator_gainprm[act, 0] = 1.0
    m.actuator_biasprm[act, :] = 0.0
    joints = m.actuator_trnid[act, 0]
    m.actuator_ctrlrange[act] = m.jnt_actfrcrange[joints]  # 87 Nm (joints 1-4), 12 Nm (5-7)
    m.actuator_ctrllimited[act] = 1


def joint_limit_torque(q: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """CRISP's get_joint_limit_torque: up to 5 Nm away from a limit, ramping in over the last 0.3 rad."""
    push_up = np.clip((JOINT_LIMIT_RANGE - (q - lower)) / JOINT_LIMIT_RANGE, 0.0, 1.0)
    push_down = np.clip((JOINT_LIMIT_RANGE - (upper - q)) / JOINT_LIMIT_RANGE, 0.0, 1.0)
    return JOINT_LIMIT_TORQUE * (push_up - push_down)


class CartesianImpedanceController(EEDeltaController):
    """EEDeltaController whose targets are followed by CRISP's impedance law in torque (see module docstring)."""

    def __init__(self, scene: FR3Scene, control_dt: float = 0.1, config: ImpedanceConfig | None = None) -> None:
        super().__init__(scene, control_dt)
        self.config = cfg = config if config is not None else ImpedanceConfig()
        use_torque_actuators(scene)
        scene.model.dof_frictionloss[scene.arm_dof] *= cfg.residual_friction
        physics_dt = float(scene.model.opt.timestep)
        updates = cfg.update_rate * physics_dt  # robot controller updates per physics step
        self.filter_weight = cfg.target_filter**updates  # of the previous filtered target, per physics step
        self.max_delta_tau = cfg.max_delta_tau * updates
        k = np.asarray(cfg.stiffness, dtype=float)
        d = np.asarray(cfg.damping, dtype=float)
        self.stiffness = k
        self.damping = np.where(d > 0, d, 2.0 * np.sqrt(k))
        self.clip = np.asarray(cfg.error_clip, dtype=float)
        self.ns_stiffness = cfg.nullspace_stiffness
        self.ns_damping = (
            cfg.nullspace_damping if cfg.nullspace_damping >= 0 else 2.0 * np.sqrt(cfg.nullspace_stiffness)
        )
        m = scene.model
        jnt = m.dof_jntid[scene.arm_dof]
        self.lower, self.upper = m.jnt_range[jnt, 0].copy(), m.jnt_range[jnt, 1].copy()
        self._jacp = np.zeros((3, m.nv))
        self._jacr = np.zeros((3, m.nv))
        self._eye = np.eye(len(scene.arm_dof))
        self.q_ref = self.home_q.copy()
        self.tau = np.zeros(len(scene.arm_dof))
        self.filtered: tuple[np.ndarray, np.ndarray] | None = None
        log.info("impedance sim controller: K=%s D=%s, %.0f Hz physics", k, np.round(self.damping, 2), 1 / physics_dt)

    def reset(
        self, gripper: float = GRIPPER_OPEN, pos: np.ndarray | None = None, rot: np.ndarray | None = None
    ) -> None:
        """Place the arm at rest (IK), then activate like CRISP: target = measured pose, q_ref = this posture."""
        super().reset(gripper, pos, rot)
        scene = self.scene
        scene.data.ctrl[scene.arm_act] = 0.0  # set_robot wrote joint positions into what are now torques
        self.tau = np.zeros(len(scene.arm_dof))
        self.q_ref = scene.data.qpos[scene.arm_qpos].copy()
        self.filtered = scene.ee_matrix()

    def servo_to(self, target_pos: np.ndarray, target_rot: np.ndarray, gripper: float) -> None:
        """Run one control tick of physics with the impedance law pulling towards the absolute TCP target."""
        scene, mj = self.scene, self.scene.mujoco
        m, d = scene.model, scene.data
        self._target = (np.asarray(target_pos, dtype=float).copy(), np.asarray(target_rot, dtype=float).copy())
        if self.filtered is None:
            self.filtered = scene.ee_matrix()
        d.ctrl[scene.gripper_act] = float(np.clip(gripper, 0.0, 1.0)) * 255.0
        for _ in range(self.substeps):
            mj.mj_step1(m, d)  # kinematics, Jacobians, bias forces of the current state
            d.ctrl[scene.arm_act] = self.torque()
            mj.mj_step2(m, d)

    def torque(self) -> np.ndarray:
        """Joint torques (7,) for the current state (after mj_step1) and target; updates filter and rate limit."""
        scene, cfg = self.scene, self.config
        m, d, site, dofs = scene.model, scene.data, scene.ee_site, scene.arm_dof
        q, dq = d.qpos[scene.arm_qpos], d.qvel[dofs]
        target_pos, target_rot = self._target
        f_pos, f_rot = self.filtered
        a = self.filter_weight  # EMA towards the newest target (CRISP: on log6 of the pose, per update)
        f_pos = a * f_pos + (1.0 - a) * target_pos
        f_rot = target_rot @ rotvec_to_matrix(a * matrix_to_rotvec(target_rot.T @ f_rot))
        self.filtered = (f_pos, f_rot)

        pos, rot = d.site_xpos[site], d.site_xmat[site].reshape(3, 3)
        scene.mujoco.mj_jacSite(m, d, self._jacp, self._jacr, site)
        jac = np.vstack([self._jacp[:, dofs], self._jacr[:, dofs]])  # (6, 7), base frame
        if cfg.use_local_jacobian:  # error and twist in the EE frame (pinocchio LOCAL)
            error = np.concatenate([rot.T @ (f_pos - pos), matrix_to_rotvec(rot.T @ f_rot)])
            jac = np.vstack([rot.T @ jac[:3], rot.T @ jac[3:]])
        else:
            error = np.concatenate([f_pos - pos, matrix_to_rotvec(f_rot @ rot.T)])
        if cfg.limit_error:
            error = np.clip(error, -self.clip, self.clip)
        tau = jac.T @ (self.stiffness * error - self.damping * (jac @ dq))  # (7,)

        # kinematic nullspace projector with CRISP's damped pseudo-inverse J^T (J J^T + eps^2 I)^-1
        eps2 = cfg.nullspace_regularization**2
        pinv = jac.T @ np.linalg.inv(jac @ jac.T + eps2 * np.eye(6))  # (7, 6)
        secondary = self.ns_stiffness * (self.q_ref - q) - self.ns_damping * dq
        null = np.clip((self._eye - pinv @ jac) @ secondary, -cfg.nullspace_max_tau, cfg.nullspace_max_tau)
        tau = tau + null + joint_limit_torque(q, self.lower, self.upper)
        if cfg.use_coriolis_compensation:  # qfrc_bias = C dq + g; the gravity part is gravcomp's (libfranka's)
            tau = tau + d.qfrc_bias[dofs] - d.qfrc_gravcomp[dofs]
        if cfg.use_gravity_compensation:  # on a Franka this compensates gravity a second time, as it would here
            tau = tau + d.qfrc_gravcomp[dofs]
        if cfg.limit_torques:
            tau = self.tau + np.clip(tau - self.tau, -self.max_delta_tau, self.max_delta_tau)
        self.tau = tau
        return tau
