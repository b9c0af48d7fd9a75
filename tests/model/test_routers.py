"""Eq. 7-12 on small hand-checkable tensors."""

import math

import pytest
import torch

from mole_inference.config.model import LLMConfig, RouterConfig
from mole_inference.model.llm import MoLeLLM
from mole_inference.model.routers import (
    EarlyExitRouter,
    FullRouter,
    LinearRouter,
    RandomRouter,
    STARRouter,
    masked_mean,
    straight_through_gate,
    topk_mask,
)


def gelu(x: float) -> float:
    return 0.5 * x * (1 + math.erf(x / math.sqrt(2)))


@pytest.fixture
def star() -> STARRouter:
    """width 2, d1 2, K 3 with weights set by hand; temporal encoder zeroed (it is then the identity)."""
    cfg = RouterConfig(num_active_layers=2, proj_dim=2, spatial_hidden=2, encoder_heads=1, encoder_ffn=4)
    r = STARRouter(cfg, num_layers=3, width=2)
    with torch.no_grad():
        r.proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))  # W_p: h = [x0, 2 x1]
        r.spatial[0].weight.copy_(torch.eye(2))
        r.spatial[0].bias.copy_(torch.tensor([0.5, -1.0]))
        r.spatial[2].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        for p in r.temporal_encoder.parameters():
            p.zero_()
        r.temporal_head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
        r.sharpness.weight.copy_(torch.tensor([[1.0, 1.0]]))
        r.sharpness.bias.fill_(-1.0)
    return r


def test_eq8_shared_projection(star):
    x = torch.tensor([[[3.0, 4.0]]])
    assert torch.allclose(star.proj(x), torch.tensor([[[3.0, 8.0]]]))


def test_eq9_spatial_scores(star):
    h_img = torch.tensor([[[1.0, 2.0], [3.0, 0.0]]])  # pooled: [2, 1]
    s = star.spatial_scores(h_img)
    a, b = gelu(2.0 + 0.5), gelu(1.0 - 1.0)
    assert torch.allclose(s, torch.tensor([[a, b, a + b]]), atol=1e-6)


def test_eq10_temporal_scores_pool_real_tokens_only(star):
    h_text = torch.tensor([[[1.0, 3.0], [3.0, 1.0], [100.0, -100.0]]])
    mask = torch.tensor([[True, True, False]])
    t = star.temporal_scores(h_text, mask)  # encoder is the identity -> mean of real tokens [2, 2]
    assert torch.allclose(t, torch.tensor([[2.0, 2.0, -2.0]]), atol=1e-6)
    h_text[0, 2] = torch.tensor([-7.0, 9.0])  # the padded token must not matter
    assert torch.allclose(star.temporal_scores(h_text, mask), t)


def test_eq11_alpha_from_cls_token(star):
    h_text = torch.tensor([[[0.5, 1.5], [9.0, 9.0]]])
    assert torch.allclose(star.alpha(h_text), torch.tensor([[1 / (1 + math.exp(-1.0))]]))


def test_eq11_alpha_depends_on_the_whole_instruction():
    """Two instructions sharing their first (BOS) token get different alpha: [CLS] is read after the encoder."""
    torch.manual_seed(0)
    cfg = RouterConfig(num_active_layers=2, proj_dim=8, spatial_hidden=8, encoder_heads=2, encoder_ffn=16)
    r = STARRouter(cfg, num_layers=4, width=8).eval()
    text = torch.randn(2, 5, 8)
    text[1, 0] = text[0, 0]  # same BOS embedding, different words after it
    mask = torch.ones(2, 5, dtype=torch.bool)
    enc = r.encode_text(r.proj(text), mask)
    alpha = r.alpha(enc)
    assert abs(alpha[0].item() - alpha[1].item()) > 1e-4
    assert torch.allclose(r.proj(text)[0, 0], r.proj(text)[1, 0])  # the raw projection alone could not tell


def test_eq12_blend(star):
    s, t, alpha = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 0.0, -1.0]]), torch.tensor([[0.25]])
    assert torch.allclose(star.blend(s, t, alpha), torch.tensor([[2.5, 0.5, 0.0]]))
    star.cfg.blend = "sum"
    assert torch.allclose(star.blend(s, t, alpha), s + t)


def test_star_forward_composes_the_equations(star):
    img = torch.tensor([[[1.0, 0.5], [3.0, 0.0]]])  # projected: [[1, 1], [3, 0]] -> pooled [2, 0.5]
    text = torch.tensor([[[0.5, 0.75], [1.5, 0.25]]])  # projected: [[0.5, 1.5], [1.5, 0.5]]
    mask = torch.ones(1, 2, dtype=torch.bool)
    out = star(img, text, mask)
    a, b = gelu(2.5), gelu(-0.5)
    s = torch.tensor([[a, b, a + b]])
    t = torch.tensor([[1.0, 1.0, -1.0]])
    alpha = 1 / (1 + math.exp(-(0.5 + 1.5 - 1.0)))
    logits = alpha * s + (1 - alpha) * t
    assert torch.allclose(out.logits, logits, atol=1e-6)
    assert torch.allclose(out.probs, torch.softmax(logits, -1), atol=1e-6)


