"""The autoregressive family's host loop over its exported stages: prefill the run layers, then greedy tokens.

The same computation as `MoLeVLA.decode_actions` with the cache in fixed host buffers (export/token_stages.py has
the layout): the router's prompt runs through the chosen layers' prefill stages, which return their keys/values;
each action token then runs through the same layers' decode stages only. A skipped layer has no buffer and its
stages are never called. Greedy choice and bin centres are the model's own (`ActionTokenizer.greedy`/`decode`),
so there is one definition of the bins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from mole_inference.config.model import ModelConfig
from mole_inference.export.stages import layer_stage
from mole_inference.export.token_stages import decode_stage, kv_shape, past_len
from mole_inference.model.action_tokens import ActionTokenizer

StageRunner = Callable[..., list[np.ndarray]]  # run(stage, **feeds) -> the stage's outputs, in manifest order


def prompt_key_mask(bias: np.ndarray) -> np.ndarray:
    """Valid prompt keys (S,) bool from the router's causal bias (1, 1, S, S): the last query sees exactly them."""
    return bias[0, 0, -1] == 0


def greedy_actions(run: StageRunner, cfg: ModelConfig, chosen: Sequence[int], h: np.ndarray, bias: np.ndarray,
                   cos: np.ndarray, sin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalized actions (1, A) float64 and their token ids (A,) int64 from the router's prompt outputs,
    decoding greedily through the `chosen` layers only."""
    tok = ActionTokenizer(cfg.llm.vocab_size, cfg.action_head.num_bins)
    s, a, p = cfg.seq_len, cfg.action_head.action_dim, past_len(cfg)

    def greedy(hidden: np.ndarray) -> np.ndarray:
        (logits,) = run("lm_head", hidden=np.ascontiguousarray(hidden))  # (1, num_bins)
        return tok.greedy(torch.from_numpy(logits)).numpy().reshape(1, 1)  # (1, 1) int64

    past: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for i in chosen:
        h, k, v = run(layer_stage(i), h=h, bias=bias, cos=cos, sin=sin)
        past[i] = (np.zeros(kv_shape(cfg, p), np.float32), np.zeros(kv_shape(cfg, p), np.float32))
        past[i][0][:, :, :s], past[i][1][:, :, :s] = k, v
    key_mask = np.zeros((1, p + 1), dtype=bool)
    key_mask[0, :s] = prompt_key_mask(bias)
    key_mask[0, -1] = True  # the fed token's own keys, appended after the P slots
    ids = [greedy(h[:, -1:])]
    for j in range(a - 1):  # feed tokens 0 .. A-2 at positions S .. S+A-2
        (x,) = run("token_embed", token=ids[-1])
        position = np.array([[s + j]], dtype=np.int64)
        for i in chosen:
            x, k, v = run(decode_stage(i), x=x, position=position, key_mask=key_mask, past_k=past[i][0],
                          past_v=past[i][1])
            if s + j < p:  # the newest token's keys are read by no later token
                past[i][0][:, :, s + j], past[i][1][:, :, s + j] = k[:, :, 0], v[:, :, 0]
        if s + j < p:
            key_mask[0, s + j] = True
        ids.append(greedy(x))
    tokens = np.concatenate(ids, axis=1)[0]  # (A,)
    return tok.decode(torch.from_numpy(tokens)).numpy()[None], tokens
