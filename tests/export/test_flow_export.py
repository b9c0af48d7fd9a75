"""The flow (pi0) family exported per stage: ONNX Runtime's action chunk equals the torch policy's for the same
image, instruction and noise seed, only the routed layers' prefix and expert sessions run (both skipped for a
skipped layer), the velocity stage stays fp32 under INT8, TensorRT refuses the family, bad inputs are typed errors.

pi0-tiny at micro shapes (4 layer pairs, LLM width 32, expert width 24, head dim 16, one key/value head, 28 px
images, 8 text tokens, chunk 4) keeps the two exports (STAR with INT8, full router) to a few seconds.
"""

import json

import numpy as np
import pytest

from mole_inference.errors import ConfigError, InputError
from mole_inference.export.flow_stages import expert_stage
from mole_inference.export.manifest import Manifest, ManifestError
from mole_inference.export.parity import FP32_TOL, stage_errors
from mole_inference.export.stages import check_exportable, layer_stage, stage_io
from mole_inference.policy.processing import initial_noise
from mole_inference.runtime.onnx_backend import OnnxPolicy
from tests.export.conftest import export_family, micro_config, quantized, without_family

INSTRUCTIONS = ("pick up the red cube", "open the top drawer slowly")
C, A, STEPS = 4, 7, 10  # chunk, action dim, Euler steps
ACTION_ATOL = 1e-4  # normalized actions after 10 Euler steps, fp32 torch vs fp32 onnxruntime (as the DDIM tests)


@pytest.fixture(scope="module", params=["star", "full"])
def exported(request, tmp_path_factory):
    """(torch policy, onnxruntime policy, manifest) of one random-weight model; STAR also gets its INT8 variant."""
    return export_family(micro_config("flow", request.param), f"flow-{request.param}", tmp_path_factory,
                         request.param == "star")


def test_manifest_records_the_family_and_the_flow_stages(exported, image):
    torch_policy, ort_policy, man = exported
    cfg = torch_policy.cfg
    assert Manifest.load(man.root).family == "flow"
    assert json.loads((man.root / "manifest.json").read_text())["family"] == "flow"
    k, s = cfg.llm.num_layers, cfg.seq_len
    assert list(man.variants["fp32"]) == list(stage_io(cfg))
    assert {n for n in stage_io(cfg) if n.startswith(("layer_", "expert_"))} == \
        {f(i) for f in (layer_stage, expert_stage) for i in range(k)}
    assert not {"cognition", "denoise", "lm_head"} & set(man.variants["fp32"])
    stages = man.variants["fp32"]
    kv = [("k", (1, 1, s, 16)), ("v", (1, 1, s, 16))]
    assert [(t.name, t.shape) for t in stages[layer_stage(0)].outputs] == [("h_out", (1, s, 32)), *kv]
    assert [(t.name, t.shape, t.dtype) for t in stages["suffix"].inputs] == [("x", (1, C, A), "float32"),
                                                                            ("t", (1,), "float32")]
    assert [(t.name, t.shape) for t in stages[expert_stage(0)].inputs] == [("suffix", (1, 1 + C, 24)),
                                                                          ("key_mask", (1, s)), *kv]
    assert [(t.name, t.shape) for t in stages["velocity"].outputs] == [("velocity", (1, C, A))]
    errors = stage_errors(torch_policy.model, man)
    assert set(errors) == set(stage_io(cfg)) and max(errors.values()) <= FP32_TOL, errors
    # the router's bias is pi0's bidirectional prefix: every query row sees the same valid keys; finfo.min, no -inf
    pixels, ids, mask = ort_policy.stages.prepare(image, INSTRUCTIONS[0])
    (img,) = ort_policy.stages("vision", pixels=pixels)
    bias = ort_policy.stages("router", img=img, ids=ids, text_mask=mask)[2][0, 0]
    assert (bias == bias[-1]).all() and np.isfinite(bias).all() and (bias == np.finfo(np.float32).min).any()


@pytest.mark.parametrize("layers", [None, range(4), [2], [0, 3]])
def test_action_chunk_equals_torch(exported, image, layers):
    torch_policy, ort_policy, _ = exported
    for i, text in enumerate(INSTRUCTIONS):
        a = torch_policy.infer(image, text, seed=i, layers=layers)
        b = ort_policy.infer(image, text, seed=i, layers=layers)
        assert a.routing.layers == b.routing.layers
        np.testing.assert_allclose(b.routing.probs, a.routing.probs, atol=1e-5)
        np.testing.assert_allclose(b.actions, a.actions, atol=ACTION_ATOL)
        assert b.actions.shape == (C, A) and b.is_finite and set(b.timings_ms) == set(a.timings_ms)
        noise = initial_noise(10 + i, C, A, np.random.default_rng())  # normalized, before the stats' clipping
        na, ra, _ = torch_policy.run(*torch_policy.prepare(image, text), noise, layers=layers)
        nb, rb, _ = ort_policy.run(*ort_policy.prepare(image, text), noise, layers=layers)
        assert ra.layers == rb.layers
        np.testing.assert_allclose(nb, na, atol=ACTION_ATOL)
        assert np.abs(na - noise[0]).max() > 0.05  # the comparison is not vacuous: the expert moved the noise


