"""One optimizer step: the learning rate, the loss of a rollout backpropagated micro-batch by micro-batch,
clipping and AdamW, and the token statistics that go into the step's metrics record.

Nothing here holds state: the trainer passes the model, the rollout and a :class:`LossSettings`
in, and gets the step's statistics back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pspo_eval.train.advantages import kl_k3
from pspo_eval.train.aggregation import aggregate, count_items
from pspo_eval.train.config import Aggregation, Schedule
from pspo_eval.train.dist import Dist
from pspo_eval.train.logprobs import completion_logprobs
from pspo_eval.train.metrics import TokenStats
from pspo_eval.train.objectives import policy_loss, ratio_stats, summarize_stats, tis_weights
from pspo_eval.train.policy import autocast
from pspo_eval.train.rollout import RolloutBatch

# ---------------------------------------------------------------------------------------------------
# The learning rate: a pure function of the step
# ---------------------------------------------------------------------------------------------------


def lr_factor(schedule: Schedule, warmup: int, total: int) -> Callable[[int], float]:
    """Multiplier of the peak learning rate after ``step`` scheduler steps (transformers' schedules).

    Linear warmup from 0 over ``warmup`` steps (so with warmup the first update uses lr 0, as in
    transformers), then constant, linear decay to 0, or cosine decay to 0 at ``total``.
    """

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return factor


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def clip_and_step(optimizer: torch.optim.Optimizer, params: list[Tensor], max_grad_norm: float | None) -> float:
    """Clip the global gradient norm, take the AdamW step, clear the gradients. Returns the norm before clipping."""
    max_norm = max_grad_norm if max_grad_norm is not None else math.inf
    norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


# ---------------------------------------------------------------------------------------------------
# The loss
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossSettings:
    """What turns log-probabilities into the loss of one step (from the config, fixed for a run)."""

    objective: str
    params: dict[str, Any]  # the objective's keyword arguments (ObjectiveConfig.params())
    aggregation: Aggregation
    beta: float  # KL coefficient; 0 = no reference model
    tis_cap: float | None  # truncated importance sampling on the sampler's log-probs; None = off
    num_iterations: int  # μ: > 1 keeps the first iteration's log-probs as π_old
    temperature: float
    max_len: int  # max_new_tokens, for dr_grpo's constant normaliser


@dataclass
class Runtime:
    """Where the step runs: the (maybe DDP-wrapped) model, the processes, device and autocast dtype."""

    model: Any
    dist: Dist
    device: torch.device
    amp: torch.dtype | None
    share_prefix: bool


def accumulate_gradients(
    rt: Runtime, batch: RolloutBatch, loss: LossSettings, micro_batch_size: int
) -> dict[str, float]:
    """The loss of iteration ``batch.iterations_done`` on ``batch``, backpropagated micro-batch by
    micro-batch into ``.grad``. Returns its loss / ratio / entropy / KL statistics."""
    first = batch.iterations_done == 0
    chunks = batch.micro_batches(micro_batch_size)
    n_items = rt.dist.sum([float(sum(count_items(batch.completion_mask[i], loss.aggregation) for i in chunks))])[0]
    stats, loss_sum = TokenStats(), 0.0
    for j, idx in enumerate(chunks):
        mb = batch.take(idx)
        with rt.dist.sync_context(rt.model, sync=j == len(chunks) - 1):
            value, logp, old_logp, entropy, kl, tis = _micro_batch_loss(rt, batch, idx, mb, loss, first, n_items)
            (value * rt.dist.world_size).backward()
        loss_sum += float(value.detach())
        mask, adv = mb["completion_mask"], mb["advantages"]
        record_token_stats(stats, loss, logp.detach(), old_logp, adv, mask, entropy, kl)
        if tis is not None:
            assert loss.tis_cap is not None
            record_tis(stats, loss.tis_cap, tis, mb["sampler_logp"], mask)
    stats.reduce(rt.dist)
    result = stats.result()
    result["loss"] = rt.dist.sum([loss_sum])[0]
    return result


def _micro_batch_loss(
    rt: Runtime, batch: RolloutBatch, idx: Tensor, mb: dict[str, Tensor], loss: LossSettings, first: bool, n_items: float
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """(loss, logp, old_logp, entropy, kl, tis weights) of one micro-batch, the loss scaled to the whole step."""
    mask, adv = mb["completion_mask"], mb["advantages"]
    with autocast(rt.device, rt.amp):
        logp, entropy = completion_logprobs(
            rt.model, mb["prompt_ids"], mb["prompt_mask"], mb["completion_ids"], mask,
            loss.temperature, share_prefix=rt.share_prefix,
        )
    if first:  # no update since sampling: π_old = π_θ; kept for the other μ − 1 steps
        old_logp = logp.detach()
        if loss.num_iterations > 1:
            batch.store_old_logp(idx, logp)
    else:
        old_logp = mb["old_logp"]
    per_token = policy_loss(loss.objective, logp, old_logp, adv, mask=mask, **loss.params)
    tis: Tensor | None = None
    if loss.tis_cap is not None and "sampler_logp" in mb:
        tis = tis_weights(old_logp, mb["sampler_logp"], loss.tis_cap)
        per_token = per_token * tis
    kl: Tensor | None = None
    if loss.beta > 0:
        kl = kl_k3(logp, mb["ref_logp"])
        per_token = per_token + loss.beta * kl
    value = aggregate(per_token, mask, loss.aggregation, num_items_in_batch=n_items, max_len=loss.max_len)
    return value, logp, old_logp, entropy, (kl.detach() if kl is not None else None), tis


# ---------------------------------------------------------------------------------------------------
# Statistics of the step
# ---------------------------------------------------------------------------------------------------


def record_token_stats(
    stats: TokenStats, loss: LossSettings, logp, old_logp, adv, mask, entropy, kl
) -> None:
    """Entropy, KL, the ratio's mean / min / max and the objective's own diagnostics, over completion tokens."""
    valid = mask.bool()
    n = float(valid.sum())
    if n == 0:
        return
    if entropy is not None:
        stats.mean("entropy", float(entropy[valid].mean()), n)
    if kl is not None:
        stats.mean("kl", float(kl[valid].mean()), n)
    name = loss.objective
    raw = ratio_stats(name, logp, old_logp, adv, mask=mask, **loss.params)
    for key, value in summarize_stats(raw, mask).items():
        if key in ("ratio_min", "ratio_max"):
            (stats.min if key == "ratio_min" else stats.max)(f"ratio/{key[6:]}", value)
        elif key == "ratio":
            stats.mean("ratio/mean", value, n)
        else:
            stats.mean(f"{name}/{key}", value, n)
    if "smoothed_deviation" in raw:
        stats.max(f"{name}/smoothed_deviation_max", float(raw["smoothed_deviation"][valid].max()))


def record_tis(stats: TokenStats, cap: float, weights: Tensor, sampler_logp: Tensor, mask: Tensor) -> None:
    """Log the importance-sampling weights: their mean and minimum, and the share of tokens capped."""
    valid = mask.bool() & ~torch.isnan(sampler_logp)
    n = float(valid.sum())
    if n == 0:
        return
    w = weights[valid]
    stats.mean("tis/weight_mean", float(w.mean()), n)
    stats.mean("tis/capped_frac", float((w >= cap * (1 - 1e-6)).float().mean()), n)
    stats.min("tis/weight_min", float(w.min()))
