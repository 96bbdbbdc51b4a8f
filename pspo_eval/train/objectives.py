"""Policy-gradient objectives: one small pure function each, with its formula in its docstring.

Every objective takes

- ``logp``       [B, T]: log π_θ(y_t | x, y_<t) of the sampled tokens under the current policy (with grad),
- ``old_logp``   [B, T]: the same under the behaviour policy π_old that sampled them (treated as constant),
- ``advantages`` [B]:    one advantage A per completion, broadcast over its tokens,

and returns the per-token loss [B, T] to be *minimised*. The ratio is r = π_θ / π_old = exp(logp − old_logp).
Padding is :func:`pspo_eval.train.aggregation.aggregate`'s business (it masks); every objective also
accepts ``mask`` [B, T] because one of them (gspo) needs it to average over the completion tokens, and
:func:`policy_loss` uses it to neutralise whatever sits in padded positions (r = 1 there, no NaN).
Maths is done in float32 whatever the input dtype: exp of a bf16 log-ratio is too coarse near r = 1.

The gradient of each loss w.r.t. ``logp`` at one token is what tells objectives apart: plain policy
gradient is −A·r (= −A on-policy, r = 1). Clip zeroes it in its dead zones, PSPO scales it by (1 − α)
everywhere, SAPO multiplies it by a smooth gate that is 1 at r = 1, CISPO uses a truncated constant
weight instead of r.

:func:`policy_loss` is the entry point (validated parameters, registry lookup); :func:`ratio_stats`
returns per-token diagnostics (clipped masks, smoothed deviations) and :func:`summarize_stats` turns
them into masked means for logging.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from pspo_eval.train.config import (
    OBJECTIVE_DEFAULTS,
    OBJECTIVE_NAMES,
    CispoParams,
    ClipParams,
    GspoParams,
    PspoParams,
    SapoParams,
    check_objective_params,
)

# The keyword defaults below are the parameter models' (pspo_eval.train.config), not written again.
_PSPO, _CLIP, _GSPO, _CISPO, _SAPO = PspoParams(), ClipParams(), GspoParams(), CispoParams(), SapoParams()

__all__ = [
    "OBJECTIVES",
    "cispo_loss",
    "clip_loss",
    "gspo_loss",
    "gspo_sequence_log_ratio",
    "noclip_loss",
    "policy_loss",
    "pspo_loss",
    "ratio_stats",
    "sapo_loss",
    "summarize_stats",
]


def _ratio(logp: Tensor, old_logp: Tensor) -> Tensor:
    return torch.exp(logp - old_logp)


def _col(advantages: Tensor) -> Tensor:
    """[B] -> [B, 1], to broadcast one advantage over a completion's tokens."""
    return advantages.reshape(-1, 1)


# ---------------------------------------------------------------------------------------------------
# The objectives
# ---------------------------------------------------------------------------------------------------


def pspo_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, *, alpha: float = _PSPO.alpha, mask: Tensor | None = None
) -> Tensor:
    """GR-PSPO (Dwyer et al. 2025, arXiv 2509.21282): smooth the policy toward π_old, then no clip.

        π̃ = (1 − α)·π_θ + α·π_old   ⇒   r̃ = π̃ / π_old = (1 − α)·r + α
        loss = −r̃ · A                    (no min, no clip)

    d loss / d r = −(1 − α)·A for every r, so the gradient is never zeroed, only scaled; at α = 0 this
    is no-clip GRPO, at α = 1 the policy gets no gradient at all. The soft trust region: the smoothed
    ratio deviates from 1 by only |r̃ − 1| = (1 − α)·|r − 1| and never drops below α.
    """
    smoothed = (1.0 - alpha) * _ratio(logp, old_logp) + alpha
    return -smoothed * _col(advantages)


