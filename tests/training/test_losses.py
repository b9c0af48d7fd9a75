"""Each loss on tensors small enough to compute by hand (Eq. 3, 6, 14-18)."""

import math

import pytest
import torch

from mole_inference.errors import ConfigError
from mole_inference.training.losses import (
    cog_forward_kl,
    cog_loss,
    cog_mimic_loss,
    cog_reverse_kl,
    distillation_loss,
    load_balance_eq3,
    load_balance_surrogate,
    task_loss,
    tokens_of_interest,
    total_loss,
)


def test_task_loss_is_noise_mse():  # Eq. 6
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert task_loss(pred, torch.zeros(2, 2)).item() == pytest.approx(7.5)


def test_task_loss_leaves_padded_chunk_steps_out():  # Eq. 6 over recorded actions only
    eps = torch.zeros(2, 3, 2)
    pred = torch.zeros(2, 3, 2)
    pred[:, 2] = 10.0  # wrong only on the last chunk step, which is padding in both samples
    mask = torch.tensor([[True, True, False], [True, True, False]])
    assert task_loss(pred, eps, mask).item() == 0.0
    assert task_loss(pred, eps).item() == pytest.approx(100.0 / 3)
    mask[1, 2] = True  # one real step with error 10 in both dims: 2 * 100 over 5 steps * 2 dims
    assert task_loss(pred, eps, mask).item() == pytest.approx(200.0 / 10)


def test_load_balance_eq3_counts_layers_used_and_has_no_gradient():  # Eq. 3 as printed
    sel = torch.tensor([[1.0, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0]], requires_grad=True)
    out = load_balance_eq3(sel)
    assert out.item() == pytest.approx(0.75, abs=1e-5)  # layers 0-2 used at least once, layer 3 never
    assert not out.requires_grad


def test_switch_surrogate_value_and_gradient():
    probs = torch.tensor([[0.4, 0.3, 0.2, 0.1]] * 2, requires_grad=True)
    sel = torch.tensor([[1.0, 1, 0, 0]] * 2)
    out = load_balance_surrogate(probs, sel, "switch")  # K * sum f_i P_i = 4 * (0.5*0.4 + 0.5*0.3)
    assert out.item() == pytest.approx(1.4)
    out.backward()  # d/dp[n, i] = K f_i / N
    torch.testing.assert_close(probs.grad, torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 2))
    uniform = torch.full((3, 4), 0.25)
    assert load_balance_surrogate(uniform, torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0]])).item() \
        == pytest.approx(1.0)


def test_cv_surrogate_and_bad_mode():
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0]] * 2)  # importance [1, 1, 0, 0]: mean 0.5, var 0.25
    assert load_balance_surrogate(probs, probs, "cv").item() == pytest.approx(1.0)
    assert load_balance_surrogate(torch.full((2, 4), 0.25), probs, "cv").item() == pytest.approx(0.0)
    with pytest.raises(ConfigError, match="load_balance"):
        load_balance_surrogate(probs, probs, "bogus")


def test_tokens_of_interest_intersection():  # Eq. 14
    f_s = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]])  # (1, 3, 2)
    cog_t, cog_s = torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 0.0]])
    valid = torch.tensor([[True, True, False]])
    sig = torch.sigmoid
    m = tokens_of_interest(cog_t, cog_s, f_s, valid, scaled=False)
    expected = torch.tensor([[sig(torch.tensor(1.0)) * sig(torch.tensor(2.0)), sig(torch.tensor(2.0)) * 0.5, 0.0]])
    torch.testing.assert_close(m, expected)
    r = 1 / math.sqrt(2)
    m = tokens_of_interest(cog_t, cog_s, f_s, valid, scaled=True)
    torch.testing.assert_close(m[0, 0], sig(torch.tensor(r)) * sig(torch.tensor(2 * r)))


def test_cog_mimic_masked_mse():  # Eq. 15
    f_t = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    f_s = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])
    mask, valid = torch.tensor([[1.0, 0.5]]), torch.tensor([[True, True]])
    # token 0: (1, 2)^2 -> 2.5; token 1: (1.5 - 0.5, 2 - 0.5)^2 -> (1 + 2.25) / 2 = 1.625
    assert cog_mimic_loss(f_t, f_s, mask, valid).item() == pytest.approx(2.0625)
    # mu doubles: token 1 -> (1.5 - 1, 2 - 1)^2 -> (0.25 + 1) / 2
    assert cog_mimic_loss(f_t, f_s, mask, valid, mu=lambda x: 2 * x).item() == pytest.approx((2.5 + 0.625) / 2)
    assert cog_mimic_loss(f_t, f_s, mask, torch.tensor([[True, False]])).item() == pytest.approx(2.5)


def test_reverse_and_forward_kl_over_features():  # Eq. 16
    f_s, f_t = torch.zeros(1, 1, 2), torch.tensor([[[math.log(3.0), 0.0]]])  # p_s = (1/2, 1/2), p_t = (3/4, 1/4)
    one, valid = torch.ones(1, 1), torch.ones(1, 1, dtype=torch.bool)
    assert cog_reverse_kl(f_t, f_s, one, valid).item() == pytest.approx(0.5 * math.log(4 / 3))
    assert cog_forward_kl(f_t, f_s, one, valid).item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    assert cog_reverse_kl(f_t, f_s, torch.zeros(1, 1), valid).item() == 0.0  # M = 0: both uniform
    p = math.sqrt(3) / (math.sqrt(3) + 1)  # temperature 2: p_t = softmax(ln3 / 2, 0)
    expected = 0.5 * math.log(0.5 / p) + 0.5 * math.log(0.5 / (1 - p))
    assert cog_reverse_kl(f_t, f_s, one, valid, temperature=2.0).item() == pytest.approx(expected, rel=1e-5)


