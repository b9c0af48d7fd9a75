"""Input checks and action (de)normalization at the policy boundary."""

import numpy as np
import pytest

from mole_inference.errors import InputError
from mole_inference.model.action_stats import ActionStats
from mole_inference.policy.processing import check_image, check_instruction, resize_image
from mole_inference.runtime.torch_backend import TorchPolicy


@pytest.mark.parametrize("image,fragment", [
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    (np.zeros((10, 10, 4), np.uint8), "(H, W, 3)"),
    (np.zeros((10, 10, 3), np.float32), "uint8"),
    (np.zeros((10, 10), np.uint8), "(H, W, 3)"),
    ("not an image", "numpy array"),
    (np.zeros((4320, 7680, 3), np.uint8), "exceeds"),
])
def test_bad_images_raise_input_error(image, fragment):
    with pytest.raises(InputError) as info:
        check_image(image)
    assert fragment in str(info.value)


@pytest.mark.parametrize("text", ["", "   ", None, "x" * 2000])
def test_bad_instructions(text):
    with pytest.raises(InputError):
        check_instruction(text)


def test_resize_to_model_size():
    out = resize_image(np.full((480, 640, 3), 200, np.uint8), 112)
    assert out.shape == (112, 112, 3) and out.dtype == np.uint8 and (out == 200).all()


def test_stats_round_trip_and_gripper_binarized():
    rng = np.random.default_rng(0)
    acts = np.concatenate([rng.normal(0, 0.01, (1000, 6)), rng.integers(0, 2, (1000, 1))], axis=1)
    stats = ActionStats.from_actions(acts)
    norm = stats.normalize(acts)
    assert norm[:, :6].min() >= -1 and norm[:, :6].max() <= 1
    back = stats.denormalize(norm)
    inside = np.all((acts[:, :6] > stats.q01[:6]) & (acts[:, :6] < stats.q99[:6]), axis=1)
    assert np.allclose(back[inside, :6], acts[inside, :6])
    assert np.array_equal(back[:, 6], acts[:, 6])
    assert set(stats.denormalize(np.array([[0, 0, 0, 0, 0, 0, 0.7], [0, 0, 0, 0, 0, 0, 0.2]]))[:, 6]) == {0, 1}
    span = stats.denormalize(np.array([[-1.0] * 7, [1.0] * 7]))
    assert np.allclose(span[0, :6], stats.q01[:6]) and np.allclose(span[1, :6], stats.q99[:6])


def test_policy_rejects_bad_input_and_returns_chunk():
    policy = TorchPolicy.from_preset("tiny")
    with pytest.raises(InputError):
        policy.infer(np.zeros((10, 10, 4), np.uint8), "touch the red cube")
    chunk = policy.infer(np.zeros((300, 400, 3), np.uint8), "touch the red cube", seed=0)
    assert chunk.actions.shape == (16, 7) and chunk.is_finite
    assert chunk.routing.num_active == 4 and chunk.routing.probs.shape == (8,)
    assert set(chunk.timings_ms) >= {"preprocess", "vision", "router", "llm", "action_head", "total"}
