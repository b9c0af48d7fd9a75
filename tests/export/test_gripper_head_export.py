"""Models with `action_head.gripper_head` exported: one more stage (cognition -> P(open)), ONNX Runtime's chunk
equals torch's with the classifier's column in place of the sampled one, INT8 included."""

import numpy as np

from mole_inference.export.manifest import Manifest
from mole_inference.export.parity import FP32_TOL, stage_errors
from mole_inference.export.stages import TensorSpec, stage_io
from mole_inference.runtime.onnx_backend import OnnxPolicy
from tests.export.conftest import export_family, micro_config

INSTRUCTION = "pick up the red cube"
ACTION_ATOL = 1e-4


def normalized(policy, image, seed):
    """The normalized chunk (C, A) of one step from the policy's own `run` (the gripper not yet binarized)."""
    noise = np.random.default_rng(seed).standard_normal((1, policy.chunk_size, 7)).astype(np.float32)
    return policy.run(*policy.prepare(image, INSTRUCTION), noise)[0]


def test_one_stage_more_and_the_chunk_matches_torch(tmp_path_factory, image):
    cfg = micro_config("diffusion", action_head={"gripper_head": True})
    plain = stage_io(micro_config("diffusion"))
    io = stage_io(cfg)
    assert "gripper" not in plain and list(io) == [*plain, "gripper"]
    assert io["gripper"] == ([TensorSpec("cognition", (1, 32), "float32")], [TensorSpec("gripper", (1, 4), "float32")])

    torch_policy, ort_policy, man = export_family(cfg, "gripper", tmp_path_factory, star=True)
    errors = stage_errors(torch_policy.model, man)
    assert set(errors) == set(io) and max(errors.values()) <= FP32_TOL, errors
    a0, a1 = (normalized(torch_policy, image, s) for s in (0, 1))
    b0, b1 = (normalized(ort_policy, image, s) for s in (0, 1))
    np.testing.assert_allclose(b0, a0, atol=ACTION_ATOL)
    np.testing.assert_allclose(b1, a1, atol=ACTION_ATOL)
    assert np.abs(a0[:, :-1] - a1[:, :-1]).max() > 100 * ACTION_ATOL  # other noise: another arm motion ...
    np.testing.assert_allclose(b0[:, -1], b1[:, -1], atol=1e-6)  # ... the same gripper probabilities
    assert ((b0[:, -1] > 0) & (b0[:, -1] < 1)).all() and np.ptp(b0[:, -1]) > 1e-3  # a probability per step

    assert "gripper" in Manifest.load(man.root, "int8").variants["int8"]
    chunk = OnnxPolicy.from_export(man.root, "int8").infer(image, INSTRUCTION, seed=0)
    assert chunk.is_finite and set(np.unique(chunk.actions[:, -1])) <= {0.0, 1.0}  # binarized as before