def clip_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    *,
    epsilon: float = _CLIP.epsilon,
    epsilon_high: float | None = _CLIP.epsilon_high,
    delta: float | None = _CLIP.delta,
    mask: Tensor | None = None,
) -> Tensor:
    """PPO/GRPO ratio clipping (Schulman et al. 2017), with optional asymmetric range and dual clip.

        loss = −min(r·A, clip(r, 1 − ε_low, 1 + ε_high)·A)              ε_low = ε, ε_high defaults to ε

    Dead zones (zero gradient): r > 1 + ε_high with A > 0, and r < 1 − ε_low with A < 0.

    Dual clip (Ye et al. 2020, "Mastering Complex Control in MOBA Games with Deep RL"), δ > 1: for
    A < 0 the clipped objective is unbounded below as r grows, so it is floored at δ·A:

        A < 0:  loss = −max(min(r·A, clip(r, 1 − ε_low, 1 + ε_high)·A), δ·A)

    i.e. the loss of a negative-advantage token is at most −δ·A and has zero gradient once r > δ.
    (TRL's ``delta`` is a different thing: INTELLECT-2's cap of r at δ for every sign of A.)
    """
    high = epsilon if epsilon_high is None else epsilon_high
    ratio = _ratio(logp, old_logp)
    adv = _col(advantages)
    objective = torch.minimum(ratio * adv, torch.clamp(ratio, 1.0 - epsilon, 1.0 + high) * adv)
    if delta is not None:
        objective = torch.where(adv < 0, torch.maximum(objective, delta * adv), objective)
    return -objective


def noclip_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, *, mask: Tensor | None = None) -> Tensor:
    """GRPO without clipping: the importance-weighted policy gradient surrogate.

        loss = −r · A

    With one iteration per rollout (μ = 1, the paper's no-clip baseline) r ≡ 1 and the gradient is
    exactly the REINFORCE gradient −A·∇log π.
    """
    return -_ratio(logp, old_logp) * _col(advantages)


def gspo_sequence_log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor | None = None) -> Tensor:
    """log s_i = (1/|y_i|) Σ_t (logp − old_logp) over the completion tokens of sequence i: [B]."""
    m = torch.ones_like(logp) if mask is None else mask.to(logp.dtype)
    return ((logp - old_logp) * m).sum(-1) / m.sum(-1).clamp(min=1.0)


def gspo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    *,
    epsilon: float = _GSPO.epsilon,
    epsilon_high: float = _GSPO.epsilon_high,
    mask: Tensor | None = None,
) -> Tensor:
    """GSPO (Zheng et al. 2025, arXiv 2507.18071): clip a length-normalised *sequence* ratio.

        s_i = (π_θ(y_i|x) / π_old(y_i|x))^(1/|y_i|) = exp(mean_t (logp − old_logp))    (mean over the mask)
        J_i = min(s_i·A_i, clip(s_i, 1 − ε_low, 1 + ε_high)·A_i)         ε: 3e-4 / 4e-4 (sec. 5.1)

    Written in the paper's GSPO-token form so that it is a per-token loss like the others:

        s_i,t = sg[s_i] · π_θ(y_t) / sg[π_θ(y_t)]        (value s_i at every token; ∂s_i,t/∂logp_t = s_i)
        loss_i,t = −min(s_i,t·A_i, clip(s_i,t, 1 − ε_low, 1 + ε_high)·A_i)

    With aggregation ``grpo`` (mean over a sequence's tokens, then over sequences) value and gradient
    are exactly GSPO's sequence objective −(1/G)·Σ_i J_i: ∇s_i = s_i·(1/|y_i|)·Σ_t ∇logp_t. With
    ``dapo`` aggregation sequences are weighted by their length instead (GSPO-token with a token
    mean); use ``grpo`` to reproduce the paper. The whole sequence is clipped together: once s_i
    leaves the band in the direction of A_i, none of its tokens gets a gradient.
    """
    log_s = gspo_sequence_log_ratio(logp.detach(), old_logp, mask)
    s_token = torch.exp(log_s.unsqueeze(-1) + logp - logp.detach())
    adv = _col(advantages)
    clipped = torch.clamp(s_token, 1.0 - epsilon, 1.0 + epsilon_high)
    return -torch.minimum(s_token * adv, clipped * adv)


