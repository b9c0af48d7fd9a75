"""DDIM sampler and the DiT head."""

import numpy as np
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
