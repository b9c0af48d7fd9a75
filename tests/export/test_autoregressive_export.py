"""The autoregressive (OpenVLA) family exported per stage: ONNX Runtime's greedy action equals the torch policy's
(exact bin ids), only the routed layers' prefill and decode sessions run, and bad inputs are typed errors.

openvla-tiny at micro shapes (4 layers of width 32, 28 px images, 8 text tokens, grouped K/V) keeps the two
exports (STAR and full router) to a few seconds.
"""

import json

import numpy as np
import pytest
import torch

from mole_inference.errors import ConfigError, InputError
from mole_inference.export.manifest import Manifest, ManifestError
from mole_inference.export.parity import FP32_TOL, stage_errors
from mole_inference.export.stages import check_exportable, layer_stage, stage_io
from mole_inference.export.token_stages import decode_stage, past_len
from mole_inference.runtime.onnx_backend import OnnxPolicy
from tests.export.conftest import export_family, micro_config, quantized, without_family

INSTRUCTIONS = ("pick up the red cube", "open the top drawer slowly")
A = 7  # action tokens per step


@pytest.fixture(scope="module", params=["star", "full"])
def exported(request, tmp_path_factory):
    """(torch policy, onnxruntime policy, manifest) of one random-weight model; STAR also gets its INT8 variant."""
    return export_family(micro_config("autoregressive", request.param), f"ar-{request.param}", tmp_path_factory,
                         request.param == "star")


def test_manifest_records_the_family_and_the_token_stages(exported):
    torch_policy, _, man = exported
    cfg = torch_policy.cfg
    assert Manifest.load(man.root).family == "autoregressive"
    assert json.loads((man.root / "manifest.json").read_text())["family"] == "autoregressive"
    k, s = cfg.llm.num_layers, cfg.seq_len
    assert list(man.variants["fp32"]) == list(stage_io(cfg))
    assert {n for n in stage_io(cfg) if n.startswith(("layer_", "decode_"))} == \
        {f(i) for f in (layer_stage, decode_stage) for i in range(k)}
    assert "cognition" not in man.variants["fp32"] and "denoise" not in man.variants["fp32"]
    prefill, decode = man.variants["fp32"][layer_stage(0)], man.variants["fp32"][decode_stage(0)]
    assert [(t.name, t.shape) for t in prefill.outputs] == [("h_out", (1, s, 32)), ("k", (1, 1, s, 16)),
                                                            ("v", (1, 1, s, 16))]
    assert past_len(cfg) == s + A - 2  # every key the last fed-back token sees before its own
    assert [(t.name, t.shape, t.dtype) for t in decode.inputs[1:3]] == [("position", (1, 1), "int64"),
                                                                         ("key_mask", (1, s + A - 1), "bool")]
    errors = stage_errors(torch_policy.model, man)
    assert set(errors) == set(stage_io(cfg)) and max(errors.values()) <= FP32_TOL, errors


@pytest.mark.parametrize("layers", [None, range(4), [2], [0, 3]])
def test_greedy_action_equals_torch(exported, image, layers):
    torch_policy, ort_policy, _ = exported
    tok = torch_policy.model.action_head.tokenizer
    for text in INSTRUCTIONS:
        a, b = torch_policy.infer(image, text, layers=layers), ort_policy.infer(image, text, layers=layers)
        assert a.routing.layers == b.routing.layers
        np.testing.assert_allclose(b.routing.probs, a.routing.probs, atol=1e-5)
        np.testing.assert_array_equal(b.actions, a.actions)
        norm, _, _ = torch_policy.run(*torch_policy.prepare(image, text), None, layers=layers)  # before stats
        ids = tok.encode(torch.from_numpy(norm[0])).numpy()
        np.testing.assert_array_equal(ort_policy.stages.last_tokens, ids)  # exact bin ids
        assert b.actions.shape == (1, A) and set(b.timings_ms) == set(a.timings_ms)
    assert len(set(ort_policy.stages.last_tokens.tolist())) > 1  # the comparison is not vacuous


