"""π0 -> MoLe converter on synthetic LeRobot π0 folders with the real key names and shape relations.

The source is transformers' own `PI0ForConditionalGeneration` at tiny sizes (PaliGemma: SigLIP + Gemma with one
key/value head; a Gemma expert with its own width and the same head_dim), its keys renamed to LeRobot's two
layouts: the older (`paligemma.language_model.model.*`, `vision_tower.vision_model.*`, normalization buffers in
model.safetensors) and the newer (`paligemma.model.*`, the tied embedding saved only as `lm_head`, a
`policy_postprocessor.json` unnormalizer). Round trips compare the converted model with that source model. No real
π0 weights.
"""

import json

import pytest
import torch
from safetensors.torch import save_file

from mole_inference.cli import main
from mole_inference.config import preset
from mole_inference.convert.mapping import UnmatchedKeysError
from mole_inference.convert.pi0 import convert_pi0, infer_config, read_source
from mole_inference.errors import CheckpointError
from mole_inference.model.checkpoint import load_checkpoint
from mole_inference.model.flow_expert import PrefixKV
from mole_inference.model.flow_matching import time_embedding

WIDTH, EXPERT, HEAD_DIM, LAYERS, VOCAB, CHUNK, ACTION, STATE = 64, 48, 16, 2, 300, 5, 7, 8
BASE = preset("pi0-tiny")  # 4 LLM heads of 16 over width 64, SigLIP heads 2
P = "model.paligemma_with_expert."
MEAN, STD = [0.1 * i for i in range(ACTION)], [0.5 + 0.1 * i for i in range(ACTION)]


def pi0_source():
    """transformers' PI0ForConditionalGeneration at tiny size, Gemma norms randomized (they init at zero)."""
    from transformers import PI0Config, PI0ForConditionalGeneration

    text = {"model_type": "gemma", "hidden_size": WIDTH, "num_hidden_layers": LAYERS, "intermediate_size": 128,
            "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": HEAD_DIM, "vocab_size": VOCAB}
    vision = {"model_type": "siglip_vision_model", "hidden_size": 24, "intermediate_size": 48, "patch_size": 14,
              "image_size": 28, "num_hidden_layers": 2, "num_attention_heads": 2, "vision_use_head": False}
    dit = {"hidden_size": EXPERT, "num_hidden_layers": LAYERS, "intermediate_size": 96, "num_attention_heads": 4,
           "num_key_value_heads": 1, "head_dim": HEAD_DIM}
    cfg = PI0Config(vlm_config={"text_config": text, "vision_config": vision, "projection_dim": WIDTH,
                                "image_token_id": VOCAB - 1}, dit_config=dit, chunk_size=CHUNK)
    torch.manual_seed(0)
    model = PI0ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") and ".vision_tower." not in name:
                p.normal_(0.0, 0.3)
            elif name.startswith("embed_action_time") or name.startswith("action_out_proj"):
                p.normal_(0.0, 0.2)
    return model


def lerobot_state(pi0, layout: str) -> dict[str, torch.Tensor]:
    """`PI0Policy.state_dict()` key names of LeRobot's older or newer checkpoints."""
    newer = layout == "newer"
    pali = f"{P}paligemma.model." if newer else f"{P}paligemma."
    sd = {}
    for k, v in pi0.state_dict().items():
        v = v.clone()
        if k.startswith("model.vlm.language_model."):
            rest = k[len("model.vlm.language_model."):]
            if rest == "embed_tokens.weight":  # tied: the Hub's newer files hold only lm_head
                sd[f"{P}paligemma.lm_head.weight" if newer else f"{P}paligemma.language_model.model.{rest}"] = v
            else:
                sd[(f"{pali}language_model." if newer else f"{pali}language_model.model.") + rest] = v
        elif k.startswith("model.vlm.vision_tower."):
            sd[f"{pali}vision_tower.vision_model." + k[len("model.vlm.vision_tower."):]] = v
        elif k.startswith("model.vlm.multi_modal_projector."):
            sd[f"{pali}multi_modal_projector." + k[len("model.vlm.multi_modal_projector."):]] = v
        elif k == "model.dit.embed_tokens.weight":
            sd[f"{P}gemma_expert.lm_head.weight"] = v  # LeRobot sets the expert's embed_tokens to None
        elif k.startswith("model.dit."):
            sd[f"{P}gemma_expert.model." + k[len("model.dit."):]] = v
        else:
            sd["model." + k.removeprefix("embed_action_time.")] = v
    if not newer:  # LeRobot < 0.4: Normalize / Unnormalize buffers inside the policy
        for mod in ("normalize_targets", "unnormalize_outputs"):
            sd[f"{mod}.buffer_action.mean"], sd[f"{mod}.buffer_action.std"] = torch.tensor(MEAN), torch.tensor(STD)
        sd["normalize_inputs.buffer_observation_state.mean"] = torch.zeros(STATE)
        sd["normalize_inputs.buffer_observation_state.std"] = torch.ones(STATE)
    return sd


