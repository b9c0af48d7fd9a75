"""Checkpoint round trip (safetensors + YAML + stats) and its errors."""

import numpy as np
import pytest
import torch

from mole_inference.config import preset
from mole_inference.config.model import ModelConfig
from mole_inference.errors import CheckpointError
from mole_inference.model.action_stats import ActionStats
from mole_inference.model.checkpoint import load_checkpoint, save_checkpoint
from mole_inference.model.vla import MoLeVLA
from mole_inference.runtime.torch_backend import TorchPolicy


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    cfg = preset("tiny")
    model = MoLeVLA(cfg)
    torch.nn.init.normal_(model.action_head.action_out.weight, std=0.5)
    stats = ActionStats.from_actions(np.random.default_rng(0).normal(size=(500, 7)) * 0.01)
    save_checkpoint(tmp_path / "ck", model, cfg, stats)
    return tmp_path / "ck", model, stats


def test_round_trip_gives_identical_chunks(ckpt):
    path, model, stats = ckpt
    assert not list(path.glob("*.pt")) and not list(path.glob("*.bin"))
    loaded, cfg, stats2 = load_checkpoint(path)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert np.allclose(stats.q01, stats2.q01) and np.array_equal(stats.mask, stats2.mask)
    img = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    a = TorchPolicy(model, cfg, stats).infer(img, "push the blue cube", seed=3)
    b = TorchPolicy.from_checkpoint(path).infer(img, "push the blue cube", seed=3)
    assert np.array_equal(a.actions, b.actions) and a.routing.layers == b.routing.layers


def test_router_swap_for_ablations(ckpt):
    path, _, _ = ckpt
    policy = TorchPolicy.from_checkpoint(path, router="early_exit")
    chunk = policy.infer(np.zeros((32, 32, 3), np.uint8), "touch the red cube")
    assert chunk.routing.layers == (0, 1, 2, 3)


@pytest.mark.parametrize("victim", ["model.safetensors", "config.yaml", "action_stats.json"])
def test_missing_files_are_named(ckpt, victim):
    path, _, _ = ckpt
    (path / victim).unlink()
    with pytest.raises(CheckpointError, match=victim):
        load_checkpoint(path)


def test_shape_mismatch_and_bad_stats(ckpt):
    path, _, _ = ckpt
    text = (path / "config.yaml").read_text().replace("hidden_size: 128", "hidden_size: 256", 1)
    (path / "config.yaml").write_text(text)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    (path / "action_stats.json").write_text('{"q01": [0, 1], "q99": [1], "mask": [true]}')
    with pytest.raises(CheckpointError, match="equal-length"):
        ActionStats.load(path / "action_stats.json")


# Config fields added after checkpoints already existed; a config.yaml written before lacks them.
LATER_FIELDS = {"router": ("spatial_order", "mod_capacity", "exit_threshold", "exit_min_layers"),
                "action_head": ("ddim_clip",), "training": ("kl_mask",)}


@pytest.mark.parametrize("make_cfg", [ModelConfig, lambda: preset("tiny")], ids=["defaults", "tiny"])
def test_checkpoint_with_an_older_config_loads_and_runs_bit_for_bit(tmp_path, make_cfg):
    """Backward compatibility: a config.yaml without the newer fields loads with defaults that reproduce the
    trained behaviour exactly (Eq. 9 pool-then-MLP, Eq. 11-12 alpha blend, DDIM clip every step)."""
    import yaml

    torch.manual_seed(0)
    cfg = make_cfg()
    model = MoLeVLA(cfg).eval()
    torch.nn.init.normal_(model.action_head.action_out.weight, std=0.5)  # non-zero actions
    stats = ActionStats.from_actions(np.random.default_rng(0).normal(size=(200, 7)) * 0.01)
    path = save_checkpoint(tmp_path / "old", model, cfg, stats)
    data = yaml.safe_load((path / "config.yaml").read_text())
    for section, names in LATER_FIELDS.items():
        for name in names:
            del data[section][name]
    (path / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    loaded, cfg2, _ = load_checkpoint(path)
    assert cfg2 == cfg
    g = torch.Generator().manual_seed(5)
    size, t = cfg.vision.image_size, cfg.llm.max_text_tokens
    pixels, ids = torch.rand(2, 3, size, size, generator=g), torch.randint(4, 200, (2, t), generator=g)
    mask = torch.ones(2, t, dtype=torch.bool)
    mask[1, t // 2 :] = False
    noise = torch.randn(2, cfg.action_head.chunk_size, cfg.action_head.action_dim, generator=g)

    @torch.no_grad()
    def outputs(m):  # cognition, router probabilities, sampled actions, training hidden states; layers run
        cog, out, chosen = m.cognition(pixels, ids, mask)
        return [cog, out.probs, m.sample_actions(cog, noise), m.forward_train(pixels, ids, mask)[0]], chosen

    (before, chosen_before), (after, chosen_after) = outputs(model), outputs(loaded)
    assert chosen_before == chosen_after
    for a, b in zip(before, after, strict=True):
        assert torch.equal(a, b)
    img = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    first = TorchPolicy(model, cfg, stats).infer(img, "push the blue cube", seed=3)
    again = TorchPolicy.from_checkpoint(path).infer(img, "push the blue cube", seed=3)
    assert np.array_equal(first.actions, again.actions) and first.routing.layers == again.routing.layers
