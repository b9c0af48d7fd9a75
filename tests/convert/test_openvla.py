"""OpenVLA -> MoLe converter on a synthetic Hugging Face folder with OpenVLA's real key names and shape relations.

The folder holds three safetensors shards, `model.safetensors.index.json`, `config.json` and
`dataset_statistics.json` as openvla's `convert_openvla_weights_to_hf.py` writes them, at tiny sizes: timm DINOv2
with 4 registers (LayerScale renamed `scale_factor`) and SigLIP with its attention-pool head, the fc1/fc2/fc3
projector, and a transformers LlamaForCausalLM whose vocabulary (1024 ids) is padded by 64 rows as OpenVLA pads
LLaMA-2's 32000. Round trips compare the converted LLM with that LlamaForCausalLM. No real OpenVLA weights.
"""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mole_inference.cli import main
from mole_inference.config import preset
from mole_inference.convert.mapping import Conversion, UnmatchedKeysError, read_hf_weights
from mole_inference.convert.openvla import convert_openvla, infer_config, llama_config, read_source
from mole_inference.errors import CheckpointError
from mole_inference.model.checkpoint import load_checkpoint
from tests.convert.conftest import vit_blocks, vit_stem

D_DINO, D_SIG, D_LLM, FFN, LAYERS, HEADS, KV_HEADS = 16, 24, 128, 344, 3, 4, 2
VOCAB, PAD = 1024, 64  # real ids, OpenVLA's pad_to_multiple_of
COG = 1000  # stands in for 29871 (the empty token OpenVLA's prompt ends with), which a 1024-id vocabulary lacks
BASE = preset("openvla-tiny")
TEXT_CONFIG = {"model_type": "llama", "vocab_size": VOCAB + PAD, "hidden_size": D_LLM, "intermediate_size": FFN,
               "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
               "pad_token_id": VOCAB, "torch_dtype": "bfloat16"}  # rms_norm_eps omitted, as OpenVLA's export does
STATS = {"bridge_orig": {"action": {"q01": [-0.1] * 6 + [0.0], "q99": [0.2] * 6 + [1.0],
                                    "mask": [True] * 6 + [False]}, "num_transitions": 10},
         "fractal20220817_data": {"action": {"q01": [-0.3] * 7, "q99": [0.3] * 7}}}


def vit(prefix: str, d: int, blocks: int, dino: bool) -> dict[str, torch.Tensor]:
    """timm ViT keys as OpenVLA's HF export holds them: DINOv2's LayerScale renamed `scale_factor`, SigLIP's
    attention-pool ("map") head in full (vit_so400m_patch14_siglip_224)."""
    sd = vit_stem(prefix, d, dino)
    if not dino:
        sd |= {f"{prefix}attn_pool.latent": torch.randn(1, 1, d), f"{prefix}attn_pool.q.weight": torch.randn(d, d),
               f"{prefix}attn_pool.q.bias": torch.randn(d), f"{prefix}attn_pool.kv.weight": torch.randn(2 * d, d),
               f"{prefix}attn_pool.kv.bias": torch.randn(2 * d), f"{prefix}attn_pool.proj.weight": torch.randn(d, d),
               f"{prefix}attn_pool.proj.bias": torch.randn(d), f"{prefix}attn_pool.norm.weight": torch.ones(d),
               f"{prefix}attn_pool.norm.bias": torch.zeros(d),
               f"{prefix}attn_pool.mlp.fc1.weight": torch.randn(4 * d, d),
               f"{prefix}attn_pool.mlp.fc1.bias": torch.randn(4 * d),
               f"{prefix}attn_pool.mlp.fc2.weight": torch.randn(d, 4 * d),
               f"{prefix}attn_pool.mlp.fc2.bias": torch.randn(d)}
    return sd | vit_blocks(prefix, d, blocks, "scale_factor" if dino else None)