def _cispo_weight(ratio: Tensor, epsilon_low: float | None, max_weight: float) -> Tensor:
    low = None if epsilon_low is None else 1.0 - epsilon_low
    return torch.clamp(ratio, min=low, max=max_weight)


def cispo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    *,
    epsilon_low: float | None = _CISPO.epsilon_low,
    max_weight: float = _CISPO.max_weight,
    mask: Tensor | None = None,
) -> Tensor:
    """CISPO (MiniMax-M1, arXiv 2506.13585): clip the importance weight, not the update; keep every token.

        r̂ = clip(r, 1 − ε_low, w_max)          (ε_low = None: no lower bound, as in the paper)
        loss = −sg(r̂) · A · logp

    The gradient is −r̂·A·∇log π for every token: never zero (unlike clip), with a weight truncated at
    w_max (``max_weight``: the cap itself, which TRL calls ``epsilon_high`` for cispo). Defaults: no
    lower bound (MiniMax-M1 sets ε_low "large"); w_max = 5 as in ScaleRL (arXiv 2510.13786), since
    MiniMax-M1 reports no value. At r = 1
    the gradient is the policy gradient −A·∇log π. The loss *value* (∝ log π) is not comparable with
    the other objectives' values; only its gradient is meaningful.
    """
    weight = _cispo_weight(_ratio(logp, old_logp).detach(), epsilon_low, max_weight)
    return -weight * _col(advantages) * logp


def _sapo_tau(advantages: Tensor, tau_pos: float, tau_neg: float) -> Tensor:
    adv = _col(advantages)
    return torch.where(adv > 0, torch.full_like(adv, tau_pos), torch.full_like(adv, tau_neg))


def sapo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    *,
    tau_pos: float = _SAPO.tau_pos,
    tau_neg: float = _SAPO.tau_neg,
    mask: Tensor | None = None,
) -> Tensor:
    """SAPO (Gao et al. 2025, "Soft Adaptive Policy Optimization", arXiv 2511.20347): a soft gate.

        τ = τ_pos if A > 0 else τ_neg                     (defaults 1.0 / 1.05; τ_neg > τ_pos)
        f(r) = σ(τ·(r − 1)) · 4/τ
        loss = −f(r) · A

    df/dr = 4·σ(τ(r−1))·(1 − σ(τ(r−1))), which is 1 at r = 1 (so on-policy the gradient is the plain
    policy gradient −A·∇log π) and decays smoothly as r leaves 1, faster for larger τ: negative-
    advantage tokens are damped sooner. The loss value at r = 1 is −2A/τ, not −A.
    """
    tau = _sapo_tau(advantages, tau_pos, tau_neg)
    gate = torch.sigmoid(tau * (_ratio(logp, old_logp) - 1.0)) * 4.0 / tau
    return -gate * _col(advantages)


# ---------------------------------------------------------------------------------------------------
# Diagnostics
# ---------------------------------------------------------------------------------------------------


def _pspo_stats(ratio: Tensor, adv: Tensor, p: dict, log_s: Tensor | None) -> dict[str, Tensor]:
    smoothed = (1.0 - p["alpha"]) * ratio + p["alpha"]
    return {"smoothed_ratio": smoothed, "smoothed_deviation": (smoothed - 1.0).abs()}