def test_reverse_kl_gradient_pulls_student_to_teacher():
    f_s = torch.zeros(1, 1, 2, requires_grad=True)
    f_t = torch.tensor([[[1.0, 0.0]]])
    cog_reverse_kl(f_t, f_s, torch.ones(1, 1), torch.ones(1, 1, dtype=torch.bool)).backward()
    assert f_s.grad[0, 0, 0] < 0 < f_s.grad[0, 0, 1]  # descent raises the teacher's dominant feature


def test_cog_and_total():  # Eq. 17, 18
    assert cog_loss(torch.tensor(2.0), torch.tensor(4.0)).item() == pytest.approx(3.0)
    assert cog_loss(torch.tensor(2.0), torch.tensor(4.0), lambda1=0.25).item() == pytest.approx(2.5)
    assert total_loss(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0)).item() == pytest.approx(2.3)


@pytest.mark.parametrize("mode, keys", [("mse", {"cog", "cog_mimic"}), ("kl", {"cog", "cog_kl"}),
                                        ("reverse_kl", {"cog", "cog_reverse_kl"}),
                                        ("mse+reverse_kl", {"cog", "cog_mimic", "cog_reverse_kl"})])
def test_distillation_variants_of_tab3(mode, keys):
    g = torch.Generator().manual_seed(0)
    f_t, f_s = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    mask, valid = torch.rand(2, 3, generator=g), torch.ones(2, 3, dtype=torch.bool)
    out = distillation_loss(mode, f_t, f_s, mask, valid)
    assert set(out) == keys
    if mode == "mse+reverse_kl":
        assert out["cog"].item() == pytest.approx(0.5 * out["cog_mimic"].item() + 0.5 * out["cog_reverse_kl"].item())
    with pytest.raises(ConfigError, match="distill"):
        distillation_loss("mse+kl", f_t, f_s, mask, valid)


def test_eq16_token_weight_reading_weights_each_token_kl_by_m():
    """kl_mask=token_weight: sum_n M_n KL(p_s,n || p_t,n) / N_valid, the KL of the unmasked features."""
    f_s = torch.zeros(1, 3, 2)  # p_s = (1/2, 1/2) for every token
    f_t = torch.tensor([[[math.log(3.0), 0.0], [0.0, 0.0], [math.log(3.0), 0.0]]])  # p_t: (3/4, 1/4), (1/2, 1/2), ..
    mask = torch.tensor([[0.5, 1.0, 0.25]])
    valid = torch.tensor([[True, True, False]])  # the third token is padding
    kl0 = 0.5 * math.log(4 / 3)  # KL((1/2, 1/2) || (3/4, 1/4)), hand-computed
    expected = (0.5 * kl0 + 1.0 * 0.0) / 2
    got = cog_reverse_kl(f_t, f_s, mask, valid, kl_mask="token_weight")
    assert got.item() == pytest.approx(expected)
    fwd = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert cog_forward_kl(f_t, f_s, mask, valid, kl_mask="token_weight").item() == pytest.approx(0.5 * fwd / 2)
    # the default reading scales the features inside the softmax: M = 0.5 gives softmax(0.5 ln 3, 0), not 0.5 * kl0
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    inside = (0.5 * math.log(0.5 / p) + 0.5 * math.log(0.5 / (1 - p))) / 2
    assert cog_reverse_kl(f_t, f_s, mask, valid).item() == pytest.approx(inside, rel=1e-5)
    assert cog_reverse_kl(f_t, f_s, mask, valid, kl_mask="in_softmax").item() == pytest.approx(inside, rel=1e-5)
    assert abs(inside - expected) > 1e-3


def test_eq16_reading_is_a_config_field_and_modes_keep_their_parts():
    from mole_inference.config.model import TrainingConfig

    assert TrainingConfig().kl_mask == "in_softmax"  # runs resumed from older configs keep their loss
    g = torch.Generator().manual_seed(0)
    f_t, f_s = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    mask, valid = torch.rand(2, 3, generator=g), torch.ones(2, 3, dtype=torch.bool)
    for mode in ("kl", "reverse_kl", "mse+reverse_kl"):
        a = distillation_loss(mode, f_t, f_s, mask, valid, kl_mask="token_weight")
        b = distillation_loss(mode, f_t, f_s, mask, valid)
        assert set(a) == set(b) and a["cog"].item() != pytest.approx(b["cog"].item())
    with pytest.raises(ConfigError, match="kl_mask"):
        distillation_loss("reverse_kl", f_t, f_s, mask, valid, kl_mask="inside")


def test_the_subgoal_knee_weighs_the_last_centimetres_like_the_approach():
    import torch

    from mole_inference.training.objective import subgoal_target

    d = torch.tensor([[0.3, -0.015, 0.005], [float("nan"), 0.0, -0.3]])
    linear = subgoal_target(d, 0.1, 0.0)
    torch.testing.assert_close(linear[0], torch.tensor([3.0, -0.15, 0.05]))
    knee = subgoal_target(d, 0.1, 0.02)
    torch.testing.assert_close(knee[0], torch.tensor([0.3 / 0.32, -0.015 / 0.035, 0.005 / 0.025]))
    assert knee.nan_to_num().abs().max() < 1.0 and torch.isnan(knee[1, 0]) and knee[1, 1] == 0.0
    # a 15 mm miss against a 30 cm approach: 1:20 in the linear target, about 1:2 with the 2 cm knee
    assert abs(linear[0, 1] / linear[0, 0]) == pytest.approx(0.05) and abs(knee[0, 1] / knee[0, 0]) > 0.4
