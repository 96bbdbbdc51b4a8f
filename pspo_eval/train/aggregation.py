"""Turning a per-token loss [B, T] into the scalar that is backpropagated.

The choice matters (it decides how sequences of different lengths are weighted) and so does its
interaction with gradient accumulation: an optimizer step covers a whole rollout, which the trainer
splits into micro-batches. For the step's gradient not to depend on that split, every micro-batch
must divide by the count of the *whole optimizer batch*, which the caller passes as
``num_items_in_batch`` (sum of :func:`count_items` over the step's micro-batches). Then the sum of
the micro-batch losses equals the loss of the full batch computed at once, exactly.

Modes (m = mask, L = per-token loss, N = number of sequences, T_max = max completion length):

- ``dapo``    (DAPO, arXiv 2503.14476): Σ_i Σ_t m·L / Σ_i Σ_t m — a mean over all completion tokens
  of the optimizer batch; ``num_items_in_batch`` = total completion tokens.
- ``grpo``    (DeepSeekMath's GRPO): (1/N) Σ_i (Σ_t m·L / Σ_t m) — mean per sequence, then over
  sequences; ``num_items_in_batch`` = total sequences.
- ``dr_grpo`` (Dr. GRPO, arXiv 2503.20783): Σ_i Σ_t m·L / (N · T_max), T_max = the configured
  max_new_tokens (``max_len``); ``num_items_in_batch`` = total sequences.

Padded positions are selected away with ``torch.where`` (not multiplied by zero), so they get exactly
zero gradient, and a NaN/inf sitting in padding cannot leak into the loss.

Data parallel: DDP averages gradients over processes, so with num_items_in_batch counted over all
processes multiply the loss by the world size (TRL divides its normaliser by ``num_processes``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pspo_eval.errors import PspoError

AGGREGATIONS = ("dapo", "grpo", "dr_grpo")


def _check(mode: str) -> None:
    if mode not in AGGREGATIONS:
        raise PspoError(f"unknown loss aggregation '{mode}'", f"use one of: {', '.join(AGGREGATIONS)}")


def count_items(mask: Tensor, mode: str) -> int:
    """What ``mode`` normalises by, counted in one (micro-)batch: tokens for dapo, sequences otherwise."""
    _check(mode)
    return int(mask.bool().sum()) if mode == "dapo" else int(mask.shape[0])


def aggregate(
    per_token_loss: Tensor,
    mask: Tensor,
    mode: str,
    *,
    num_items_in_batch: int | float | Tensor | None = None,
    max_len: int | None = None,
) -> Tensor:
    """Scalar loss of one (micro-)batch under ``mode`` (see the module docstring).

    ``num_items_in_batch``: the :func:`count_items` total over the whole optimizer batch; None means
    this batch is the whole optimizer batch. ``max_len``: required for ``dr_grpo``.
    """
    _check(mode)
    if per_token_loss.shape != mask.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != loss shape {tuple(per_token_loss.shape)}")
    valid = mask.bool()
    masked = torch.where(valid, per_token_loss, torch.zeros_like(per_token_loss))
    if num_items_in_batch is None:
        num_items_in_batch = count_items(mask, mode)
    denominator = torch.as_tensor(num_items_in_batch, dtype=masked.dtype, device=masked.device).clamp(min=1.0)
    if mode == "dapo":
        return masked.sum() / denominator
    if mode == "grpo":
        per_sequence = masked.sum(-1) / valid.sum(-1).clamp(min=1).to(masked.dtype)
        return per_sequence.sum() / denominator
    if max_len is None or max_len < 1:
        raise PspoError("loss aggregation 'dr_grpo' needs max_len (the configured max_new_tokens)")
    return masked.sum() / (denominator * max_len)