def _clip_stats(ratio: Tensor, adv: Tensor, p: dict, log_s: Tensor | None) -> dict[str, Tensor]:
    high = p["epsilon"] if p["epsilon_high"] is None else p["epsilon_high"]
    out = {
        "low_clipped": (ratio < 1.0 - p["epsilon"]) & (adv < 0),
        "high_clipped": (ratio > 1.0 + high) & (adv > 0),
    }
    if p["delta"] is not None:
        out["dual_clipped"] = (ratio > p["delta"]) & (adv < 0)
    out["clipped"] = (
        out["low_clipped"] | out["high_clipped"] | out.get("dual_clipped", torch.zeros_like(adv > 0))
    )
    return out


def _gspo_stats(ratio: Tensor, adv: Tensor, p: dict, log_s: Tensor | None) -> dict[str, Tensor]:
    assert log_s is not None
    seq = torch.exp(log_s).unsqueeze(-1).expand_as(ratio)
    low = (seq < 1.0 - p["epsilon"]) & (adv < 0)
    high = (seq > 1.0 + p["epsilon_high"]) & (adv > 0)
    return {"seq_ratio": seq, "low_clipped": low, "high_clipped": high, "clipped": low | high}


def _cispo_stats(ratio: Tensor, adv: Tensor, p: dict, log_s: Tensor | None) -> dict[str, Tensor]:
    weight = _cispo_weight(ratio, p["epsilon_low"], p["max_weight"])
    return {"is_weight": weight, "truncated": weight != ratio}


def _sapo_stats(ratio: Tensor, adv: Tensor, p: dict, log_s: Tensor | None) -> dict[str, Tensor]:
    tau = torch.where(adv > 0, torch.full_like(ratio, p["tau_pos"]), torch.full_like(ratio, p["tau_neg"]))
    sig = torch.sigmoid(tau * (ratio - 1.0))
    return {"gate_weight": 4.0 * sig * (1.0 - sig)}


def _no_stats(ratio: Tensor, adv: Tensor, p: dict, log_s: Tensor | None) -> dict[str, Tensor]:
    return {}


@dataclass(frozen=True)
class Objective:
    name: str
    loss: Callable[..., Tensor]
    stats: Callable[[Tensor, Tensor, dict, Tensor | None], dict[str, Tensor]]


OBJECTIVES: dict[str, Objective] = {
    "pspo": Objective("pspo", pspo_loss, _pspo_stats),
    "clip": Objective("clip", clip_loss, _clip_stats),
    "noclip": Objective("noclip", noclip_loss, _no_stats),
    "gspo": Objective("gspo", gspo_loss, _gspo_stats),
    "cispo": Objective("cispo", cispo_loss, _cispo_stats),
    "sapo": Objective("sapo", sapo_loss, _sapo_stats),
}
assert tuple(OBJECTIVES) == OBJECTIVE_NAMES and set(OBJECTIVES) == set(OBJECTIVE_DEFAULTS)


