"""The flow family's host loop over its exported stages: the prefix through the run layers once, then Euler steps.

The same computation as `MoLeVLA.prefill` + `MoLeVLA.sample_flow` (export/flow_stages.py has the stages): the
router's prefix runs through the chosen layers' prefill stages, which return their keys/values; each velocity
evaluation runs the suffix stage, the chosen layers' expert stages (expert j reading LLM layer j's keys/values)
and the velocity stage. A skipped layer has neither stage called. The time grid and the Euler update are the
model's own `euler_sample`, so there is one definition of the integration.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mole_inference.config.model import ModelConfig
from mole_inference.export.flow_stages import expert_stage
from mole_inference.export.stages import layer_stage
from mole_inference.export.token_loop import StageRunner, prompt_key_mask
from mole_inference.model.flow_matching import euler_sample


def prefix_kv(run: StageRunner, chosen: Sequence[int], h: np.ndarray, bias: np.ndarray, cos: np.ndarray,
              sin: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Keys/values (1, Hkv, S, Dh) of each chosen layer over the router's prefix; skipped layers: no entry."""
    kv = {}
    for i in chosen:
        h, k, v = run(layer_stage(i), h=h, bias=bias, cos=cos, sin=sin)
        kv[i] = (k, v)
    return kv


def flow_actions(run: StageRunner, cfg: ModelConfig, chosen: Sequence[int], kv: dict[int, tuple[np.ndarray, ...]],
                 bias: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Normalized chunk (1, C, A) float32: `flow_steps` Euler steps from `noise` (1, C, A) at t = 1 to t = 0 through
    the `chosen` expert layers, reading the prefix keys/values `kv` (from `prefix_kv`)."""
    key_mask = prompt_key_mask(bias)[None]  # (1, S): the valid prefix keys (the last query sees all of them)

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        (s,) = run("suffix", x=np.ascontiguousarray(x.numpy()), t=t.numpy())
        for i in chosen:
            (s,) = run(expert_stage(i), suffix=s, key_mask=key_mask, k=kv[i][0], v=kv[i][1])
        (v,) = run("velocity", suffix=s)
        return torch.from_numpy(v)  # (1, C, A)

    x1 = torch.from_numpy(np.ascontiguousarray(noise, dtype=np.float32))
    return euler_sample(velocity, x1, cfg.action_head.flow_steps).numpy()
