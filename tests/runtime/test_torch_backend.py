"""The torch backend's inference-time overrides: the router type and its top-k on the same weights."""

import numpy as np
import pytest

from mole_inference.errors import ConfigError
from mole_inference.runtime import load_policy


def test_active_layers_runs_the_same_weights_at_another_budget(tiny_checkpoint, image):
    default = load_policy(tiny_checkpoint)
    narrow = load_policy(tiny_checkpoint, active_layers=2)
    wide = load_policy(tiny_checkpoint, router="random", active_layers=6)
    a = default.infer(image, "pick up the red cube", seed=3)
    b = narrow.infer(image, "pick up the red cube", seed=3)
    assert a.routing.num_active == 4 and b.routing.num_active == 2
    np.testing.assert_allclose(a.routing.probs, b.routing.probs)  # same router weights, same scores
    top2 = tuple(sorted(np.argsort(-a.routing.probs)[:2].tolist()))
    assert b.routing.layers == top2 and set(b.routing.layers) <= set(a.routing.layers)  # top-2 within top-4
    assert not np.allclose(a.actions, b.actions)  # fewer layers: another cognition feature
    assert wide.infer(image, "pick up the red cube", seed=3).routing.num_active == 6


def test_active_layers_beyond_the_llm_or_on_an_exported_graph_is_a_config_error(tiny_checkpoint):
    with pytest.raises(ConfigError, match="num_active_layers"):
        load_policy(tiny_checkpoint, active_layers=9)
    with pytest.raises(ConfigError, match="active_layers"):
        load_policy(tiny_checkpoint, backend="onnxruntime", active_layers=2)


def test_cfg_scale_sets_the_heads_guidance_on_the_same_weights(tiny_checkpoint, image):
    default = load_policy(tiny_checkpoint)
    guided = load_policy(tiny_checkpoint, cfg_scale=2.0)
    assert default.cfg.action_head.cfg_scale == 1.0 and guided.cfg.action_head.cfg_scale == 2.0
    a = default.infer(image, "pick up the red cube", seed=3)
    b = guided.infer(image, "pick up the red cube", seed=3)
    np.testing.assert_allclose(a.routing.probs, b.routing.probs)  # guidance is the head's alone
    assert not np.allclose(a.actions, b.actions)
    same = load_policy(tiny_checkpoint, cfg_scale=1.0).infer(image, "pick up the red cube", seed=3)
    np.testing.assert_allclose(same.actions, a.actions)


def test_cfg_scale_below_one_or_on_an_exported_graph_is_a_config_error(tiny_checkpoint):
    with pytest.raises(ConfigError, match="cfg_scale"):
        load_policy(tiny_checkpoint, cfg_scale=0.5)
    with pytest.raises(ConfigError, match="cfg_scale"):
        load_policy(tiny_checkpoint, backend="onnxruntime", cfg_scale=1.5)


def test_cfg_scale_on_a_head_without_guidance_is_a_config_error(tmp_path):
    from mole_inference.config import preset
    from mole_inference.model.action_stats import ActionStats
    from mole_inference.model.checkpoint import save_checkpoint
    from mole_inference.model.vla import MoLeVLA

    cfg = preset("openvla-tiny")
    ckpt = save_checkpoint(tmp_path / "ovla", MoLeVLA(cfg), cfg, ActionStats.identity(7))
    with pytest.raises(ConfigError, match="the diffusion head's; this head is 'autoregressive'"):
        load_policy(ckpt, cfg_scale=1.5)
    with pytest.raises(ConfigError, match="the diffusion head's; this head is 'flow'"):
        load_policy(preset="pi0-tiny", cfg_scale=1.5)
