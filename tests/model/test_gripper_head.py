"""Gripper classifier (action_head.gripper_head, beyond the paper): replaces the sampled column, masked BCE,
trains through the cognition feature, refused where it cannot act."""

import numpy as np
import pytest
import torch

from mole_inference.config import preset
from mole_inference.errors import ConfigError
from mole_inference.model.gripper_head import GripperHead, gripper_loss, with_open_prob
from mole_inference.model.vla import MoLeVLA
from mole_inference.training.objective import MoLeObjective, draw_diffusion, step_generator
from tests.model.conftest import inputs, micro


def test_the_classifier_probability_replaces_only_the_last_column():
    torch.manual_seed(0)
    head = GripperHead(8, 3)
    cog = torch.randn(2, 8)
    actions = torch.rand(2, 3, 7) * 2 - 1
    out = with_open_prob(actions, head.open_prob(cog))
    assert torch.equal(out[..., :-1], actions[..., :-1])
    torch.testing.assert_close(out[..., -1], torch.sigmoid(head(cog)))


def test_loss_is_bce_by_hand_and_ignores_padding():
    logits = torch.tensor([[1.0, -2.0, 3.0]])
    target = torch.tensor([[1.0, 0.0, 0.5]])
    by_hand = -(np.log(1 / (1 + np.exp(-1.0))) + np.log(1 - 1 / (1 + np.exp(2.0)))) / 2
    mask = torch.tensor([[True, True, False]])
    assert gripper_loss(logits, target, mask).item() == pytest.approx(by_hand, rel=1e-6)
    moved = logits.clone()
    moved[0, 2] = -50.0  # a padded step: any prediction costs nothing
    assert gripper_loss(moved, target, mask).item() == pytest.approx(by_hand, rel=1e-6)
    assert gripper_loss(moved, target).item() > 10 * by_hand  # unmasked it counts


def test_sampled_chunks_share_the_classifier_gripper_whatever_the_noise():
    torch.manual_seed(0)
    cfg = micro("tiny", action_head={"gripper_head": True, "chunk_size": 4})
    model = MoLeVLA(cfg).eval()
    with torch.no_grad():
        model.gripper_head.net[-1].bias.copy_(torch.tensor([3.0, -3.0, 0.0, 1.0]))
        cog = model.cognition(*inputs(cfg), layers=range(4))[0]
        a = model.sample_actions(cog, torch.randn(1, 4, 7, generator=torch.Generator().manual_seed(1)))
        b = model.sample_actions(cog, torch.randn(1, 4, 7, generator=torch.Generator().manual_seed(2)))
        expect = torch.sigmoid(model.gripper_head(cog))
    assert not torch.allclose(a[..., :-1], b[..., :-1])  # the arm is still sampled
    torch.testing.assert_close(a[..., -1], expect)
    torch.testing.assert_close(b[..., -1], expect)


def test_objective_trains_the_classifier_through_the_cognition_feature():
    """Two prompts, one labelled open and one closed: a few steps separate them, and the BCE's gradient reaches
    the LLM (the cognition feature learns the decision, not only the head)."""
    torch.manual_seed(0)
    cfg = micro("tiny", action_head={"gripper_head": True, "chunk_size": 4},
                training={"diffusion_repeats": 1, "distill": "none", "gripper_weight": 1.0})
    obj = MoLeObjective(MoLeVLA(cfg), cfg)
    pixels, ids, mask = inputs(cfg, batch=2)
    actions = torch.zeros(2, 4, 7)
    actions[0, :, -1] = 1.0  # open
    action_mask = torch.ones(2, 4, dtype=torch.bool)
    noise, t, drop = draw_diffusion(2, cfg, step_generator(0, 0), torch.device("cpu"))
    parts = obj(pixels, ids, mask, actions, noise, t, drop, action_mask=action_mask)
    parts["gripper"].backward()
    assert obj.student.gripper_head.net[0].weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.student.llm.parameters())
    opt = torch.optim.Adam(obj.parameters(), lr=3e-3)
    for step in range(40):
        opt.zero_grad()
        noise, t, drop = draw_diffusion(2, cfg, step_generator(0, step), torch.device("cpu"))
        obj(pixels, ids, mask, actions, noise, t, drop, action_mask=action_mask)["loss"].backward()
        opt.step()
    with torch.no_grad():
        p = torch.sigmoid(obj.student.gripper_head(obj.student.cognition(pixels, ids, mask)[0]))
    assert (p[0] > 0.6).all() and (p[1] < 0.4).all()


def test_only_the_diffusion_family_takes_it():
    with pytest.raises(ConfigError, match="gripper_head"):
        preset("tiny", action_head={"type": "flow", "gripper_head": True})
    assert MoLeVLA(preset("tiny")).gripper_head is None  # off by default: the paper presets are unchanged