def write_folder(folder, sd: dict[str, torch.Tensor], layout: str, mode: str = "MEAN_STD") -> None:
    """model.safetensors + config.json (+ the newer postprocessor files), as LeRobot's save_pretrained writes."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"))
    config = {"type": "pi0", "n_obs_steps": 1, "chunk_size": CHUNK, "n_action_steps": CHUNK, "max_state_dim": 32,
              "max_action_dim": 32, "tokenizer_max_length": 6,
              "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": mode},
              "input_features": {"observation.state": {"type": "STATE", "shape": [STATE]},
                                 "observation.images.top": {"type": "VISUAL", "shape": [3, 224, 224]}},
              "output_features": {"action": {"type": "ACTION", "shape": [ACTION]}}}
    config |= {"num_inference_steps": 10, "min_period": 4e-3, "max_period": 4.0} if layout == "newer" else \
        {"num_steps": 10, "proj_width": EXPERT}
    (folder / "config.json").write_text(json.dumps(config))
    if layout == "newer":
        state_file = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
        stats = {"action.mean": torch.tensor(MEAN), "action.std": torch.tensor(STD),
                 "action.min": torch.tensor(MEAN) - 1, "action.max": torch.tensor(MEAN) + 2}
        save_file(stats, str(folder / state_file))
        steps = [{"registry_name": "unnormalizer_processor", "state_file": state_file,
                  "config": {"eps": 1e-8, "norm_map": {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": mode}}},
                 {"registry_name": "device_processor", "config": {"device": "cpu"}}]
        (folder / "policy_postprocessor.json").write_text(json.dumps({"name": "policy_postprocessor",
                                                                      "steps": steps}))


@pytest.fixture(scope="module")
def pi0():
    return pi0_source()


@pytest.fixture(params=["older", "newer"])
def src_dir(request, tmp_path, pi0):
    write_folder(tmp_path / "pi0", lerobot_state(pi0, request.param), request.param)
    return tmp_path / "pi0"


@pytest.fixture()
def converted(src_dir, tmp_path):
    path, conv = convert_pi0(src_dir, tmp_path / "out", BASE, accept_gaps=True)
    return path, conv, load_checkpoint(path)


def test_config_is_read_from_the_shapes_and_config_json(src_dir):
    src, hf, _ = read_source(src_dir)
    cfg = infer_config(src, hf, BASE, ACTION)
    assert (cfg.vision.backbones, cfg.vision.image_size, cfg.vision.siglip.hidden_size) == ("siglip", 28, 24)
    assert (cfg.llm.hidden_size, cfg.llm.num_layers, cfg.llm.intermediate_size, cfg.llm.vocab_size) == (
        WIDTH, LAYERS, 128, VOCAB)
    assert (cfg.llm.num_kv_heads, cfg.llm.hidden_act, cfg.llm.max_text_tokens) == (1, "gelu_pytorch_tanh", 6)
    ah = cfg.action_head
    assert (ah.type, ah.hidden_size, ah.depth, ah.num_heads, ah.head_dim, ah.num_kv_heads) == (
        "flow", EXPERT, LAYERS, 4, HEAD_DIM, 1)
    assert (ah.mlp_ratio, ah.chunk_size, ah.action_dim, ah.flow_steps) == (2.0, CHUNK, ACTION, 10)
    assert cfg.router.num_active_layers == LAYERS  # the preset's k=4 clamped to 2 layers


def test_both_layouts_give_the_same_checkpoint(tmp_path, pi0):
    out = {}
    for layout in ("older", "newer"):
        write_folder(tmp_path / layout, lerobot_state(pi0, layout), layout)
        path, _ = convert_pi0(tmp_path / layout, tmp_path / f"out-{layout}", BASE, accept_gaps=True)
        out[layout] = load_checkpoint(path)
    a, b = (out[x][0].state_dict() for x in ("older", "newer"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for _, _, stats in out.values():  # mean/std as q01 = mean - std, q99 = mean + std; every dim normalized
        torch.testing.assert_close(torch.tensor(stats.q01), torch.tensor(MEAN) - torch.tensor(STD), check_dtype=False)
        assert stats.mask.all()


def test_llm_round_trip_against_gemma(converted, pi0):
    _, _, (model, _, _) = converted
    ids = torch.randint(0, VOCAB - 1, (2, 9))
    with torch.no_grad():
        ours = model.llm(model.embed_text(ids), torch.ones(2, 9, dtype=torch.bool))
        ref = pi0.model.vlm.language_model(input_ids=ids).last_hidden_state  # GemmaModel, bidirectional in π0
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_causal_llm_round_trip_against_gemma_for_causal_lm(converted, pi0):
    """The same weights as a causal decoder: transformers' GemmaForCausalLM vs our MoLeLLM with causal=True."""
    from transformers import GemmaConfig, GemmaForCausalLM

    from mole_inference.model.llm import MoLeLLM

    _, _, (model, cfg, _) = converted
    text = pi0.config.vlm_config.text_config.to_dict()
    text.pop("use_bidirectional_attention", None)
    gemma = GemmaForCausalLM(GemmaConfig(**text)).eval()
    gemma.model.load_state_dict(pi0.model.vlm.language_model.state_dict())
    ours = MoLeLLM(cfg.llm, causal=True).eval()
    ours.load_state_dict({k[len("llm."):]: v for k, v in model.state_dict().items() if k.startswith("llm.")})
    ids = torch.randint(0, VOCAB - 1, (2, 9))
    with torch.no_grad():
        ref = gemma(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        torch.testing.assert_close(ours(ours.embed_tokens(ids), torch.ones(2, 9, dtype=torch.bool)), ref,
                                   atol=1e-5, rtol=1e-5)


def test_vision_round_trip_against_paligemma(converted, pi0):
    _, _, (model, _, _) = converted
    pixels = torch.rand(2, 3, 28, 28)
    with torch.no_grad():
        ref = pi0.model.vlm.get_image_features(pixels * 2 - 1).pooler_output  # what π0's embed_prefix feeds
        torch.testing.assert_close(model.encode_image(pixels), ref, atol=1e-5, rtol=1e-5)


def test_expert_velocity_matches_pi0(converted, pi0, monkeypatch):
    """Same prefix (our [image | text | cognition], no padding), zero state: our expert reading our prefill's
    keys/values gives π0's velocity on the first ACTION dims (π0's padded dims held at zero).

    transformers computes the flow-time embedding in float32 (angles up to 2 pi t / 4e-3 lose ~1e-4); LeRobot's
    `create_sinusoidal_pos_embedding` and ours use float64. The two agree to float32 rounding (checked here), then
    the reference uses ours so the comparison isolates the weights."""
    _, _, (model, _, _) = converted
    sinus = pi0.embed_action_time.sinusoid_embeds
    times = torch.linspace(0, 1, 11)
    torch.testing.assert_close(sinus(times), time_embedding(times, EXPERT), atol=5e-4, rtol=0)
    monkeypatch.setattr(sinus, "forward", lambda time: time_embedding(time, EXPERT))
    torch.manual_seed(4)
    h = torch.cat([model.encode_image(torch.rand(2, 3, 28, 28)), model.embed_text(torch.randint(0, VOCAB - 1, (2, 5))),
                   model.cognition_token.expand(2, -1, -1)], dim=1)
    mask = torch.ones(h.shape[:2], dtype=torch.bool)
    x, t = torch.randn(2, CHUNK, ACTION), torch.tensor([0.3, 0.9])
    with torch.no_grad():
        _, cache = model.prefill(h, mask, layers=range(LAYERS))
        ours = model.action_head(x, t, PrefixKV(cache), mask, layers=range(LAYERS))
        ref = pi0(state=torch.zeros(2, 32), noise=torch.nn.functional.pad(x, (0, 32 - ACTION)), timestep=t,
                  inputs_embeds=h, pixel_values=torch.zeros(1), attention_mask=mask.long()).logits[..., :ACTION]
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert ref.abs().max() > 0.1  # not vacuous


def test_cognition_token_is_the_scaled_bos_row(converted, pi0):
    _, _, (model, _, _) = converted
    table = pi0.model.vlm.language_model.embed_tokens.weight
    torch.testing.assert_close(model.cognition_token[0, 0], table[2] * WIDTH ** 0.5)


def test_refuses_with_the_gaps_listed_and_writes_nothing(src_dir, tmp_path):
    out = tmp_path / "refused"
    with pytest.raises(CheckpointError, match="state input") as exc:
        convert_pi0(src_dir, out, BASE)
    msg = str(exc.value)
    for gap in ("prompt layout", "padded action dims", "action normalization", "tokenizer", "--accept-gaps"):
        assert gap in msg
    assert "activation" not in msg and not out.exists()


def test_min_max_stats_are_exact_and_no_gap(tmp_path, pi0):
    write_folder(tmp_path / "mm", lerobot_state(pi0, "newer"), "newer", mode="MIN_MAX")
    path, conv = convert_pi0(tmp_path / "mm", tmp_path / "out", BASE, accept_gaps=True)
    _, _, stats = load_checkpoint(path)
    torch.testing.assert_close(torch.tensor(stats.q99), torch.tensor(MEAN) + 2, check_dtype=False)
    assert not any("normalization" in g for g in conv.gaps)


def test_untrained_stats_need_a_file_or_identity(tmp_path, pi0):
    sd = lerobot_state(pi0, "older")
    for k in [k for k in sd if k.startswith("unnormalize_outputs.")]:
        sd[k] = torch.full((ACTION,), torch.inf)  # LeRobot's placeholder in checkpoints saved without stats
    write_folder(tmp_path / "base", sd, "older")
    with pytest.raises(CheckpointError, match="--identity-stats"):
        convert_pi0(tmp_path / "base", tmp_path / "a", BASE, accept_gaps=True)
    stats_file = tmp_path / "action_stats.json"
    stats_file.write_text(json.dumps({"q01": [-1.0] * ACTION, "q99": [2.0] * ACTION, "mask": [True] * ACTION}))
    path, _ = convert_pi0(tmp_path / "base", tmp_path / "b", BASE, stats_path=stats_file, accept_gaps=True)
    assert load_checkpoint(path)[2].q99.tolist() == [2.0] * ACTION
    path, _ = convert_pi0(tmp_path / "base", tmp_path / "c", BASE, identity_stats=True, accept_gaps=True)
    assert load_checkpoint(path)[2].q01.shape == (ACTION,)


def test_refuses_unmatched_keys_in_both_directions(tmp_path, pi0):
    sd = lerobot_state(pi0, "older")
    sd[f"{P}paligemma.language_model.model.layers.0.self_attn.q_norm.weight"] = torch.ones(HEAD_DIM)
    sd["model.time_proj.weight"] = torch.ones(EXPERT, EXPERT)  # pi05-like extra
    del sd[f"{P}gemma_expert.model.norm.weight"]
    write_folder(tmp_path / "odd", sd, "older")
    with pytest.raises(UnmatchedKeysError) as exc:
        convert_pi0(tmp_path / "odd", tmp_path / "out", BASE, accept_gaps=True)
    msg = str(exc.value)
    assert "source keys match no rule:\n    model.time_proj.weight" in msg  # source key no rule maps
    assert "llm.layers.0.self_attn.q_norm.weight" in msg  # mapped by name, but our layer has no such tensor
    assert "action_head.norm.weight" in msg  # our key nothing fills
    assert not (tmp_path / "out").exists()


def test_missing_files_and_other_policies_are_named(tmp_path, pi0):
    folder = tmp_path / "p"
    write_folder(folder, lerobot_state(pi0, "older"), "older")
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        convert_pi0(folder, tmp_path / "out", BASE, accept_gaps=True)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        convert_pi0(folder, tmp_path / "out", BASE, accept_gaps=True)
    (folder / "config.json").write_text(json.dumps({"type": "pi05"}))
    with pytest.raises(CheckpointError, match="pi05"):
        convert_pi0(folder, tmp_path / "out", BASE, accept_gaps=True)


def test_cli_converts_and_lists_the_gaps(src_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["convert", "--from", "pi0", str(src_dir), "--out", str(out), "--preset", "pi0-tiny"]
    assert main(args) == 2
    assert "state input" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--accept-gaps"]) == 0
    assert "gap: prompt layout" in capsys.readouterr().out and (out / "model.safetensors").is_file()
    assert main([*args, "--accept-gaps", "--cognition-id", str(VOCAB)]) == 2
    assert "cognition id" in capsys.readouterr().err
    assert main([*args, "--ema"]) == 2
