"""`mole-vla train` on the OpenVLA family (autoregressive action tokens) with the fixture bags, and its checkpoint."""

import numpy as np

from tests.training.conftest import cli_train, micro_family


def test_cli_train_then_infer(bag_root, tmp_path, capsys):
    last, policy = cli_train(micro_family("openvla-tiny"), bag_root, tmp_path, capsys)
    assert np.isfinite(float(last["task"])) and np.isfinite(float(last["cog"]))  # CE and CogKD both ran
    assert policy.model.family == "autoregressive"
    chunk = policy.infer(np.zeros((32, 32, 3), np.uint8), "do task 0", seed=0)
    assert chunk.actions.shape == (1, 7) and chunk.is_finite


def test_a_new_family_head_on_a_trained_backbone(bag_root, tmp_path, micro_cfg):
    """--init-fresh action_head: an OpenVLA-family student starts from a diffusion checkpoint's vision tower, LLM
    and router; its head stays fresh. Without it the mismatch is a typed error that names the option."""
    import pytest
    import torch
    from safetensors.torch import load_file

    from mole_inference.errors import ConfigError
    from mole_inference.training.dataset import BagDataset, load_table
    from mole_inference.training.trainer import Trainer

    diffusion = micro_cfg(max_steps=1)
    source = Trainer(diffusion, BagDataset(load_table(bag_root, diffusion), diffusion), tmp_path / "dit",
                     progress=False).fit().checkpoint
    tokens = micro_family("openvla-tiny", max_steps=1)
    data = BagDataset(load_table(bag_root, tokens), tokens)
    student = Trainer(tokens, data, tmp_path / "ar", init=source, init_fresh=("action_head",), progress=False).student
    saved = load_file(source / "model.safetensors")
    shared = [k for k in student.state_dict() if not k.startswith("action_head.")]
    assert shared and all(torch.equal(student.state_dict()[k], saved[k]) for k in shared)
    with pytest.raises(ConfigError, match="--init-fresh"):
        Trainer(tokens, data, tmp_path / "ar2", init=source, progress=False)
    with pytest.raises(ConfigError, match="no such module"):
        Trainer(tokens, data, tmp_path / "ar3", init=source, init_fresh=("actoin_head",), progress=False)
