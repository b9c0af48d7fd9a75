"""What the router does on real frames: layers picked, router probabilities and entropy, and how much each layer
changes the hidden state (cosine similarity of a layer's input and output, paper Fig. 1B) with all layers run
and with only the layers MoLe picked.

The layer loop mirrors `MoLeLLM.forward(layers=...)` (same attention bias, rotary embedding and ascending layer
order) and only adds a cosine per layer; `routed_hidden` after the final norm equals the model's own
`hidden_states(..., layers=chosen)` (tests/analysis check this). Deterministic: no dropout (eval mode), no noise
(the action head is not run).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mole_inference.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from mole_inference.model.vla import MoLeVLA
    from mole_inference.training.dataset import SampleTable

log = logging.getLogger(__name__)

TOKEN_OR_EXIT_ROUTERS = ("mod", "dynamic_exit")  # their layers are not `model.select(...)`


@dataclass
class RoutingAnalysis:
    """Per-frame routing of one model over a SampleTable (F frames, K layers)."""

    tasks: list[str]
    episodes: list[str]
    task_id: np.ndarray  # (F,) into tasks
    episode_id: np.ndarray  # (F,) into episodes
    layers: list[list[int]]  # (F,) layers run, ascending
    probs: np.ndarray  # (F, K) router softmax
    cos_full: np.ndarray  # (F, K) cos(input, output) of each layer, every layer run
    cos_routed: np.ndarray  # (F, K) the same along the routed path; NaN where the layer did not run

    @property
    def num_layers(self) -> int:
        """K."""
        return self.probs.shape[1]

    @property
    def entropy(self) -> np.ndarray:
        """(F,) entropy of the router's layer distribution in nats (max ln K)."""
        p = np.clip(self.probs, 1e-12, 1.0)
        return -(self.probs * np.log(p)).sum(axis=1)

    def ran(self) -> np.ndarray:
        """(F, K) bool: layer k ran on frame f."""
        out = np.zeros(self.probs.shape, dtype=bool)
        for f, layers in enumerate(self.layers):
            out[f, layers] = True
        return out

    def usage(self) -> dict[str, np.ndarray]:
        """Task -> (K,) fraction of its frames in which each layer ran."""
        ran = self.ran()
        return {t: ran[self.task_id == i].mean(axis=0) for i, t in enumerate(self.tasks) if (self.task_id == i).any()}

    def entropy_by_task(self) -> dict[str, np.ndarray]:
        """Task -> (frames,) router entropy in nats."""
        ent = self.entropy
        return {t: ent[self.task_id == i] for i, t in enumerate(self.tasks) if (self.task_id == i).any()}

    def cosine_means(self) -> tuple[np.ndarray, np.ndarray]:
        """(K,) mean cosine per layer with all layers run, and along the routed path (NaN: never ran)."""
        routed = np.full(self.num_layers, np.nan)
        for k in range(self.num_layers):
            col = self.cos_routed[:, k]
            if np.isfinite(col).any():
                routed[k] = float(np.nanmean(col))
        return self.cos_full.mean(axis=0), routed

    def episode_layers(self, episode: int) -> list[list[int]]:
        """Layers run per frame of one episode, in time order."""
        return [self.layers[f] for f in np.flatnonzero(self.episode_id == episode)]


def layer_cosines(model: MoLeVLA, h: torch.Tensor, key_mask: torch.Tensor, layers: Sequence[int]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `layers` (ascending) on prompt embeddings h (B, S, D); return cos(in, out) per layer (B, K), NaN for
    layers not run, averaged over the unmasked tokens, and the final-norm hidden states (B, S, D)."""
    import torch
    import torch.nn.functional as F

    from mole_inference.model.llm import attention_bias

    llm = model.llm
    bias = attention_bias(key_mask, h.dtype, causal=llm.causal)
    rope = llm.rope(h)
    valid = key_mask.to(torch.float32)  # (B, S)
    out = torch.full((h.shape[0], len(llm.layers)), float("nan"))
    for k in sorted(layers):
        nxt = llm.run_layer(k, h, bias, rope)
        cos = F.cosine_similarity(h.float(), nxt.float(), dim=-1)  # (B, S)
        out[:, k] = ((cos * valid).sum(dim=1) / valid.sum(dim=1)).cpu()
        h = nxt
    return out, llm.norm(h)


def analyze_routing(model: MoLeVLA, table: SampleTable, batch_size: int = 16, device: str = "cpu",
                    max_frames: int | None = None) -> RoutingAnalysis:
    """Route every frame of `table` (the first `max_frames` if set) and measure layer cosines both ways."""
    import torch

    from mole_inference.model.tokenizer import load_tokenizer, tokenize_batch

    cfg = model.cfg
    if cfg.router.type in TOKEN_OR_EXIT_ROUTERS:
        raise ConfigError(f"router.type={cfg.router.type!r} decides inside the layer loop (per token or by early "
                          f"exit); analyze reads layer routers that pick layers up front (star, linear, random, ...)")
    tok = load_tokenizer(cfg.llm.tokenizer, cfg.llm.vocab_size, cfg.llm.text_tokenizer)
    ids_all, mask_all = tokenize_batch(tok, table.instructions, cfg.llm.max_text_tokens)  # (I, T)
    n = len(table) if max_frames is None else min(len(table), max_frames)
    k_all = range(model.num_layers)
    layers: list[list[int]] = []
    probs, cos_full, cos_routed = [], [], []
    model.eval()
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            sl = slice(start, min(n, start + batch_size))
            frames = table.frames[sl]  # (B, S, S, 3) uint8, already at the model's input size
            pixels = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))).float().div(255.0)
            instr = torch.from_numpy(np.asarray(table.instruction_id[sl], dtype=np.int64))
            pixels, ids, text_mask = pixels.to(device), ids_all[instr].to(device), mask_all[instr].to(device)
            img, text = model.encode_image(pixels), model.embed_text(ids)  # (B, N, D), (B, T, D)
            out = model.route(img, text, text_mask)
            chosen = model.select(out)
            h, key_mask = model.prompt(img, text, text_mask)  # (B, S, D), (B, S)
            cos_full.append(layer_cosines(model, h, key_mask, k_all)[0])
            routed = torch.full((h.shape[0], model.num_layers), float("nan"))
            for path in {tuple(c) for c in chosen}:  # one batched pass per distinct set of layers
                rows = [i for i, c in enumerate(chosen) if tuple(c) == path]
                routed[rows] = layer_cosines(model, h[rows], key_mask[rows], path)[0]
            cos_routed.append(routed)
            probs.append(out.probs.float().cpu())
            layers += [list(c) for c in chosen]
    log.info("routed %d frames of %d tasks", n, len(table.tasks))
    return RoutingAnalysis(
        tasks=list(table.tasks), episodes=[str(p) for p in table.episodes],
        task_id=np.asarray(table.task_id[:n]), episode_id=np.asarray(table.episode_id[:n]), layers=layers,
        probs=torch.cat(probs).numpy().astype(np.float64), cos_full=torch.cat(cos_full).numpy().astype(np.float64),
        cos_routed=torch.cat(cos_routed).numpy().astype(np.float64))
