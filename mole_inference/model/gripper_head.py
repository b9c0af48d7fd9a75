"""Gripper classifier (beyond the paper, `action_head.gripper_head`): P(open) per chunk step from the cognition
feature, in place of the DiT's sampled gripper column.

The DiT head draws the whole chunk from noise, the gripper included, so near a grasp or a release, where the
demonstrations show both "still closed" and "open now", every replan is a fresh coin toss (the vote and the
confirmation in control/ only smooth the tosses). A classifier gives the probability itself: the same image and
pose give the same answer, and its value is what the 0.4 / 0.6 hysteresis of the safety envelope binarizes.
Trained with a binary cross-entropy against the recorded gripper command, padding left out like the task loss.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class GripperHead(nn.Module):
    """cognition (B, D) -> logits of "open" (B, C), one per chunk step; a two-layer MLP."""

    def __init__(self, width: int, chunk_size: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, width), nn.GELU(approximate="tanh"), nn.Linear(width, chunk_size))

    def forward(self, cognition: torch.Tensor) -> torch.Tensor:
        return self.net(cognition)

    def open_prob(self, cognition: torch.Tensor) -> torch.Tensor:
        """P(open) (B, C): what the sampled chunk's gripper column becomes (torch, and the exported `gripper` stage)."""
        return torch.sigmoid(self(cognition))


def with_open_prob(actions: torch.Tensor, open_prob: torch.Tensor) -> torch.Tensor:
    """Normalized actions (B, C, A) with the last (unnormalized gripper, 1 = open) column set to `open_prob` (B, C):
    the torch model and the exported runtimes (whose `gripper` stage gives the probability) both end with it."""
    return torch.cat([actions[..., :-1], open_prob.to(actions.dtype).unsqueeze(-1)], dim=-1)


def gripper_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of logits (B, C) against the recorded gripper (B, C) in [0, 1] (a 0.1 s action that
    spans a switch is fractional); `mask` (B, C) False for padding past the episode's end."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float().clamp(0.0, 1.0), reduction="none")
    if mask is None:
        return bce.mean()
    w = mask.to(bce.dtype)
    return (bce * w).sum() / w.sum().clamp_min(1.0)
