"""Policy contract: `infer(image, instruction) -> ActionChunk`, identical for every backend."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class RoutingDecision:
    """Which LLM layers ran (ascending indices) and the router's probability for every layer."""

    layers: tuple[int, ...]
    probs: np.ndarray  # (K,)
    total_layers: int

    @property
    def num_active(self) -> int:
        """How many decoder layers ran."""
        return len(self.layers)


@dataclass(frozen=True)
class ActionChunk:
    """A chunk of end-effector deltas in robot units, with the routing decision and stage timings.

    `actions[i] = [dx, dy, dz, droll, dpitch, dyaw, gripper]`: metres and radians in the robot base frame,
    gripper binarized (1 = open, 0 = closed), one row per `action_dt` seconds.
    """

    actions: np.ndarray  # (C, 7) float64
    routing: RoutingDecision
    timings_ms: dict[str, float] = field(default_factory=dict)
    action_dt: float = 0.1

    def __post_init__(self) -> None:
        if self.actions.ndim != 2:
            raise ValueError(f"actions: expected (C, A), got shape {self.actions.shape}")

    @property
    def is_finite(self) -> bool:
        """False when the model produced NaN or inf anywhere (callers must hold)."""
        return bool(np.all(np.isfinite(self.actions)))


class Policy(abc.ABC):
    """A VLA policy behind one interface; backends (torch, onnxruntime, tensorrt) subclass it."""

    action_dt: float
    chunk_size: int
    num_layers: int

    @abc.abstractmethod
    def infer(self, image: np.ndarray, instruction: str, *, seed: int | None = None,
              state: np.ndarray | None = None) -> ActionChunk:
        """Predict a chunk from an RGB image (H, W, 3) uint8 and an instruction.

        `seed` fixes the diffusion noise (parity tests, reproducible evaluation). `state` is the robot's measured
        state when the image was taken, `[x, y, z, qx, qy, qz, qw]`, the measured EE pose (m, base frame; see
        model/state_input.py): required by models with `uses_state`, ignored by the others. A missing or bad state
        for a model that reads it raises InputError (the caller holds).
        """

    @property
    def uses_state(self) -> bool:
        """Whether `infer` needs `state` (the model was trained with `vision.state_input`)."""
        cfg = getattr(self, "cfg", None)
        return bool(cfg is not None and cfg.vision.state_input)

    def reset(self) -> None:
        """Forget per-episode state (none by default)."""


def state_kwargs(policy: object, state: np.ndarray) -> dict[str, np.ndarray]:
    """`{"state": state}` for a policy that reads the robot state, else `{}`: callers pass `**state_kwargs(...)` to
    `infer`, so Policy classes written before the `state` argument keep working."""
    return {"state": state} if getattr(policy, "uses_state", False) else {}