@pytest.mark.parametrize("layers", [None, [2]])
def test_only_the_selected_layers_stages_run(exported, image, layers):
    _, policy, _ = exported
    routed = policy.infer(image, INSTRUCTIONS[0], seed=0, layers=layers).routing.layers
    never = {f(i) for f in (layer_stage, expert_stage) for i in range(4) if i not in routed}
    saved = {n: policy.sessions[n] for n in never}
    try:
        for n in never:  # a skipped layer's sessions, prefix and expert, must not even be touched
            policy.sessions[n] = None
        policy.session_runs.clear()
        chunk = policy.infer(image, INSTRUCTIONS[0], seed=0, layers=layers)
    finally:
        policy.sessions.update(saved)
    assert chunk.routing.layers == routed
    k = policy.cfg.router.num_active_layers if policy.cfg.router.type == "star" else 4
    assert len(routed) == (k if layers is None else len(layers))
    want = {"vision": 1, "router": 1, "suffix": STEPS, "velocity": STEPS,
            **{layer_stage(i): 1 for i in routed}, **{expert_stage(i): STEPS for i in routed}}
    assert dict(policy.session_runs) == want  # one prefix per control step, read by every Euler step


def test_bad_inputs_are_typed_errors(exported, image, tmp_path):
    _, policy, man = exported
    with pytest.raises(InputError, match="dtype uint8"):
        policy.infer(image.astype(np.float32), INSTRUCTIONS[0])
    with pytest.raises(InputError, match="empty"):
        policy.infer(image, "   ")
    with pytest.raises(InputError, match=r"layers=\[1, 7\]: layer indices must be in 0\.\.3"):
        policy.infer(image, INSTRUCTIONS[0], layers=[7, 1])
    s = policy.cfg.seq_len
    suffix, kv = np.zeros((1, 1 + C, 24), np.float32), np.zeros((1, 1, s, 16), np.float32)
    with pytest.raises(InputError, match=r"'expert_00' input 'key_mask': got shape \(1, \d+\) float32"):
        policy.stages("expert_00", suffix=suffix, key_mask=np.ones((1, s), np.float32), k=kv, v=kv)
    with pytest.raises(InputError, match=r"'suffix' input 't': got shape \(1,\) int64"):
        policy.stages("suffix", x=np.zeros((1, C, A), np.float32), t=np.zeros(1, np.int64))
    with pytest.raises(InputError, match=r"stage 'denoise' is not in this export"):
        policy.stages("denoise", x=suffix)
    root = without_family(man, tmp_path)  # a manifest without the field is a diffusion export: contradicts this
    with pytest.raises(ManifestError, match=r"family 'diffusion' but its config has action_head.type='flow'"):
        Manifest.load(root, verify=False)


def test_int8_variant_keeps_the_velocity_in_float_and_runs(exported, image):
    torch_policy, _, man = exported
    if torch_policy.cfg.router.type != "star":
        pytest.skip("only the STAR export has an INT8 variant")
    report = Manifest.load(man.root, "int8").reports["int8"]
    assert report["int8_over_fp32"] < 0.5 and 0.0 <= report["action_mae"] <= 0.1, report

    assert not quantized(man, "velocity")  # integrated into the chunk at every Euler step
    assert quantized(man, expert_stage(0)) and quantized(man, layer_stage(0)) and quantized(man, "suffix")
    chunk = OnnxPolicy.from_export(man.root, "int8").infer(image, INSTRUCTIONS[0], seed=0)
    assert chunk.actions.shape == (C, A) and chunk.is_finite


def test_tensorrt_refuses_the_flow_family_by_name():
    from mole_inference.export.engine import check_engine_family

    check_exportable("star", family="flow")
    with pytest.raises(ConfigError, match=r"action_head.type='flow' has no TensorRT engines.*Euler loop.*onnxruntime"):
        check_engine_family("flow")
    with pytest.raises(ConfigError, match=r"router.type='mod'"):
        check_exportable("mod", family="flow")
