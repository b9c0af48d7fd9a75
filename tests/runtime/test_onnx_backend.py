"""ONNX Runtime backend: same chunk as torch under the same seed, only the k routed layer sessions run."""

import json

import numpy as np
import pytest

from mole_inference.cli import main
from mole_inference.errors import BackendUnavailableError, CheckpointError, ConfigError
from mole_inference.policy.processing import initial_noise
from mole_inference.runtime import load_policy
from mole_inference.runtime.bench import bench
from mole_inference.runtime.torch_backend import TorchPolicy

pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs the `export` extra")

from mole_inference.runtime.onnx_backend import OnnxPolicy

INSTRUCTION = "pick up the red cube"
ACTION_ATOL = 1e-4  # normalized actions after 10 DDIM steps, fp32 torch vs fp32 onnxruntime


@pytest.fixture(scope="module")
def policies(tiny_checkpoint, tiny_export):
    return TorchPolicy.from_checkpoint(tiny_checkpoint), OnnxPolicy.from_export(tiny_export)


def test_chunk_equals_torch_under_the_same_seed(policies, image):
    torch_policy, ort_policy = policies
    a, b = torch_policy.infer(image, INSTRUCTION, seed=3), ort_policy.infer(image, INSTRUCTION, seed=3)
    assert a.routing.layers == b.routing.layers
    np.testing.assert_allclose(b.routing.probs, a.routing.probs, atol=1e-5)
    np.testing.assert_allclose(b.actions, a.actions, atol=ACTION_ATOL * 0.02)  # stats span ~0.05 m
    assert b.actions.shape == (16, 7) and b.is_finite and set(b.timings_ms) == set(a.timings_ms)


@pytest.mark.parametrize("layers", [None, range(8), [1, 6]])
def test_normalized_actions_match_torch_for_any_layer_set(policies, image, layers):
    torch_policy, ort_policy = policies
    noise = initial_noise(5, 16, 7, np.random.default_rng())
    a, ra, _ = torch_policy.run(*torch_policy.prepare(image, INSTRUCTION), noise, layers=layers)
    b, rb, _ = ort_policy.run(*ort_policy.prepare(image, INSTRUCTION), noise, layers=layers)
    assert ra.layers == rb.layers
    np.testing.assert_allclose(b, a, atol=ACTION_ATOL)
    assert np.abs(a).max() > 0.05  # the comparison is not vacuous


def test_a_model_without_state_input_ignores_the_state(policies, image):
    from mole_inference.export.stages import EXAMPLE_STATE

    _, policy = policies
    assert not policy.uses_state and [s.name for s in policy.manifest.variants["fp32"]["router"].inputs] == \
        ["img", "ids", "text_mask"]
    a = policy.infer(image, INSTRUCTION, seed=3)
    b = policy.infer(image, INSTRUCTION, seed=3, state=np.array(EXAMPLE_STATE))
    np.testing.assert_array_equal(b.actions, a.actions)


def test_exactly_k_layer_sessions_run_per_step(policies, image):
    _, policy = policies
    policy.session_runs.clear()
    chunk = policy.infer(image, INSTRUCTION, seed=0)
    layer_runs = {s: n for s, n in policy.session_runs.items() if s.startswith("layer_")}
    assert sum(layer_runs.values()) == policy.k == 4 == chunk.routing.num_active
    assert sorted(layer_runs) == [f"layer_{i:02d}" for i in chunk.routing.layers]
    assert policy.session_runs["denoise"] == policy.cfg.action_head.ddim_steps
    assert policy.session_runs["vision"] == policy.session_runs["router"] == policy.session_runs["cognition"] == 1


def test_bench_and_cli_report_the_same_fields_as_torch(tiny_export, capsys):
    policy = OnnxPolicy.from_export(tiny_export)
    report = bench(policy, iters=1, warmup=0)
    assert report["active_layers"] == 4 and report["total_layers"] == 8
    assert main(["bench", "--preset", "tiny", "--iters", "1", "--warmup", "0", "--json"]) == 0
    torch_report = json.loads(capsys.readouterr().out)
    assert main(["bench", "--backend", "onnxruntime", "--export-dir", str(tiny_export), "--iters", "1",
                 "--warmup", "0", "--json"]) == 0
    ort_report = json.loads(capsys.readouterr().out)
    assert set(ort_report) == set(torch_report)
    assert ort_report["backend"] == "onnxruntime" and ort_report["dtype"] == "float32"


def test_load_policy_picks_the_backend_and_checks_its_arguments(tiny_export):
    assert isinstance(load_policy(tiny_export, backend="onnxruntime"), OnnxPolicy)
    with pytest.raises(CheckpointError, match="no 'int8' variant"):
        load_policy(tiny_export, backend="onnxruntime", dtype="int8")
    with pytest.raises(ConfigError, match="no preset, router, active_layers or cfg_scale"):
        load_policy(preset="tiny", backend="onnxruntime")
    with pytest.raises(ConfigError, match="'float32' or 'int8'"):
        load_policy(tiny_export, backend="onnxruntime", dtype="bfloat16")


def test_cuda_without_the_cuda_provider_names_the_fix(tiny_export):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        OnnxPolicy.from_export(tiny_export, device="cuda")
