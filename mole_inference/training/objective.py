"""`MoLeObjective`: the student MoLe-VLA plus the CogKD projection mu; its forward returns Eq. 18 and parts.

It is the module that DDP/FSDP wrap: everything with gradients (student, mu) lives here; the EMA teacher's
hidden states come in as an input (computed without gradients). The diffusion noise, steps and
classifier-free-guidance drops are inputs too (`draw_diffusion`), so one call is a pure function of its
arguments, which is what makes resume and the equivalence tests exact.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mole_inference.config.model import ModelConfig
from mole_inference.model.flow_expert import PrefixKV
from mole_inference.model.flow_matching import noisy_actions, sample_time, velocity_target
from mole_inference.model.gripper_head import gripper_loss
from mole_inference.model.llm import LayerCache
from mole_inference.model.routers import RouterOutput
from mole_inference.model.vla import MoLeVLA
from mole_inference.training.losses import (
    distillation_loss,
    load_balance_eq3,
    load_balance_surrogate,
    subgoal_loss,
    task_loss,
    tokens_of_interest,
    total_loss,
)

MIMIC_MODES = ("mse", "mse+reverse_kl")


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, step, rank)."""
    state = np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


def draw_diffusion(batch: int, cfg: ModelConfig, generator: torch.Generator, device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise (B*R, C, A), steps (B*R,) and CFG drop flags (B*R,) for B samples repeated R times.

    The flow family draws float flow times in [flow_time_min, 1] instead of integer steps (model/flow_matching.py)
    and never drops the condition (pi0 has no classifier-free guidance).
    """
    head, r = cfg.action_head, cfg.training.diffusion_repeats
    n = batch * r
    noise = torch.randn((n, head.chunk_size, head.action_dim), generator=generator)
    if head.type == "flow":
        t = sample_time(n, generator, head.flow_time_alpha, head.flow_time_min)
        return noise.to(device), t.to(device), torch.zeros((n,), dtype=torch.bool, device=device)
    t = torch.randint(0, head.train_timesteps, (n,), generator=generator)
    drop = torch.rand((n,), generator=generator) < head.cond_dropout
    return noise.to(device), t.to(device), drop.to(device)


def key_mask(hidden: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """Valid positions (B, S) of [image | text | cognition] hidden states (B, S, D): padding is False."""
    b, s = hidden.shape[:2]
    n_img = s - text_mask.shape[1] - 1
    ones = torch.ones((b, n_img), dtype=torch.bool, device=hidden.device)
    return torch.cat([ones, text_mask.bool(), ones[:, :1]], dim=1)



def subgoal_target(offset: torch.Tensor, scale: float, knee: float) -> torch.Tensor:
    """The subgoal head's position target: offset / scale, or offset / (|offset| + knee) per axis when knee > 0
    (`training.goal_knee`). NaN rows (no label) stay NaN and are masked by the loss."""
    return offset / (offset.abs() + knee) if knee > 0 else offset / scale


def goal_dims(rot_scale: float) -> int:
    """Outputs of the subgoal head: the position offset, plus the rotation vector when `goal_rot_scale` > 0."""
    return 6 if rot_scale > 0 else 3

class MoLeObjective(nn.Module):
    """Student + mu (Eq. 15's projection, identity-initialized: teacher and student start equal) + the optional
    subgoal head (`training.goal_weight`, beyond the paper; used in training only)."""

    def __init__(self, student: MoLeVLA, cfg: ModelConfig) -> None:
        super().__init__()
        self.student, self.cfg = student, cfg
        for name, p in student.named_parameters():
            if name.endswith("embeddings.mask_token"):  # DINOv2's masked-image-modeling token: never used here
                p.requires_grad_(False)  # (an unused trainable parameter would stall DDP and resume)
        d = cfg.llm.hidden_size
        self.mu: nn.Linear | None = None
        if cfg.training.distill in MIMIC_MODES:
            self.mu = nn.Linear(d, d, bias=False)
            with torch.no_grad():
                self.mu.weight.copy_(torch.eye(d))
        t = cfg.training
        self.goal_head = nn.Linear(d, goal_dims(t.goal_rot_scale)) if t.goal_weight > 0 else None

    def diffusion_task(self, cog: torch.Tensor, actions: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                       drop: torch.Tensor, action_mask: torch.Tensor | None) -> torch.Tensor:
        """Eq. 6 for the diffusion family: the DiT's noise MSE, each sample repeated `diffusion_repeats` times."""
        model, r = self.student, self.cfg.training.diffusion_repeats
        cond = cog.repeat_interleave(r, dim=0)  # (B*R, D)
        null = model.action_head.null_condition.to(cond.dtype).expand_as(cond)
        cond = torch.where(drop[:, None], null, cond)  # classifier-free guidance dropout
        x_t = model.scheduler.q_sample(actions.repeat_interleave(r, dim=0), timesteps, noise)  # (B*R, C, A)
        mask = action_mask.repeat_interleave(r, dim=0) if action_mask is not None else None  # (B*R, C)
        return task_loss(model.action_head(x_t, timesteps, cond), noise, mask)

    def token_task(self, pixels: torch.Tensor, ids: torch.Tensor, text_mask: torch.Tensor, actions: torch.Tensor,
                   action_mask: torch.Tensor | None, state: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, RouterOutput, torch.Tensor, torch.Tensor]:
        """The autoregressive family's task loss: cross-entropy of the action tokens under teacher forcing.

        The prompt's last position and the first A - 1 action tokens (appended after it, through the same gated
        layers) predict the A tokens of the step's one action (B, 1, A). Returns the prompt's hidden states
        (B, S, D) (what CogKD distills), router output, gate and the loss.
        """
        model = self.student
        a = actions[:, 0]  # (B, A): chunk_size is 1
        tokens = model.action_head.tokenizer.encode(a).to(ids.device)  # (B, A)
        hidden, router, gate = model.forward_train(pixels, ids, text_mask, suffix=tokens[:, :-1],
                                                   state=state)  # (B, S+A-1, D)
        s = hidden.shape[1] - (tokens.shape[1] - 1)
        mask = action_mask[:, 0] if action_mask is not None else None
        return hidden[:, :s], router, gate, model.action_head.loss(hidden[:, s - 1 :], a, mask)

    def flow_task(self, pixels: torch.Tensor, ids: torch.Tensor, text_mask: torch.Tensor, actions: torch.Tensor,
                  noise: torch.Tensor, times: torch.Tensor, action_mask: torch.Tensor | None,
                  state: torch.Tensor | None = None) -> tuple[torch.Tensor, RouterOutput, torch.Tensor, torch.Tensor]:
        """The flow family's task loss: MSE between the expert's velocity and u = noise - actions at
        x_t = t * noise + (1 - t) * actions (pi0), each sample's prefix read by `diffusion_repeats` flow draws.

        One gated pass of the prefix records every layer's keys/values; the expert's layer j reads layer j's under
        the same gate (a skipped pair is skipped in both). Returns the prefix hidden states (B, S, D), router
        output, gate and the loss.
        """
        model, r = self.student, self.cfg.training.diffusion_repeats
        cache = LayerCache()
        hidden, router, gate = model.forward_train(pixels, ids, text_mask, cache=cache, state=state)  # (B, S, D)
        a = actions.repeat_interleave(r, dim=0)  # (B*R, C, A)
        valid = key_mask(hidden, text_mask).repeat_interleave(r, dim=0)  # (B*R, S)
        v = model.action_head(noisy_actions(a, noise, times), times, PrefixKV(cache, r), valid,
                              gate=gate.repeat_interleave(r, dim=0))  # (B*R, C, A)
        mask = action_mask.repeat_interleave(r, dim=0) if action_mask is not None else None  # (B*R, C)
        return hidden, router, gate, task_loss(v, velocity_target(a, noise), mask)

    @property
    def uses_teacher(self) -> bool:
        """Whether the loss needs the teacher's hidden states."""
        return self.cfg.training.distill != "none"

    def forward(self, pixels: torch.Tensor, ids: torch.Tensor, text_mask: torch.Tensor, actions: torch.Tensor,
                noise: torch.Tensor, timesteps: torch.Tensor, drop: torch.Tensor,
                teacher_hidden: torch.Tensor | None = None, action_mask: torch.Tensor | None = None,
                goal: torch.Tensor | None = None, goal_mask: torch.Tensor | None = None,
                state: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """L_MoLe (Eq. 18) as "loss" and its parts; actions (B, C, A) normalized, noise/timesteps/drop (B*R, ...).

        `action_mask` (B, C): chunk steps that are recorded actions (False: padding past the episode's end).
        `goal` (B, 6) m/rad and `goal_mask` (B,): subgoal offsets for `training.goal_weight` (else ignored).
        `state` (B, 7): the measured EE pose at the frame, for `vision.state_input` (else None).
        """
        t = self.cfg.training
        model = self.student
        if model.family == "autoregressive":
            hidden, router, gate, task = self.token_task(pixels, ids, text_mask, actions, action_mask, state)
        elif model.family == "flow":
            hidden, router, gate, task = self.flow_task(pixels, ids, text_mask, actions, noise, timesteps,
                                                        action_mask, state)
        else:
            hidden, router, gate = model.forward_train(pixels, ids, text_mask, state=state)  # (B, S, D), (B, K), (B, K)
            task = self.diffusion_task(hidden[:, -1], actions, noise, timesteps, drop, action_mask)
        cog = hidden[:, -1]  # (B, D) cognition feature
        parts = {"task": task}
        selected = gate.detach()  # exactly the 0/1 top-k mask in value
        parts["lb_eq3"] = load_balance_eq3(selected)
        parts["lb"] = load_balance_surrogate(router.probs, selected, t.load_balance)
        # spread of the router's layer logits (std over layers, batch mean); near 0 the router has collapsed to
        # uniform scores (seen on the tiny preset: dead spatial MLP, saturated alpha) and top-k is a fixed pattern
        parts["router_spread"] = router.logits.detach().float().std(dim=-1).mean()
        if self.uses_teacher:
            if teacher_hidden is None:
                raise ValueError(f"training.distill={t.distill!r} needs teacher_hidden")
            valid = key_mask(hidden, text_mask)
            f_t = teacher_hidden.detach()
            toi = tokens_of_interest(f_t[:, -1], cog, hidden, valid, t.toi_scaled).detach()  # (B, S)
            parts.update(distillation_loss(t.distill, f_t, hidden, toi, valid, self.mu, t.lambda_cog_kl,
                                           t.kl_temperature, t.kl_mask))
            parts["toi_mean"] = (toi.sum() / valid.sum()).detach()
        else:
            parts["cog"] = hidden.new_zeros(())
        parts["loss"] = total_loss(parts["task"], parts["cog"], parts["lb"], t.lambda_cog, t.lambda_lb)
        if self.goal_head is not None:  # without labels (goal None or masked out) the term is 0, still in the graph
            pred = self.goal_head(cog)  # (B, 3) position, or (B, 6) position + rotation
            if goal is None:
                goal, goal_mask = pred.new_zeros(pred.shape[0], 6), torch.zeros(pred.shape[0], dtype=torch.bool,
                                                                                 device=pred.device)
            target = subgoal_target(goal[:, :3], t.goal_scale, t.goal_knee)
            if pred.shape[1] == 6:
                target = torch.cat([target, goal[:, 3:6] / t.goal_rot_scale], dim=1)
            parts["goal"] = subgoal_loss(pred, target, goal_mask)
            parts["loss"] = parts["loss"] + t.goal_weight * parts["goal"]
        if model.gripper_head is not None:  # beyond the paper: the gripper classifier on the cognition feature
            parts["gripper"] = gripper_loss(model.gripper_head(cog), actions[..., -1], action_mask)
            parts["loss"] = parts["loss"] + t.gripper_weight * parts["gripper"]
        return parts