def test_topk_mask_and_straight_through_gate():
    probs = torch.tensor([[0.1, 0.4, 0.2, 0.3], [0.7, 0.1, 0.15, 0.05]], requires_grad=True)
    hard = topk_mask(probs.detach(), 2)
    assert hard.tolist() == [[0, 1, 0, 1], [1, 0, 1, 0]]
    gate = straight_through_gate(probs, 2)
    assert torch.equal(gate.detach(), hard)  # forward: exactly 0/1
    (gate * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert probs.grad.tolist() == [[1.0, 2.0, 3.0, 4.0]] * 2  # backward: identity to the probs


def test_eq7_gate_mixes_layer_output_and_skip():
    torch.manual_seed(0)
    llm = MoLeLLM(LLMConfig(hidden_size=16, intermediate_size=32, num_layers=2, num_heads=2, vocab_size=8))
    h = torch.randn(1, 5, 16)
    mask = torch.ones(1, 5, dtype=torch.bool)
    only0 = llm(h, mask, layers=[0])
    assert torch.allclose(llm(h, mask, gate=torch.tensor([[1.0, 0.0]])), only0, atol=1e-6)
    assert torch.allclose(llm(h, mask, gate=torch.tensor([[0.0, 0.0]])), llm.norm(h), atol=1e-6)
    # soft gate on layer 0 only: h1 = g * layer0(h) + (1 - g) * h
    from mole_inference.model.llm import attention_bias

    l0 = llm.run_layer(0, h, attention_bias(mask, h.dtype), llm.rope(h))
    soft = llm(h, mask, gate=torch.tensor([[0.3, 0.0]]))
    assert torch.allclose(soft, llm.norm(0.3 * l0 + 0.7 * h), atol=1e-6)


def test_masked_mean():
    x = torch.tensor([[[1.0], [3.0], [50.0]]])
    assert masked_mean(x, torch.tensor([[True, True, False]])).item() == 2.0


@pytest.mark.parametrize("cls,expected", [(EarlyExitRouter, [0, 1, 2]), (FullRouter, [0, 1, 2, 3, 4, 5])])
def test_fixed_routers(cls, expected):
    r = cls(RouterConfig(num_active_layers=3), num_layers=6, width=8)
    out = r(torch.randn(2, 4, 8), torch.randn(2, 3, 8), torch.ones(2, 3, dtype=torch.bool))
    mask = topk_mask(out.probs, r.k)
    assert [torch.nonzero(row).flatten().tolist() for row in mask] == [expected, expected]


def test_random_router_is_seeded_and_varies():
    def picks(seed):
        r = RandomRouter(RouterConfig(num_active_layers=2, seed=seed), num_layers=8, width=4)
        return [tuple(topk_mask(r(torch.zeros(1, 1, 4), torch.zeros(1, 1, 4),
                                  torch.ones(1, 1, dtype=torch.bool)).probs, 2)[0].tolist()) for _ in range(5)]

    assert picks(1) == picks(1)
    assert len(set(picks(1))) > 1


def test_linear_router_depends_on_input():
    r = LinearRouter(RouterConfig(num_active_layers=2), num_layers=4, width=8)
    m = torch.ones(1, 3, dtype=torch.bool)
    a = r(torch.randn(1, 4, 8), torch.randn(1, 3, 8), m).logits
    b = r(torch.randn(1, 4, 8), torch.randn(1, 3, 8), m).logits
    assert not torch.allclose(a, b)


def test_eq9_order_paper_mlp_then_pool_differs_from_pool_then_mlp(star):
    """spatial_order: pool_mlp = MLP(pool(h)) (default); mlp_pool = pool(MLP(h)), the paper's order."""
    h_img = torch.tensor([[[1.0, 2.0], [3.0, 0.0]]])
    a, b = gelu(2.0 + 0.5), gelu(1.0 - 1.0)  # pooled [2, 1], then the MLP
    assert torch.allclose(star.spatial_scores(h_img), torch.tensor([[a, b, a + b]]), atol=1e-6)
    star.cfg.spatial_order = "mlp_pool"
    # per token: [1 + 0.5, 2 - 1] and [3 + 0.5, 0 - 1] through GELU, averaged, then W_s2
    g1, g2 = (gelu(1.5) + gelu(3.5)) / 2, (gelu(1.0) + gelu(-1.0)) / 2
    paper = star.spatial_scores(h_img)
    assert torch.allclose(paper, torch.tensor([[g1, g2, g1 + g2]]), atol=1e-6)
    assert not torch.allclose(paper, torch.tensor([[a, b, a + b]]), atol=1e-3)


def test_eq9_mlp_pool_equals_the_mlp_on_every_token_then_the_mean():
    torch.manual_seed(0)
    cfg = RouterConfig(num_active_layers=2, proj_dim=8, spatial_hidden=8, encoder_heads=2, encoder_ffn=16,
                       spatial_order="mlp_pool")
    r = STARRouter(cfg, num_layers=4, width=8)
    h_img = torch.randn(2, 5, 8)
    assert torch.allclose(r.spatial_scores(h_img), r.spatial(h_img).mean(dim=1), atol=1e-6)


def test_eq12_sum_is_the_paper_preset_and_alpha_the_dataclass_default():
    from mole_inference.config import preset

    assert RouterConfig().blend == "alpha" and RouterConfig().spatial_order == "pool_mlp"  # older checkpoints
    cfg = preset("cogact-7b")
    assert cfg.router.blend == "sum" and cfg.router.spatial_order == "mlp_pool"
    assert cfg.action_head.ddim_clip == "final" and cfg.training.kl_mask == "token_weight"


def test_eq12_sum_forward_ignores_alpha(star):
    img = torch.tensor([[[1.0, 0.5], [3.0, 0.0]]])
    text = torch.tensor([[[0.5, 0.75], [1.5, 0.25]]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    star.cfg.blend = "sum"
    a, b = gelu(2.5), gelu(-0.5)
    logits = torch.tensor([[a, b, a + b]]) + torch.tensor([[1.0, 1.0, -1.0]])  # S + T (Eq. 12)
    assert torch.allclose(star(img, text, mask).logits, logits, atol=1e-6)
    with torch.no_grad():
        star.sharpness.bias.fill_(5.0)  # another alpha changes nothing
    assert torch.allclose(star(img, text, mask).logits, logits, atol=1e-6)
