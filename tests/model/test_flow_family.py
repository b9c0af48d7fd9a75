"""The flow (pi0) action family: expert layer j reads LLM layer j's prefix keys/values, skipped pairs run neither,
one prefill serves every Euler step; flow-matching math; presets, accounting, export. Tiny shapes on the CPU."""

import json

import numpy as np
import pytest
import torch

from mole_inference.config import preset
from mole_inference.errors import ConfigError
from mole_inference.model.action_stats import ActionStats
from mole_inference.model.flow_expert import PrefixKV
from mole_inference.model.flow_matching import (
    euler_sample,
    noisy_actions,
    sample_time,
    time_embedding,
    velocity_target,
)
from mole_inference.model.llm import LayerCache
from mole_inference.model.vla import MoLeVLA
from tests.model.conftest import MICRO, forward_calls, inputs, micro

FLOW_HEAD = {"hidden_size": 24, "depth": 4, "num_heads": 2, "head_dim": 16, "chunk_size": 4}


def micro_pi0(**sections):
    """pi0-tiny shrunk to 4 layer pairs: LLM width 32, expert width 24, head_dim 16, one key/value head."""
    return micro("pi0-tiny", **{"action_head": FLOW_HEAD, **sections})


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MoLeVLA(micro_pi0()).eval()


def prompt(model, batch=1, seed=0):
    pixels, ids, mask = inputs(model.cfg, batch, seed)
    return model.prompt(model.encode_image(pixels), model.embed_text(ids), mask)


# --- pairing: expert layer j <-> LLM layer j ------------------------------------------------------------------------
class SpyKV(PrefixKV):
    """Records which expert layer asked for which LLM layer's keys, and what it got."""

    def __init__(self, cache, running):
        super().__init__(cache)
        self.running, self.got = running, []

    def update(self, key, value, layer_idx, *args, **kwargs):
        k, v = super().update(key, value, layer_idx)
        self.got.append((self.running[-1], layer_idx, k[:, :, : -key.shape[2]], v[:, :, : -value.shape[2]]))
        return k, v


def test_expert_layer_j_reads_exactly_llm_layer_j_keys_and_values(model):
    layers = [0, 2, 3]
    running: list[int] = []
    hooks = [layer.register_forward_pre_hook(lambda *_, j=j: running.append(j))
             for j, layer in enumerate(model.action_head.layers)]
    try:
        with torch.no_grad():
            h, key_mask = prompt(model)
            _, cache = model.prefill(h, key_mask, layers)
            kv = SpyKV(cache, running)
            x = torch.randn(1, 4, 7)
            model.action_head(x, torch.tensor([0.7]), kv, key_mask, layers=layers)
    finally:
        for hook in hooks:
            hook.remove()
    assert cache.layers == layers  # the prefill cached the run layers only
    assert [(run, asked) for run, asked, *_ in kv.got] == [(j, j) for j in layers]
    for _, j, k, v in kv.got:
        assert model.llm.layers[j].self_attn.layer_idx == j  # LLM layer j wrote cache entry j
        assert torch.equal(k, cache.kv[j][0]) and torch.equal(v, cache.kv[j][1])
        assert k.shape[2] == model.cfg.seq_len  # the whole prefix, nothing appended across calls
    with pytest.raises(KeyError, match="pairs are skipped together"):
        model.action_head(x, torch.tensor([0.7]), PrefixKV(cache), key_mask, layers=[1])


def test_skipped_pairs_run_neither_and_one_prefill_serves_every_euler_step(model):
    from mole_inference.runtime.torch_backend import TorchPolicy

    policy = TorchPolicy(model, model.cfg, ActionStats.identity(7))
    watched = (model.llm.layers, model.action_head.layers, [model.vision])
    with forward_calls(*watched) as (llm_calls, expert_calls, vision_calls):
        chunk = policy.infer(np.zeros((40, 50, 3), np.uint8), "pick up the red cube", seed=0)
    ran = list(chunk.routing.layers)
    steps = model.cfg.action_head.flow_steps
    assert len(ran) == model.cfg.router.num_active_layers
    assert {i for i, n in llm_calls.items() if n} == {i for i, n in expert_calls.items() if n} == set(ran)
    assert all(llm_calls[i] == 1 for i in ran)  # the prefix once per control step ...
    assert all(expert_calls[i] == steps for i in ran)  # ... read by all 10 Euler steps
    assert vision_calls[0] == 1
    assert chunk.actions.shape == (model.cfg.action_head.chunk_size, 7) and chunk.is_finite
    assert chunk.timings_ms["llm"] > 0 and chunk.timings_ms["action_head"] > 0


