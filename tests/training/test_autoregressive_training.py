"""`mole-vla train` on the OpenVLA family (autoregressive action tokens) with the fixture bags, and its checkpoint."""

import numpy as np

from mole_inference.cli import main
from mole_inference.config import preset, save_model_config
from tests.training.conftest import MICRO


def micro_openvla(**training):
    """openvla-tiny at the micro shapes of conftest (4 layers of width 32)."""
    base = {"batch_size": 4, "learning_rate": 1e-3, "max_steps": 2, "num_workers": 0, "warmup_steps": 0,
            "lr_schedule": "constant", "early_frames": 0, "log_every": 1, "checkpoint_every": 100, "seed": 0}
    sections = {k: v for k, v in MICRO.items() if k != "action_head"}
    return preset("openvla-tiny", **sections, training={**base, **training})


def test_cli_train_then_infer(bag_root, tmp_path, capsys):
    from mole_inference.runtime.torch_backend import TorchPolicy

    cfg_path = tmp_path / "openvla-micro.yaml"
    save_model_config(micro_openvla(), cfg_path)
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg_path), "--data", str(bag_root), "--out", str(out), "--steps", "3",
                 "--no-progress"]) == 0
    assert "trained to step 3" in capsys.readouterr().out
    metrics = (out / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    last = dict(zip(header, metrics[-1].split(","), strict=True))
    assert np.isfinite(float(last["task"])) and np.isfinite(float(last["cog"]))  # CE and CogKD both ran
    ckpt = out / "checkpoints" / "step_0000003"
    policy = TorchPolicy.from_checkpoint(ckpt)
    assert policy.model.family == "autoregressive"
    chunk = policy.infer(np.zeros((32, 32, 3), np.uint8), "do task 0", seed=0)
    assert chunk.actions.shape == (1, 7) and chunk.is_finite
