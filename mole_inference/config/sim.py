"""Configuration of the MuJoCo FR3 simulation (scene, control rate, rendering, scripted expert)."""

from __future__ import annotations

from dataclasses import dataclass

from mole_inference.config.base import check, positive


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
    start_offset: float = 0.0  # m: start TCP uniform in HOME +- this in x and y, +- half of it in z (0: home)
    start_yaw: float = 0.0  # rad: start yaw uniform in +- this about the pointing-down home orientation

    def __post_init__(self) -> None:
        positive(self, "control_dt", "physics_dt", "image_size")
        ratio = self.control_dt / self.physics_dt
        check(abs(ratio - round(ratio)) < 1e-6, "control_dt", self.control_dt,
              f"must be a whole multiple of physics_dt={self.physics_dt}")
        unknown = [c for c in self.cameras if c not in ("wrist", "front")]
        check(not unknown, "cameras", self.cameras, "each camera must be 'wrist' or 'front'")
        check(self.max_seconds is None or self.max_seconds > 0, "max_seconds", self.max_seconds, "must be > 0")
        check(self.expert_noise_trans >= 0, "expert_noise_trans", self.expert_noise_trans, "must be >= 0")
        check(0.0 <= self.start_offset <= 0.1, "start_offset", self.start_offset, "must be in [0, 0.1] m")
        check(0.0 <= self.start_yaw <= 0.8, "start_yaw", self.start_yaw, "must be in [0, 0.8] rad")
        check(self.expert_noise_rot >= 0, "expert_noise_rot", self.expert_noise_rot, "must be >= 0")
