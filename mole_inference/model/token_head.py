"""The autoregressive (OpenVLA) action family's head: the LLM's LM head read at the action-token positions.

The LLM does the work: the prompt's last (cognition) position predicts the first action token, each decoded token
is embedded with the LLM's own input embeddings and predicts the next (model/vla.py runs the loop).
"""

from __future__ import annotations

import torch
from torch import nn

from mole_inference.config.model import ActionHeadConfig
from mole_inference.model.action_tokens import ActionTokenizer


class TokenActionHead(nn.Module):
    """LM head (D -> vocab, no bias, as LLaMA's) plus OpenVLA's action tokenizer.

    Training is cross-entropy over the whole vocabulary (OpenVLA's loss on the action tokens); decoding is greedy
    among the `num_bins` action ids only, so an untrained or drifting model still yields an action (OpenVLA
    takes the argmax over the whole vocabulary and clips a non-action id to the nearest bin).
    """

    def __init__(self, cfg: ActionHeadConfig, width: int, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer = ActionTokenizer(vocab_size, cfg.num_bins)
        self.lm_head = nn.Linear(width, vocab_size, bias=False)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final-norm hidden states (..., D) -> vocabulary logits (..., V)."""
        return self.lm_head(hidden)

    def bin_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final-norm hidden states (..., D) -> logits of the action ids only (..., num_bins), smallest id first."""
        return nn.functional.linear(hidden, self.lm_head.weight[self.tokenizer.first_id:])

    def next_token(self, hidden: torch.Tensor) -> torch.Tensor:
        """Greedy action id (B,) from the last position's final-norm hidden state (B, D)."""
        return self.tokenizer.greedy(self.bin_logits(hidden))  # (B,)

    def loss(self, hidden: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced cross-entropy: hidden (B, A, D) at the positions predicting each action token,
        normalized actions (B, A); `mask` (B,) drops samples (False: padding). Mean over kept tokens."""
        target = self.tokenizer.encode(actions).to(hidden.device)  # (B, A)
        ce = nn.functional.cross_entropy(
            self.logits(hidden).flatten(0, 1).float(), target.flatten(), reduction="none"
        ).view(target.shape)  # (B, A)
        if mask is None:
            return ce.mean()
        w = mask.to(ce.dtype)[:, None].expand_as(ce)
        return (ce * w).sum() / w.sum().clamp(min=1.0)