def llama_source():
    """LlamaForCausalLM built as OpenVLA builds `language_model`: LlamaConfig(**text_config)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(1)
    return LlamaForCausalLM(llama_config({"text_config": TEXT_CONFIG})).eval()


def openvla_state(llama) -> dict[str, torch.Tensor]:
    """The flat state dict of OpenVLAForActionPrediction (HF export key names)."""
    torch.manual_seed(0)
    fused = D_DINO + D_SIG
    sd = vit("vision_backbone.featurizer.", D_DINO, 2, True) | vit("vision_backbone.fused_featurizer.", D_SIG, 2, False)
    sd |= {"projector.fc1.weight": torch.randn(4 * fused, fused), "projector.fc1.bias": torch.randn(4 * fused),
           "projector.fc2.weight": torch.randn(D_LLM, 4 * fused), "projector.fc2.bias": torch.randn(D_LLM),
           "projector.fc3.weight": torch.randn(D_LLM, D_LLM), "projector.fc3.bias": torch.randn(D_LLM)}
    return sd | {f"language_model.{k}": v.clone() for k, v in llama.state_dict().items()}


def write_folder(folder, sd: dict[str, torch.Tensor], shards: int = 3) -> None:
    """Shards + index + config.json + dataset_statistics.json, as the Hub repo holds them."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(sd)
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[i::shards]
        save_file({k: sd[k].contiguous() for k in part}, str(folder / name))
        weight_map |= dict.fromkeys(part, name)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = {"model_type": "openvla", "vision_backbone_id": "dinosiglip-vit-so-224px",
              "llm_backbone_id": "llama2-7b-pure", "use_fused_vision_backbone": True,
              "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
              "image_sizes": [28, 28], "n_action_bins": 256, "pad_to_multiple_of": PAD, "pad_token_id": VOCAB,
              "text_config": TEXT_CONFIG, "norm_stats": STATS}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "dataset_statistics.json").write_text(json.dumps(STATS))


@pytest.fixture(scope="module")
def llama():
    return llama_source()


@pytest.fixture()
def hf_dir(tmp_path, llama):
    write_folder(tmp_path / "openvla-7b", openvla_state(llama))
    return tmp_path / "openvla-7b"


@pytest.fixture()
def converted(hf_dir, tmp_path):
    path, conv = convert_openvla(hf_dir, tmp_path / "out", BASE, unnorm_key="bridge_orig", cognition_id=COG,
                                 accept_gaps=True)
    return path, conv, load_checkpoint(path)


def test_config_is_read_from_the_shapes_and_config_json(hf_dir):
    src, hf = read_source(hf_dir)
    cfg = infer_config(src, hf, BASE, 7)
    assert (cfg.vision.image_size, cfg.vision.dinov2.hidden_size, cfg.vision.siglip.hidden_size) == (28, D_DINO, D_SIG)
    assert (cfg.llm.hidden_size, cfg.llm.num_layers, cfg.llm.intermediate_size) == (D_LLM, LAYERS, FFN)
    assert (cfg.llm.vocab_size, cfg.llm.num_heads, cfg.llm.num_kv_heads) == (VOCAB, HEADS, KV_HEADS)
    assert cfg.llm.rms_norm_eps == 1e-6  # LlamaConfig's default, which OpenVLA's export runs with (not 1e-5)
    ah = cfg.action_head
    assert (ah.type, ah.num_bins, ah.chunk_size, ah.action_dim) == ("autoregressive", 256, 1, 7)
    assert cfg.router.num_active_layers == LAYERS  # the preset's k=4 clamped to the 3 layers


def test_openvla_7b_config_defaults():
    tc = llama_config({"text_config": {"model_type": "llama", "pad_token_id": 32000, "torch_dtype": "bfloat16",
                                       "vocab_size": 32064}})
    assert (tc.hidden_size, tc.num_hidden_layers, tc.num_attention_heads, tc.rms_norm_eps) == (4096, 32, 32, 1e-6)
    with pytest.raises(CheckpointError, match="LLaMA only"):
        llama_config({"text_config": {"model_type": "mistral"}})


def test_refuses_with_the_gaps_listed_and_writes_nothing(hf_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match="DINOv2 registers") as exc:
        convert_openvla(hf_dir, out, BASE, unnorm_key="bridge_orig", cognition_id=COG)
    msg = str(exc.value)
    assert "feature layer" in msg and "prompt layout" in msg and "tokenizer" in msg and "--accept-gaps" in msg
    assert not out.exists()


