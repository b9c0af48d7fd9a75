"""Shared by the action family tests: presets shrunk to 4 layers of width 32, prompt inputs, call counting."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from mole_inference.config import preset

ENC = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "mlp_size": 64}
VISION = {"image_size": 28, "patch_size": 14, "siglip": ENC, "text_film": False}
MICRO = {
    "vision": VISION,
    "llm": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 4, "num_heads": 2, "max_text_tokens": 8,
            "vocab_size": 300},
    "router": {"num_active_layers": 2, "proj_dim": 16, "spatial_hidden": 16, "encoder_heads": 2, "encoder_ffn": 32},
}


def micro(name: str, **sections):
    """Preset `name` at the MICRO shapes (a few ms per step); each of `sections` replaces a whole section."""
    return preset(name, **{**MICRO, **sections})


def inputs(cfg, batch=1, seed=0):
    """(pixels, ids, mask) of `batch` prompts drawn from `seed`; the first half of each instruction is text."""
    gen = torch.Generator().manual_seed(seed)
    r, t = cfg.vision.image_size, cfg.llm.max_text_tokens
    pixels = torch.rand((batch, 3, r, r), generator=gen)
    ids = torch.randint(4, 200, (batch, t), generator=gen)
    mask = torch.zeros((batch, t), dtype=torch.bool)
    mask[:, : t // 2] = True
    return pixels, ids, mask


@contextmanager
def forward_calls(*module_lists: Sequence[torch.nn.Module]) -> Iterator[tuple[dict[int, int], ...]]:
    """Per list, {index: forward calls of that module} counted while the block runs."""
    counts = tuple(dict.fromkeys(range(len(modules)), 0) for modules in module_lists)
    hooks = [module.register_forward_hook(lambda *_, c=c, i=i: c.__setitem__(i, c[i] + 1))
             for modules, c in zip(module_lists, counts, strict=True) for i, module in enumerate(modules)]
    try:
        yield counts
    finally:
        for hook in hooks:
            hook.remove()
