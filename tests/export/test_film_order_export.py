"""`vision.text_film_order` exported: the ordered pooling lives in the router stage (which builds the prompt); ONNX
Runtime matches torch, and the exported router stage modulates the image tokens differently for an instruction and
its colour swap (the bag-of-words FiLM cannot)."""

import numpy as np
import pytest
import torch

from mole_inference.export.parity import FP32_TOL, stage_errors
from mole_inference.export.pipeline import export_model
from mole_inference.model.action_stats import ActionStats
from mole_inference.model.vla import MoLeVLA
from mole_inference.runtime.onnx_backend import OnnxPolicy
from mole_inference.runtime.torch_backend import TorchPolicy
from tests.export.conftest import micro_config, wake_zero_inits

ACTION_ATOL = 1e-4
TRUE, SWAPPED = "stack the red cube on the blue cube", "stack the blue cube on the red cube"


@pytest.mark.parametrize("order", ["mlp", "slots"])
def test_ordered_film_exports_and_tells_a_swap_apart(tmp_path, image, order):
    cfg = micro_config("diffusion", vision={"text_film_order": order})
    torch.manual_seed(1)
    model = wake_zero_inits(MoLeVLA(cfg).eval())
    film = model.text_film
    with torch.no_grad():  # the FiLM projection and the ordered term start at zero: wake both
        (film.order_mlp[-1].weight if order == "mlp" else film.order_slots).normal_(std=0.5)
        model.text_film.to_scale_shift.weight.normal_(std=0.5)
    stats = ActionStats.identity(7)
    man = export_model(model, stats, tmp_path / "export", check=False)
    errors = stage_errors(model, man)
    assert max(errors.values()) <= FP32_TOL, errors
    torch_policy, ort_policy = TorchPolicy(model, cfg, stats), OnnxPolicy.from_export(man.root)
    image_tokens = []
    for text in (TRUE, SWAPPED):
        a = torch_policy.infer(image, text, seed=0)
        b = ort_policy.infer(image, text, seed=0)
        np.testing.assert_allclose(b.actions, a.actions, atol=ACTION_ATOL)
        pixels, ids, mask = ort_policy.prepare(image, text)
        (img,) = ort_policy.stages("vision", pixels=pixels)
        h = ort_policy.stages("router", img=img, ids=ids, text_mask=mask)[1]  # (1, S, D): [image | text | cog]
        image_tokens.append(h[:, : img.shape[1]])
    # only FiLM lets the instruction into the image tokens: the exported ordered term tells the swap apart there
    assert np.abs(image_tokens[0] - image_tokens[1]).max() > 100 * ACTION_ATOL
