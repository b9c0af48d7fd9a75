"""MoLe-VLA training losses, one function per equation of the paper (Eq. 3, 6, 14-18).

Readings where the printed equations leave room (each also stated on its function):

- Eq. 3 (load balance) as printed is a function of the hard top-k selections only, so it has no gradient,
  and each term is ~1 when a layer is picked by any sample of the batch, ~0 otherwise: it measures layer
  coverage. `load_balance_eq3` computes it for reporting; training uses a differentiable surrogate
  (`load_balance_surrogate`): the Switch-Transformer product K * sum_i f_i P_i (fraction of top-k picks
  times mean router probability, 1 when balanced) or the squared coefficient of variation of the
  importance sum_n p_i (Shazeer et al. 2017).
- Eq. 14: the scores e_c . f^s are dot products of width-d hidden states, so the sigmoid saturates; with
  `scaled=True` they are divided by sqrt(d) (attention-style). The mask is computed from the student's
  features but used as a weight (detached by the objective), so the student cannot lower the loss by
  shrinking its own mask.
- Eq. 15: "1/N ||.||^2" is averaged over the valid (unpadded) tokens and the feature dimension, so its
  scale does not grow with the LLM width and lambda_1,2 keep their meaning next to the per-element Eq. 6.
  mu has no bias, so a token with M = 0 contributes exactly 0.
- Eq. 16: hidden states are not distributions; each token's features are turned into one with a softmax
  over the feature dimension (temperature tau), and the loss is KL(p_s || p_t) = sum p_s (log p_s - log p_t)
  (reverse KL, student first, as in MiniLLM), averaged over valid tokens. Where the mask M goes is
  `training.kl_mask`:
  - "token_weight" (the paper's reading: M selects how much each token is distilled, as in Eq. 15):
    sum_n M_n KL(softmax(f^s_n / tau) || softmax(f^t_n / tau)) / N_valid;
  - "in_softmax" (this code's original reading, still the dataclass default): KL(softmax(M f^s / tau) ||
    softmax(M f^t / tau)), i.e. M acts as a per-token inverse temperature; a token with M = 0 gives two
    uniform distributions and contributes 0.
  Both readings give the same `training.distill` modes (reverse_kl, kl, mse+reverse_kl) and the same zero for
  M = 0; the default stays "in_softmax" so that a run resumed from a config.yaml written before the option
  existed keeps the loss it started with. The paper preset (cogact-7b) sets "token_weight".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from mole_inference.errors import ConfigError


def task_loss(eps_pred: torch.Tensor, eps: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """L_task (Eq. 6): mean squared error between predicted and true noise over all repeated samples.

    Callers repeat each sample `diffusion_repeats` times with independent (t, eps) before the head, so the
    mean is the expectation over eps and the denoising step i. `mask` (B*R, C) marks the chunk steps that are
    recorded actions; padding past an episode's end (invented zero motion) is left out of the mean.
    """
    if mask is None:
        return F.mse_loss(eps_pred, eps)  # () over (B * R, C, A)
    w = mask.to(eps_pred.dtype)[..., None].expand_as(eps_pred)  # (B * R, C, A)
    return ((eps_pred - eps) ** 2 * w).sum() / w.sum().clamp_min(1.0)


def subgoal_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Squared error summed over the label's components, averaged over the samples whose label is known (beyond
    the paper).

    pred, target (B, G) in goal-scale units; mask (B,) bool. Zero (with gradients) when no label is known.
    """
    err = (pred.float() - target.float()).square().sum(-1)  # (B,)
    if mask is None:
        return err.mean()
    w = mask.to(err.dtype)
    return (err * w).sum() / w.sum().clamp_min(1.0)


