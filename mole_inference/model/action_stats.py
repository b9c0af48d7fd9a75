"""Action normalization statistics (q01/q99, as in OpenVLA/CogACT) that travel with every checkpoint."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mole_inference.errors import CheckpointError

GRIPPER_THRESHOLD = 0.5


@dataclass
class ActionStats:
    """Per-dimension q01/q99; `mask[i]` False leaves dimension i unnormalized (the gripper, in [0, 1])."""

    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray

    @classmethod
    def identity(cls, action_dim: int = 7) -> ActionStats:
        """Stats that map [-1, 1] onto itself for the arm dims; gripper unnormalized (untrained models)."""
        q01, q99 = -np.ones(action_dim), np.ones(action_dim)
        mask = np.ones(action_dim, dtype=bool)
        mask[-1] = False
        return cls(q01, q99, mask)

    @classmethod
    def from_actions(cls, actions: np.ndarray) -> ActionStats:
        """Compute stats from (N, A) robot-unit actions; the last dimension is the gripper."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or len(actions) == 0:
            raise ValueError(f"actions: expected a non-empty (N, A) array, got shape {actions.shape}")
        mask = np.ones(actions.shape[1], dtype=bool)
        mask[-1] = False
        return cls(np.quantile(actions, 0.01, axis=0), np.quantile(actions, 0.99, axis=0), mask)

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        """Robot units -> [-1, 1] (clipped) on masked dims."""
        span = np.maximum(self.q99 - self.q01, 1e-8)
        norm = np.clip(2.0 * (actions - self.q01) / span - 1.0, -1.0, 1.0)
        return np.where(self.mask, norm, actions)

    def denormalize(self, norm: np.ndarray) -> np.ndarray:
        """[-1, 1] -> robot units on masked dims; the gripper dimension is binarized to {0, 1}."""
        norm = np.clip(norm, -1.0, 1.0)
        out = np.where(self.mask, 0.5 * (norm + 1.0) * (self.q99 - self.q01) + self.q01, norm)
        out[..., -1] = (out[..., -1] > GRIPPER_THRESHOLD).astype(out.dtype)
        return out

    def to_json(self) -> dict:
        """Plain lists for a JSON file."""
        return {"q01": self.q01.tolist(), "q99": self.q99.tolist(), "mask": self.mask.tolist()}

    @classmethod
    def from_json(cls, data: dict, source: str = "action stats") -> ActionStats:
        """Parse and check shapes; CheckpointError naming `source` when malformed."""
        try:
            q01, q99 = np.asarray(data["q01"], float), np.asarray(data["q99"], float)
            mask = np.asarray(data["mask"], bool)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: needs q01, q99 and mask lists ({exc})") from None
        if not (q01.shape == q99.shape == mask.shape) or q01.ndim != 1:
            raise CheckpointError(f"{source}: q01, q99, mask must be equal-length lists, got "
                                  f"{q01.shape}, {q99.shape}, {mask.shape}")
        if not (np.all(np.isfinite(q01)) and np.all(np.isfinite(q99))):
            raise CheckpointError(f"{source}: q01/q99 must be finite")
        return cls(q01, q99, mask)

    def save(self, path: str | Path) -> None:
        """Write as JSON."""
        Path(path).write_text(json.dumps(self.to_json(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> ActionStats:
        """Read a JSON file written by `save`."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: cannot read action stats ({exc})") from None
        return cls.from_json(data, str(path))
