"""CogACT -> MoLe converter on synthetic state dicts with CogACT's real key names and shape relations (tiny sizes).

Round trips: the LLM against transformers' LlamaModel holding the source's `llm_backbone.llm.model.*` weights,
and the DiT against a reference written here from CogACT's published forward (action_model/models.py).
Nothing here has seen real CogACT weights.
"""

import json
import math

import pytest
import torch
from torch import nn

from mole_inference.cli import main
from mole_inference.config import preset
from mole_inference.convert.cogact import convert_cogact, infer_config, source_tensors, time_columns
from mole_inference.convert.mapping import UnmatchedKeysError
from mole_inference.errors import CheckpointError
from mole_inference.model.action_head import DiTActionHead
from mole_inference.model.checkpoint import load_checkpoint
from tests.convert.conftest import vit_blocks, vit_stem

# Tiny source: DINOv2 (4 registers, no class position) and SigLIP at 28 px / patch 14 (2x2 grid), LLaMA with the
# tiny preset's head count, DiT width 32 whose timestep MLP reads 16 frequencies (CogACT: 256 into 768).
D_DINO, D_SIG, D_LLM, FFN, VOCAB, LAYERS = 16, 24, 128, 344, 1024, 3
W, DEPTH, CHUNK, A, FREQ = 32, 2, 16, 7, 16
BASE = preset("tiny")


def vit(prefix: str, d: int, blocks: int, dino: bool) -> dict[str, torch.Tensor]:
    """timm ViT keys as Prismatic's featurizers hold them (DINOv2's LayerScale `gamma`, part of SigLIP's pool)."""
    sd = vit_stem(prefix, d, dino)
    if not dino:
        sd |= {f"{prefix}attn_pool.latent": torch.randn(1, 1, d), f"{prefix}attn_pool.q.weight": torch.randn(d, d),
               f"{prefix}attn_pool.kv.weight": torch.randn(2 * d, d), f"{prefix}attn_pool.norm.weight": torch.ones(d)}
    return sd | vit_blocks(prefix, d, blocks, "gamma" if dino else None)


def llama_source():
    """transformers LlamaForCausalLM at tiny size (the source layout of `llm_backbone.llm`)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=D_LLM, intermediate_size=FFN, num_hidden_layers=LAYERS,
                      num_attention_heads=BASE.llm.num_heads, num_key_value_heads=BASE.llm.num_heads,
                      rms_norm_eps=BASE.llm.rms_norm_eps, rope_theta=BASE.llm.rope_theta)
    return LlamaForCausalLM(cfg).eval()


def dit_source() -> dict[str, torch.Tensor]:
    """CogACT's DiT keys (`action_model.net.`), incl. the unused history embedder."""
    p, sd = "action_model.net.", {}
    for name, (o, i) in {"x_embedder.linear": (W, A), "history_embedder.linear": (W, A),
                         "z_embedder.linear": (W, D_LLM), "t_embedder.mlp.0": (W, FREQ), "t_embedder.mlp.2": (W, W),
                         "final_layer.linear": (A, W)}.items():
        sd |= {f"{p}{name}.weight": torch.randn(o, i) / math.sqrt(i), f"{p}{name}.bias": torch.randn(o) * 0.1}
    sd |= {f"{p}z_embedder.uncondition": torch.randn(1, D_LLM), f"{p}positional_embedding": torch.randn(CHUNK + 1, W)}
    for i in range(DEPTH):
        b = f"{p}blocks.{i}."
        for name, (o, n) in {"attn.qkv": (3 * W, W), "attn.proj": (W, W), "mlp.fc1": (4 * W, W),
                             "mlp.fc2": (W, 4 * W)}.items():
            sd |= {f"{b}{name}.weight": torch.randn(o, n) / math.sqrt(n), f"{b}{name}.bias": torch.randn(o) * 0.1}
    return sd


def cogact_checkpoint(llama) -> dict:
    """`{"model": {...}}` as CogACT's `torch.save` writes it."""
    fused = D_DINO + D_SIG
    return {"model": {
        "vision_backbone": vit("dino_featurizer.", D_DINO, 2, True) | vit("siglip_featurizer.", D_SIG, 2, False),
        "projector": {"projector.0.weight": torch.randn(4 * fused, fused), "projector.0.bias": torch.randn(4 * fused),
                      "projector.2.weight": torch.randn(D_LLM, 4 * fused), "projector.2.bias": torch.randn(D_LLM),
                      "projector.4.weight": torch.randn(D_LLM, D_LLM), "projector.4.bias": torch.randn(D_LLM)},
        "llm_backbone": {f"llm.{k}": v for k, v in llama.state_dict().items()},
        "action_model": {k.removeprefix("action_model."): v for k, v in dit_source().items()},
    }}


