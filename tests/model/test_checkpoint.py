"""Checkpoint round trip (safetensors + YAML + stats) and its errors."""

import numpy as np
import pytest
import torch

from mole_inference.config import preset
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
