"""Robot-state input (vision.state_input, beyond the paper): features, zero start, reaches the cognition token."""

import math

import numpy as np
import pytest
import torch

from mole_inference.config import preset
from mole_inference.errors import InputError
from mole_inference.model.state_input import STATE_DIM, StateInput, check_state, make_state, state_features
from mole_inference.model.vla import MoLeVLA
from mole_inference.runtime.torch_backend import TorchPolicy

DOWN = (1.0, 0.0, 0.0, 0.0)  # xyzw: gripper pointing down (180 deg about x)


def test_features_centre_scale_and_rotation_columns_by_hand():
    yaw90 = (0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4))  # 90 deg about z
    states = torch.tensor([[0.5, 0.0, 0.25, 0.0, 0.0, 0.0, 1.0],
                           [0.75, -0.25, 0.5, *yaw90],
                           [0.5, 0.0, 0.25, *DOWN]], dtype=torch.float64)
    f = state_features(states)
    torch.testing.assert_close(f[0], torch.tensor([0, 0, 0, 1, 0, 0, 0, 1, 0], dtype=torch.float64))
    # 0.25 m = one unit; R(z, 90 deg) has columns x -> y, y -> -x
    torch.testing.assert_close(f[1], torch.tensor([1, -1, 1, 0, 1, 0, -1, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(f[2, 3:], torch.tensor([1, 0, 0, 0, -1, 0], dtype=torch.float64))  # y -> -y
    flipped = states.clone()
    flipped[:, 3:] *= -2.0  # q and -2q are the same rotation
    torch.testing.assert_close(state_features(flipped), f)


def model_pair(on: bool):
    torch.manual_seed(0)
    return MoLeVLA(preset("tiny", vision={"state_input": on})).eval()


def test_zero_initialised_so_a_trained_model_gains_it_unchanged_then_the_state_reaches_the_cognition_token():
    plain, with_state = model_pair(False), model_pair(True)
    missing, unexpected = with_state.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["state_input.proj.bias", "state_input.proj.weight"] and not unexpected
    pixels = torch.rand(1, 3, 112, 112)
    ids, mask = torch.tensor([[1, 5, 6, 7]]), torch.ones(1, 4, dtype=torch.bool)
    layers = list(range(8))
    a = torch.tensor([[0.5, 0.0, 0.3, *DOWN]])
    b = torch.tensor([[0.6, 0.1, 0.1, *DOWN]])
    with torch.no_grad():
        ref = plain.cognition(pixels, ids, mask, layers=layers)[0]
        torch.testing.assert_close(with_state.cognition(pixels, ids, mask, layers=layers, state=a)[0], ref)
        with_state.state_input.proj.weight.normal_(std=0.1)
        ca = with_state.cognition(pixels, ids, mask, layers=layers, state=a)[0]
        cb = with_state.cognition(pixels, ids, mask, layers=layers, state=b)[0]
        assert not torch.allclose(ca, cb)
        h_a = with_state.prompt(with_state.encode_image(pixels), with_state.embed_text(ids), mask, a)[0]
        h_b = with_state.prompt(with_state.encode_image(pixels), with_state.embed_text(ids), mask, b)[0]
    assert torch.equal(h_a[:, :-1], h_b[:, :-1])  # only the cognition token carries the state
    with pytest.raises(ValueError, match="state"):
        with_state.prompt(with_state.encode_image(pixels), with_state.embed_text(ids), mask)


def test_check_state_requires_a_finite_pose_only_for_models_that_read_it():
    assert check_state(None, required=False) is None
    assert check_state(np.full(3, np.nan), required=False) is None  # ignored, not validated
    good = check_state(make_state([0.5, 0, 0.2], DOWN), required=True)
    assert good.dtype == np.float32 and good.shape == (STATE_DIM,)
    for bad, match in ((None, "pass state"), (np.zeros(8), "7 values"), (np.r_[0.5, np.nan, 0.2, DOWN], "NaN"),
                       (np.r_[0.5, 0, 0.2, 0, 0, 0, 0], "quaternion")):
        with pytest.raises(InputError, match=match):
            check_state(bad, required=True)


def test_torch_policy_holds_without_a_state_and_feeds_the_given_one():
    torch.manual_seed(0)
    policy = TorchPolicy.from_config(preset("tiny", vision={"state_input": True}))
    assert policy.uses_state and not TorchPolicy.from_config(preset("tiny")).uses_state
    seen = []
    policy.model.state_input.register_forward_hook(lambda mod, args, out: seen.append(args[0].clone()))
    image = np.full((64, 64, 3), 120, np.uint8)
    with pytest.raises(InputError, match="pass state"):
        policy.infer(image, "pick the red cube", seed=1)
    state = make_state([0.4, 0.2, 0.1], DOWN)
    policy.infer(image, "pick the red cube", seed=1, state=state)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], torch.tensor(state, dtype=torch.float32).unsqueeze(0))


def test_state_module_output_shape():
    assert StateInput(16)(torch.zeros(3, STATE_DIM)).shape == (3, 1, 16)


def test_a_state_that_is_not_numbers_is_an_input_error():
    with pytest.raises(InputError, match="7 numbers"):
        check_state(["a"] * 7, required=True)


def test_height_bands_add_sin_cos_of_the_height_only():
    states = torch.tensor([[0.5, 0.0, 0.25, *DOWN], [0.9, -0.3, 0.25 + 0.0625, *DOWN]], dtype=torch.float64)
    plain, banded = state_features(states), state_features(states, height_bands=3)
    assert banded.shape == (2, 9 + 6)
    torch.testing.assert_close(banded[:, :9], plain)  # the linear features are unchanged
    # height 0 (centred): sin 0, cos 1 in every band; 6.25 cm up = 0.25 units: phases pi/4, pi/2, pi
    torch.testing.assert_close(banded[0, 9:], torch.tensor([0, 0, 0, 1, 1, 1], dtype=torch.float64))
    s, c = math.sqrt(0.5), math.sqrt(0.5)
    torch.testing.assert_close(banded[1, 9:], torch.tensor([s, 1, 0, c, 0, -1], dtype=torch.float64))
    moved = states.clone()
    moved[:, :2] += 0.2  # x and y move the linear features only
    torch.testing.assert_close(state_features(moved, 3)[:, 9:], banded[:, 9:])
    assert StateInput(16, height_bands=3).proj.in_features == 15


def test_one_centimetre_of_height_is_a_large_feature_change_with_bands():
    low, high = (torch.tensor([[0.5, 0.0, z, *DOWN]]) for z in (0.10, 0.11))
    linear = (state_features(high) - state_features(low)).norm()
    banded = (state_features(high, 6) - state_features(low, 6)).norm()
    assert linear == pytest.approx(0.04, rel=1e-3) and banded > 20 * linear


@pytest.mark.parametrize("vision,match", [({"state_height_bands": 4}, "needs vision.state_input"),
                                          ({"state_input": True, "state_height_bands": 13}, "0..12"),
                                          ({"state_input": True, "state_height_bands": -1}, "0..12")])
def test_height_band_config_is_checked(vision, match):
    from mole_inference.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        preset("tiny", vision=vision)