@pytest.fixture(scope="module")
def llama():
    return llama_source()


@pytest.fixture()
def run_dir(tmp_path, llama):
    """CogACT's run folder: checkpoints/step.pt and dataset_statistics.json."""
    (tmp_path / "checkpoints").mkdir()
    torch.manual_seed(0)
    torch.save(cogact_checkpoint(llama), tmp_path / "checkpoints" / "step-000100.pt")
    stats = {"fractal20220817_data": {"action": {"mean": [0.0] * 7, "q01": [-0.1] * 6 + [0.0],
                                                 "q99": [0.2] * 6 + [1.0], "mask": [True] * 6 + [False]}}}
    (tmp_path / "dataset_statistics.json").write_text(json.dumps(stats))
    return tmp_path


def test_config_is_read_from_the_shapes(run_dir):
    cfg = infer_config(source_tensors(run_dir / "checkpoints" / "step-000100.pt"), BASE)
    assert (cfg.vision.image_size, cfg.vision.dinov2.hidden_size, cfg.vision.siglip.hidden_size) == (28, D_DINO, D_SIG)
    assert (cfg.llm.hidden_size, cfg.llm.num_layers, cfg.llm.vocab_size, cfg.llm.intermediate_size) == (
        D_LLM, LAYERS, VOCAB, FFN)
    ah = cfg.action_head
    assert (ah.hidden_size, ah.depth, ah.chunk_size, ah.action_dim, ah.mlp_ratio) == (W, DEPTH, CHUNK, A, 4.0)


def test_refuses_with_the_gaps_listed_and_writes_nothing(run_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match="DINOv2 registers") as exc:
        convert_cogact(run_dir / "checkpoints" / "step-000100.pt", out, BASE)
    assert "feature layer" in str(exc.value) and "--accept-gaps" in str(exc.value)
    assert not out.exists()


def test_refuses_unmatched_keys_even_with_accept_gaps(run_dir, tmp_path, llama):
    sd = cogact_checkpoint(llama)
    sd["model"]["action_model"]["net.blocks.0.attn.q_norm.weight"] = torch.ones(W)
    del sd["model"]["llm_backbone"]["llm.model.norm.weight"]
    torch.save(sd, run_dir / "checkpoints" / "odd.pt")
    out = tmp_path / "out"
    with pytest.raises(UnmatchedKeysError) as exc:
        convert_cogact(run_dir / "checkpoints" / "odd.pt", out, BASE, accept_gaps=True)
    msg = str(exc.value)
    assert "action_model.net.blocks.0.attn.q_norm.weight" in msg  # source key no rule maps
    assert "llm.norm.weight" in msg  # our key nothing fills
    assert not out.exists()


def test_missing_stats_is_a_clear_error(run_dir, tmp_path):
    (run_dir / "dataset_statistics.json").unlink()
    with pytest.raises(CheckpointError, match="--identity-stats"):
        convert_cogact(run_dir / "checkpoints" / "step-000100.pt", tmp_path / "out", BASE, accept_gaps=True)


@pytest.fixture()
def converted(run_dir, tmp_path):
    path, conv = convert_cogact(run_dir / "checkpoints" / "step-000100.pt", tmp_path / "out", BASE, accept_gaps=True)
    return path, conv, load_checkpoint(path)


def test_written_checkpoint_loads_with_the_source_stats(converted):
    _, conv, (_, cfg, stats) = converted
    assert cfg.llm.num_layers == LAYERS and stats.q99.tolist() == [0.2] * 6 + [1.0]
    assert stats.mask.tolist() == [True] * 6 + [False]
    assert "llm_backbone.llm.lm_head.weight" in conv.ignored
    assert any(k.endswith("reg_token") for k in conv.ignored)
    assert all("attn_pool" in k for k in conv.ignored if k.startswith("vision_backbone.siglip"))


def test_llm_round_trip_against_llama(converted, llama):
    _, _, (model, _, _) = converted
    h = torch.randn(2, 9, D_LLM)
    key_mask = torch.ones(2, 9, dtype=torch.bool)
    with torch.no_grad():
        ours = model.llm(h, key_mask)
        ref = llama.model(inputs_embeds=h).last_hidden_state
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.cognition_token[0, 0], llama.model.embed_tokens.weight[2])  # EOS row


