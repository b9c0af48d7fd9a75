"""Which router types the exported stages and the staged runtimes serve; the others are refused by name."""

import numpy as np
import pytest
import torch

from mole_inference.config import preset
from mole_inference.errors import ConfigError
from mole_inference.export.stages import EXPORTABLE_ROUTERS, stage_modules
from mole_inference.model.action_stats import ActionStats
from mole_inference.model.vla import MoLeVLA
from mole_inference.runtime.staged import StagedPolicy
from mole_inference.runtime.torch_backend import TorchPolicy


class EngineStub(StagedPolicy):
    """A staged backend that runs exported stages (like OnnxPolicy, TensorRTPolicy), without an engine."""

    def run(self, pixels, ids, mask, noise, layers=None, state=None):
        raise NotImplementedError


@pytest.mark.parametrize("router", ["mod", "dynamic_exit"])
def test_export_and_staged_runtimes_refuse_by_name(router):
    cfg = preset("tiny", router={"type": router})
    with pytest.raises(ConfigError, match=rf"router.type='{router}' cannot be exported"):
        stage_modules(MoLeVLA(cfg))
    with pytest.raises(ConfigError, match=rf"router.type='{router}' cannot be run by EngineStub"):
        EngineStub(cfg, ActionStats.identity(7), cfg.llm.num_layers)
    assert router not in EXPORTABLE_ROUTERS


@pytest.mark.parametrize("router, layers", [("mod", (0, 1, 2, 3, 4, 5, 6, 7)), ("dynamic_exit", (0,))])
def test_torch_backend_serves_the_new_routers(router, layers):
    torch.manual_seed(0)
    cfg = preset("tiny", router={"type": router, "exit_threshold": 1e9})
    policy = TorchPolicy(MoLeVLA(cfg), cfg, ActionStats.identity(7))
    chunk = policy.infer(np.zeros((32, 32, 3), np.uint8), "touch the red cube", seed=0)
    assert chunk.routing.layers == layers and np.isfinite(chunk.actions).all()
    full = policy.infer(np.zeros((32, 32, 3), np.uint8), "touch the red cube", seed=0, layers=range(8))
    assert full.routing.layers == tuple(range(8))
