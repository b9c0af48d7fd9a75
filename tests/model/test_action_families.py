"""Action head families (paper Table 1): the autoregressive (OpenVLA) family next to the diffusion one (CogACT).

Tiny shapes on the CPU; the shipped checkpoint guards that the diffusion family still gives the same chunk.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mole_inference.config import models_dir, preset
from mole_inference.errors import ConfigError
from mole_inference.model.action_tokens import ActionTokenizer
from mole_inference.model.llm import LayerCache
from mole_inference.model.vla import MoLeVLA
from mole_inference.policy.contract import state_kwargs
from tests.model.conftest import ENC, VISION, forward_calls, inputs, micro

GOLDEN = Path(__file__).with_name("golden_mole_tiny_chunk.json")


def micro_openvla(**sections):
    """openvla-tiny shrunk to 4 layers of width 32 (a few ms per step), with both vision encoders."""
    return micro("openvla-tiny", **{"vision": {**VISION, "dinov2": ENC}, **sections})


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MoLeVLA(micro_openvla()).eval()


# --- discretization (openvla/openvla prismatic/vla/action_tokenizer.py) --------------------------------------------
def test_round_trip_is_within_half_a_bin_and_matches_numpy_digitize():
    tok = ActionTokenizer(32000, 256)
    x = torch.cat([torch.linspace(-1, 1, 2001), torch.rand(5000) * 2 - 1]).double()
    ids = tok.encode(x)
    edges = np.linspace(-1, 1, 256)
    np.testing.assert_array_equal(ids.numpy(), 32000 - np.digitize(x.numpy(), edges))  # OpenVLA's formula
    err = (tok.decode(ids) - x).abs().max().item()
    assert err <= tok.bin_width / 2 + 1e-12, err
    # outside [-1, 1] clips to the end bins; a decoded non-action id clips to the nearest bin centre
    assert tok.encode(torch.tensor([-5.0, 5.0])).tolist() == [31999, 31744]
    assert tok.decode(torch.tensor([0, 31743])).tolist() == [tok.centres[-1].item()] * 2


def test_the_256_ids_are_the_last_of_the_vocabulary():
    tok = ActionTokenizer(1024, 256)
    ids = tok.encode(torch.linspace(-1, 1, 100_000))
    assert set(ids.tolist()) == set(range(1024 - 256, 1024))
    assert tok.first_id == 768
    assert tok.encode(torch.tensor([1.0, -1.0])).tolist() == [768, 1023]  # larger value, smaller id (OpenVLA)


# --- decoding through the routed layers --------------------------------------------------------------------------
def test_kv_cache_decode_equals_full_recompute(model):
    pixels, ids, mask = inputs(model.cfg, batch=2)
    with torch.no_grad():
        img, text = model.encode_image(pixels), model.embed_text(ids)
        h, key_mask = model.prompt(img, text, mask)
        for layers in ([1, 3], [0, 1, 2, 3], [2]):
            cached = model.decode_actions(h, key_mask, layers, use_cache=True)
            full = model.decode_actions(h, key_mask, layers, use_cache=False)
            assert cached.shape == (2, 1, 7)
            torch.testing.assert_close(cached, full, rtol=0, atol=0)
        # hidden states of an appended token agree numerically, not only the greedy ids
        extra = model.llm.embed_tokens(torch.tensor([[250, 251], [280, 290]]))  # (2, 2, D)
        km = torch.cat([key_mask, torch.ones(2, 2, dtype=torch.bool)], dim=1)
        ref = model.llm(torch.cat([h, extra], dim=1), km, layers=[0, 2])[:, -2:]
        cache = LayerCache()
        model.llm(h, key_mask, layers=[0, 2], cache=cache)
        step1 = model.llm(extra[:, :1], km[:, :-1], layers=[0, 2], cache=cache)
        step2 = model.llm(extra[:, 1:], km, layers=[0, 2], cache=cache)
        torch.testing.assert_close(torch.cat([step1, step2], dim=1), ref, rtol=1e-5, atol=1e-5)


def test_skipped_layers_hold_no_cache(model):
    pixels, ids, mask = inputs(model.cfg)
    with torch.no_grad():
        h, key_mask = model.prompt(model.encode_image(pixels), model.embed_text(ids), mask)
        cache = LayerCache()
        model.llm(h, key_mask, layers=[3, 1], cache=cache)
        assert cache.layers == [1, 3]
        x = model.llm.embed_tokens(torch.tensor([[260]]))
        model.llm(x, torch.cat([key_mask, torch.ones(1, 1, dtype=torch.bool)], dim=1), layers=[1, 3], cache=cache)
    assert cache.layers == [1, 3]
    s = model.cfg.seq_len
    for k, v in cache.kv.values():
        assert k.shape[2] == v.shape[2] == s + 1  # the prompt and the one decoded token


def test_routing_runs_the_same_layers_for_all_seven_tokens(model):
    from mole_inference.runtime.torch_backend import TorchPolicy

    policy = TorchPolicy(model, model.cfg, _stats())
    with forward_calls(model.llm.layers) as (calls,):
        chunk = policy.infer(np.zeros((40, 50, 3), np.uint8), "pick up the red cube", seed=0)
    ran = list(chunk.routing.layers)
    assert len(ran) == model.cfg.router.num_active_layers
    assert {i for i, n in calls.items() if n} == set(ran)  # skipped layers are never called
    assert all(calls[i] == 7 for i in ran)  # one prefill + 6 decode steps, all through the routed layers
    assert chunk.actions.shape == (1, 7)  # one action per control step (chunk_size 1)
    assert chunk.actions[0, -1] in (0.0, 1.0)


def _stats():
    from mole_inference.model.action_stats import ActionStats

    return ActionStats.identity(7)


def test_a_one_row_chunk_drives_the_scheduler():
    from mole_inference.config.control import SchedulerConfig
    from mole_inference.control.scheduler import ChunkScheduler

    sched = ChunkScheduler(SchedulerConfig())
    row = np.array([[0.01, 0, 0, 0, 0, 0, 1.0]])
    assert sched.push(row, image_stamp=0.0, now=0.0)
    assert sched.next_action(0.0) is not None
    assert sched.next_action(0.1 + 1e-6) is None  # exhausted after one action_dt: hold until the next step


# --- training ----------------------------------------------------------------------------------------------------
def test_a_training_step_lowers_the_action_token_cross_entropy():
    from mole_inference.training.objective import MoLeObjective

    torch.manual_seed(0)
    cfg = micro_openvla(training={"distill": "mse+reverse_kl"})
    student, teacher = MoLeVLA(cfg), MoLeVLA(cfg)
    teacher.load_state_dict(student.state_dict())
    obj = MoLeObjective(student, cfg)
    pixels, ids, mask = inputs(cfg, batch=4, seed=1)
    actions = torch.rand((4, 1, 7)) * 2 - 1
    unused = torch.zeros(0)

    def loss():
        with torch.no_grad():
            th = teacher.forward_train(pixels, ids, mask, full=True)[0]
        return obj(pixels, ids, mask, actions, unused, unused, unused, th)

    opt = torch.optim.AdamW(obj.parameters(), lr=3e-3)
    first = loss()
    assert {"task", "cog", "lb", "loss"} <= set(first)
    assert first["task"].item() == pytest.approx(np.log(cfg.llm.vocab_size), rel=0.2)  # CE over the vocabulary
    assert torch.isfinite(first["cog"])
    losses = []
    for _ in range(10):
        opt.zero_grad()
        parts = loss()
        parts["loss"].backward()
        opt.step()
        losses.append(parts["task"].item())
    assert losses[1] < losses[0]  # one step already lowers it
    assert loss()["task"].item() < 0.7 * first["task"].item()


def test_cogkd_reads_the_prompt_alone():
    """With the action tokens appended (teacher forcing), the prompt's hidden states are those of the prompt."""
    torch.manual_seed(0)
    cfg = micro_openvla()
    m = MoLeVLA(cfg).eval()
    pixels, ids, mask = inputs(cfg)
    with torch.no_grad():
        alone = m.forward_train(pixels, ids, mask)[0]
        with_suffix = m.forward_train(pixels, ids, mask, suffix=torch.tensor([[250, 251, 252]]))[0]
    assert with_suffix.shape[1] == alone.shape[1] + 3 == cfg.seq_len + 3
    torch.testing.assert_close(with_suffix[:, : cfg.seq_len], alone, rtol=1e-5, atol=1e-5)


