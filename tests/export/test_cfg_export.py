"""Classifier-free guidance (`action_head.cfg_scale` > 1, CogACT's inference default 1.5) survives export: the
denoise graph carries both the conditional and the null-condition branch, and ONNX Runtime's actions equal torch's.

Micro shapes as the family export tests (tests/export/conftest.py); export_family seeds the weights, so the
guided and unguided exports hold the same weights and differ in the graph alone.
"""

import numpy as np
import pytest

from tests.export.conftest import export_family, micro_config

INSTRUCTION = "pick up the red cube"
ACTION_ATOL = 1e-4  # normalized actions, fp32 torch vs fp32 onnxruntime (as the family parity tests)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """{cfg_scale: (torch policy, onnxruntime policy, manifest)} for 1.0 and 1.5, same weights."""
    return {s: export_family(micro_config("diffusion", action_head={"cfg_scale": s}), f"cfg{s}", tmp_path_factory,
                             star=False) for s in (1.0, 1.5)}


def test_guided_export_matches_torch_and_differs_from_unguided(exports, image):
    actions = {}
    for scale, (torch_policy, ort_policy, _) in exports.items():
        assert torch_policy.cfg.action_head.cfg_scale == scale
        a = torch_policy.infer(image, INSTRUCTION, seed=4)
        b = ort_policy.infer(image, INSTRUCTION, seed=4)
        np.testing.assert_allclose(b.actions, a.actions, atol=ACTION_ATOL)
        actions[scale] = b.actions
    assert np.abs(actions[1.5] - actions[1.0]).max() > 100 * ACTION_ATOL  # the guidance is in the graph
