"""Action statistics from a source's `dataset_statistics.json` (OpenVLA / CogACT / Prismatic runs) -> ActionStats.

The file maps a dataset name to `{"action": {"q01", "q99", "mask", ...}, "proprio": ..., ...}`; a model trained on a
mixture holds one entry per dataset and un-normalizes with the one the user names (OpenVLA's `unnorm_key`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mole_inference.errors import CheckpointError
from mole_inference.model.action_stats import ActionStats


@dataclass
class StatsChoice:
    """Action stats and where they came from (for the log and the checkpoint metadata)."""

    stats: ActionStats
    source: str


def read_json(path: str | Path, what: str) -> dict:
    """A JSON object from `path`; CheckpointError naming the file and `what` it should hold."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read {what} ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object of {what}, got {type(data).__name__}")
    return data


def dataset_action_stats(data: dict, where: str, unnorm_key: str | None, action_dim: int | None) -> StatsChoice:
    """q01/q99/mask of `data[unnorm_key]["action"]` (the only dataset when `unnorm_key` is None).

    `data` may also be our own action_stats.json (`q01`, `q99`, `mask` at the top). With several datasets and no
    key, or an unknown key, the error lists the available keys. `action_dim` None skips the size check.
    """
    if {"q01", "q99", "mask"} <= set(data):
        choice = StatsChoice(ActionStats.from_json(data, where), where)
    else:
        if unnorm_key is None:
            if len(data) != 1:
                raise CheckpointError(f"{where}: statistics of {len(data)} datasets; pick one with --unnorm-key "
                                      f"(one of {sorted(data)})")
            unnorm_key = next(iter(data))
        entry = data.get(unnorm_key)
        if not isinstance(entry, dict) or not isinstance(entry.get("action"), dict):
            raise CheckpointError(f"{where}: no action statistics for {unnorm_key!r}; available: {sorted(data)}")
        action = entry["action"]
        q01 = action.get("q01")
        mask = action.get("mask", [True] * len(q01 or []))  # OpenVLA: no mask means every dim is normalized
        name = f"{where}[{unnorm_key}]"
        choice = StatsChoice(ActionStats.from_json({"q01": q01, "q99": action.get("q99"), "mask": mask}, name), name)
    if action_dim is not None and choice.stats.q01.shape[0] != action_dim:
        raise CheckpointError(f"{choice.source}: {choice.stats.q01.shape[0]} action dims, the model predicts "
                              f"{action_dim}")
    return choice