def test_several_datasets_need_an_unnorm_key(hf_dir, tmp_path):
    with pytest.raises(CheckpointError, match="--unnorm-key") as exc:
        convert_openvla(hf_dir, tmp_path / "out", BASE, cognition_id=COG, accept_gaps=True)
    assert "bridge_orig" in str(exc.value) and "fractal20220817_data" in str(exc.value)
    with pytest.raises(CheckpointError, match="available") as exc:
        convert_openvla(hf_dir, tmp_path / "out", BASE, unnorm_key="libero", cognition_id=COG, accept_gaps=True)
    assert "bridge_orig" in str(exc.value)
    assert not (tmp_path / "out").exists()


def test_stats_fall_back_to_config_norm_stats_then_refuse(hf_dir, tmp_path):
    (hf_dir / "dataset_statistics.json").unlink()
    path, _ = convert_openvla(hf_dir, tmp_path / "a", BASE, unnorm_key="fractal20220817_data", cognition_id=COG,
                              accept_gaps=True)
    _, _, stats = load_checkpoint(path)
    assert stats.q99.tolist() == [0.3] * 7 and stats.mask.all()  # no mask in the entry: every dim normalized
    config = json.loads((hf_dir / "config.json").read_text())
    del config["norm_stats"]
    (hf_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="--identity-stats"):
        convert_openvla(hf_dir, tmp_path / "b", BASE, cognition_id=COG, accept_gaps=True)


def test_refuses_unmatched_keys_in_both_directions(tmp_path, llama):
    sd = openvla_state(llama)
    sd["vision_backbone.featurizer.blocks.0.attn.q_norm.weight"] = torch.ones(D_DINO)
    del sd["language_model.model.norm.weight"]
    write_folder(tmp_path / "odd", sd)
    out = tmp_path / "out"
    with pytest.raises(UnmatchedKeysError) as exc:
        convert_openvla(tmp_path / "odd", out, BASE, unnorm_key="bridge_orig", cognition_id=COG, accept_gaps=True)
    msg = str(exc.value)
    assert "vision_backbone.featurizer.blocks.0.attn.q_norm.weight" in msg  # source key no rule maps
    assert "llm.norm.weight" in msg  # our key nothing fills
    assert not out.exists()


