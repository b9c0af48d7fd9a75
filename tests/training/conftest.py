"""Shared fixtures: a micro MoLe-VLA config (tiny preset shrunk further) and hand-made episode bags."""

from __future__ import annotations

import numpy as np
import pytest

from mole_inference.config import preset, save_model_config
from mole_inference.data.bag_writer import EpisodeBagWriter
from mole_inference.data.episode_meta import EpisodeMetadata
from mole_inference.data.images import rgb_to_image_msg
from mole_inference.data.schema import IMAGE_TOPIC, INSTRUCTION_TOPIC, MEASURED_POSE_TOPIC
from mole_inference.sim.demos import pose_msg

T0 = 1_700_000_000_000_000_000
MS = 1_000_000

ENC = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "mlp_size": 64}
MICRO = {
    "vision": {"image_size": 28, "patch_size": 14, "dinov2": ENC, "siglip": ENC},
    "llm": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 4, "num_heads": 2, "max_text_tokens": 12},
    "router": {"num_active_layers": 2, "proj_dim": 16, "spatial_hidden": 16, "encoder_heads": 2, "encoder_ffn": 32},
    "action_head": {"hidden_size": 32, "depth": 1, "num_heads": 2, "chunk_size": 4, "ddim_steps": 5},
}


TRAINING = {"batch_size": 4, "learning_rate": 1e-3, "num_workers": 0, "warmup_steps": 0, "lr_schedule": "constant",
            "early_frames": 0, "log_every": 1, "checkpoint_every": 100, "seed": 0}


def micro_config(router: str = "star", **training):
    """The tiny preset shrunk to a 4-layer, 32-wide model (a few ms per step); `training` overrides."""
    sections = {**MICRO, "router": {**MICRO["router"], "type": router}}
    return preset("tiny", **sections, training={**TRAINING, "diffusion_repeats": 2, "max_steps": 4, **training})


def micro_family(name: str, action_head: dict | None = None, **training):
    """Preset `name` (openvla-tiny, pi0-tiny) at the micro shapes, with its own action head unless `action_head`
    is given; `training` overrides."""
    sections = {k: v for k, v in MICRO.items() if k != "action_head"}
    if action_head is not None:
        sections["action_head"] = action_head
    return preset(name, **sections, training={**TRAINING, "max_steps": 2, **training})


def cli_train(cfg, bag_root, tmp_path, capsys, steps: int = 3):
    """`mole-vla train` of `cfg` on the bags for `steps` steps: (last metrics row by column, its TorchPolicy)."""
    from mole_inference.cli import main
    from mole_inference.runtime.torch_backend import TorchPolicy

    cfg_path = tmp_path / "micro.yaml"
    save_model_config(cfg, cfg_path)
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg_path), "--data", str(bag_root), "--out", str(out), "--steps",
                 str(steps), "--no-progress"]) == 0
    assert f"trained to step {steps}" in capsys.readouterr().out
    metrics = (out / "metrics.csv").read_text().splitlines()
    last = dict(zip(metrics[0].split(","), metrics[-1].split(","), strict=True))
    return last, TorchPolicy.from_checkpoint(out / "checkpoints" / f"step_{steps:07d}")


@pytest.fixture(scope="session")
def micro_cfg():
    """Factory: micro_cfg(**training_overrides) -> ModelConfig."""
    return micro_config


def image(task: int, k: int, size: int = 32) -> np.ndarray:
    """A frame whose colour says the task and whose bright row moves with time."""
    img = np.zeros((size, size, 3), np.uint8)
    img[..., task % 3] = 120 + 40 * task
    img[(3 * k) % size, :, :] = 255
    return img


def write_episode(path, task: int, frames: int = 10, tick_ms: int = 20, sources=("policy",)) -> None:
    """An episode: 10 Hz frames, deltas every `tick_ms` (dx = 0.001 * task-signed, gripper closes halfway) and
    the measured pose each delta leads to."""
    meta = EpisodeMetadata(task=f"task{task}", instruction=f"do task {task}")
    sign = 1.0 if task % 2 == 0 else -1.0
    n_ticks = frames * 100 // tick_ms
    with EpisodeBagWriter(path, "mcap", meta, start_ns=T0) as w:
        w.write_text(INSTRUCTION_TOPIC, f"do task {task}", T0 + 1)
        for k in range(frames):
            t = T0 + 10 * MS + k * 100 * MS
            w.write(IMAGE_TOPIC, rgb_to_image_msg(image(task, k), t), t)
        for j in range(n_ticks):
            t = T0 + 10 * MS + j * tick_ms * MS
            grip = 1.0 if j < n_ticks // 2 else 0.0
            w.write_ee_delta([sign * 0.001, 0.0005 * task, 0.0, 0.0, 0.0, 0.002, grip],
                             sources[(j * len(sources)) // n_ticks], t)
            w.write(MEASURED_POSE_TOPIC, pose_msg(np.array([0.4 + sign * 0.001 * j, 0.0005 * task * j, 0.3]),
                                                  np.array([1.0, 0.0, 0.0, 0.0]), t), t)
        w.close(success=True, t_ns=T0 + frames * 100 * MS + 50 * MS)


@pytest.fixture(scope="session")
def bag_root(tmp_path_factory):
    """Three episodes of two tasks (task0 twice), 10 frames each, 50 Hz deltas."""
    root = tmp_path_factory.mktemp("bags")
    write_episode(root / "ep0", 0)
    write_episode(root / "ep1", 1)
    write_episode(root / "ep2", 0)
    return root


@pytest.fixture
def episode_writer():
    """The `write_episode` helper, for tests that need their own bags."""
    return write_episode
