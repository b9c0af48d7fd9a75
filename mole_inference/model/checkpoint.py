"""Checkpoints: a folder with `model.safetensors`, `config.yaml` and `action_stats.json`. Never pickle."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from mole_inference.config import ModelConfig, load_model_config, save_model_config
from mole_inference.errors import CheckpointError
from mole_inference.model.action_stats import ActionStats

log = logging.getLogger(__name__)

WEIGHTS, CONFIG, STATS = "model.safetensors", "config.yaml", "action_stats.json"


def save_checkpoint(path: str | Path, model: torch.nn.Module, cfg: ModelConfig, stats: ActionStats,
                    extra: dict[str, str] | None = None) -> Path:
    """Write weights (safetensors; tied tensors de-duplicated), config and stats into folder `path`."""
    from safetensors.torch import save_model

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path / WEIGHTS), metadata=extra or {})
    save_model_config(cfg, path / CONFIG)
    stats.save(path / STATS)
    log.info("saved checkpoint to %s", path)
    return path


def read_checkpoint_config(path: str | Path) -> tuple[ModelConfig, ActionStats]:
    """Config and stats of a checkpoint folder, with errors naming the missing piece."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r}: not a folder")
    for name in (WEIGHTS, CONFIG, STATS):
        if not (path / name).is_file():
            raise CheckpointError(f"checkpoint {str(path)!r}: missing {name}")
    return load_model_config(path / CONFIG), ActionStats.load(path / STATS)


def load_checkpoint(path: str | Path, device: str = "cpu", cfg: ModelConfig | None = None):
    """(MoLeVLA in eval mode, config, stats) from a folder; `cfg` may override the router (same shapes)."""
    from safetensors.torch import load_model

    from mole_inference.model.vla import MoLeVLA

    saved_cfg, stats = read_checkpoint_config(path)
    cfg = cfg or saved_cfg
    model = MoLeVLA(cfg)
    try:
        missing, unexpected = load_model(model, str(Path(path) / WEIGHTS), strict=False, device=device)
    except RuntimeError as exc:  # shape mismatch
        raise CheckpointError(f"checkpoint {str(path)!r} does not match its config: {exc}") from None
    router_only = all(k.startswith("router.") for k in [*missing, *unexpected])
    if (missing or unexpected) and not (router_only and cfg.router.type != saved_cfg.router.type):
        raise CheckpointError(f"checkpoint {str(path)!r}: missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}")
    if stats.q01.shape[0] != cfg.action_head.action_dim:
        raise CheckpointError(f"checkpoint {str(path)!r}: stats have {stats.q01.shape[0]} dims, "
                              f"model predicts {cfg.action_head.action_dim}")
    return model.to(device).eval(), cfg, stats