def test_shard_problems_are_named(hf_dir):
    original = (hf_dir / "model.safetensors.index.json").read_text()
    index = json.loads(original)
    index["weight_map"]["language_model.model.extra"] = "model-00001-of-00003.safetensors"
    (hf_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"language_model\.model\.extra"):
        read_hf_weights(hf_dir)
    (hf_dir / "model.safetensors.index.json").write_text(original)
    (hf_dir / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model-00002-of-00003\.safetensors is missing"):
        read_hf_weights(hf_dir)


def test_written_checkpoint_keeps_the_real_ids_and_the_chosen_stats(converted, llama):
    _, conv, (model, cfg, stats) = converted
    assert cfg.llm.vocab_size == VOCAB and model.llm.embed_tokens.weight.shape == (VOCAB, D_LLM)
    assert model.action_head.lm_head.weight.shape == (VOCAB, D_LLM)
    assert model.action_head.tokenizer.first_id == VOCAB - 256  # OpenVLA's bins: ids vocab_size - 1..256
    torch.testing.assert_close(model.cognition_token[0, 0], llama.model.embed_tokens.weight[COG])
    assert stats.q99.tolist() == [0.2] * 6 + [1.0] and stats.mask.tolist() == [True] * 6 + [False]
    assert model.encode_image(torch.rand(1, 3, 28, 28)).shape == (1, 4, D_LLM)  # the vision config fits too
    assert any(k.endswith("reg_token") for k in conv.ignored)
    assert all("attn_pool" in k for k in conv.ignored if k.startswith("vision_backbone.fused_featurizer"))


def test_llm_round_trip_against_llama_for_causal_lm(converted, llama):
    _, _, (model, _, _) = converted
    ids = torch.randint(0, VOCAB, (2, 11))
    key_mask = torch.ones(2, 11, dtype=torch.bool)
    with torch.no_grad():
        ours = model.llm(model.embed_text(ids), key_mask)
        ref = llama(input_ids=ids, output_hidden_states=True)
        torch.testing.assert_close(ours, ref.hidden_states[-1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.action_head.logits(ours), ref.logits[..., :VOCAB], atol=1e-5, rtol=1e-5)


def openvla_decode(llama, embeds: torch.Tensor, steps: int) -> np.ndarray:
    """OpenVLA's greedy decode of `steps` action tokens (full recompute each token; argmax among the bins, where a
    trained OpenVLA's argmax lands) and `predict_action`'s de-tokenization, written from its published code."""
    ids = []
    with torch.no_grad():
        for _ in range(steps):
            logits = llama(inputs_embeds=embeds).logits[:, -1, :VOCAB]  # (B, V)
            nxt = logits[:, VOCAB - 256:].argmax(-1) + VOCAB - 256
            ids.append(nxt)
            embeds = torch.cat([embeds, llama.model.embed_tokens(nxt)[:, None]], dim=1)
    token_ids = torch.stack(ids, dim=1).numpy()
    bins = np.linspace(-1, 1, 256)
    centers = (bins[:-1] + bins[1:]) / 2.0
    return centers[np.clip(VOCAB - token_ids - 1, 0, centers.shape[0] - 1)]


def test_action_decode_matches_openvla_greedy(converted, llama):
    _, _, (model, _, _) = converted
    torch.manual_seed(3)
    img = torch.randn(2, 4, D_LLM) * 0.02
    text = model.embed_text(torch.randint(0, VOCAB, (2, 6)))
    h = torch.cat([img, text, model.cognition_token.expand(2, -1, -1)], dim=1)
    key_mask = torch.ones(h.shape[:2], dtype=torch.bool)
    with torch.no_grad():
        ours = model.decode_actions(h, key_mask, layers=range(LAYERS)).squeeze(1).numpy()
    ref = openvla_decode(llama, h, 7)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)  # same bins (torch vs numpy linspace rounding)
    assert len(np.unique(ref)) > 1  # not vacuous


def test_vit_keys_map_onto_transformers_names(hf_dir, converted):
    src, _ = read_source(hf_dir)
    _, _, (model, _, _) = converted
    sd = model.state_dict()
    p = "vision_backbone.featurizer."
    torch.testing.assert_close(sd["vision.dinov2.encoder.layer.1.layer_scale2.lambda1"],
                               src[f"{p}blocks.1.ls2.scale_factor"])
    pos = sd["vision.dinov2.embeddings.position_embeddings"]
    assert pos.shape == (1, 5, D_DINO) and not pos[0, 0].any()
    qkv = src["vision_backbone.fused_featurizer.blocks.1.attn.qkv.weight"]
    torch.testing.assert_close(sd["vision.siglip.encoder.layers.1.self_attn.k_proj.weight"], qkv[D_SIG:2 * D_SIG])
    torch.testing.assert_close(sd["vision.projector.4.bias"], src["projector.fc3.bias"])


def test_put_keeps_whole_tensors_and_copies_views():
    conv = Conversion()
    whole, table = torch.randn(4, 3), torch.randn(6, 3)
    conv.put("a", whole)
    conv.put("b", table[:4])
    conv.put("c", whole)  # a second target of the same tensor gets its own storage
    assert conv.weights["a"].data_ptr() == whole.data_ptr()
    assert conv.weights["b"].untyped_storage().nbytes() == 4 * 3 * 4
    assert conv.weights["c"].data_ptr() != whole.data_ptr()


def test_cli_converts_and_lists_the_gaps(hf_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["convert", "--from", "openvla", str(hf_dir), "--out", str(out), "--preset", "openvla-tiny",
            "--unnorm-key", "bridge_orig", "--cognition-id", str(COG)]
    assert main(args) == 2
    assert "DINOv2 registers" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--accept-gaps"]) == 0
    assert "gap: prompt layout" in capsys.readouterr().out and (out / "model.safetensors").is_file()
    assert main([*args[:-2], "--accept-gaps"]) == 2  # 29871 is not among 1024 ids
    assert "cognition id 29871" in capsys.readouterr().err
    assert main([*args, "--ema"]) == 2
