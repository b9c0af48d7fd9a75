"""Training checkpoints without pickle: the policy checkpoint plus what resume needs.

`<out>/checkpoints/step_0000100/` holds `model.safetensors`, `config.yaml`, `action_stats.json` (the
student, loadable by `load_checkpoint` / `TorchPolicy`) and, for resume, `teacher.safetensors` (EMA
teacher), `cogkd.safetensors` (mu and the optional subgoal head), `optimizer.safetensors` (per-parameter
state, keys `<param>::<name>`) and `trainer_state.json` (step, seed, world size, optimizer hyper-parameters).
`<out>/checkpoints/latest` names the newest complete one; it is written last, so a crash mid-save leaves
the previous one in charge.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from mole_inference.errors import CheckpointError

log = logging.getLogger(__name__)

TEACHER, COGKD, OPTIMIZER, STATE, LATEST = (
    "teacher.safetensors", "cogkd.safetensors", "optimizer.safetensors", "trainer_state.json", "latest")


def checkpoint_dir(out: Path, step: int) -> Path:
    """Folder of the checkpoint written at `step`."""
    return out / "checkpoints" / f"step_{step:07d}"


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint under `out`, or None."""
    marker = out / "checkpoints" / LATEST
    if not marker.is_file():
        return None
    path = out / "checkpoints" / marker.read_text().strip()
    if not (path / STATE).is_file():
        raise CheckpointError(f"{marker} names {path.name}, which has no {STATE}")
    return path


def mark_latest(out: Path, path: Path, keep: int) -> None:
    """Point `latest` at `path`, then delete all but the newest `keep` step folders."""
    marker = out / "checkpoints" / LATEST
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(path.name)
    tmp.replace(marker)
    steps = sorted(p for p in (out / "checkpoints").glob("step_*") if p.is_dir())
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def flatten_optimizer(osd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Split a (full, name-keyed) optimizer state dict into tensors and JSON-able param groups."""
    tensors: dict[str, torch.Tensor] = {}
    for param, state in osd["state"].items():
        for name, value in state.items():
            value = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"{param}::{name}"] = value.detach().cpu().contiguous()
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in osd["param_groups"]]
    return tensors, groups


def unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> dict[str, Any]:
    """Inverse of `flatten_optimizer`."""
    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        param, name = key.rsplit("::", 1)
        state.setdefault(param, {})[name] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in groups]
    return {"state": state, "param_groups": groups}


def save_resume_state(path: Path, teacher: dict[str, torch.Tensor] | None, mu: dict[str, torch.Tensor],
                      optimizer: dict[str, Any], state: dict[str, Any]) -> None:
    """Write the resume files next to a policy checkpoint (full, CPU state dicts)."""
    from safetensors.torch import save_file

    if teacher is not None:
        save_file({k: v.contiguous() for k, v in teacher.items()}, str(path / TEACHER))
    save_file({k: v.contiguous() for k, v in mu.items()}, str(path / COGKD))
    tensors, groups = flatten_optimizer(optimizer)
    save_file(tensors, str(path / OPTIMIZER))
    (path / STATE).write_text(json.dumps({**state, "param_groups": groups}, indent=2))


def load_resume_state(path: Path) -> dict[str, Any]:
    """Read what `save_resume_state` wrote: student, teacher (or None), mu, optimizer, state."""
    from safetensors.torch import load_file

    from mole_inference.model.checkpoint import WEIGHTS

    try:
        state = json.loads((path / STATE).read_text())
        groups = state.pop("param_groups")
        return {
            "student": load_file(str(path / WEIGHTS)),
            "teacher": load_file(str(path / TEACHER)) if (path / TEACHER).is_file() else None,
            "mu": load_file(str(path / COGKD)),
            "optimizer": unflatten_optimizer(load_file(str(path / OPTIMIZER)), groups),
            "state": state,
        }
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot resume from {path}: {exc}") from None