def load_balance_eq3(selected: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """L_lb exactly as printed (Eq. 3): mean_i (c_i / (c_i + eps))^2 with c_i = sum_n v_i(x_n).

    `selected` (N, K) is the hard top-k mask. No gradient; reported, not trained.
    """
    counts = selected.detach().sum(dim=0)  # (K,)
    return ((counts / (counts + eps)) ** 2).mean()


def load_balance_surrogate(probs: torch.Tensor, selected: torch.Tensor, mode: str = "switch") -> torch.Tensor:
    """Differentiable load-balance loss trained in place of Eq. 3; 1 (switch) or 0 (cv) when balanced.

    switch: K * sum_i f_i P_i, f_i = share of the batch's top-k picks going to layer i (no gradient),
    P_i = mean router probability of layer i. cv: Var(I) / Mean(I)^2 of the importance I_i = sum_n p_i(x_n).
    probs, selected: (N, K).
    """
    k_layers = probs.shape[1]
    if mode == "switch":
        frac = selected.detach().sum(dim=0) / selected.detach().sum().clamp_min(1.0)  # (K,), sums to 1
        return k_layers * (frac * probs.mean(dim=0)).sum()
    if mode == "cv":
        importance = probs.sum(dim=0)  # (K,)
        return importance.var(unbiased=False) / importance.mean().pow(2).clamp_min(1e-12)
    if mode == "none":
        return probs.new_zeros(())
    raise ConfigError(f"training.load_balance={mode!r}: expected switch, cv or none")


def tokens_of_interest(cog_t: torch.Tensor, cog_s: torch.Tensor, f_s: torch.Tensor, valid: torch.Tensor,
                       scaled: bool = True) -> torch.Tensor:
    """ToI mask M = sigmoid(e_c^t f^s) * sigmoid(e_c^s f^s) (Eq. 14, intersection), zero on padding.

    cog_t, cog_s: (B, D) cognition tokens of teacher and student; f_s: (B, N, D); valid: (B, N) bool.
    Returns M (B, N).
    """
    scale = 1.0 / math.sqrt(f_s.shape[-1]) if scaled else 1.0
    m_t = torch.sigmoid(torch.einsum("bd,bnd->bn", cog_t, f_s) * scale)
    m_s = torch.sigmoid(torch.einsum("bd,bnd->bn", cog_s, f_s) * scale)
    return m_t * m_s * valid.to(f_s.dtype)


def _valid_mean(per_token: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    w = valid.to(per_token.dtype)
    return (per_token * w).sum() / w.sum().clamp_min(1.0)


def cog_mimic_loss(f_t: torch.Tensor, f_s: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor,
                   mu: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """L_cog-mimic (Eq. 15): mean over valid tokens and features of (M f^t - mu(M f^s))^2.

    f_t, f_s: (B, N, D); mask M and valid: (B, N); mu: the trained projection (identity when None).
    """
    m = mask.unsqueeze(-1)  # (B, N, 1)
    student = m * f_s
    if mu is not None:
        student = mu(student)
    per_token = (m * f_t - student).pow(2).mean(dim=-1)  # (B, N)
    return _valid_mean(per_token, valid)


def _token_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per token over the last dim from logits: (B, N, D) -> (B, N)."""
    log_p, log_q = F.log_softmax(p_logits, dim=-1), F.log_softmax(q_logits, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


KL_MASKS = ("in_softmax", "token_weight")


def masked_token_kl(p: torch.Tensor, q: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor,
                    temperature: float = 1.0, kl_mask: str = "in_softmax") -> torch.Tensor:
    """KL(softmax(p) || softmax(q)) per token over features, masked by M as `kl_mask` says, valid-token mean.

    p, q: (B, N, D) features; mask M, valid: (B, N). See the module docstring (Eq. 16) for the two readings.
    """
    if kl_mask == "token_weight":
        return _valid_mean(mask * _token_kl(p / temperature, q / temperature), valid)
    if kl_mask == "in_softmax":
        m = mask.unsqueeze(-1)
        return _valid_mean(_token_kl(m * p / temperature, m * q / temperature), valid)
    raise ConfigError(f"training.kl_mask={kl_mask!r}: expected one of {list(KL_MASKS)}")


def cog_reverse_kl(f_t: torch.Tensor, f_s: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor,
                   temperature: float = 1.0, kl_mask: str = "in_softmax") -> torch.Tensor:
    """L_cog-reversekl (Eq. 16): KL(p_s || p_t) per token, masked by M (`kl_mask`), token mean.

    f_t, f_s: (B, N, D); mask, valid: (B, N). See the module docstring for the readings.
    """
    return masked_token_kl(f_s, f_t, mask, valid, temperature, kl_mask)


def cog_forward_kl(f_t: torch.Tensor, f_s: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor,
                   temperature: float = 1.0, kl_mask: str = "in_softmax") -> torch.Tensor:
    """Forward-KL variant of Eq. 16 (Tab. 3 "KL"): KL(p_t || p_s), same distributions as `cog_reverse_kl`."""
    return masked_token_kl(f_t, f_s, mask, valid, temperature, kl_mask)


def cog_loss(mimic: torch.Tensor, reverse_kl: torch.Tensor, lambda1: float = 0.5) -> torch.Tensor:
    """L_cog (Eq. 17): (1 - lambda_1) L_cog-mimic + lambda_1 L_cog-reversekl."""
    return (1.0 - lambda1) * mimic + lambda1 * reverse_kl


def distillation_loss(mode: str, f_t: torch.Tensor, f_s: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor,
                      mu: Callable[[torch.Tensor], torch.Tensor] | None = None, lambda1: float = 0.5,
                      temperature: float = 1.0, kl_mask: str = "in_softmax") -> dict[str, torch.Tensor]:
    """The CogKD variant of Tab. 3 named by `mode`: {"cog": loss, and its parts}.

    mse: Eq. 15 alone; kl: forward KL; reverse_kl: Eq. 16 alone; mse+reverse_kl: Eq. 17. `kl_mask` picks
    the reading of M in the KL terms (module docstring); it does not change what the modes mean.
    """
    out: dict[str, torch.Tensor] = {}
    if mode in ("mse", "mse+reverse_kl"):
        out["cog_mimic"] = cog_mimic_loss(f_t, f_s, mask, valid, mu)
    if mode in ("reverse_kl", "mse+reverse_kl"):
        out["cog_reverse_kl"] = cog_reverse_kl(f_t, f_s, mask, valid, temperature, kl_mask)
    if mode == "kl":
        out["cog_kl"] = cog_forward_kl(f_t, f_s, mask, valid, temperature, kl_mask)
    if mode == "mse+reverse_kl":
        out["cog"] = cog_loss(out["cog_mimic"], out["cog_reverse_kl"], lambda1)
    elif mode in ("mse", "reverse_kl", "kl"):
        out["cog"] = next(iter(out.values()))
    else:
        raise ConfigError(f"training.distill={mode!r}: expected mse, kl, reverse_kl or mse+reverse_kl")
    return out


def total_loss(task: torch.Tensor, cog: torch.Tensor, lb: torch.Tensor, lambda2: float = 0.5,
               lambda3: float = 0.1) -> torch.Tensor:
    """L_MoLe (Eq. 18): L_task + lambda_2 L_cog + lambda_3 L_lb."""
    return task + lambda2 * cog + lambda3 * lb