def test_inference_with_skipped_pairs_equals_the_gated_training_pass(model):
    """Skipping pair j at inference is what gate_j = 0 means in training (Eq. 7 for both models)."""
    layers = [1, 3]
    x, t = torch.randn(2, 4, 7), torch.tensor([0.3, 0.9])
    with torch.no_grad():
        h, key_mask = prompt(model, batch=2)
        cog, cache = model.prefill(h, key_mask, layers)
        v_inf = model.action_head(x, t, PrefixKV(cache), key_mask, layers=layers)
        gate = torch.zeros(2, model.num_layers)
        gate[:, layers] = 1.0
        full_cache = LayerCache()
        hidden = model.llm(h, key_mask, gate=gate, cache=full_cache)
        v_train = model.action_head(x, t, PrefixKV(full_cache), key_mask, gate=gate)
    assert full_cache.layers == list(range(model.num_layers))  # training runs (and gates) every layer
    torch.testing.assert_close(hidden[:, -1], cog, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v_train, v_inf, rtol=1e-5, atol=1e-5)


def test_the_prefix_is_bidirectional_and_the_suffix_blockwise_causal(model):
    from mole_inference.model.flow_expert import suffix_bias

    with torch.no_grad():
        h, key_mask = prompt(model)
        h2 = h.clone()
        h2[:, 1] += 1.0  # a later (valid) prefix token changes
        a = model.llm(h, key_mask, layers=[0, 1])
        b = model.llm(h2, key_mask, layers=[0, 1])
    assert not torch.allclose(a[:, 0], b[:, 0])  # the first image token sees it: pi0's prefix attends both ways
    allowed = suffix_bias(torch.tensor([[True, False, True]]), 3, torch.float32)[0, 0] == 0
    assert allowed.tolist() == [[True, False, True, True, False, False],  # state: prefix + itself
                                [True, False, True, True, True, True],  # actions: prefix + state + actions
                                [True, False, True, True, True, True]]


# --- flow matching -----------------------------------------------------------------------------------------------
def test_euler_integration_of_known_fields_recovers_the_analytic_endpoint():
    gen = torch.Generator().manual_seed(0)
    noise, target = torch.randn(3, 5, 7, generator=gen), torch.rand(3, 5, 7, generator=gen)
    # the exact flow-matching field of one data point a: v(x, t) = (x - a) / t; its paths are straight, so Euler
    # is exact and t = 0 lands on a
    out = euler_sample(lambda x, t: (x - target) / t.view(-1, 1, 1), noise, steps=10)
    torch.testing.assert_close(out, target, rtol=1e-5, atol=1e-5)
    # dx/dt = x from t = 1 to 0: x_0 = x_1 / e; 10 Euler steps give (1 - 0.1)^10 exactly, many steps approach 1/e
    torch.testing.assert_close(euler_sample(lambda x, t: x, noise, 10), noise * 0.9**10)
    torch.testing.assert_close(euler_sample(lambda x, t: x, noise.double(), 2000), noise.double() * np.exp(-1),
                               rtol=1e-3, atol=1e-4)
    seen = []
    euler_sample(lambda x, t: seen.append(t[0].item()) or x * 0, noise, 10)
    np.testing.assert_allclose(seen, 1.0 - np.arange(10) / 10)  # openpi: t = 1, 0.9, ..., 0.1 with dt = -0.1


def test_time_sampling_matches_beta_moments():
    t = sample_time(400_000, torch.Generator().manual_seed(0), alpha=1.5, t_min=0.001).double()
    assert t.min().item() >= 0.001 and t.max().item() <= 1.0
    s = (t - 0.001) / 0.999  # Beta(1.5, 1): mean a / (a + 1) = 0.6, var a / ((a + 1)^2 (a + 2))
    assert s.mean().item() == pytest.approx(0.6, abs=2e-3)
    assert s.var().item() == pytest.approx(1.5 / (2.5**2 * 3.5), abs=1e-3)
    assert (s < 0.5).double().mean().item() == pytest.approx(0.5**1.5, abs=3e-3)  # CDF x^a
    again = sample_time(10, torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, t[:10].float())  # seeded: reproducible


