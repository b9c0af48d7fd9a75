"""Config loading and validation: errors name the field and the value."""

import pytest

from mole_inference.config import (
    ConfigError,
    ModelConfig,
    load_model_config,
    preset,
    preset_names,
    save_model_config,
)
from mole_inference.config.base import from_dict


def test_presets_load_with_paper_defaults():
    assert {"tiny", "small", "cogact-7b"} <= set(preset_names())
    big = preset("cogact-7b")
    assert (big.llm.num_layers, big.llm.hidden_size, big.llm.intermediate_size, big.llm.num_heads) == (
        32, 4096, 11008, 32)
    assert big.router.num_active_layers == 16
    assert (big.action_head.chunk_size, big.action_head.action_dim) == (16, 7)
    t = big.training
    assert (t.batch_size, t.learning_rate, t.diffusion_repeats, t.ema_decay) == (64, 2e-5, 8, 0.999)
    assert (t.lambda_cog_kl, t.lambda_cog, t.lambda_lb) == (0.5, 0.5, 0.1)


@pytest.mark.parametrize("data,fragment", [
    ({"llm": {"num_layers": 0}}, "num_layers=0"),
    ({"llm": {"hidden_size": 130, "num_heads": 4}}, "llm.hidden_size=130"),
    ({"llm": {"num_layers": "eight"}}, "llm.num_layers: expected an integer, got 'eight'"),
    ({"router": {"type": "stat"}}, "did you mean 'star'"),
    ({"router": {"num_active_layers": 9}}, "router.num_active_layers=9"),
    ({"action_head": {"cfg_scale": 0.5}}, "cfg_scale=0.5"),
    ({"action_head": {"type": "flow", "cfg_scale": 1.5}}, "this head is 'flow'"),
    ({"vison": {}}, "did you mean 'vision'"),
    ({"vision": {"image_size": 100}}, "vision.image_size=100"),
])
def test_bad_values_are_named(data, fragment):
    with pytest.raises(ConfigError, match=None) as info:
        from_dict(ModelConfig, data)
    assert fragment in str(info.value)


def test_unknown_preset_suggests():
    with pytest.raises(ConfigError, match="did you mean 'small'"):
        preset("smal")


def test_yaml_round_trip_and_bad_files(tmp_path):
    cfg = preset("tiny", router={"type": "linear"})
    save_model_config(cfg, tmp_path / "c.yaml")
    assert load_model_config(tmp_path / "c.yaml") == cfg
    (tmp_path / "bad.yaml").write_text("llm: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_model_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_model_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_model_config(tmp_path / "list.yaml")
