"""The robot's measured end-effector pose as an input, an option beyond the paper (`vision.state_input`).

    cognition_in = cognition_token + W feat(state),   state = [x, y, z, qx, qy, qz, qw]

MoLe-VLA (like CogACT) sees only the wrist image and the instruction. A wrist camera alone leaves two things to
guess: the height of the hand (a cube 3 cm off centre looks the same from 5 cm above as 1.5 cm off centre from
10 cm above, so the metric step behind a pixel offset and the moment to close both depend on depth), and the
hand's yaw (the image turns with the hand while actions are in the base frame). Policies with proprioception
(pi0, Octo, ACT) read it from the robot's state. Here the pose's features (position centred on the workspace
and scaled, the orientation as the first two columns of its rotation matrix (a continuous 6-D form, Zhou et al.
2019)) go through one zero-initialised linear map into the
cognition token's input embedding: a trained model gains the option unchanged, the prompt keeps its length
(export shapes are those of the model without it), and the router, which scores the image and the text, is not
touched. Everything is traced ops, so the ONNX prompt stage takes the raw state as one more input.

Height bands (`vision.state_height_bands: N`, off by default): in the features above a centimetre of height is
0.04 units, about what a trained model's stack policy needs to tell hovering from resting on the lower cube (it
hovered 1-6 cm above where the demonstrations open). N > 0 adds sin/cos of the centred height at periods
50 cm / 2^k, k < N (a Fourier encoding as in NeRF's positional encoding), so at N = 6 the finest period is
1.6 cm. Only the height: x and y say nothing about where this layout's cubes are, and a sharp code of them
invites memorising positions. Measured (models/mole-tiny/README.md, stage W): the model then reads its height, but
closed loop it let the cube go too early and stacked no better; the shipped model has it off.

The gripper is left out on purpose: demonstrations record the gripper *command*, which equals the label of the
next action almost everywhere, and a policy fed its own last command learns to repeat it and never switch (the
"copycat" failure of behaviour cloning with action history); the image shows the fingers anyway.

Units: metres in the robot base frame, quaternion xyzw (any sign, normalised here).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mole_inference.policy.state import STATE_DIM, STATE_FIELDS, check_state, make_state

__all__ = ["FEATURE_DIM", "STATE_DIM", "STATE_FIELDS", "StateInput", "check_state", "feature_dim", "make_state",
           "state_features"]

FEATURE_DIM = 9  # 3 position + 6 rotation (+ 2 per height band)
WORKSPACE_CENTRE = (0.5, 0.0, 0.25)  # m, base frame: above the middle of the FR3 tabletop workspace
WORKSPACE_SCALE = 0.25  # m per unit


def feature_dim(height_bands: int = 0) -> int:
    """Features per state with `height_bands` bands."""
    return FEATURE_DIM + 2 * height_bands


def state_features(state: torch.Tensor, height_bands: int = 0) -> torch.Tensor:
    """(B, 7) raw states -> (B, feature_dim(height_bands)) features (see the module docstring)."""
    pos = (state[:, :3] - state.new_tensor(WORKSPACE_CENTRE)) / WORKSPACE_SCALE
    q = state[:, 3:7] / state[:, 3:7].norm(dim=-1, keepdim=True).clamp_min(1e-8)
    x, y, z, w = q.unbind(-1)
    col0 = torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y + z * w), 2 * (x * z - y * w)], dim=-1)
    col1 = torch.stack([2 * (x * y - z * w), 1 - 2 * (x * x + z * z), 2 * (y * z + x * w)], dim=-1)
    parts = [pos, col0, col1]
    if height_bands:
        freq = math.pi * 2.0 ** torch.arange(height_bands, device=state.device, dtype=state.dtype)  # (N,)
        phase = pos[:, 2:3] * freq  # (B, N); pos is in units of WORKSPACE_SCALE: period 2 units = 50 cm at k = 0
        parts += [torch.sin(phase), torch.cos(phase)]
    return torch.cat(parts, dim=-1)


class StateInput(nn.Module):
    """Maps a (B, 7) state to a (B, 1, D) offset added to the cognition token's input embedding."""

    def __init__(self, width: int, height_bands: int = 0) -> None:
        super().__init__()
        self.height_bands = height_bands
        self.proj = nn.Linear(feature_dim(height_bands), width)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """(B, 7) -> (B, 1, D)."""
        return self.proj(state_features(state, self.height_bands)).unsqueeze(1)
