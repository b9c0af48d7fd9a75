"""DeeR-style dynamic early exit (Yue et al. 2024), a baseline of the paper's Table 1; inference only.

Layers run in order; after layer j the cognition feature f_j = norm(h_j[-1]) (what the action head would be
given on exiting there) is compared with f_{j-1} (f_0: the normed cognition input embedding), and the sample
exits once ||f_j - f_{j-1}|| / ||f_{j-1}|| < `exit_threshold` and j >= `exit_min_layers`. Threshold 0 never
exits (all K layers). DeeR compares consecutive action predictions of its exits; we compare the cognition
feature, which conditions the action head and costs no extra head call. Training runs every layer
(`exit_training: every_layer`), or each sample through a random depth (`random_depth`, `exit_depth_gate`), so the
head meets every exit's feature in training as DeeR's exits do.
`calibrate_exit_threshold` picks the threshold whose mean depth on calibration inputs is closest to a target
(K/2 by default, the compute budget of MoLe at k = K/2).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import torch

from mole_inference.model.llm import MoLeLLM, attention_bias


def exit_depth_gate(batch: int, num_layers: int, min_layers: int, device: torch.device | str = "cpu",
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Training gate (B, K) of `exit_training: random_depth`: row b is 1 on its first j_b layers and 0 after, j_b
    uniform in [min_layers, K] (each exit depth trained equally often, the full depth included)."""
    depth = torch.randint(min_layers, num_layers + 1, (batch, 1), generator=generator, device=device)
    return (torch.arange(num_layers, device=device).unsqueeze(0) < depth).float()


def relative_change(new: torch.Tensor, old: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """||new - old|| / ||old|| per row: (B, D), (B, D) -> (B,)."""
    return (new - old).norm(dim=-1) / old.norm(dim=-1).clamp_min(eps)


def exits(change: torch.Tensor, depth: int, threshold: float, min_layers: int) -> torch.Tensor:
    """Whether samples with relative change `change` (B,) after `depth` layers stop there (the exit rule)."""
    return (change < threshold) & (depth >= min_layers)


def run_with_exit(llm: MoLeLLM, h: torch.Tensor, key_mask: torch.Tensor, threshold: float, min_layers: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Final-norm hidden states (B, S, D), each sample as of its exit layer, and the layers run per sample (B,).

    Exited samples are left out of later layers' batches, so a single sample never calls the layers after it exits.
    """
    # rope is (1, S, Dh): broadcasts over samples
    bias, rope = attention_bias(key_mask, h.dtype, causal=llm.causal), llm.rope(h)
    ran = torch.zeros(h.shape[0], dtype=torch.long, device=h.device)
    active = torch.ones(h.shape[0], dtype=torch.bool, device=h.device)
    prev = llm.norm(h[:, -1])  # (B, D)
    for j in range(len(llm.layers)):
        idx = torch.nonzero(active).flatten()
        if idx.numel() == 0:
            break
        out = llm.run_layer(j, h[idx], bias[idx], rope)  # (b, S, D)
        h = h.index_copy(0, idx, out)
        ran[idx] += 1
        cur = llm.norm(out[:, -1])
        stop = exits(relative_change(cur, prev[idx]), j + 1, threshold, min_layers)
        prev = prev.index_copy(0, idx, cur)
        active[idx[stop]] = False
    return llm.norm(h), ran


@torch.no_grad()
def cognition_changes(llm: MoLeLLM, h: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """Relative change of the cognition feature after each of the K layers, all run: (B, K)."""
    bias, rope = attention_bias(key_mask, h.dtype, causal=llm.causal), llm.rope(h)
    prev, changes = llm.norm(h[:, -1]), []
    for j in range(len(llm.layers)):
        h = llm.run_layer(j, h, bias, rope)
        cur = llm.norm(h[:, -1])
        changes.append(relative_change(cur, prev))
        prev = cur
    return torch.stack(changes, dim=1)


def exit_depths(changes: torch.Tensor, threshold: float, min_layers: int) -> torch.Tensor:
    """Layers each sample runs (B,) under the exit rule, from its per-layer changes (B, K)."""
    k = changes.shape[1]
    depth = torch.full(changes.shape[:1], k, dtype=torch.long)
    done = torch.zeros(changes.shape[:1], dtype=torch.bool)
    for j in range(k):
        stop = exits(changes[:, j].cpu(), j + 1, threshold, min_layers) & ~done
        depth[stop] = j + 1
        done |= stop
    return depth


def calibrate_exit_threshold(model, inputs: Iterable[tuple[torch.Tensor, ...]],
                             target: float | None = None, min_layers: int | None = None) -> tuple[float, float]:
    """(threshold, mean layers) whose mean depth over `inputs` is closest to `target` (default K/2).

    Each input is a batch (pixels, ids, text_mask) or, for a model with `vision.state_input`, (pixels, ids,
    text_mask, state). Candidates are midpoints between the observed changes, so the rule has margin."""
    k = model.cfg.llm.num_layers
    target = k / 2 if target is None else target
    min_layers = model.cfg.router.exit_min_layers if min_layers is None else min_layers
    rows = []
    with torch.no_grad():
        for pixels, ids, mask, *state in inputs:
            img, text = model.encode_image(pixels), model.embed_text(ids)
            h, key_mask = model.prompt(img, text, mask, state[0] if state else None)
            rows.append(cognition_changes(model.llm, h, key_mask).float().cpu())
    changes = torch.cat(rows)  # (N, K)
    values = changes.flatten().unique().tolist()  # ascending
    candidates = [0.0] + [(a + b) / 2 for a, b in itertools.pairwise(values)] + [values[-1] * 2 + 1.0]
    best = min(candidates, key=lambda t: abs(exit_depths(changes, t, min_layers).float().mean().item() - target))
    return best, exit_depths(changes, best, min_layers).float().mean().item()
