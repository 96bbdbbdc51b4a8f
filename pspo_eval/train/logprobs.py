"""Per-token log-probabilities of completions under a causal LM, with prompts shared through the KV cache.

:func:`completion_logprobs` is the one forward pass of training (policy, old and reference
log-probabilities all come from it); the prompt-sharing variant computes each distinct prompt once
and hands its keys and values to the completions (see :func:`_logits_sharing_prompts`).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
from torch import Tensor

from pspo_eval.train.policy import autocast, unwrap

MIN_SHARED_PREFIX = 16  # tokens: below this, computing the common prompt prefix once is not worth a call


def completion_logprobs(
    model,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    completion_ids: Tensor,
    completion_mask: Tensor,
    temperature: float,
    *,
    with_entropy: bool = True,
    share_prefix: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Per-token log π(completion token) [B, Tc] at ``temperature``, and the entropy there (no grad).

    Prompts are left-padded and completions right-padded; positions count real tokens only, as in
    sampling. Padded positions hold finite garbage: callers mask them.

    ``share_prefix``: prompt tokens are computed once however many rows share them, and their keys
    and values (with their gradient path) are shared through the KV cache: the tokens every prompt
    starts with (system prompt, chat-template header) once per call, then each distinct prompt
    once for its G completions, then the completions. About a third of the tokens of a GSM8K
    micro-batch instead of all of them; the same numbers as the plain pass up to float rounding.
    """
    if share_prefix and int(prompt_mask.sum(-1).min()) >= 2:
        logits = _logits_sharing_prompts(model, prompt_ids, prompt_mask, completion_ids, completion_mask)
    else:
        attention = torch.cat([prompt_mask, completion_mask], dim=1)
        out = model(
            input_ids=torch.cat([prompt_ids, completion_ids], dim=1),
            attention_mask=attention,
            position_ids=(attention.cumsum(-1) - 1).clamp(min=0),
            use_cache=False,
            logits_to_keep=completion_ids.shape[1] + 1,
        )
        logits = out.logits
    # logits [B, Tc + 1, V]: position t predicts completion token t; the last one predicts nothing.
    logp, entropy = _TokenLogProb.apply(logits, completion_ids, float(temperature), with_entropy)
    return logp, (entropy if with_entropy else None)


