"""Mixture-of-Depths baseline (router.type mod): c tokens per layer, cognition always, router gradients, FLOPs."""

import pytest
import torch

from mole_inference.config import preset
from mole_inference.model.flops import llm_layer_flops, routed_step_flops, stage_flops, step_flops
from mole_inference.model.mod import mod_capacity, mod_forward, mod_layer, select_tokens
from mole_inference.model.vla import MoLeVLA

ENC = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "mlp_size": 64}
MICRO = {
    "vision": {"image_size": 28, "patch_size": 14, "dinov2": ENC, "siglip": ENC},
    "llm": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 4, "num_heads": 2, "max_text_tokens": 12},
    "action_head": {"hidden_size": 32, "depth": 1, "num_heads": 2, "chunk_size": 4, "ddim_steps": 5},
}


def micro(**router):
    """4 layers, S = 4 image + 12 text + 1 cognition = 17 tokens."""
    base = {"num_active_layers": 2, "proj_dim": 16, "spatial_hidden": 16, "encoder_heads": 2, "encoder_ffn": 32}
    torch.manual_seed(0)
    return MoLeVLA(preset("tiny", **MICRO, router={**base, **router})).eval()


def inputs(b=2, real=7):
    pixels, ids = torch.rand(b, 3, 28, 28), torch.randint(4, 200, (b, 12))
    mask = torch.zeros(b, 12, dtype=torch.bool)
    mask[:, :real] = True
    return pixels, ids, mask


def test_select_tokens_on_hand_made_scores():
    scores = torch.tensor([[5.0, 1.0, 9.0, 8.0, 3.0, -100.0]])  # the last (cognition) token scores lowest
    key_mask = torch.tensor([[True, True, False, True, True, True]])  # token 2 is padding
    pos = select_tokens(scores, key_mask, 3)
    assert pos.tolist() == [[0, 3, 5]]  # top-2 real tokens (8, 5) in order, plus the cognition token
    assert mod_capacity(17, 0.5) == 8 and mod_capacity(17, 1.0) == 17 and mod_capacity(3, 0.01) == 1


def test_exactly_c_tokens_per_layer_and_the_cognition_token_always():
    model = micro(type="mod", mod_capacity=0.5)
    c = mod_capacity(model.cfg.seq_len, 0.5)
    seen = []
    for layer in model.llm.layers:
        layer.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[1]))
    with torch.no_grad():
        _, _, chosen = model.cognition(*inputs())
    assert seen == [c] * model.num_layers and c == 8  # every layer ran, each on c of the 17 tokens
    assert chosen == [[0, 1, 2, 3]] * 2
    h = torch.randn(2, model.cfg.seq_len, 32)
    key_mask = model.prompt(torch.zeros(2, 4, 32), torch.zeros(2, 12, 32), inputs()[2])[1]
    with torch.no_grad():
        model.router.scorer.bias.fill_(0.0)
        model.router.scorer.weight.zero_()
        model.router.scorer.weight[0, 0] = 1.0  # score = feature 0 of each token
        h[:, -1, 0] = -1e3  # the cognition token scores lowest of all
        out, pos = mod_layer(model.llm, model.router, 0, h, key_mask, c)
    assert pos.shape == (2, c) and (pos[:, -1] == h.shape[1] - 1).all()
    skipped = torch.ones(2, h.shape[1], dtype=torch.bool).scatter(1, pos, False)
    assert torch.equal(out[skipped], h[skipped])  # skipped tokens pass unchanged
    assert not torch.allclose(out[:, -1], h[:, -1])  # the cognition token went through the block


def test_full_capacity_equals_the_all_layers_model():
    model = micro(type="mod", mod_capacity=1.0)
    img, text = torch.randn(1, 4, 32), torch.randn(1, 12, 32)
    h, key_mask = model.prompt(img, text, inputs(1)[2])
    with torch.no_grad():
        assert torch.allclose(mod_forward(model.llm, model.router, h, key_mask, 1.0), model.llm(h, key_mask),
                              atol=1e-5)


def test_training_reaches_the_mod_router_and_the_forced_full_model_is_untouched():
    model = micro(type="mod").train()
    hidden, _, gate = model.forward_train(*inputs())
    assert gate.tolist() == [[1.0] * 4] * 2 and hidden.shape == (2, model.cfg.seq_len, 32)
    hidden[:, -1].pow(2).sum().backward()
    grad = model.router.scorer.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    model.eval()
    pixels, ids, mask = inputs()
    with torch.no_grad():
        full, _, chosen = model.cognition(pixels, ids, mask, layers=range(4))  # forced set: every token
        teacher = model.forward_train(pixels, ids, mask, full=True)[0][:, -1]
    assert torch.allclose(full, teacher, atol=1e-5) and chosen == [[0, 1, 2, 3]] * 2


def test_train_and_inference_values_agree():
    """The straight-through token weight is exactly 1 in value: training and inference compute the same."""
    model = micro(type="mod")
    pixels, ids, mask = inputs()
    with torch.no_grad():
        cog, _, _ = model.cognition(pixels, ids, mask)
        hidden = model.forward_train(pixels, ids, mask)[0]
    assert torch.allclose(cog, hidden[:, -1], atol=1e-5)


def test_mod_flops_are_k_layers_over_c_tokens():
    cfg = preset("cogact-7b", router={"type": "mod"})
    c = mod_capacity(cfg.seq_len, cfg.router.mod_capacity)
    f = stage_flops(cfg)
    assert f["router"] == 32 * 2 * cfg.seq_len * 4096
    expected = f["vision"] + f["router"] + 32 * llm_layer_flops(cfg, c) + f["action_head"]
    assert routed_step_flops(cfg) == expected
    assert routed_step_flops(cfg) < step_flops(cfg)  # about the MoLe k = K/2 budget, less attention
    star = preset("cogact-7b")
    assert routed_step_flops(star) == step_flops(star, 16)
    assert routed_step_flops(cfg) == pytest.approx(routed_step_flops(star), rel=0.1)


def test_info_reports_the_mod_router(capsys):
    import json

    from mole_inference.cli import main

    assert main(["info", "--preset", "cogact-7b", "--router", "mod", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["router"] == "mod" and report["flops_mole"] == routed_step_flops(preset("cogact-7b",
                                                                                        router={"type": "mod"}))
    assert report["parameters"]["router"] == 32 * 4096 + 32
