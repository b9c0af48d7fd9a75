"""Control-stack configuration: chunk scheduler, safety envelope, watchdog, teleop mux (FR3 defaults).

Units: metres, radians, seconds (monotonic). Per-step limits are per control tick, i.e. at
`scheduler.control_rate_hz`; change them together with the rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from mole_inference.config.base import check, positive


def _finite(obj: object, *names: str) -> None:
    """Check that each named float attribute of `obj` is finite (no NaN/inf in limits)."""
    for name in names:
        value = getattr(obj, name)
        check(math.isfinite(value), name, value, "must be a finite number")


@dataclass
class SchedulerConfig:
    """How a (N, 7) action chunk at the model's rate `action_dt` is stepped at the control rate."""

    control_rate_hz: float = 50.0
    action_dt: float = 0.1  # seconds between chunk steps; must match the policy (ModelConfig.action_dt)
    latency_compensation: bool = True  # chunk time starts at its image stamp (skip passed steps)
    ensemble: bool = False  # temporal ensemble over overlapping chunks (ACT / CogACT)
    ensemble_decay: float = 0.5  # k in w_i = exp(-k * i), i = 0 for the newest chunk
    ensemble_horizon: int = 4  # most chunks kept for the ensemble
    # gripper vote: the gripper command is the weighted mean (same weights) of the binarized gripper of every kept
    # chunk covering `now`: with a chunk per step these are independent draws of the diffusion head, so a stray
    # sample is outvoted; the envelope's hysteresis band binarizes the vote. Independent of `ensemble` (motion).
    gripper_ensemble: bool = False
    # gripper read-ahead (beyond the paper): a chunk's gripper at step k is its most open value over steps
    # k..k+gripper_open_lookahead, so a release the chunk plans a few steps ahead is sent now (replanning every
    # step otherwise postpones it with every new chunk); closing is never delayed (a closed value counts only
    # when the whole window is closed, i.e. from the step the chunk closes). 0: off (on mole-tiny's stack, 8 steps
    # did not move held-out success: models/mole-tiny/README.md, "Reading the release ahead").
    gripper_open_lookahead: int = 0

    def __post_init__(self) -> None:
        positive(self, "control_rate_hz", "action_dt", "ensemble_horizon")
        check(self.gripper_open_lookahead >= 0, "gripper_open_lookahead", self.gripper_open_lookahead,
              "must be >= 0 chunk steps")
        _finite(self, "control_rate_hz", "action_dt", "ensemble_decay")
        check(self.action_dt >= self.control_dt - 1e-12, "action_dt", self.action_dt,
              f"must be >= the control period 1/control_rate_hz={self.control_dt:g} s "
              "(the loop cannot step faster than it ticks)")

    @property
    def control_dt(self) -> float:
        """Control period in seconds."""
        return 1.0 / self.control_rate_hz


