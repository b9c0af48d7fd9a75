"""DDIM sampler and the DiT head."""

import numpy as np
import pytest
import torch

from mole_inference.config.model import ActionHeadConfig
from mole_inference.model.diffusion import DDIMScheduler, make_betas
from mole_inference.runtime.torch_backend import TorchPolicy


def test_ddim_recovers_x0_with_the_true_noise_predictor():
    cfg = ActionHeadConfig(ddim_steps=10, train_timesteps=100)
    sched = DDIMScheduler(cfg)
    x0 = torch.rand(2, 16, 7) * 1.6 - 0.8
    abars = sched.alphas_cumprod

    def oracle(x, t):  # the eps that x_t would have if it came from x0
        a = abars[t].float().view(-1, 1, 1)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    out = sched.sample(oracle, torch.randn(2, 16, 7))
    assert (out - x0).abs().max().item() < 1e-4


def test_schedule_timesteps_descend_and_betas_valid():
    sched = DDIMScheduler(ActionHeadConfig(ddim_steps=5, train_timesteps=100))
    assert sched.timesteps() == [80, 60, 40, 20, 0]
    for name in ("cosine", "linear"):
        b = make_betas(name, 100)
        assert b.shape == (100,) and (b > 0).all() and (b < 1).all()


def test_q_sample_matches_formula():
    sched = DDIMScheduler(ActionHeadConfig())
    x0, eps, t = torch.ones(1, 2, 7), torch.full((1, 2, 7), 2.0), torch.tensor([30])
    a = sched.alphas_cumprod[30].item()
    expected = a**0.5 * 1 + (1 - a) ** 0.5 * 2
    assert torch.allclose(sched.q_sample(x0, t, eps), torch.full((1, 2, 7), expected, dtype=torch.float32))


def test_policy_is_deterministic_under_a_seed():
    policy = TorchPolicy.from_preset("tiny", seed=0)
    with torch.no_grad():  # make the head's output depend on the input (its last layer starts at zero)
        torch.nn.init.normal_(policy.model.action_head.action_out.weight, std=0.5)
    img = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    a = policy.infer(img, "touch the red cube", seed=7).actions
    b = policy.infer(img, "touch the red cube", seed=7).actions
    c = policy.infer(img, "touch the red cube", seed=8).actions
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_cfg_doubles_the_head_batch_and_mixes():
    policy = TorchPolicy.from_preset("tiny", seed=0)
    model = policy.model
    torch.nn.init.normal_(model.action_head.action_out.weight, std=0.5)
    x, t, cog = torch.randn(1, 16, 7), torch.tensor([50]), torch.randn(1, model.cfg.llm.hidden_size)
    with torch.no_grad():
        cond = model.action_head(x, t, cog)
        uncond = model.action_head(x, t, model.action_head.null_condition)
        model.cfg.action_head.cfg_scale = 1.5
        mixed = model.denoise(x, t, cog)
    assert torch.allclose(mixed, uncond + 1.5 * (cond - uncond), atol=1e-5)


def test_ddim_clip_final_differs_from_every_step_on_a_hand_case():
    """2 DDIM steps (t = 5, 0); eps is e1 at t = 5 (x_0 estimate 1.5, out of range) and e2 at t = 0 (pulls back)."""
    import math

    results = {}
    for mode in ("every_step", "final"):
        sched = DDIMScheduler(ActionHeadConfig(ddim_steps=2, train_timesteps=10, ddim_clip=mode))
        assert sched.timesteps() == [5, 0]
        a5, a0 = float(sched.alphas_cumprod[5]), float(sched.alphas_cumprod[0])
        r5, s5, r0, s0 = math.sqrt(a5), math.sqrt(1 - a5), math.sqrt(a0), math.sqrt(1 - a0)
        e1 = 0.0
        e2 = e1 + r0 / s0  # chosen so the unclipped loop ends at 1.5 - 1 = 0.5
        x_t = r5 * 1.5 + s5 * e1

        def eps_fn(x, t, e1=e1, e2=e2):
            return torch.full_like(x, e1 if int(t[0]) == 5 else e2)

        results[mode] = sched.sample(eps_fn, torch.full((1, 1, 1), x_t, dtype=torch.float64)).item()
    # final: x0 = 1.5 kept in the loop, x_1 = r0 1.5 + s0 e1, then x0 = (x_1 - s0 e2) / r0 = 0.5, clipped: 0.5
    assert results["final"] == pytest.approx(0.5, abs=1e-9)
    # every step: x0 clipped to 1, eps re-derived e' = (x_t - r5) / s5, x_1 = r0 + s0 e', x0 = (x_1 - s0 e2) / r0
    e_prime = (x_t - r5) / s5
    expected = min(1.0, max(-1.0, (r0 + s0 * e_prime - s0 * e2) / r0))
    assert results["every_step"] == pytest.approx(expected, abs=1e-9)
    assert abs(results["every_step"] - results["final"]) > 0.1


def test_ddim_clip_final_still_returns_samples_in_range():
    sched = DDIMScheduler(ActionHeadConfig(ddim_steps=4, train_timesteps=20, ddim_clip="final"))
    out = sched.sample(lambda x, t: -3.0 * torch.ones_like(x), torch.randn(2, 4, 7))
    assert out.abs().max().item() <= 1.0
