"""Group-relative advantages (GRPO) and the k3 KL estimator.

GRPO samples G completions per prompt and scores each against its siblings: A_i = r_i − mean of
its group, optionally divided by a standard deviation. A group whose rewards are all equal (all
right or all wrong) carries no signal: its advantages are exactly 0 and it is counted, because a
high fraction of such groups means the step was mostly wasted (too easy or too hard prompts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from pspo_eval.errors import PspoError

SCALES = ("group", "batch", "none")


@dataclass(frozen=True)
class AdvantageStats:
    """Summary of one batch of rewards, for logging."""

    n_groups: int
    n_zero_std_groups: int
    fraction_zero_std: float
    reward_mean: float
    reward_std: float  # over the whole batch (unbiased)
    mean_group_std: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def group_advantages(
    rewards: Tensor,
    group_size: int,
    *,
    scale: str = "group",
    eps: float = 1e-4,
    batch_std: float | None = None,
) -> tuple[Tensor, AdvantageStats]:
    """Advantages [N] for rewards [N] laid out as N/G consecutive groups of ``group_size`` completions.

        A_i = (r_i − mean_group(r)) / (std + eps)

    with std the group's std (``scale="group"``, GRPO), the whole batch's std (``"batch"``, as
    "PPO Lite", arXiv 2508.08221) or 1 with no eps (``"none"``, Dr. GRPO, arXiv 2503.20783). The std
    is the unbiased one (Bessel's correction), as ``torch.std`` and TRL compute it; eps = 1e-4 as TRL.
    Groups with identical rewards get advantage exactly 0. ``batch_std`` overrides the std of
    ``"batch"`` scaling: with several processes each holds a share of the batch, and the trainer
    passes the std of the whole batch (:func:`pooled_std` over all-reduced sums).
    """
    if scale not in SCALES:
        raise PspoError(f"unknown advantage scale '{scale}'", f"use one of: {', '.join(SCALES)}")
    if group_size < 2:
        raise PspoError(f"group size must be >= 2 (got {group_size})", "set rollout.num_generations >= 2")
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards must be [N] with N a multiple of {group_size}, got shape {tuple(rewards.shape)}"
        )
    rewards = rewards.detach().to(torch.float32)
    bad = (~torch.isfinite(rewards)).nonzero().flatten().tolist()
    if bad:
        raise PspoError(
            f"reward is not a finite number for completion(s) {bad[:8]}", "check the reward functions"
        )

    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    group_std = grouped.std(dim=1, keepdim=True)
    zero_std = (grouped == grouped[:, :1]).all(dim=1, keepdim=True)
    if scale == "group":
        advantages = centred / (group_std + eps)
    elif scale == "batch":
        std = float(rewards.std()) if batch_std is None else float(batch_std)
        advantages = centred / (std + eps)
    else:
        advantages = centred
    advantages = torch.where(zero_std, torch.zeros_like(advantages), advantages)

    n_groups = grouped.shape[0]
    n_zero = int(zero_std.sum())
    stats = AdvantageStats(
        n_groups=n_groups,
        n_zero_std_groups=n_zero,
        fraction_zero_std=n_zero / n_groups,
        reward_mean=float(rewards.mean()),
        reward_std=float(rewards.std()) if rewards.numel() > 1 else 0.0,
        mean_group_std=float(group_std.mean()),
    )
    return advantages.reshape(-1), stats


def pooled_std(count: float, total: float, total_sq: float) -> float:
    """The unbiased std of a set of values from its count, sum and sum of squares.

    These three add up across processes, so one all-reduce of them gives the std of the whole
    multi-process batch: var = (Σx² − (Σx)²/n) / (n − 1).
    """
    if count < 2:
        return 0.0
    var = (total_sq - total * total / count) / (count - 1)
    return max(var, 0.0) ** 0.5


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token KL(π_θ ‖ π_ref) estimate, Schulman's k3 ("Approximating KL divergence", 2020):

        d = ref_logp − logp;    k3 = exp(d) − d − 1   (≥ 0, = 0 iff the log-probs agree)

    Unbiased for KL(π_θ‖π_ref) on samples from π_θ and never negative. Computed as expm1(d) − d in
    float32 (and clamped at 0) so that rounding cannot make it slightly negative near d = 0.
    """
    d = ref_logp.float() - logp.float()
    return torch.clamp(torch.expm1(d) - d, min=0.0)