def test_path_and_target_follow_openpi():
    a, e = torch.rand(2, 3, 7), torch.randn(2, 3, 7)
    torch.testing.assert_close(noisy_actions(a, e, torch.tensor([0.0, 1.0])), torch.stack([a[0], e[1]]))
    t = torch.tensor([0.25, 0.5])
    d = 1e-3
    slope = (noisy_actions(a, e, t + d) - noisy_actions(a, e, t)) / d
    torch.testing.assert_close(slope, velocity_target(a, e), rtol=1e-3, atol=1e-3)  # u = dx_t / dt
    emb = time_embedding(torch.tensor([0.0, 1.0]), 8)
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))  # [sin | cos] at t = 0


# --- configuration, accounting, export -----------------------------------------------------------------------------
def test_flow_config_is_validated():
    with pytest.raises(ConfigError, match=r"action_head\.depth.*llm\.num_layers"):
        micro_pi0(action_head={**FLOW_HEAD, "depth": 3})
    with pytest.raises(ConfigError, match=r"action_head\.head_dim.*head dim 16"):
        micro_pi0(action_head={**FLOW_HEAD, "head_dim": 8})
    with pytest.raises(ConfigError, match=r"action_head\.num_kv_heads.*key/value heads 1"):
        micro_pi0(action_head={**FLOW_HEAD, "num_kv_heads": 2})
    with pytest.raises(ConfigError, match=r"router\.type.*flow"):
        micro_pi0(router={**MICRO["router"], "type": "mod"})
    with pytest.raises(ConfigError, match="did you mean 'flow'"):
        preset("tiny", action_head={"type": "flw"})
    with pytest.raises(ConfigError, match="flow_time_min"):
        micro_pi0(action_head={**FLOW_HEAD, "flow_time_min": 1.0})
    assert micro_pi0().action_head.type == "flow"


def test_pi0_info_on_the_meta_device():
    from mole_inference.model.flops import parameter_counts, routed_step_flops, stage_flops, step_flops

    cfg = preset("pi0")
    with torch.device("meta"):
        m = MoLeVLA(cfg)
    p = parameter_counts(m)
    assert 3.1e9 < p["total"] < 3.4e9  # pi0: 3.3 B
    assert 2.9e8 < p["action_head"] < 3.3e8  # Gemma-300M-shaped expert (no embeddings)
    assert 4.0e8 < p["vision"] < 4.3e8  # SigLIP-So400m + one linear projection
    assert m.vision.dinov2 is None
    f = stage_flops(cfg)
    assert step_flops(cfg) - routed_step_flops(cfg) == 9 * f["llm_layer"] - f["router"]  # 9 of 18 pairs skipped


def test_info_and_bench_commands(capsys):
    from mole_inference.cli import main

    assert main(["info", "--preset", "pi0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total_layers"] == 18 and report["active_layers"] == 9
    assert 0.5 < report["flops_ratio"] < 0.65
    assert main(["bench", "--preset", "pi0-tiny", "--iters", "1", "--warmup", "0", "--json"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["active_layers"] == 4 and bench["total_layers"] == 8


def test_export_stages_pair_expert_layers_with_llm_layers(model):
    """The flow family exports (tests/export/test_flow_export.py runs it): one prefill and one expert stage per
    layer pair, and the stages chained over a layer set give the expert's own velocity."""
    from mole_inference.export.flow_stages import expert_stage
    from mole_inference.export.stages import layer_stage, stage_io, stage_modules

    mods, k, layers = stage_modules(model), model.num_layers, [0, 2]
    assert list(mods) == list(stage_io(model.cfg))
    assert [n for n in mods if n.startswith("expert_")] == [expert_stage(j) for j in range(k)]
    assert {layer_stage(j) for j in range(k)} <= set(mods) and "cognition" not in mods
    x, t = torch.randn(1, 4, 7), torch.tensor([0.4])
    with torch.no_grad():
        h, key_mask = prompt(model)
        _, cache = model.prefill(h, key_mask, layers)
        want = model.action_head(x, t, PrefixKV(cache), key_mask, layers=layers)
        s = mods["suffix"](x, t)
        for j in layers:
            s = mods[expert_stage(j)](s, key_mask, *cache.kv[j])
        torch.testing.assert_close(mods["velocity"](s), want)
