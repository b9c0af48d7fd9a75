"""DeeR-style dynamic early exit (router.type dynamic_exit) on a micro model: thresholds and calibration."""

import pytest
import torch

from mole_inference.config import from_dict, preset, to_dict
from mole_inference.config.model import ModelConfig
from mole_inference.model.dynamic_exit import calibrate_exit_threshold, exit_depths, relative_change
from mole_inference.model.flops import routed_step_flops, stage_flops, step_flops
from mole_inference.model.vla import MoLeVLA

ENC = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "mlp_size": 64}
MICRO = {
    "vision": {"image_size": 28, "patch_size": 14, "dinov2": ENC, "siglip": ENC},
    "llm": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 6, "num_heads": 2, "max_text_tokens": 12},
    "action_head": {"hidden_size": 32, "depth": 1, "num_heads": 2, "chunk_size": 4, "ddim_steps": 5},
}


def micro(vision: dict | None = None, **router) -> MoLeVLA:
    base = {"type": "dynamic_exit", "num_active_layers": 3, "proj_dim": 16, "spatial_hidden": 16,
            "encoder_heads": 2, "encoder_ffn": 32}
    torch.manual_seed(0)
    shapes = {**MICRO, "vision": {**MICRO["vision"], **(vision or {})}}
    return MoLeVLA(preset("tiny", **shapes, router={**base, **router})).eval()


def with_router(model: MoLeVLA, **router) -> MoLeVLA:
    """The same weights under changed router settings."""
    data = to_dict(model.cfg)
    data["router"].update(router)
    model.cfg = from_dict(ModelConfig, data)
    return model


def batches(n=4, b=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(b, 3, 28, 28, generator=g), torch.randint(4, 200, (b, 12), generator=g),
             torch.ones(b, 12, dtype=torch.bool)) for _ in range(n)]


def count_calls(model: MoLeVLA) -> list[int]:
    calls = [0] * model.num_layers
    for i, layer in enumerate(model.llm.layers):
        layer.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    return calls


def test_threshold_zero_runs_every_layer_and_matches_the_full_model():
    model = micro(exit_threshold=0.0)
    calls = count_calls(model)
    pixels, ids, mask = batches(1, b=1)[0]
    with torch.no_grad():
        cog, _, chosen = model.cognition(pixels, ids, mask)
        full, _, _ = model.cognition(pixels, ids, mask, layers=range(6))
    assert chosen == [[0, 1, 2, 3, 4, 5]] and calls == [2] * 6
    assert torch.equal(cog, full)


def test_huge_threshold_exits_after_the_minimum():
    model = micro(exit_threshold=1e9)
    calls = count_calls(model)
    with torch.no_grad():
        _, _, chosen = model.cognition(*batches(1, b=3)[0])
    assert chosen == [[0]] * 3 and calls == [1, 0, 0, 0, 0, 0]  # one batched call of layer 0 only
    model = with_router(model, exit_min_layers=2)
    with torch.no_grad():
        _, _, chosen = model.cognition(*batches(1, b=3)[0])
    assert chosen == [[0, 1]] * 3


def test_exit_rule_on_hand_made_changes():
    changes = torch.tensor([[0.5, 0.2, 0.05, 0.01], [0.3, 0.3, 0.3, 0.3]])
    assert exit_depths(changes, 0.1, 1).tolist() == [3, 4]
    assert exit_depths(changes, 0.25, 1).tolist() == [2, 4]
    assert exit_depths(changes, 0.6, 2).tolist() == [2, 2]
    assert exit_depths(changes, 0.0, 1).tolist() == [4, 4]
    assert relative_change(torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 4.0]])).item() == 0.75