class _TokenLogProb(torch.autograd.Function):
    """log softmax(logits / T) at the given tokens, and the entropy there (not differentiated).

    The same arithmetic as ``log_softmax(logits.float() / T).gather(...)``, in float32, but over
    chunks of at most ``_CHUNK`` scores at a time (on CPU), and the backward pass writes the
    gradient of the logits straight in their dtype. The plain form allocates five or six
    [B, Tc, V] float32 tensors (the cast, the division, the log-softmax, its gradient, ...), each
    larger than malloc's mmap threshold, so each comes as fresh pages from the kernel: in a bf16
    update of the demo model (2 micro-batches of 8 × 64 completion tokens, V = 49,152) those passes
    took 1.3 s of a 7.4 s update, mostly page faults (profiled). Chunks of 8 MB are reused from the
    heap instead.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, tokens: Tensor, temperature: float, with_entropy: bool):
        B, T = tokens.shape
        logp = logits.new_empty((B, T), dtype=torch.float32)
        lse = torch.empty_like(logp)
        entropy = torch.empty_like(logp) if with_entropy else logp.new_empty(0)
        for b, t0, t1 in _chunks(B, T, logits.shape[-1], logits.device):
            x = _scaled(logits[b, t0:t1], temperature)
            m = torch.logsumexp(x, dim=-1)
            lse[b, t0:t1] = m
            logp[b, t0:t1] = x.gather(-1, tokens[b, t0:t1, None]).squeeze(-1) - m
            if with_entropy:  # H = -Σ p log p = logsumexp - Σ p x
                entropy[b, t0:t1] = m - (x - m[:, None]).exp_().mul_(x).sum(-1)
        ctx.save_for_backward(logits, tokens, lse)
        ctx.temperature = temperature
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp: Tensor, _grad_entropy: Tensor):
        logits, tokens, lse = ctx.saved_tensors
        temperature = ctx.temperature
        B, T = tokens.shape
        grad = torch.empty_like(logits)
        grad[:, T:].zero_()
        g = grad_logp.float() / temperature
        for b, t0, t1 in _chunks(B, T, logits.shape[-1], logits.device):
            x = _scaled(logits[b, t0:t1], temperature)  # recomputed: cheaper than keeping [B, Tc, V] fp32
            # d logp_t / d logit_v = (1[v = token] - softmax_v) / T
            p = x.sub_(lse[b, t0:t1, None]).exp_().mul_(-g[b, t0:t1, None])
            p.scatter_add_(-1, tokens[b, t0:t1, None], g[b, t0:t1, None])
            grad[b, t0:t1] = p
        return grad, None, None, None


def _scaled(logits: Tensor, temperature: float) -> Tensor:
    """logits / T as a new float32 tensor (always a copy: callers change it in place)."""
    x = logits.to(torch.float32, copy=True)
    return x.div_(temperature) if temperature != 1.0 else x


_CHUNK = 1 << 21  # scores per chunk on CPU: 8 MB in float32, under glibc's largest mmap threshold (32 MB)
# On GPUs the caching allocator reuses memory and each chunk costs kernel launches: chunks there only
# bound the float32 temporaries (512 MB), so a row of the batch is one chunk.
_DEVICE_CHUNK = 1 << 27


def _chunks(B: int, T: int, V: int, device: torch.device):
    """(row, first position, end position) blocks of at most ``_CHUNK`` scores covering [B, T]."""
    step = max(1, (_CHUNK if device.type == "cpu" else _DEVICE_CHUNK) // V)
    for b in range(B):
        for t0 in range(0, T, step):
            yield b, t0, min(T, t0 + step)


def _cache_of(output):
    cache = getattr(output, "cache", None)
    return output.past_key_values if cache is None else cache  # before transformers renamed it


def _logits_sharing_prompts(model, prompt_ids, prompt_mask, completion_ids, completion_mask) -> Tensor:
    """Logits [B, Tc + 1, V], position t predicting completion token t, each distinct prompt computed once.

    Stage 0 (when long enough): the tokens all prompts start with, one row. Stage 1: the distinct
    prompts' remaining tokens except their last, one row each, on top of stage 0's cache. Stage 2:
    each row's last prompt token and its completion, on its prompt's cache rows (selected by
    differentiable indexing: gradients add up over a group's rows). Only stage 2 produces logits:
    the K/V cache is each earlier stage's only output, which keeps the backward pass deterministic.
    """
    cache_arg = _cache_argument(model)
    rows = [tuple(prompt_ids[i][prompt_mask[i].bool()].tolist()) for i in range(prompt_ids.shape[0])]
    first: dict[tuple, int] = {}  # distinct prompt -> its first row (dicts keep insertion order)
    for i, key in enumerate(rows):
        first.setdefault(key, i)
    distinct = list(first.values())
    slot = {key: j for j, key in enumerate(first)}
    row_to_prompt = torch.tensor([slot[key] for key in rows], device=prompt_ids.device)
    index = torch.tensor(distinct, device=prompt_ids.device)
    p_mask = prompt_mask[index]
    lengths = p_mask.sum(-1)
    width = int(lengths.max())
    # All but the last prompt token go to the cache (stages 0 and 1).
    p_ids, p_mask = prompt_ids[index][:, -width:-1], p_mask[:, -width:-1]
    n, width = len(distinct), width - 1
    positions = (p_mask.cumsum(-1) - 1).clamp(min=0)
    shared = shared_prefix_length(p_ids, p_mask) if n > 1 else 0
    cache = None
    if shared >= MIN_SHARED_PREFIX:
        start = width - p_mask.sum(-1)
        prefix = p_ids[:1, int(start[0]) : int(start[0]) + shared]
        head = model(input_ids=prefix, position_ids=positions[:1, int(start[0]) :][:, :shared], use_cache=True,
                     logits_to_keep=1)
        cache = _cache_of(head)
        cache.batch_repeat_interleave(n)
        # Each prompt's shared tokens become masked columns; the first `shared` columns (padding in
        # every row now) are dropped.
        cols = torch.arange(width, device=p_ids.device)
        in_prefix = (cols[None] >= start[:, None]) & (cols[None] < start[:, None] + shared)
        rest_mask = (p_mask.bool() & ~in_prefix).to(p_mask.dtype)[:, shared:]
        cache_mask = torch.cat([torch.ones_like(p_mask[:, :shared]), rest_mask], dim=1)
        p_ids, positions = p_ids[:, shared:], positions[:, shared:]
        stage1_mask = cache_mask
    else:
        cache_mask = stage1_mask = p_mask
    if p_ids.shape[1] > 0:
        extra = {cache_arg: cache} if cache is not None else {}
        stage1 = model(input_ids=p_ids, attention_mask=stage1_mask, position_ids=positions, use_cache=True,
                       logits_to_keep=1, **extra)
        cache = _cache_of(stage1)
    assert cache is not None
    cache.batch_select_indices(row_to_prompt)
    last = prompt_ids[:, -1:]  # left padding: the last column is every row's last prompt token
    prompt_len = prompt_mask.sum(-1)
    stage2 = model(
        input_ids=torch.cat([last, completion_ids], dim=1),
        attention_mask=torch.cat([cache_mask[row_to_prompt], torch.ones_like(last), completion_mask], dim=1),
        position_ids=(prompt_len - 1)[:, None] + torch.cat(
            [torch.zeros_like(last), completion_mask.cumsum(-1).clamp(min=1)], dim=1
        ),
        use_cache=True,
        logits_to_keep=completion_ids.shape[1] + 1,
        **{cache_arg: cache},
    )
    return stage2.logits


@functools.lru_cache(maxsize=16)
def _cache_argument_of(cls: Any) -> str:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _cache_argument(model) -> str:
    """The name under which this transformers version takes a KV cache (`cache`, formerly `past_key_values`)."""
    inner = unwrap(model)
    if hasattr(inner, "get_base_model"):  # peft forwards keyword arguments to the base model
        inner = inner.get_base_model()
    cls: Any = type(inner)
    return _cache_argument_of(cls)


def shared_prefix_length(prompt_ids: Tensor, prompt_mask: Tensor) -> int:
    """Tokens every (left-padded) prompt starts with, leaving each row at least one token of its own."""
    from pspo_eval.generation.engine import shared_prefix_length as common_prefix

    rows = [ids[m.bool()].tolist() for ids, m in zip(prompt_ids, prompt_mask, strict=True)]
    return max(0, min(common_prefix(rows), min(len(r) for r in rows) - 1))


@torch.no_grad()
def reference_logprobs(
    batch,
    *,
    ref_model,
    policy,
    micro_batch_size: int,
    temperature: float,
    device: torch.device,
    amp: torch.dtype | None,
    share_prefix: bool,
) -> None:
    """Fill ``batch.ref_logp`` with the reference policy's log-probs: ``ref_model``, or with LoRA (no
    ``ref_model``) the base model under ``policy``'s adapters."""
    batch.ref_logp = torch.zeros(batch.completion_ids.shape, dtype=torch.float32, device=device)
    for idx in batch.micro_batches(micro_batch_size):
        mb = batch.take(idx)
        args = (mb["prompt_ids"], mb["prompt_mask"], mb["completion_ids"], mb["completion_mask"])
        kw: dict[str, Any] = {"with_entropy": False, "share_prefix": share_prefix}
        with autocast(device, amp):
            if ref_model is not None:
                ref, _ = completion_logprobs(ref_model, *args, temperature, **kw)
            else:  # LoRA: the base model is the reference
                with policy.disable_adapter():
                    ref, _ = completion_logprobs(policy, *args, temperature, **kw)
        batch.ref_logp[idx.to(device), : ref.shape[1]] = ref.float()