@dataclass
class SafetyConfig:
    """Envelope between any action source and the robot (see control.safety.SafetyEnvelope)."""

    max_step_translation: float = 0.005  # m per tick (0.25 m/s at 50 Hz)
    max_step_rotation: float = 0.05  # rad per tick (2.5 rad/s at 50 Hz)
    workspace_min: tuple[float, float, float] = (0.2, -0.4, 0.02)  # base frame, m
    workspace_max: tuple[float, float, float] = (0.8, 0.4, 0.7)
    max_target_distance: float = 0.03  # m between target and measured position
    max_target_angle: float = 0.2  # rad between target and measured orientation
    # pose each delta is added to: the previous target (bounded by the leash above), since under an impedance
    # controller the measured pose lags and integrating from it moves the arm at ~K*dt/D of the command
    integrate_from: Literal["measured", "target"] = "target"
    # send exactly 0 (closed) or 1 (open), with hysteresis: once open, close when the command falls below
    # gripper_close_below; once closed, open when it rises above gripper_open_above (the first command: 0.5).
    # The gripper output (mole_ros.gripper) applies the same band to what it receives.
    gripper_binarize: bool = True
    gripper_close_below: float = 0.4
    gripper_open_above: float = 0.6
    # "sticky gripper" (as SimplerEnv evaluates RT-1/Octo): after the policy switches the binarized gripper, it
    # keeps that state for this many ticks before another policy switch is accepted, so a chunk boundary that
    # flickers cannot drop a grasped object mid-lift. Teleop switches always pass at once. 0: off.
    gripper_min_hold_ticks: int = 0
    # debounce: a policy switch of the binarized gripper is sent only once the policy has asked for it on this
    # many consecutive ticks (1 = at once), so one stray sample of a diffusion head cannot close the hand above
    # the cube or drop what it holds. Teleop switches always pass at once.
    gripper_confirm_ticks: int = 1

    def __post_init__(self) -> None:
        positive(self, "max_step_translation", "max_step_rotation", "max_target_distance", "max_target_angle")
        _finite(self, "max_step_translation", "max_step_rotation", "max_target_distance", "max_target_angle")
        check(self.max_step_rotation < math.pi, "max_step_rotation", self.max_step_rotation, "must be < pi")
        check(self.max_target_angle < math.pi, "max_target_angle", self.max_target_angle, "must be < pi")
        for name in ("workspace_min", "workspace_max"):
            value = getattr(self, name)
            check(len(value) == 3 and all(math.isfinite(v) for v in value), name, value,
                  "must be 3 finite numbers (x, y, z)")
        check(all(lo < hi for lo, hi in zip(self.workspace_min, self.workspace_max, strict=True)),
              "workspace_max", self.workspace_max,
              f"must be > workspace_min={self.workspace_min} on every axis")
        check(self.gripper_confirm_ticks >= 1, "gripper_confirm_ticks", self.gripper_confirm_ticks,
              "must be >= 1 (1: a switch is sent at once)")
        check(self.gripper_min_hold_ticks >= 0, "gripper_min_hold_ticks", self.gripper_min_hold_ticks, "must be >= 0")
        check(0.0 <= self.gripper_close_below <= self.gripper_open_above <= 1.0, "gripper_close_below",
              self.gripper_close_below, f"must be in [0, gripper_open_above={self.gripper_open_above}] (<= 1)")


@dataclass
class WatchdogConfig:
    """Ages (seconds) beyond which the policy is unhealthy and the mux falls back."""

    max_image_age: float = 0.3  # newest camera frame
    max_chunk_age: float = 1.0  # newest chunk, from the stamp of the image it was computed from
    inference_deadline: float = 0.5  # one inference call, start to finish
    max_pose_age: float = 0.1  # newest measured end-effector pose
    # a stamp further than this ahead of its arrival (or of the check) is rejected: one frame from a clock
    # ahead would otherwise stay "newest" and keep the watchdog healthy after the camera died
    max_future_stamp: float = 0.05

    def __post_init__(self) -> None:
        positive(self, "max_image_age", "max_chunk_age", "inference_deadline", "max_pose_age")
        _finite(self, "max_image_age", "max_chunk_age", "inference_deadline", "max_pose_age", "max_future_stamp")
        check(self.max_future_stamp >= 0.0, "max_future_stamp", self.max_future_stamp, "must be >= 0")


@dataclass
class MuxConfig:
    """Source selection teleop > policy > hold; returning to the policy is always explicit."""

    fallback: Literal["hold", "teleop"] = "hold"  # where an unhealthy policy goes (teleop only if live)
    start_mode: Literal["hold", "policy"] = "hold"
    teleop_timeout: float = 0.2  # teleop input older than this is not live (hold instead)
    max_consecutive_rejections: int = 5  # policy actions rejected in a row before fallback; 0 = never
    event_log_size: int = 256  # switch events kept in memory

    def __post_init__(self) -> None:
        positive(self, "teleop_timeout", "event_log_size")
        _finite(self, "teleop_timeout")
        check(self.max_consecutive_rejections >= 0, "max_consecutive_rejections",
              self.max_consecutive_rejections, "must be >= 0 (0 disables)")


@dataclass
class ControlConfig:
    """The whole ROS-free control stack run by the control node's timer."""

    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    mux: MuxConfig = field(default_factory=MuxConfig)

    def __post_init__(self) -> None:
        check(self.watchdog.max_chunk_age > self.scheduler.control_dt, "watchdog.max_chunk_age",
              self.watchdog.max_chunk_age, f"must be > the control period {self.scheduler.control_dt:g} s")
