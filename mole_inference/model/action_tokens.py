"""OpenVLA's action discretization: normalized actions <-> the last `num_bins` vocabulary ids.

Facts taken from openvla/openvla `prismatic/vla/action_tokenizer.py` and `prismatic/extern/hf/modeling_prismatic.py`
(`predict_action`): `num_bins` (256) uniform bin edges over [-1, 1]; an action is clipped to [-1, 1] and
digitized against the edges (index 1..num_bins), and its token id is `vocab_size - index`, so the ids are the last
`num_bins` of the vocabulary and a larger value gets a smaller id. Decoding maps `vocab_size - id - 1`, clipped to
0..num_bins - 2, onto the centres of the num_bins - 1 intervals. Actions arrive normalized by the checkpoint's
1st-99th percentile bounds (ActionStats); the gripper is left unnormalized in [0, 1] and binned like the rest.
"""

from __future__ import annotations

import torch


class ActionTokenizer:
    """Per-dimension uniform binning of normalized actions onto the vocabulary's last `num_bins` ids."""

    def __init__(self, vocab_size: int, num_bins: int = 256) -> None:
        self.vocab_size, self.num_bins = vocab_size, num_bins
        self.edges = torch.linspace(-1.0, 1.0, num_bins, dtype=torch.float64)  # (num_bins,)
        self.centres = (self.edges[:-1] + self.edges[1:]) / 2  # (num_bins - 1,)

    @property
    def first_id(self) -> int:
        """The smallest action id: ids first_id .. vocab_size - 1 are the bins."""
        return self.vocab_size - self.num_bins

    @property
    def bin_width(self) -> float:
        """Width of one interval in normalized units (2 / (num_bins - 1))."""
        return 2.0 / (self.num_bins - 1)

    def greedy(self, bin_logits: torch.Tensor) -> torch.Tensor:
        """Greedy action ids (...,) long from logits over the bins (..., num_bins), bin 0 being `first_id`."""
        return bin_logits.argmax(dim=-1) + self.first_id

    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        """Normalized actions (..., A) -> token ids (..., A) long (numpy.digitize semantics, edges ascending)."""
        x = actions.detach().to(torch.float64).clamp(-1.0, 1.0)
        index = torch.bucketize(x, self.edges.to(x.device), right=True)  # 1..num_bins
        return self.vocab_size - index

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (..., A) -> normalized actions (..., A) float64 at the bin centres; non-action ids clip."""
        index = (self.vocab_size - ids.long() - 1).clamp(0, self.num_bins - 2)
        return self.centres.to(ids.device)[index]
