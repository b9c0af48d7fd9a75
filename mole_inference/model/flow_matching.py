"""Flow matching as pi0 trains and samples it (Black et al. 2024, arXiv:2410.24164, Sec. IV "flow matching").

Time convention of openpi (`src/openpi/models/pi0.py`, `compute_loss` and `sample_actions`), the reverse of the
pi0 paper's: t = 1 is noise, t = 0 the action chunk. With noise e and actions a,

    x_t = t * e + (1 - t) * a          (`noisy_actions`)
    u   = e - a = dx_t / dt            (`velocity_target`; the expert's v(x_t, t) regresses it with MSE)

Training draws t ~ Beta(alpha, 1) * (1 - t_min) + t_min (openpi: alpha = 1.5, t_min = 0.001), weighting the noisier
times. Inference integrates dx/dt = v from t = 1 down to t = 0 with forward Euler, dt = -1 / steps (openpi: 10).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def sample_time(n: int, generator: torch.Generator, alpha: float = 1.5, t_min: float = 0.001) -> torch.Tensor:
    """Training times (n,) float32: Beta(alpha, 1) scaled to [t_min, 1].

    Beta(alpha, 1) has CDF x^alpha, so U^(1 / alpha) with U uniform is an exact draw that honours `generator`
    (torch.distributions.Beta takes none, and reproducible steps need one).
    """
    u = torch.rand((n,), generator=generator, dtype=torch.float64)
    return (u.pow(1.0 / alpha) * (1.0 - t_min) + t_min).float()


def noisy_actions(actions: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = t * noise + (1 - t) * actions for chunks (B, C, A) and times (B,)."""
    tt = t.to(actions.dtype).view(-1, *([1] * (actions.dim() - 1)))
    return tt * noise + (1.0 - tt) * actions


def velocity_target(actions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """u = noise - actions (B, C, A): the velocity of the straight path from the chunk to the noise."""
    return noise - actions


def euler_sample(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
                 steps: int = 10) -> torch.Tensor:
    """Forward Euler from x_1 = `noise` (B, C, A) at t = 1 to t = 0: x <- x + dt * v(x, t), dt = -1 / steps.

    `velocity(x, t)` takes times (B,) in x's dtype, at least float32 (bfloat16 would round 0.9 to 0.8984). The
    times are 1 - i / steps, i = 0 .. steps - 1 (the loop of openpi's `sample_actions`, which stops once
    t < -dt / 2).
    """
    dt = -1.0 / steps
    x, time_dtype = noise, torch.promote_types(noise.dtype, torch.float32)
    for i in range(steps):
        t = torch.full((x.shape[0],), 1.0 + i * dt, dtype=time_dtype, device=x.device)
        x = x + dt * velocity(x, t)
    return x


def time_embedding(t: torch.Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """pi0's sine-cosine embedding of flow times (B,) in [0, 1] -> (B, dim): [sin | cos] over periods spaced
    geometrically from `min_period` to `max_period` (openpi `posemb_sincos`)."""
    if dim % 2:
        raise ValueError(f"time embedding dim={dim} must be even")
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** fraction  # (dim/2,)
    angle = t.to(torch.float64)[:, None] * (2 * math.pi / period)[None]  # (B, dim/2)
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1).to(t.dtype)
