"""One tiny checkpoint, two calibration episodes and one fp32 + int8 export, shared by the export tests; the
family export tests' micro configs and helpers."""

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the export tests need the `export` extra (onnx, onnxruntime)")

from mole_inference.config import preset
from mole_inference.data.bag_writer import EpisodeBagWriter
from mole_inference.data.episode_meta import EpisodeMetadata, new_episode_path
from mole_inference.data.images import rgb_to_image_msg
from mole_inference.data.schema import IMAGE_TOPIC, INSTRUCTION_TOPIC
from mole_inference.model.action_stats import ActionStats
from mole_inference.model.checkpoint import load_checkpoint, save_checkpoint
from mole_inference.model.vla import MoLeVLA

T0 = 1_700_000_000_000_000_000
MS = 1_000_000
INSTRUCTIONS = ("pick up the red cube", "put the cup on the plate", "open the top drawer")

# Micro shapes of the family export tests: 4 layers of width 32, 28 px images, 8 text tokens, one key/value head,
# k = 2; a few seconds per export.
MICRO_ENCODER = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "mlp_size": 64}
MICRO_LLM = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 4, "num_heads": 2, "num_kv_heads": 1,
             "max_text_tokens": 8, "vocab_size": 300, "text_tokenizer": "word"}
MICRO_ROUTER = {"num_active_layers": 2, "proj_dim": 16, "spatial_hidden": 16, "encoder_heads": 2, "encoder_ffn": 32}
_FUSED_VISION = {"image_size": 28, "patch_size": 14, "dinov2": MICRO_ENCODER, "siglip": MICRO_ENCODER,
                 "text_film": True}
# family -> (preset, vision, action head) at micro shapes; the flow expert: width 24, head dim 16, chunk 4
MICRO_FAMILIES = {
    "diffusion": ("tiny", _FUSED_VISION, {"hidden_size": 32, "num_heads": 2, "chunk_size": 4}),
    "autoregressive": ("openvla-tiny", _FUSED_VISION, {}),
    "flow": ("pi0-tiny", {"image_size": 28, "patch_size": 14, "backbones": "siglip", "siglip": MICRO_ENCODER,
                          "text_film": True},
             {"type": "flow", "hidden_size": 24, "depth": 4, "num_heads": 2, "num_kv_heads": 1, "head_dim": 16,
              "chunk_size": 4}),
}


def micro_config(family: str, router: str = "star", vision: dict | None = None, action_head: dict | None = None):
    """The `family`'s tiny preset at micro shapes with `router`; `vision`/`action_head` override fields."""
    name, base_vision, head = MICRO_FAMILIES[family]
    return preset(name, vision={**base_vision, **(vision or {})}, llm=MICRO_LLM,
                  router={**MICRO_ROUTER, "type": router}, action_head={**head, **(action_head or {})})


def wake_zero_inits(model: MoLeVLA) -> MoLeVLA:
    """Random weights for the layers zero-initialized for training that would hide an input from the actions:
    the DiT head's output (diffusion) and the state projection (`vision.state_input`)."""
    if model.cfg.action_head.type == "diffusion":
        torch.nn.init.normal_(model.action_head.action_out.weight, std=0.1)
    if model.state_input is not None:
        torch.nn.init.normal_(model.state_input.proj.weight, std=0.1)
    return model


def tiny_model(seed: int = 0) -> MoLeVLA:
    """Random tiny model whose actions depend on the input (`wake_zero_inits`)."""
    torch.manual_seed(seed)
    return wake_zero_inits(MoLeVLA(preset("tiny")).eval())


def frame(ep: int, k: int) -> np.ndarray:
    """A smooth 60x80 frame that drifts over the episode."""
    y, x = np.mgrid[0:60, 0:80]
    img = np.stack([(x * 3 + k * 7 + ep * 40) % 256, (y * 4 + k * 5) % 256, (x + y + ep * 90) % 256], -1)
    return img.astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    model = tiny_model()
    rng = np.random.default_rng(0)
    stats = ActionStats.from_actions(np.concatenate([rng.normal(0, 0.01, (200, 6)), rng.integers(0, 2, (200, 1))], 1))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", model, model.cfg, stats)


@pytest.fixture(scope="session")
def calib_bags(tmp_path_factory):
    """Three episodes of 8 frames (10 Hz), each with one instruction; the last is held out."""
    root = tmp_path_factory.mktemp("bags")
    for ep, text in enumerate(INSTRUCTIONS):
        t0 = T0 + ep * 10_000 * MS
        meta = EpisodeMetadata(task=f"task{ep}", instruction=text, operator="test")
        with EpisodeBagWriter(new_episode_path(root, f"task{ep}", t0), "mcap", meta, start_ns=t0) as w:
            w.write_text(INSTRUCTION_TOPIC, text, t0 + 1)
            for k in range(8):
                t = t0 + 10 * MS + k * 100 * MS
                w.write(IMAGE_TOPIC, rgb_to_image_msg(frame(ep, k), t), t)
            w.close(success=True, t_ns=t0 + 900 * MS)
    return root


@pytest.fixture(scope="session")
def tiny_export(tiny_checkpoint, calib_bags, tmp_path_factory):
    """(torch model, manifest) of the checkpoint exported with its INT8 variant."""
    from mole_inference.export.pipeline import export_model

    model, _, stats = load_checkpoint(tiny_checkpoint)
    man = export_model(model, stats, tmp_path_factory.mktemp("export"), int8=True, calib_bags=calib_bags)
    return model, man


def export_family(cfg, tag: str, tmp_path_factory, star: bool, action_dim: int = 7):
    """(torch policy, onnxruntime policy, manifest) of a random-weight model of `cfg`'s family (`wake_zero_inits`),
    exported fp32 (and INT8 with synthetic calibration when `star`); parity is left to the caller."""
    from mole_inference.export.pipeline import export_model
    from mole_inference.runtime.onnx_backend import OnnxPolicy
    from mole_inference.runtime.torch_backend import TorchPolicy

    torch.manual_seed(0)
    model = wake_zero_inits(MoLeVLA(cfg).eval())
    stats = ActionStats.identity(action_dim)
    man = export_model(model, stats, tmp_path_factory.mktemp(tag), int8=star, synthetic_calibration=star,
                       calib_frames=16, check=False)
    return TorchPolicy(model, cfg, stats), OnnxPolicy.from_export(man.root), man


@pytest.fixture(scope="module")
def image():
    """One odd-sized camera frame for the family export tests."""
    return np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def without_family(man, tmp_path):
    """A copy of export `man` whose manifest lacks the "family" field (reads as a diffusion export)."""
    import json
    import shutil

    root = tmp_path / "export"
    shutil.copytree(man.root, root)
    data = json.loads((root / "manifest.json").read_text())
    data.pop("family")
    (root / "manifest.json").write_text(json.dumps(data))
    return root


def quantized(man, stage: str) -> bool:
    """Does the INT8 variant's graph of `stage` quantize anything?"""
    import onnx

    return "QuantizeLinear" in {n.op_type for n in onnx.load(str(man.path("int8", stage))).graph.node}
