"""Configuration of the MuJoCo FR3 simulation (scene, control rate, rendering, scripted expert)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mole_inference.config.base import check, positive


@dataclass
class ImpedanceConfig:
    """CRISP `cartesian_impedance_controller` parameters the simulated FR3 uses (mole_inference.sim.impedance).

    Defaults are the values shipped in launch/config/controllers/fr3.yaml (a test keeps them equal); names
    follow utiasDSL/crisp_controllers src/cartesian_impedance_controller.yaml, axes ordered x, y, z, rx, ry, rz.
    """

    stiffness: tuple[float, ...] = (400.0, 400.0, 400.0, 30.0, 30.0, 30.0)  # task.k_*: N/m, Nm/rad
    damping: tuple[float, ...] = (-1.0,) * 6  # task.d_*; < 0: 2 * sqrt(stiffness) (CRISP)
    error_clip: tuple[float, ...] = (0.1, 0.1, 0.1, 0.5, 0.5, 0.5)  # task.error_clip.*: m, rad
    limit_error: bool = True
    nullspace_stiffness: float = 2.0  # Nm/rad towards the joint posture at reset (CRISP: at activation)
    nullspace_damping: float = 2.83  # fr3.yaml (2 * sqrt(2.0)); < 0: 2 * sqrt(nullspace_stiffness)
    nullspace_max_tau: float = 5.0  # Nm per joint
    nullspace_regularization: float = 1e-6  # damped pseudo-inverse of the Jacobian
    target_filter: float = 0.1  # filter.target_pose: weight of the previous filtered target per update
    use_coriolis_compensation: bool = True
    use_gravity_compensation: bool = False  # libfranka (here: MuJoCo gravcomp) already compensates the arm
    use_local_jacobian: bool = True  # error and Jacobian in the EE frame (matters only for anisotropic gains)
    limit_torques: bool = True
    max_delta_tau: float = 0.5  # Nm per joint per controller update
    update_rate: float = 1000.0  # Hz of the robot's controller_manager; rescales the per-update filter and limit
    # sim only, not a CRISP parameter: the share of the FR3 model's joint friction (franky-sim frictionloss,
    # ~0.4-1.1 Nm) left under torque control; libfranka compensates motor friction (franka::Torques are
    # "without gravity and friction"), how well is not published: 0.2 is an assumption
    residual_friction: float = 0.2

    def __post_init__(self) -> None:
        for name in ("stiffness", "damping", "error_clip"):
            check(len(getattr(self, name)) == 6, name, getattr(self, name), "must have 6 values (x y z rx ry rz)")
        check(all(k >= 0 for k in self.stiffness), "stiffness", self.stiffness, "must be >= 0")
        check(all(c > 0 for c in self.error_clip), "error_clip", self.error_clip, "must be > 0")
        check(0.0 <= self.target_filter < 1.0, "target_filter", self.target_filter, "must be in [0, 1)")
        check(0.0 <= self.residual_friction <= 1.0, "residual_friction", self.residual_friction, "must be in [0, 1]")
        check(self.nullspace_stiffness >= 0, "nullspace_stiffness", self.nullspace_stiffness, "must be >= 0")
        positive(self, "nullspace_max_tau", "nullspace_regularization", "max_delta_tau", "update_rate")


@dataclass
class SimConfig:
    """Simulation settings; defaults give a 10 Hz policy rate with 224x224 wrist images."""

    task: str = "pick"
    control_dt: float = 0.1  # s per policy tick (0.1 = 10 Hz, 0.02 = 50 Hz); a multiple of physics_dt
    physics_dt: float = 0.002  # s per MuJoCo step
    image_size: int = 224  # square RGB renders
    cameras: tuple[str, ...] = ("wrist",)  # rendered into every observation as <name>_rgb; () for none
    max_seconds: float | None = None  # episode limit override; None uses the task's own
    expert_noise_trans: float = 0.0  # m, std of noise on the expert's translation deltas
    expert_noise_rot: float = 0.0  # rad, std of noise on the expert's rotation deltas
    expert_grasp_turn: bool = True  # the expert turns to the cube's nearest face before grasping (ScriptedExpert)
    # m, stack (ScriptedExpert): the expert puts the cube up to `expert_place_offset` off the base's centre in x/y
    # and opens within `expert_release_tol` of the pose 2 mm above resting there
    expert_release_tol: float = 0.008
    expert_place_offset: float = 0.008
    # s, pick and stack (ScriptedExpert): None = lift once the fingers hold the cube; a number = stand still that
    # long after closing, whatever the fingers do (0.6: the recordings before stage BB)
    expert_grasp_hold: float | None = None
    # m, pick and stack (ScriptedExpert): each grasp closes up to this off the cube's centre in x/y (0: centred,
    # the recordings before stage BB)
    expert_grasp_offset: float = 0.012
    start_offset: float = 0.0  # m: start TCP uniform in HOME +- this in x and y, +- half of it in z (0: home)
    start_yaw: float = 0.0  # rad: start yaw uniform in +- this about the pointing-down home orientation
    # m: when > 0 the start TCP is above the task's target cube instead of around home, off its centre by up to
    # this in x and y, at a height uniform in START_NEAR_Z: demonstrations of the last centimetres (centre, then
    # descend), the states a policy that descends off-centre is in; overrides start_offset's position
    start_near_target: float = 0.0
    # how the arm follows targets: "kinematic" = IK onto stiff joint servos (exact, fast: training data and
    # `mole-vla sim eval`); "impedance" = torque control like CRISP on the robot (lags, sags under load)
    controller: Literal["kinematic", "impedance"] = "kinematic"
    impedance: ImpedanceConfig = field(default_factory=ImpedanceConfig)

    def __post_init__(self) -> None:
        positive(self, "control_dt", "physics_dt", "image_size", "expert_release_tol")
        check(self.expert_grasp_hold is None or self.expert_grasp_hold > 0, "expert_grasp_hold",
              self.expert_grasp_hold, "must be > 0 seconds (or None: until the fingers hold the cube)")
        check(0 <= self.expert_grasp_offset <= 0.015, "expert_grasp_offset", self.expert_grasp_offset,
              "must be in [0, 0.015] m (the open fingers clear a 4 cm cube by 2 cm each side)")
        check(0 <= self.expert_place_offset <= 0.015, "expert_place_offset", self.expert_place_offset,
              "must be in [0, 0.015] m (stack succeeds within 2 cm of the base's centre)")
        ratio = self.control_dt / self.physics_dt
        check(abs(ratio - round(ratio)) < 1e-6, "control_dt", self.control_dt,
              f"must be a whole multiple of physics_dt={self.physics_dt}")
        unknown = [c for c in self.cameras if c not in ("wrist", "front")]
        check(not unknown, "cameras", self.cameras, "each camera must be 'wrist' or 'front'")
        check(self.max_seconds is None or self.max_seconds > 0, "max_seconds", self.max_seconds, "must be > 0")
        check(self.expert_noise_trans >= 0, "expert_noise_trans", self.expert_noise_trans, "must be >= 0")
        check(0.0 <= self.start_offset <= 0.1, "start_offset", self.start_offset, "must be in [0, 0.1] m")
        check(0.0 <= self.start_yaw <= 0.8, "start_yaw", self.start_yaw, "must be in [0, 0.8] rad")
        check(0.0 <= self.start_near_target <= 0.06, "start_near_target", self.start_near_target,
              "must be in [0, 0.06] m")
        check(self.expert_noise_rot >= 0, "expert_noise_rot", self.expert_noise_rot, "must be >= 0")


# The scripted expert's settings that record-demos, collect-interventions and `sim eval --expert` take: fields of
# DemoConfig / EvalConfig and CLI destinations of these names; SimConfig holds each as `expert_<name>`.
EXPERT_SETTINGS = ("grasp_turn", "release_tol", "place_offset", "grasp_hold", "grasp_offset")


def expert_settings(source: Any) -> dict[str, Any]:
    """`{name: value}` of EXPERT_SETTINGS read from a DemoConfig, an EvalConfig or parsed CLI arguments."""
    return {name: getattr(source, name) for name in EXPERT_SETTINGS}


def expert_overrides(source: Any) -> dict[str, Any]:
    """The same settings as SimConfig fields (`expert_<name>`), for `make_env(..., **overrides)`."""
    return {f"expert_{name}": value for name, value in expert_settings(source).items()}
