"""Parameter and FLOP accounting; the cogact-7b shapes are built on the meta device."""

import torch
from torch.utils.flop_counter import FlopCounterMode

from mole_inference.config import preset
from mole_inference.model.flops import parameter_counts, stage_flops, step_flops
from mole_inference.model.vla import MoLeVLA


def test_cogact_7b_shapes_and_router_budget():
    with torch.device("meta"):
        model = MoLeVLA(preset("cogact-7b"))
    p = parameter_counts(model)
    assert 6.5e9 < p["llm"] < 6.7e9  # LLaMA-2-7B without the LM head
    assert 300e6 < sum(x.numel() for x in model.vision.dinov2.parameters()) < 306e6  # DINOv2-L/14
    assert p["router"] / p["llm"] < 1e-3  # paper: STAR adds < 0.1 %


def test_analytic_flops_match_the_flop_counter():
    cfg = preset("tiny")
    model = MoLeVLA(cfg).eval()
    # The counter does not see CPU SDPA kernels; eager attention is plain matmuls it does count.
    for hf_config in (model.vision.dinov2.config, model.vision.siglip.config, model.llm.layers[0].self_attn.config):
        hf_config._attn_implementation = "eager"
    t = cfg.llm.max_text_tokens
    pixels, ids = torch.rand(1, 3, 112, 112), torch.randint(4, 200, (1, t))
    mask = torch.ones(1, t, dtype=torch.bool)
    f = stage_flops(cfg)
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            img = model.encode_image(pixels)
        assert abs(fc.get_total_flops() - f["vision"]) / f["vision"] < 0.05
        text = model.embed_text(ids)
        h, km = model.prompt(img, text, mask)
        with FlopCounterMode(display=False) as fc:
            model.hidden_states(h, km, layers=[0, 1, 2])
        assert abs(fc.get_total_flops() - 3 * f["llm_layer"]) / (3 * f["llm_layer"]) < 0.05


def test_mole_flops_scale_with_active_layers():
    cfg = preset("cogact-7b")
    full, half = step_flops(cfg), step_flops(cfg, 16)
    f = stage_flops(cfg)
    assert full - half == 16 * f["llm_layer"] - f["router"]
