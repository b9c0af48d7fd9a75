"""DDPM noise schedule, training targets (Eq. 6) and the DDIM sampler used at inference."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from mole_inference.config.model import ActionHeadConfig


def make_betas(schedule: str, steps: int) -> torch.Tensor:
    """Beta_t for t = 0..steps-1: `cosine` (squaredcos_cap_v2, CogACT's) or `linear` (DDPM's)."""
    if schedule == "linear":
        return torch.linspace(1e-4, 0.02, steps, dtype=torch.float64)

    def abar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor([min(1 - abar((i + 1) / steps) / abar(i / steps), 0.999) for i in range(steps)],
                        dtype=torch.float64)


class DDIMScheduler:
    """Noise schedule shared by training (q_sample) and sampling (DDIM, eta configurable)."""

    def __init__(self, cfg: ActionHeadConfig) -> None:
        self.cfg = cfg
        betas = make_betas(cfg.beta_schedule, cfg.train_timesteps)
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)  # float64 (T,)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps for per-sample steps t (B,)."""
        abar = self.alphas_cumprod.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def timesteps(self) -> list[int]:
        """The DDIM sub-sequence, from the noisiest step down to 0."""
        n, T = self.cfg.ddim_steps, self.cfg.train_timesteps
        return [round(i * T / n) for i in range(n)][::-1]

    @torch.no_grad()
    def sample(self, eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Run DDIM from `noise` (B, C, A) with eps_fn(x_t, t) -> eps; returns x_0 clipped to [-1, 1].

        `ddim_clip: every_step` clips each step's predicted x_0 (and re-derives eps from it); `final` leaves the
        loop unclipped and clips only the returned sample, as CogACT does (clip_denoised=False).
        """
        x = noise
        steps = self.timesteps()
        abars = self.alphas_cumprod
        every_step = self.cfg.ddim_clip == "every_step"
        for i, t in enumerate(steps):
            t_prev = steps[i + 1] if i + 1 < len(steps) else -1
            a_t = float(abars[t])
            a_prev = float(abars[t_prev]) if t_prev >= 0 else 1.0
            tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
            eps = eps_fn(x, tt)
            x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
            if every_step:
                x0 = x0.clamp(-1.0, 1.0)
                eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)  # consistent with the clipped x0
            sigma = self.cfg.ddim_eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
            x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
            if sigma > 0:
                x = x + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return x if every_step else x.clamp(-1.0, 1.0)
