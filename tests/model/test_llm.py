"""MoLe decoder loop: parity with the plain Hugging Face decoder, and skipped layers never execute."""

import pytest
import torch

from mole_inference.config import preset
from mole_inference.config.model import LLMConfig
from mole_inference.model.llm import MoLeLLM, attention_bias, hf_llama_config
from mole_inference.model.vla import MoLeVLA


@pytest.fixture(scope="module")
def pair():
    from transformers import LlamaModel

    torch.manual_seed(0)
    cfg = LLMConfig(hidden_size=64, intermediate_size=128, num_layers=4, num_heads=4, vocab_size=50)
    ours = MoLeLLM(cfg).eval()
    ref = LlamaModel(hf_llama_config(cfg)).eval()
    missing, unexpected = ref.load_state_dict(ours.state_dict(), strict=False)
    assert not missing and not unexpected
    return ours, ref


def test_all_layers_match_hf_decoder(pair):
    ours, ref = pair
    h = torch.randn(2, 11, 64)
    mask = torch.ones(2, 11, dtype=torch.bool)
    with torch.no_grad():
        expected = ref(inputs_embeds=h).last_hidden_state
        got = ours(h, mask)
        got_listed = ours(h, mask, layers=[0, 1, 2, 3])
        got_gate = ours(h, mask, gate=torch.ones(2, 4))
    for out in (got, got_listed, got_gate):
        assert (out - expected).abs().max().item() < 1e-6


def test_padding_mask_matches_hf(pair):
    ours, ref = pair
    h = torch.randn(1, 9, 64)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0, 1]], dtype=torch.bool)
    with torch.no_grad():
        expected = ref(inputs_embeds=h, attention_mask=mask.long()).last_hidden_state
        got = ours(h, mask)
    keep = mask[0]
    assert (got[:, keep] - expected[:, keep]).abs().max().item() < 1e-6


def test_attention_bias_uses_finite_minimum():
    bias = attention_bias(torch.tensor([[True, False, True]]), torch.float32)
    assert torch.isfinite(bias).all()
    allowed = bias[0, 0] == 0
    assert allowed.tolist() == [[True, False, False], [True, False, False], [True, False, True]]


def count_calls(model: MoLeVLA) -> list[int]:
    calls = [0] * len(model.llm.layers)
    for i, layer in enumerate(model.llm.layers):
        layer.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    return calls


@pytest.mark.parametrize("router", ["star", "linear", "random", "early_exit"])
def test_only_selected_layers_run(router):
    torch.manual_seed(1)
    model = MoLeVLA(preset("tiny", router={"type": router})).eval()
    calls = count_calls(model)
    pixels = torch.rand(1, 3, 112, 112)
    ids = torch.randint(4, 200, (1, 32))
    mask = torch.ones(1, 32, dtype=torch.bool)
    with torch.no_grad():
        _, out, chosen = model.cognition(pixels, ids, mask)
    k = model.cfg.router.num_active_layers
    assert len(chosen[0]) == k == sum(calls)
    assert [i for i, c in enumerate(calls) if c] == chosen[0]
    top = torch.topk(out.probs[0], k).indices.sort().values.tolist()
    assert chosen[0] == top


def test_full_router_runs_every_layer():
    model = MoLeVLA(preset("tiny", router={"type": "full"})).eval()
    calls = count_calls(model)
    with torch.no_grad():
        model.cognition(torch.rand(1, 3, 112, 112), torch.randint(4, 200, (1, 32)),
                        torch.ones(1, 32, dtype=torch.bool))
    assert calls == [1] * model.num_layers


def test_batch_with_different_choices_equals_single_runs():
    torch.manual_seed(2)
    model = MoLeVLA(preset("tiny", router={"type": "random"})).eval()
    pixels = torch.rand(4, 3, 112, 112)
    ids = torch.randint(4, 200, (4, 32))
    mask = torch.ones(4, 32, dtype=torch.bool)
    with torch.no_grad():
        cog, _, chosen = model.cognition(pixels, ids, mask)
        for i in range(4):
            single, _, _ = model.cognition(pixels[i : i + 1], ids[i : i + 1], mask[i : i + 1], layers=chosen[i])
            assert torch.allclose(single, cog[i : i + 1], atol=1e-5)
    assert len({tuple(c) for c in chosen}) > 1


def test_training_gate_has_router_gradients():
    torch.manual_seed(3)
    model = MoLeVLA(preset("tiny"))
    hidden, _, gate = model.forward_train(torch.rand(2, 3, 112, 112), torch.randint(4, 200, (2, 32)),
                                            torch.ones(2, 32, dtype=torch.bool))
    assert gate.sum(1).tolist() == [4.0, 4.0]
    hidden[:, -1].pow(2).sum().backward()
    grads = [p.grad for p in model.router.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
