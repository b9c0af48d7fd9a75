"""TensorRT backend: the buffer plan and bindings are checked everywhere; engines only where TensorRT and CUDA are."""

import importlib.util

import numpy as np
import pytest

from mole_inference.cli import main
from mole_inference.config import preset
from mole_inference.errors import BackendUnavailableError
from mole_inference.export.stages import stage_io
from mole_inference.runtime.tensorrt_backend import H_BUFFERS, STATIC_BINDINGS, chain_plan, stage_kind


def has_tensorrt_gpu() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    import torch

    return torch.cuda.is_available()


needs_trt = pytest.mark.skipif(not has_tensorrt_gpu(), reason="needs the TensorRT runtime (`pip install tensorrt`) "
                               "and a CUDA GPU; not installable in this workplace")


def test_chain_runs_only_selected_layers_ping_ponging_two_buffers():
    plan, final = chain_plan([6, 1, 3])
    assert plan == [(1, "h_a", "h_b"), (3, "h_b", "h_a"), (6, "h_a", "h_b")] and final == "h_b"
    assert chain_plan([]) == ([], "h_a")  # no layer: the cognition stage reads the router's prompt
    plan, final = chain_plan(range(8))
    assert [p[0] for p in plan] == list(range(8)) and final == H_BUFFERS[0]


@pytest.mark.parametrize("name, overrides", [("tiny", {}), ("small", {}), ("cogact-7b", {}),
                                             ("tiny", {"vision": {"state_input": True}}),
                                             ("tiny", {"action_head": {"gripper_head": True}})])
def test_every_stage_tensor_has_a_buffer(name, overrides):
    for stage, (ins, outs) in stage_io(preset(name, **overrides)).items():
        binds = STATIC_BINDINGS[stage_kind(stage)]
        for spec in ins + outs:
            assert spec.name in binds or spec.name in ("h", "h_out"), (stage, spec.name)


@pytest.mark.skipif(has_tensorrt_gpu(), reason="TensorRT and CUDA are present")
def test_build_engine_without_tensorrt_names_what_is_missing(tiny_export, tmp_path, capsys):
    assert main(["build-engine", "--export", str(tiny_export), "--engine-dir", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "TensorRT" in err or "CUDA" in err


@pytest.mark.skipif(has_tensorrt_gpu(), reason="TensorRT and CUDA are present")
def test_policy_without_tensorrt_is_backend_unavailable(tmp_path):
    from mole_inference.runtime.tensorrt_backend import TensorRTPolicy

    with pytest.raises(BackendUnavailableError):
        TensorRTPolicy(tmp_path)


@needs_trt
@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize("precision,atol", [("fp32", 1e-3), ("fp16", 5e-2)])
def test_engines_match_onnxruntime_and_run_k_layers(tiny_export, tmp_path, image, precision, atol):
    from mole_inference.export.engine import build_engines
    from mole_inference.runtime.onnx_backend import OnnxPolicy
    from mole_inference.runtime.tensorrt_backend import TensorRTPolicy

    build_engines(tiny_export, tmp_path / precision, precision, workspace_gb=1, timing_cache=tmp_path / "cache")
    trt_policy, ort_policy = TensorRTPolicy(tmp_path / precision), OnnxPolicy.from_export(tiny_export)
    a, b = ort_policy.infer(image, "pick up the cup", seed=2), trt_policy.infer(image, "pick up the cup", seed=2)
    assert b.routing.layers == a.routing.layers
    assert sum(n for s, n in trt_policy.session_runs.items() if s.startswith("layer_")) == trt_policy.k
    np.testing.assert_allclose(b.actions[:, :6], a.actions[:, :6], atol=atol * 0.05)