def test_calibration_hits_half_depth_within_one_layer_and_batches_match_single_runs():
    model = micro()
    calib = batches(4, b=4, seed=1)
    threshold, mean = calibrate_exit_threshold(model, calib)
    assert threshold > 0 and abs(mean - 3.0) <= 1.0
    model = with_router(model, exit_threshold=threshold)
    depths = []
    with torch.no_grad():
        for pixels, ids, mask in calib:
            cog, _, chosen = model.cognition(pixels, ids, mask)
            depths += [len(c) for c in chosen]
            for i, c in enumerate(chosen):  # a batch exits per sample exactly as single runs do
                single, _, one = model.cognition(pixels[i : i + 1], ids[i : i + 1], mask[i : i + 1])
                assert one == [c] and torch.allclose(single, cog[i : i + 1], atol=1e-5)
    assert abs(sum(depths) / len(depths) - 3.0) <= 1.0
    assert sum(depths) / len(depths) == mean


def test_training_runs_every_layer_and_flops_use_the_calibrated_mean():
    model = micro(exit_threshold=1e9).train()
    _, _, gate = model.forward_train(*batches(1, b=2)[0])
    assert gate.tolist() == [[1.0] * 6] * 2
    cfg = preset("cogact-7b", router={"type": "dynamic_exit"})
    f = stage_flops(cfg)
    assert f["router"] == 32 * 10 * 4096  # the exit checks: a norm and a relative change per layer
    assert routed_step_flops(cfg) == step_flops(cfg, 16) == f["vision"] + f["router"] + 16 * f["llm_layer"] + \
        f["action_head"]


def test_calibration_feeds_the_robot_state_to_a_state_input_model():
    model = micro(vision={"state_input": True})
    g = torch.Generator().manual_seed(3)
    calib = [(*batch, torch.randn(4, 7, generator=g)) for batch in batches(3, b=4, seed=2)]
    threshold, mean = calibrate_exit_threshold(model, calib)
    assert threshold > 0 and abs(mean - 3.0) <= 1.0
    model = with_router(model, exit_threshold=threshold)
    depths = []
    with torch.no_grad():
        for pixels, ids, mask, state in calib:
            _, _, chosen = model.cognition(pixels, ids, mask, state=state)
            depths += [len(c) for c in chosen]
    assert sum(depths) / len(depths) == mean  # the state reached the calibration as it reaches inference
    with pytest.raises(ValueError, match="state"):
        calibrate_exit_threshold(model, batches(1))


def test_exit_depth_gate_is_a_prefix_of_every_depth_from_the_minimum():
    from mole_inference.model.dynamic_exit import exit_depth_gate

    gate = exit_depth_gate(400, 6, 2, generator=torch.Generator().manual_seed(0))
    depth = gate.sum(dim=1).long()
    assert torch.equal(gate, (torch.arange(6).unsqueeze(0) < depth.unsqueeze(1)).float())  # 1s then 0s
    assert set(depth.tolist()) == {2, 3, 4, 5, 6}  # each exit trained, the full depth included


def test_random_depth_training_runs_each_sample_through_its_first_layers_only():
    model = micro(exit_training="random_depth", exit_min_layers=2).train()
    pixels, ids, mask = batches(1, b=8, seed=4)[0]
    torch.manual_seed(5)
    hidden, _, gate = model.forward_train(pixels, ids, mask)
    depth = gate.sum(dim=1).long()
    assert torch.equal(gate, (torch.arange(6).unsqueeze(0) < depth.unsqueeze(1)).float())
    assert depth.min() >= 2 and len(set(depth.tolist())) > 1  # per sample, not one depth per batch
    model.eval()  # no dropout here: the same layers run as inference with those layers listed
    with torch.no_grad():
        for b in range(8):
            cog, _, chosen = model.cognition(pixels[b : b + 1], ids[b : b + 1], mask[b : b + 1],
                                             layers=range(int(depth[b])))
            assert chosen == [list(range(int(depth[b])))]
            torch.testing.assert_close(hidden[b, -1], cog[0], atol=1e-5, rtol=1e-5)
    every = micro(exit_min_layers=2).train()  # the default trains the full depth
    assert every.forward_train(pixels, ids, mask)[2].sum(dim=1).tolist() == [6.0] * 8
