"""MuJoCo FR3 tabletop simulation: scene, EE-delta controller, tasks, scripted expert, demo bags, evaluation.

Importing this package does not import MuJoCo; the names below load their submodule on first access.
Action convention and frames: see `mole_inference.sim.controller` (GRIPPER_OPEN = 1.0, GRIPPER_CLOSED = 0.0).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SimEnv": "env", "make_env": "env", "run_expert_episode": "env",
    "FR3Scene": "scene", "SceneState": "scene", "COLORS": "scene", "GRIPPER_MAX_WIDTH": "scene",
    "EEDeltaController": "controller", "DampedLeastSquaresIK": "controller", "ACTION_DIM": "controller",
    "GRIPPER_OPEN": "controller", "GRIPPER_CLOSED": "controller", "HOME_POS": "controller",
    "Task": "tasks", "TASKS": "tasks", "make_task": "tasks",
    "ScriptedExpert": "expert",
    "DemoConfig": "demos", "record_demos": "demos",
    "EvalConfig": "evaluate", "evaluate": "evaluate",
    "StripRow": "strip", "save_strip": "strip",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Load `name` from its submodule on first use (keeps `import mole_inference.sim` free of MuJoCo)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