def test_qkv_split_and_dino_positions(run_dir, converted):
    src = source_tensors(run_dir / "checkpoints" / "step-000100.pt")
    _, _, (model, _, _) = converted
    sd = model.state_dict()
    qkv = src["vision_backbone.siglip_featurizer.blocks.1.attn.qkv.weight"]
    torch.testing.assert_close(sd["vision.siglip.encoder.layers.1.self_attn.v_proj.weight"], qkv[2 * D_SIG:])
    pos = sd["vision.dinov2.embeddings.position_embeddings"]
    assert pos.shape == (1, 5, D_DINO) and not pos[0, 0].any()  # class token: no position in timm's layout
    torch.testing.assert_close(pos[0, 1:], src["vision_backbone.dino_featurizer.pos_embed"][0])


def reference_dit(sd: dict[str, torch.Tensor], x, t, z):
    """CogACT's DiT forward from its equations: c = t_emb + z_emb prepended, non-affine LayerNorms, fused qkv."""
    p = "action_model.net."

    def lin(name, v):
        return nn.functional.linear(v, sd[f"{p}{name}.weight"], sd[f"{p}{name}.bias"])

    def ln(v):
        return nn.functional.layer_norm(v, v.shape[-1:], eps=1e-6)

    half = FREQ // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half) / half)
    args = t.float()[:, None] * freqs[None]
    t_freq = torch.cat([args.cos(), args.sin()], -1)
    t_emb = lin("t_embedder.mlp.2", nn.functional.silu(lin("t_embedder.mlp.0", t_freq)))
    tokens = torch.cat([(t_emb + lin("z_embedder.linear", z))[:, None], lin("x_embedder.linear", x)], 1)
    tokens = tokens + sd[f"{p}positional_embedding"]
    heads = BASE.action_head.num_heads
    for i in range(DEPTH):
        b = f"blocks.{i}."
        q, k, v = lin(f"{b}attn.qkv", ln(tokens)).chunk(3, -1)
        split = [u.unflatten(-1, (heads, -1)).transpose(1, 2) for u in (q, k, v)]
        att = nn.functional.scaled_dot_product_attention(*split).transpose(1, 2).flatten(2)
        tokens = tokens + lin(f"{b}attn.proj", att)
        mlp = lin(f"{b}mlp.fc2", nn.functional.gelu(lin(f"{b}mlp.fc1", ln(tokens)), approximate="tanh"))
        tokens = tokens + mlp
    return lin("final_layer.linear", ln(tokens))[:, 1:]


def test_dit_round_trip_against_cogact_forward(run_dir, converted):
    src = source_tensors(run_dir / "checkpoints" / "step-000100.pt")
    _, _, (model, _, _) = converted
    x, t, z = torch.randn(3, CHUNK, A), torch.tensor([0, 37, 99]), torch.randn(3, D_LLM)
    with torch.no_grad():
        ours = model.action_head(x, t, z)
    torch.testing.assert_close(ours, reference_dit(src, x, t, z), atol=1e-5, rtol=1e-4)
    assert ours.abs().max() > 0.1  # not vacuous


def test_time_columns_need_a_multiple_of_the_frequency_count():
    assert time_columns(torch.randn(W, FREQ), 3 * FREQ).shape == (W, 3 * FREQ)
    with pytest.raises(CheckpointError, match="multiple"):
        time_columns(torch.randn(384, 256), 384)  # DiT-S: 384-d head, 256 frequencies


def test_head_built_from_converted_config_has_our_key_layout(converted):
    _, _, (model, cfg, _) = converted
    assert set(model.action_head.state_dict()) == set(DiTActionHead(cfg.action_head, D_LLM).state_dict())


def test_cli_converts_and_lists_the_gaps(run_dir, tmp_path, capsys):
    src = str(run_dir / "checkpoints" / "step-000100.pt")
    out = tmp_path / "cli"
    assert main(["convert", "--from", "cogact", src, "--out", str(out), "--preset", "tiny"]) == 2
    assert "DINOv2 registers" in capsys.readouterr().err and not out.exists()
    assert main(["convert", "--from", "cogact", src, "--out", str(out), "--preset", "tiny", "--accept-gaps"]) == 0
    assert "gap: prompt layout" in capsys.readouterr().out and (out / "model.safetensors").is_file()
