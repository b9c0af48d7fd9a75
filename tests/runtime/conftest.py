"""A tiny checkpoint and its fp32 export, shared by the runtime backend tests."""

import numpy as np
import pytest
import torch

from mole_inference.config import preset
from mole_inference.model.action_stats import ActionStats
from mole_inference.model.checkpoint import load_checkpoint, save_checkpoint
from mole_inference.model.vla import MoLeVLA


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Random tiny model; the head's zero-initialized output layer gets weights so actions depend on the input."""
    torch.manual_seed(0)
    model = MoLeVLA(preset("tiny")).eval()
    torch.nn.init.normal_(model.action_head.action_out.weight, std=0.1)
    rng = np.random.default_rng(0)
    stats = ActionStats.from_actions(np.concatenate([rng.normal(0, 0.01, (200, 6)), rng.integers(0, 2, (200, 1))], 1))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", model, model.cfg, stats)


@pytest.fixture(scope="session")
def tiny_export(tiny_checkpoint, tmp_path_factory):
    """Folder of the checkpoint's fp32 export."""
    pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs the `export` extra")
    from mole_inference.export.pipeline import export_model

    model, _, stats = load_checkpoint(tiny_checkpoint)
    return export_model(model, stats, tmp_path_factory.mktemp("export"), check=False).root


@pytest.fixture
def image():
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
