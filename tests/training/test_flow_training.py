"""Training the flow (pi0) family: the flow-matching loss falls, CogKD reads the prefix unchanged, the draws are
reproducible, and `mole-vla train` writes a checkpoint that infers."""

import numpy as np
import torch

from mole_inference.model.vla import MoLeVLA
from mole_inference.training.objective import MoLeObjective, draw_diffusion, step_generator
from tests.training.conftest import cli_train, micro_family

FLOW_HEAD = {"hidden_size": 24, "depth": 4, "num_heads": 2, "head_dim": 16, "chunk_size": 4}


def micro_pi0(**training):
    """pi0-tiny at the micro shapes of conftest (4 layer pairs, LLM width 32, expert width 24)."""
    return micro_family("pi0-tiny", FLOW_HEAD, diffusion_repeats=2, **training)


def batch(cfg, b=4, seed=1):
    gen = torch.Generator().manual_seed(seed)
    r, t = cfg.vision.image_size, cfg.llm.max_text_tokens
    pixels = torch.rand((b, 3, r, r), generator=gen)
    ids = torch.randint(4, 200, (b, t), generator=gen)
    mask = torch.zeros((b, t), dtype=torch.bool)
    mask[:, :5] = True
    actions = torch.rand((b, cfg.action_head.chunk_size, 7), generator=gen) * 2 - 1
    return pixels, ids, mask, actions


def test_flow_draws_are_float_times_and_reproducible():
    cfg = micro_pi0()
    noise, t, drop = draw_diffusion(4, cfg, step_generator(0, 3), torch.device("cpu"))
    again = draw_diffusion(4, cfg, step_generator(0, 3), torch.device("cpu"))
    assert noise.shape == (8, 4, 7) and t.shape == (8,) and t.is_floating_point()
    assert ((t >= 0.001) & (t <= 1.0)).all() and not drop.any()  # no classifier-free guidance in pi0
    for x, y in zip((noise, t, drop), again, strict=True):
        torch.testing.assert_close(x, y)


def test_the_flow_loss_falls_on_one_batch_and_cogkd_runs():
    torch.manual_seed(0)
    cfg = micro_pi0(distill="mse+reverse_kl")
    student, teacher = MoLeVLA(cfg), MoLeVLA(cfg)
    teacher.load_state_dict(student.state_dict())
    obj = MoLeObjective(student, cfg)
    pixels, ids, mask, actions = batch(cfg)
    noise, times, drop = draw_diffusion(4, cfg, step_generator(0, 0), torch.device("cpu"))

    def loss():
        with torch.no_grad():
            th = teacher.forward_train(pixels, ids, mask, full=True)[0]
        assert th.shape[1] == cfg.seq_len  # CogKD distills the prefix alone, cognition token last
        return obj(pixels, ids, mask, actions, noise, times, drop, th)

    opt = torch.optim.AdamW(obj.parameters(), lr=3e-3)
    first = loss()
    assert {"task", "cog", "lb", "loss"} <= set(first)
    assert torch.isfinite(first["cog"]) and first["cog"].item() > 0  # k of K layers vs the full teacher
    losses = []
    for _ in range(8):
        opt.zero_grad()
        parts = loss()
        parts["loss"].backward()
        opt.step()
        losses.append(parts["task"].item())
    assert losses[1] < losses[0]
    assert loss()["task"].item() < 0.6 * first["task"].item()
    grads = [p.grad for p in student.action_head.layers.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)  # the expert learns through the gate


def test_cli_train_then_infer(bag_root, tmp_path, capsys):
    last, policy = cli_train(micro_pi0(), bag_root, tmp_path, capsys)
    assert np.isfinite(float(last["task"])) and np.isfinite(float(last["cog"]))  # flow loss and CogKD both ran
    assert policy.model.family == "flow"
    chunk = policy.infer(np.zeros((32, 32, 3), np.uint8), "do task 0", seed=0)
    assert chunk.actions.shape == (4, 7) and chunk.is_finite