def _prepare(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    if logp.dim() != 2:
        raise ValueError(f"logp must be [B, T], got shape {tuple(logp.shape)}")
    if old_logp.shape != logp.shape:
        raise ValueError(f"old_logp shape {tuple(old_logp.shape)} != logp shape {tuple(logp.shape)}")
    if advantages.numel() != logp.shape[0]:
        raise ValueError(
            f"advantages must have one value per sequence ({logp.shape[0]}), got {tuple(advantages.shape)}"
        )
    if mask is not None and mask.shape != logp.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != logp shape {tuple(logp.shape)}")
    logp, old_logp = logp.float(), old_logp.detach().float()
    if mask is not None:
        # Padding may hold anything (NaN, huge values); replace it by r = 1 *before* any exp, so that
        # neither the loss nor the backward pass can turn it into NaN (0 * inf) on its way to the model.
        valid = mask.bool()
        logp = torch.where(valid, logp, torch.zeros_like(logp))
        old_logp = torch.where(valid, old_logp, torch.zeros_like(old_logp))
    return logp, old_logp, advantages.detach().float().reshape(-1), mask


def policy_loss(name: str, logp: Tensor, old_logp: Tensor, advantages: Tensor, **params) -> Tensor:
    """Per-token loss [B, T] of objective ``name`` (pspo, clip, noclip, gspo, cispo, sapo).

    ``params`` are the objective's parameters (``alpha``; ``epsilon``, ``epsilon_high``, ``delta``; …;
    None = default) plus ``mask`` [B, T] for any objective. Unknown names, unknown parameters and
    out-of-range values raise :class:`~pspo_eval.errors.PspoError` naming them.
    """
    mask = params.pop("mask", None)
    resolved = check_objective_params(name, params)
    logp, old_logp, advantages, mask = _prepare(logp, old_logp, advantages, mask)
    return OBJECTIVES[name].loss(logp, old_logp, advantages, mask=mask, **resolved)


@torch.no_grad()
def ratio_stats(name: str, logp: Tensor, old_logp: Tensor, advantages: Tensor, **params) -> dict[str, Tensor]:
    """Per-token diagnostics [B, T] (detached) for objective ``name``.

    Always ``ratio`` (r). clip: ``low_clipped`` / ``high_clipped`` (/ ``dual_clipped``) masks of the
    zero-gradient tokens and their union ``clipped``; pspo: ``smoothed_ratio`` r̃ and
    ``smoothed_deviation`` |r̃ − 1|; gspo: ``seq_ratio`` s_i (broadcast) and clipped masks; cispo:
    ``is_weight`` r̂ and ``truncated``; sapo: ``gate_weight`` df/dr (the factor on the policy gradient).
    """
    mask = params.pop("mask", None)
    resolved = check_objective_params(name, params)
    logp, old_logp, advantages, mask = _prepare(logp, old_logp, advantages, mask)
    ratio = _ratio(logp, old_logp)
    log_s = gspo_sequence_log_ratio(logp, old_logp, mask) if name == "gspo" else None
    stats = {"ratio": ratio}
    stats.update(OBJECTIVES[name].stats(ratio, _col(advantages).expand_as(ratio), resolved, log_s))
    return stats


@torch.no_grad()
def summarize_stats(stats: dict[str, Tensor], mask: Tensor) -> dict[str, float]:
    """Masked means over completion tokens: a fraction for boolean masks, a mean otherwise.

    Also ``ratio_min`` / ``ratio_max`` when ``ratio`` is present. Empty masks give 0.0 / nan-free output.
    """
    valid = mask.bool()
    count = valid.sum().clamp(min=1)
    out: dict[str, float] = {}
    for key, value in stats.items():
        values = value.float()
        out[key] = float(torch.where(valid, values, 0.0).sum() / count)
    if "ratio" in stats and valid.any():
        selected = stats["ratio"][valid].float()
        out["ratio_min"] = float(selected.min())
        out["ratio_max"] = float(selected.max())
    return out


def tis_weights(old_logp: Tensor, sampler_logp: Tensor, cap: float) -> Tensor:
    """Truncated importance sampling (TIS) weights for completions drawn by another sampler (vLLM).

    The completions were sampled from the engine's distribution q (its kernels, its dtype, top-p),
    not from the policy π_old that the loss treats as the behaviour policy. Per token,

        w_t = min( π_old(y_t | x, y_<t) / q(y_t | x, y_<t), C ) = min( exp(old_logp_t − sampler_logp_t), C )

    multiplies that token's loss; it is a constant (no gradient). Capping at C bounds the variance
    that rare tokens with q ≪ π_old would bring (Yao et al., "Your efficient RL framework secretly
    brings you off-policy RL training", 2025; TRL's ``vllm_importance_sampling_mode="token_truncate"``,
    whose default cap is 3). Tokens whose sampler log-probability is unknown (NaN) get weight 1.
    """
    log_w = (old_logp.detach().float() - sampler_logp.float()).clamp(max=math.log(cap))
    return torch.where(torch.isnan(sampler_logp), torch.ones_like(log_w), log_w.exp())
