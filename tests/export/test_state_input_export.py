"""Models with `vision.state_input` exported per stage, all three families: the router stage (which builds the
prompt) takes the robot state as one more input, ONNX Runtime's actions equal torch's for the same state, two
states give two different chunks, a missing state is an InputError, and INT8 calibration and the benchmark feed
a state.

Micro shapes as the family export tests (tests/export/conftest.py); the state projection, zero-initialized for
training, gets random weights (`wake_zero_inits`) so the state reaches the actions.
"""

import numpy as np
import pytest

from mole_inference.errors import InputError
from mole_inference.export.calibration import calibration_state, record_stage_inputs, synthetic_samples
from mole_inference.export.manifest import Manifest
from mole_inference.export.parity import FP32_TOL, stage_errors
from mole_inference.export.stages import EXAMPLE_STATE, TensorSpec, stage_io
from mole_inference.model.state_input import STATE_DIM
from mole_inference.runtime.bench import bench
from mole_inference.runtime.onnx_backend import OnnxPolicy
from tests.export.conftest import export_family, micro_config

FAMILIES = ("diffusion", "autoregressive", "flow")
INSTRUCTION = "pick up the red cube"
ACTION_ATOL = 1e-4  # normalized actions, fp32 torch vs fp32 onnxruntime (as the family parity tests)
# two measured poses (x, y, z m, qx, qy, qz, qw): above the table pointing down, and low, off to the side, yawed 90°
HIGH = np.array(EXAMPLE_STATE, np.float32)
LOW_YAWED = np.array([0.4, 0.15, 0.08, 0.7071, 0.7071, 0.0, 0.0], np.float32)


@pytest.fixture(scope="module", params=FAMILIES)
def exported(request, tmp_path_factory):
    """(torch policy, onnxruntime policy, manifest) of one state-input model per family, with its INT8 variant."""
    cfg = micro_config(request.param, vision={"state_input": True})
    return export_family(cfg, f"state-{request.param}", tmp_path_factory, star=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_only_the_router_stage_gains_the_state_input(family):
    with_state, without = (stage_io(micro_config(family, vision={"state_input": on})) for on in (True, False))
    assert [s.name for s in without["router"][0]] == ["img", "ids", "text_mask"]  # unchanged without the option
    assert with_state["router"][0] == [*without["router"][0], TensorSpec("state", (1, STATE_DIM), "float32")]
    assert {n: io for n, io in with_state.items() if n != "router"} == \
        {n: io for n, io in without.items() if n != "router"}


def test_manifest_and_graphs_declare_the_state_and_match_torch(exported):
    torch_policy, _, man = exported
    router = Manifest.load(man.root, "int8").variants["int8"]["router"]  # hashes and graph I/O verified on load
    assert router.inputs[-1] == TensorSpec("state", (1, STATE_DIM), "float32")
    errors = stage_errors(torch_policy.model, man)
    assert set(errors) == set(stage_io(torch_policy.cfg)) and max(errors.values()) <= FP32_TOL, errors


@pytest.mark.parametrize("layers", [None, range(4), [2]])
def test_actions_equal_torch_for_each_state(exported, image, layers):
    torch_policy, ort_policy, _ = exported
    for seed, state in enumerate((HIGH, LOW_YAWED)):
        a = torch_policy.infer(image, INSTRUCTION, seed=seed, state=state, layers=layers)
        b = ort_policy.infer(image, INSTRUCTION, seed=seed, state=state, layers=layers)
        assert a.routing.layers == b.routing.layers
        np.testing.assert_allclose(b.routing.probs, a.routing.probs, atol=1e-5)
        if torch_policy.cfg.action_head.type == "autoregressive":
            np.testing.assert_array_equal(b.actions, a.actions)  # greedy bins: exact
        else:
            np.testing.assert_allclose(b.actions, a.actions, atol=ACTION_ATOL)  # identity stats: normalized
        assert b.is_finite and b.actions.shape == a.actions.shape


def test_the_state_reaches_the_actions_and_not_the_router(exported, image):
    _, policy, _ = exported
    high = policy.infer(image, INSTRUCTION, seed=0, state=HIGH)
    tokens_high = None if policy.stages.last_tokens is None else policy.stages.last_tokens.copy()
    low = policy.infer(image, INSTRUCTION, seed=0, state=LOW_YAWED)
    np.testing.assert_array_equal(low.routing.probs, high.routing.probs)  # the router scores image and text only
    assert np.abs(low.actions - high.actions).max() > 100 * ACTION_ATOL  # far beyond the parity tolerance
    if tokens_high is not None:
        assert (policy.stages.last_tokens != tokens_high).any()  # autoregressive: other greedy bins


def test_a_missing_or_bad_state_is_an_input_error(exported, image):
    _, policy, _ = exported
    with pytest.raises(InputError, match=r"reads the robot state \(vision.state_input\)"):
        policy.infer(image, INSTRUCTION, seed=0)
    pixels, ids, mask = policy.prepare(image, INSTRUCTION)
    noise = np.zeros((1, policy.chunk_size, 7), np.float32)
    with pytest.raises(InputError, match="reads the robot state"):
        policy.stages.run(pixels, ids, mask, noise)  # the stage runner checks too (calibration calls it directly)
    with pytest.raises(InputError, match=rf"robot state must have {STATE_DIM} values"):
        policy.infer(image, INSTRUCTION, seed=0, state=HIGH[:3])
    (img,) = policy.stages("vision", pixels=pixels)
    with pytest.raises(InputError, match=r"'router' takes inputs \['ids', 'img', 'state', 'text_mask'\]"):
        policy.stages("router", img=img, ids=ids, text_mask=mask)


def test_int8_calibration_and_the_benchmark_feed_the_state(exported, image):
    _, policy, man = exported
    want = calibration_state(policy.cfg)
    np.testing.assert_array_equal(want, HIGH)  # the fixed pose above the table
    feeds = record_stage_inputs(policy.stages, synthetic_samples(2, holdout=0).calib)
    assert len(feeds["router"]) == 4 and all(np.array_equal(f["state"], want[None]) for f in feeds["router"])
    report = Manifest.load(man.root, "int8").reports["int8"]
    assert np.isfinite(report["action_mae"]) and report["holdout_frames"] > 0, report
    chunk = OnnxPolicy.from_export(man.root, "int8").infer(image, INSTRUCTION, seed=0, state=LOW_YAWED)
    assert chunk.is_finite
    assert bench(policy, iters=1, warmup=0)["active_layers"] == 2  # would raise InputError without a state


def test_height_bands_export_and_match_torch(tmp_path_factory, image):
    cfg = micro_config("diffusion", vision={"state_input": True, "state_height_bands": 4})
    torch_policy, ort_policy, man = export_family(cfg, "state-bands", tmp_path_factory, star=False)
    errors = stage_errors(torch_policy.model, man)
    assert max(errors.values()) <= FP32_TOL, errors
    chunks = []
    for state in (HIGH, LOW_YAWED):
        a = torch_policy.infer(image, INSTRUCTION, seed=0, state=state)
        b = ort_policy.infer(image, INSTRUCTION, seed=0, state=state)
        np.testing.assert_allclose(b.actions, a.actions, atol=ACTION_ATOL)
        chunks.append(b.actions)
    assert np.abs(chunks[0] - chunks[1]).max() > 100 * ACTION_ATOL