@pytest.mark.parametrize("layers", [None, [2]])
def test_only_the_selected_layers_stages_run(exported, image, layers):
    _, policy, _ = exported
    chosen = list(layers) if layers is not None else None
    routed = policy.infer(image, INSTRUCTIONS[0], layers=chosen).routing.layers
    never = {f(i) for f in (layer_stage, decode_stage) for i in range(4) if i not in routed}
    saved = {n: policy.sessions[n] for n in never}
    try:
        for n in never:  # a skipped layer's session must not even be touched
            policy.sessions[n] = None
        policy.session_runs.clear()
        chunk = policy.infer(image, INSTRUCTIONS[0], layers=chosen)
    finally:
        policy.sessions.update(saved)
    assert chunk.routing.layers == routed
    k = policy.cfg.router.num_active_layers if policy.cfg.router.type == "star" else 4
    assert len(routed) == (k if layers is None else len(chosen))
    want = {"vision": 1, "router": 1, "lm_head": A, "token_embed": A - 1,
            **{layer_stage(i): 1 for i in routed}, **{decode_stage(i): A - 1 for i in routed}}
    assert dict(policy.session_runs) == want


def test_bad_inputs_are_typed_errors(exported, image, tmp_path):
    _, policy, man = exported
    with pytest.raises(InputError, match="dtype uint8"):
        policy.infer(image.astype(np.float32), INSTRUCTIONS[0])
    with pytest.raises(InputError, match="empty"):
        policy.infer(image, "   ")
    with pytest.raises(InputError, match=r"layers=\[1, 7\]: layer indices must be in 0\.\.3"):
        policy.infer(image, INSTRUCTIONS[0], layers=[7, 1])
    x = np.zeros((1, 1, 32), np.float32)
    with pytest.raises(InputError, match=r"'decode_00' input 'position': got shape \(1,\) int64"):
        policy.stages("decode_00", x=x, position=np.zeros(1, np.int64), key_mask=np.ones((1, 20), bool),
                      past_k=x, past_v=x)
    with pytest.raises(InputError, match=r"'token_embed' takes inputs \['token'\], got \['ids'\]"):
        policy.stages("token_embed", ids=np.zeros((1, 1), np.int64))
    with pytest.raises(InputError, match=r"stage 'cognition' is not in this export"):
        policy.stages("cognition", h=x)
    root = without_family(man, tmp_path)  # a manifest without the field is a diffusion export: contradicts this
    with pytest.raises(ManifestError, match=r"family 'diffusion' but its config has action_head.type="
                                            r"'autoregressive'"):
        Manifest.load(root, verify=False)


def test_int8_variant_keeps_the_lm_head_in_float_and_runs(exported, image):
    torch_policy, _, man = exported
    if torch_policy.cfg.router.type != "star":
        pytest.skip("only the STAR export has an INT8 variant")
    report = Manifest.load(man.root, "int8").reports["int8"]
    assert report["int8_over_fp32"] < 0.5 and 0.0 <= report["action_mae"] <= 1.0, report
    assert not quantized(man, "lm_head")  # the greedy bin choice is discrete, like the router's top-k
    assert quantized(man, decode_stage(0))
    chunk = OnnxPolicy.from_export(man.root, "int8").infer(image, INSTRUCTIONS[0])
    assert chunk.actions.shape == (1, A) and chunk.is_finite


def test_refusals_name_what_is_missing():
    from mole_inference.export.engine import check_engine_family

    with pytest.raises(ConfigError, match=r"action_head.type='autoregressive' has no TensorRT engines.*onnxruntime"):
        check_engine_family("autoregressive")
    check_engine_family("diffusion")
    check_exportable("star", family="flow")  # exported since the flow stages (tests/export/test_flow_export.py)
    with pytest.raises(ConfigError, match=r"action_head.type='flw' cannot be exported .*exported families"):
        check_exportable("star", family="flw")
    check_exportable("star", family="autoregressive")
    with pytest.raises(ConfigError, match=r"router.type='mod'"):
        check_exportable("mod", family="autoregressive")
    with pytest.raises(ConfigError, match=r"action_dim=1: the autoregressive export needs >= 2"):
        stage_io(micro_config("autoregressive", action_head={"chunk_size": 1, "action_dim": 1}))
