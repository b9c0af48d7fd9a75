"""Eq. 18 through the MoD and dynamic-exit baselines and the paper's Eq. 16 reading: one step, by hand."""

import copy

import pytest
import torch

from mole_inference.model.vla import MoLeVLA
from mole_inference.training.objective import MoLeObjective, draw_diffusion


def _batch(cfg, b: int = 2) -> tuple[torch.Tensor, ...]:
    """pixels, ids, text mask, actions, and the diffusion draw of one random micro batch (after the model's init,
    so the draws follow `torch.manual_seed` as before)."""
    t = cfg.llm.max_text_tokens
    pixels, ids = torch.rand(b, 3, 28, 28), torch.randint(4, 200, (b, t))
    mask = torch.ones(b, t, dtype=torch.bool)
    actions = torch.rand(b, cfg.action_head.chunk_size, cfg.action_head.action_dim) * 2 - 1
    noise, steps, drop = draw_diffusion(b, cfg, torch.Generator().manual_seed(0), torch.device("cpu"))
    return pixels, ids, mask, actions, noise, steps, drop


@pytest.mark.parametrize("router, kl_mask, blend", [("mod", "token_weight", "alpha"),
                                                    ("dynamic_exit", "in_softmax", "alpha"),
                                                    ("star", "token_weight", "sum"), ("star", "in_softmax", "alpha")])
def test_one_objective_step(micro_cfg, router, kl_mask, blend):
    cfg = micro_cfg(router, distill="mse+reverse_kl", kl_mask=kl_mask)
    cfg.router.blend = blend
    torch.manual_seed(0)
    student = MoLeVLA(cfg)
    teacher = copy.deepcopy(student).eval()
    objective = MoLeObjective(student, cfg)
    pixels, ids, mask, actions, noise, steps, drop = _batch(cfg)
    with torch.no_grad():
        teacher_hidden = teacher.forward_train(pixels, ids, mask, full=True)[0]
    parts = objective(pixels, ids, mask, actions, noise, steps, drop, teacher_hidden=teacher_hidden)
    assert torch.isfinite(parts["loss"]) and parts["cog_reverse_kl"].item() >= 0
    parts["loss"].backward()
    trainable = [p for p in objective.parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)  # none unused (DDP)
    if router == "mod":  # the token scorers learn through the straight-through weight
        assert student.router.scorer.weight.grad.abs().sum() > 0


def test_router_spread_reports_a_collapsed_router(micro_cfg):
    """`router_spread` (std of the layer logits) is > 0 for a fresh STAR router and exactly 0 once the spatial
    MLP is dead and alpha saturated (what the load-balance term drove the tiny preset's router to)."""
    cfg = micro_cfg("star", distill="none")
    torch.manual_seed(0)
    student = MoLeVLA(cfg)
    objective = MoLeObjective(student, cfg)
    batch = _batch(cfg)

    def spread() -> float:
        return objective(*batch)["router_spread"].item()

    assert spread() > 1e-3
    router = student.router
    with torch.no_grad():
        router.spatial[0].bias.fill_(-1e4)  # every hidden unit off: S = 0 for all layers
        router.sharpness.bias.fill_(1e4)  # alpha = 1: T ignored
    assert spread() == 0.0
