"""The scripted expert behind the `Policy` contract, so `sim eval --expert` drives it through exactly the path a
model takes (chunk -> ChunkScheduler -> SafetyEnvelope -> sim): the first rung of the closed-loop ladder, showing
that the action interface can do the tasks before a model is blamed for failing them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mole_inference.policy.contract import ActionChunk, Policy, RoutingDecision

if TYPE_CHECKING:
    from mole_inference.sim.env import SimEnv
    from mole_inference.sim.expert import ScriptedExpert


class ExpertPolicy(Policy):
    """Privileged-state expert: each chunk is the expert's action at `action_dt`, repeated `chunk_size` times.

    It reads the simulator's state, not the image: `env` must be set (evaluate() does) before `infer`.
    """

    def __init__(self, action_dt: float = 0.1, chunk_size: int = 16) -> None:
        self.action_dt, self.chunk_size, self.num_layers = action_dt, chunk_size, 0
        self.env: SimEnv | None = None
        self._expert: ScriptedExpert | None = None

    def reset(self) -> None:
        """A fresh plan for the next episode (the plan reads the task when it first acts)."""
        self._expert = None

    def infer(self, image: np.ndarray, instruction: str, *, seed: int | None = None,
              state: np.ndarray | None = None) -> ActionChunk:
        """The expert's next action (gripper binarized) as every row of a chunk."""
        if self.env is None:
            raise RuntimeError("ExpertPolicy.env is not set: evaluate() attaches the env before the first episode")
        if self._expert is None:
            self._expert = self.env.make_expert(noisy=False, control_dt=self.action_dt)
            self._expert.reset()
        action = self._expert.act(self.env.state())
        action[6] = 1.0 if action[6] >= 0.5 else 0.0
        routing = RoutingDecision(layers=(), probs=np.zeros(0), total_layers=0)
        return ActionChunk(np.tile(action, (self.chunk_size, 1)), routing, {}, self.action_dt)
