"""The CogKD teacher: an exponential moving average of the student that runs every layer.

The paper (Optimization Objective) initializes teacher and student from the same weights and updates the
teacher by EMA with "update weight alpha = 0.999"; we read alpha as the decay, i.e. per step
`teacher = decay * teacher + (1 - decay) * student` with decay = 0.999, so the teacher keeps 99.9 % of itself.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of `student` (same weights, no gradients, eval mode)."""
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    return teacher.eval()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """teacher <- decay * teacher + (1 - decay) * student for every float parameter; buffers are copied.

    Two roundings per element, exactly as `decay * t + (1 - decay) * s` evaluates in the tensor dtype;
    works on plain, DDP-unwrapped and FSDP-sharded modules (both sharded the same way: local shards).
    """
    t_params = [p for p in teacher.parameters()]
    s_params = [p.detach() for p in student.parameters()]
    if len(t_params) != len(s_params):
        raise ValueError(f"teacher has {len(t_params)} parameters, student {len(s_params)}")
    t_local = [_local(p) for p in t_params]
    scaled_student = torch._foreach_mul([_local(p) for p in s_params], 1.0 - decay)
    torch._foreach_mul_(t_local, decay)
    torch._foreach_add_(t_local, scaled_student)
    for tb, sb in zip(teacher.buffers(), student.buffers(), strict=True):
        tb.copy_(sb)


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of an FSDP2 DTensor parameter, or the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t
