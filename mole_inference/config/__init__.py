"""Typed configuration: dataclasses per component, YAML loading with validation, named presets."""

from __future__ import annotations

import os
from pathlib import Path

from mole_inference.config.base import ConfigError, from_dict, load_yaml, suggest, to_dict
from mole_inference.config.model import (
    ActionHeadConfig,
    EncoderConfig,
    LLMConfig,
    ModelConfig,
    RouterConfig,
    TrainingConfig,
    VisionConfig,
)

__all__ = [
    "ActionHeadConfig", "ConfigError", "EncoderConfig", "LLMConfig", "ModelConfig", "RouterConfig",
    "TrainingConfig", "VisionConfig", "config_or_preset", "load_model_config", "models_dir", "preset", "preset_names",
    "save_model_config", "to_dict",
]


def models_dir() -> Path:
    """Folder holding presets and shipped checkpoints (`$MOLE_MODELS_DIR` or the repo's `models/`)."""
    return Path(os.environ.get("MOLE_MODELS_DIR", Path(__file__).resolve().parents[2] / "models"))


def preset_names() -> list[str]:
    """Names of the YAML presets in `models_dir()`."""
    return sorted(p.stem for p in models_dir().glob("*.yaml"))


def load_model_config(path: str | Path) -> ModelConfig:
    """Load and validate a ModelConfig from YAML."""
    try:
        return from_dict(ModelConfig, load_yaml(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def preset(name: str, **overrides: object) -> ModelConfig:
    """Return the named preset; `router=...` style overrides replace whole top-level sections' fields."""
    names = preset_names()
    if name not in names:
        raise ConfigError(f"preset={name!r}: unknown{suggest(name, names)}; available: {names}")
    data = load_yaml(models_dir() / f"{name}.yaml")
    for section, values in overrides.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    try:
        return from_dict(ModelConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"preset {name!r}: {exc}") from None


def config_or_preset(path: str | Path | None, name: str | None) -> ModelConfig:
    """The config YAML at `path` if given, else the preset `name` (default: tiny): a command's --config/--preset."""
    return load_model_config(path) if path else preset(name or "tiny")


def save_model_config(cfg: ModelConfig, path: str | Path) -> None:
    """Write a ModelConfig as YAML."""
    import yaml

    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
