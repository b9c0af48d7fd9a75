"""Instruction FiLM (vision.text_film, beyond the paper): identity at init, instruction-dependent once trained."""

import torch

from mole_inference.config import preset
from mole_inference.model.film import TextFiLM
from mole_inference.model.vla import MoLeVLA


def test_film_starts_as_identity_and_ignores_padding():
    film = TextFiLM(8)
    img, text = torch.randn(2, 5, 8), torch.randn(2, 4, 8)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    torch.testing.assert_close(film(img, text, mask), img)
    with torch.no_grad():
        film.to_scale_shift.weight.normal_()
    out = film(img, text, mask)
    text2 = text.clone()
    text2[0, 2:] = 100.0  # padding of sample 0 changes: its output must not
    torch.testing.assert_close(film(img, text2, mask)[0], out[0])
    text2[0, 0] = -3.0  # a real token changes: the image tokens change
    assert not torch.allclose(film(img, text2, mask)[0], out[0])


def test_prompt_image_tokens_depend_on_the_instruction_only_with_film():
    for on in (False, True):
        torch.manual_seed(0)
        model = MoLeVLA(preset("tiny", vision={"text_film": on})).eval()
        if on:
            with torch.no_grad():
                model.text_film.to_scale_shift.weight.normal_(std=0.1)
        img = torch.randn(1, model.cfg.vision.num_patches, model.cfg.llm.hidden_size)
        mask = torch.ones(1, 4, dtype=torch.bool)
        a = model.prompt(img, model.embed_text(torch.tensor([[1, 5, 6, 7]])), mask)[0]
        b = model.prompt(img, model.embed_text(torch.tensor([[1, 5, 6, 9]])), mask)[0]
        n = img.shape[1]
        assert torch.equal(a[:, :n], b[:, :n]) is (not on)
