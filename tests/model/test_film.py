"""Instruction FiLM (vision.text_film, beyond the paper): identity at init, instruction-dependent once trained."""

import pytest
import torch

from mole_inference.config import preset
from mole_inference.errors import ConfigError
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


def swapped_pair(model):
    """Token ids of "stack the red cube on the blue cube" and its colour swap, through the model's tokenizer."""
    from mole_inference.model.tokenizer import load_tokenizer, tokenize_batch

    llm = model.cfg.llm
    tok = load_tokenizer(llm.tokenizer, llm.vocab_size, llm.text_tokenizer)
    ids, mask = tokenize_batch(tok, ["stack the red cube on the blue cube", "stack the blue cube on the red cube"],
                               llm.max_text_tokens)
    return model.embed_text(ids), mask


@pytest.mark.parametrize("order", ["mlp", "slots"])
def test_the_bag_of_words_pool_cannot_tell_a_swap_and_the_ordered_one_can(order):
    torch.manual_seed(0)
    model = MoLeVLA(preset("tiny", vision={"text_film_order": order}))
    film = model.text_film
    img = torch.randn(1, 4, model.cfg.llm.hidden_size).expand(2, -1, -1)  # one image, two instructions
    with torch.no_grad():
        film.to_scale_shift.weight.normal_(std=0.1)
        text, mask = swapped_pair(model)
        plain = film(img, text, mask)
        # zero-initialized ordered term: exactly the bag-of-words FiLM, so a trained FiLM model gains it unchanged
        torch.testing.assert_close(plain[0], plain[1])  # same words, other order: same modulation (to rounding)
        last = film.order_mlp[-1].weight if order == "mlp" else film.order_slots
        last.normal_(std=0.1)
        ordered = film(img, text, mask)
    assert (ordered[0] - ordered[1]).abs().max() > 1e-3


def test_ordered_film_loads_a_plain_film_checkpoint_and_needs_film():
    torch.manual_seed(0)
    plain = MoLeVLA(preset("tiny"))
    mlp = MoLeVLA(preset("tiny", vision={"text_film_order": "mlp"}))
    missing, unexpected = mlp.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["text_film.order_mlp.0.bias", "text_film.order_mlp.0.weight",
                               "text_film.order_mlp.2.bias", "text_film.order_mlp.2.weight",
                               "text_film.order_pos"] and not unexpected
    slots = MoLeVLA(preset("tiny", vision={"text_film_order": "slots"}))
    assert slots.text_film.order_slots.shape == (16, 128, 128)  # one (D, D) map per instruction token
    for bad in ({"text_film": False, "text_film_order": "mlp"}, {"text_film_order": "attention"}):
        with pytest.raises(ConfigError, match="text_film_order"):
            preset("tiny", vision=bad)