# --- configuration, accounting, export -----------------------------------------------------------------------------
def test_family_config_is_validated():
    assert preset("tiny").action_head.type == "diffusion"  # configs without the field keep the DiT head
    with pytest.raises(ConfigError, match="chunk_size"):
        preset("openvla-tiny", action_head={"chunk_size": 4})
    with pytest.raises(ConfigError, match=r"router\.type"):
        preset("openvla-tiny", router={"type": "mod"})
    with pytest.raises(ConfigError, match="did you mean 'autoregressive'"):
        preset("tiny", action_head={"type": "autoregresive"})


def test_openvla_7b_info_on_the_meta_device():
    from mole_inference.model.flops import parameter_counts, routed_step_flops, stage_flops, step_flops

    cfg = preset("openvla-7b")
    with torch.device("meta"):
        m = MoLeVLA(cfg)
    p = parameter_counts(m)
    assert p["action_head"] == 32000 * 4096  # LLaMA-2's LM head
    assert 7.4e9 < p["total"] < 7.7e9  # OpenVLA: 7.5 B
    f = stage_flops(cfg)
    assert f["action_head"] == 7 * 2 * 4096 * 256
    assert step_flops(cfg) - routed_step_flops(cfg) == 16 * f["llm_layer"] - f["router"]


# --- the diffusion family is unchanged ----------------------------------------------------------------------------
def test_shipped_checkpoint_chunk_is_unchanged():
    """The shipped checkpoint's chunk for a fixed image, instruction and seed, as recorded (first before the families
    existed; re-recorded with unchanged code when the shipped weights changed to stage K, and to stage M, which reads
    the robot state): the diffusion path stays what was evaluated. Re-record only together with new shipped
    weights. `guided`: the same chunk with the head's guidance the checkpoint ships with since session 11 (recorded
    after the unguided chunk was checked unchanged)."""
    from mole_inference.runtime.torch_backend import TorchPolicy

    ckpt = models_dir() / "mole-tiny"
    if not (ckpt / "model.safetensors").is_file():
        pytest.skip("models/mole-tiny is not present")
    golden = json.loads(GOLDEN.read_text())
    image = np.random.default_rng(golden["image_rng_seed"]).integers(0, 256, golden["image_shape"], dtype=np.uint8)
    shipped = TorchPolicy.from_checkpoint(ckpt)
    assert shipped.model.family == "diffusion"
    assert shipped.cfg.action_head.cfg_scale == golden["guided"]["cfg_scale"]
    unguided = TorchPolicy.from_checkpoint(ckpt, cfg_scale=golden["cfg_scale"])
    for policy, want in ((unguided, golden["actions"]), (shipped, golden["guided"]["actions"])):
        chunk = policy.infer(image, golden["instruction"], seed=golden["seed"],
                             **state_kwargs(policy, golden.get("state")))
        assert list(chunk.routing.layers) == golden["layers"]
        np.testing.assert_allclose(chunk.actions, np.array(want), rtol=0, atol=1e-6)


def test_info_and_bench_commands(capsys):
    from mole_inference.cli import main

    assert main(["info", "--preset", "openvla-7b", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parameters"]["action_head"] == 32000 * 4096 and 0.5 < report["flops_ratio"] < 0.6
    assert main(["bench", "--preset", "openvla-tiny", "--iters", "1", "--warmup", "0", "--json"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["active_layers"] == 4 and bench["total_layers"] == 8
