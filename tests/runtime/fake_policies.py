"""Test doubles for ProcessPolicy, importable by its spawned workers (test_process_policy.py puts this folder on
sys.path, which spawn hands to the children).

`MOLE_FAKE_IMPORT_DELAY=S` in the environment makes importing this module sleep S seconds: a heavy import (torch,
a model package) as the worker sees it. Tests set it after their own import, so only spawned workers pay it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from mole_inference.errors import InputError
from mole_inference.policy.contract import ActionChunk, Policy, RoutingDecision

IMPORT_DELAY_ENV = "MOLE_FAKE_IMPORT_DELAY"
time.sleep(float(os.environ.get(IMPORT_DELAY_ENV, "0")))


class EchoPolicy(Policy):
    """Every row of the chunk is [mean pixel, H, W, len(instruction), seed or -1, resets so far, pid].

    Misbehaves on purpose by instruction: "raise" raises InputError, "block" touches `marker_dir/blocked` and then
    sleeps for an hour (a hang, or a worker to kill mid-inference).
    """

    action_dt = 0.05
    chunk_size = 4
    num_layers = 3

    def __init__(self, marker_dir: str | None = None) -> None:
        self.marker_dir = Path(marker_dir) if marker_dir else None
        self.resets = 0

    def infer(self, image: np.ndarray, instruction: str, *, seed: int | None = None,
              state: np.ndarray | None = None) -> ActionChunk:
        """See the class docstring; `state` is ignored (a model without `vision.state_input`)."""
        if instruction == "raise":
            raise InputError("echo policy refuses this instruction")
        if instruction == "block":
            if self.marker_dir is not None:
                (self.marker_dir / "blocked").touch()
            time.sleep(3600)
        row = [
            image.mean(),
            image.shape[0],
            image.shape[1],
            len(instruction),
            -1 if seed is None else seed,
            self.resets,
            os.getpid(),
        ]
        actions = np.tile(np.array(row, dtype=np.float64), (self.chunk_size, 1))
        probs = np.linspace(0.2, 0.8, self.num_layers, dtype=np.float32)
        return ActionChunk(actions, RoutingDecision((0, 2), probs, self.num_layers), {"total": 0.5}, self.action_dt)

    def reset(self) -> None:
        """Count resets (visible in the next chunk)."""
        self.resets += 1


def make_echo(marker_dir: str | None = None, hold_restarts: bool = False) -> EchoPolicy:
    """Factory run in the worker. Counts its starts in `marker_dir/starts`; with `hold_restarts`, every start after
    the first waits until `marker_dir/release` exists (so a test can observe the restarting state)."""
    if marker_dir is not None:
        starts = Path(marker_dir) / "starts"
        count = int(starts.read_text()) if starts.exists() else 0
        starts.write_text(str(count + 1))
        if hold_restarts and count > 0:
            while not (Path(marker_dir) / "release").exists():
                time.sleep(0.01)
    return EchoPolicy(marker_dir)


class StatePolicy(EchoPolicy):
    """A model that reads the robot state (`uses_state`): every row of the chunk is the state it got, followed by
    the worker's pid. No state, or not 7 finite values, raises InputError, as model/state_input.check_state does."""

    @property
    def uses_state(self) -> bool:
        """Always: this fake stands for a `vision.state_input` model."""
        return True

    def infer(self, image: np.ndarray, instruction: str, *, seed: int | None = None,
              state: np.ndarray | None = None) -> ActionChunk:
        """See the class docstring."""
        if state is None:
            raise InputError("this model reads the robot state: pass state=[x, y, z, qx, qy, qz, qw]")
        values = np.asarray(state, dtype=np.float64).reshape(-1)
        if values.shape != (7,) or not np.all(np.isfinite(values)):
            raise InputError(f"robot state must be 7 finite values, got {values.tolist()}")
        actions = np.tile(np.append(values, os.getpid()), (self.chunk_size, 1))
        probs = np.full(self.num_layers, 0.5, dtype=np.float32)
        return ActionChunk(actions, RoutingDecision((1,), probs, self.num_layers), {"total": 0.5}, self.action_dt)


def make_state_echo() -> StatePolicy:
    """Factory of StatePolicy."""
    return StatePolicy()


class StepPolicy(Policy):
    """Every chunk moves +x by 1 cm per step with the gripper open (a policy the node can drive with)."""

    action_dt = 0.1
    chunk_size = 8
    num_layers = 4

    def infer(self, image: np.ndarray, instruction: str, *, seed: int | None = None,
              state: np.ndarray | None = None) -> ActionChunk:
        """See the class docstring."""
        actions = np.zeros((self.chunk_size, 7))
        actions[:, 0], actions[:, 6] = 0.01, 1.0
        probs = np.full(self.num_layers, 0.5, dtype=np.float32)
        return ActionChunk(actions, RoutingDecision((1, 3), probs, self.num_layers), {"total": 1.0}, self.action_dt)


def make_step(marker_dir: str, hold_restarts: bool = False) -> StepPolicy:
    """Factory of StepPolicy with the start counting and holding of `make_echo`."""
    make_echo(marker_dir, hold_restarts)
    return StepPolicy()


def fail_to_build(reason: str) -> Policy:
    """Factory that fails like a bad checkpoint would."""
    from mole_inference.errors import CheckpointError

    raise CheckpointError(reason)


def make_tiny_state_model() -> Policy:
    """The tiny preset with `vision.state_input` (random weights); its zero-initialised state map and action output
    get seeded weights (as tests/runtime/conftest.py's tiny checkpoint) so the state changes the actions; the same
    in every process."""
    import torch

    from mole_inference.config import preset
    from mole_inference.runtime.torch_backend import TorchPolicy

    policy = TorchPolicy.from_config(preset("tiny", vision={"state_input": True}))
    generator = torch.Generator().manual_seed(0)
    model = policy.model
    with torch.no_grad():
        for weight, std in ((model.state_input.proj.weight, 0.5), (model.action_head.action_out.weight, 0.1)):
            weight.copy_(torch.randn(weight.shape, generator=generator) * std)
    return policy
