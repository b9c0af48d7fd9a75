"""`mole-vla train` on the OpenVLA family (autoregressive action tokens) with the fixture bags, and its checkpoint."""

import numpy as np

from tests.training.conftest import cli_train, micro_family


def test_cli_train_then_infer(bag_root, tmp_path, capsys):
    last, policy = cli_train(micro_family("openvla-tiny"), bag_root, tmp_path, capsys)
    assert np.isfinite(float(last["task"])) and np.isfinite(float(last["cog"]))  # CE and CogKD both ran
    assert policy.model.family == "autoregressive"
    chunk = policy.infer(np.zeros((32, 32, 3), np.uint8), "do task 0", seed=0)
    assert chunk.actions.shape == (1, 7) and chunk.is_finite
