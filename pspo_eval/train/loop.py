"""The training loop: rollout → rewards → advantages → μ optimizer steps, checkpoints, evaluation.

One *optimizer step* (the unit of ``max_steps``, warmup, schedule, checkpoints and metrics, as in
TRL) is one parameter update over all completions of a rollout, in micro-batches::

    step s uses rollout k = s // μ (sampled when s % μ == 0) for its iteration i = s % μ
    for each micro-batch (similar lengths together):
        logp   = log π_θ(completion tokens) at the sampling temperature (logits / T), with grad
        old    = logp.detach()            if i == 0   (π_θ has not moved since sampling: π_old = π_θ)
               = the stored i == 0 values  otherwise  (computed once per rollout, reused)
        loss   = aggregate(policy_loss(objective, logp, old, A) + β·k3(logp, ref_logp)) / whole-step count
        loss.backward()
    clip the gradient norm; AdamW step (its learning rate a pure function of the step)

So with μ = 1 there is no extra forward pass, and with μ > 1 the old log-probabilities are not a
separate pass either: they are exactly the first iteration's log-probabilities (same weights, same
inputs), detached and stored with the rollout. TRL's GRPOTrainer computes the same numbers with an
extra no-grad forward pass per rollout.

Everything that decides what gets trained is a function of (config, step): the prompts of rollout k,
each completion's sampling seed, the learning rate. Resuming from a checkpoint restores the weights,
AdamW, the RNG states and, between the μ steps of a rollout, the rollout itself, and
then computes exactly what the uninterrupted run would have (tested bitwise on CPU).
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pspo_eval.console import log, warn
from pspo_eval.errors import PspoError
from pspo_eval.train.advantages import kl_k3
from pspo_eval.train.aggregation import aggregate, count_items
from pspo_eval.train.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_optimizer,
    load_rng,
    prune_checkpoints,
    read_state,
    remove_partial,
    save_checkpoint,
)
from pspo_eval.train.config import TrainConfig, config_hash, dump_config
from pspo_eval.train.dist import Dist
from pspo_eval.train.metrics import (
    MetricsLog,
    TokenStats,
    peak_memory,
    print_progress,
    print_summary,
    progress_line,
    rollout_metrics,
    summarize,
)
from pspo_eval.train.objectives import policy_loss, ratio_stats, summarize_stats, tis_weights
from pspo_eval.train.policy import (
    autocast,
    autocast_dtype,
    load_policy,
    load_reference,
    load_tokenizer,
    resolve_device,
    save_model_dir,
    unwrap,
)
from pspo_eval.train.rewards import RewardSet
from pspo_eval.train.rollout import (
    HFGenerator,
    PromptSchedule,
    RolloutBatch,
    VLLMGenerator,
    encode_prompt,
    make_rollout,
)

# ---------------------------------------------------------------------------------------------------
# Log-probabilities and the learning-rate schedule
# ---------------------------------------------------------------------------------------------------


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
        logits = out.logits[:, :-1]
    # One fused log-softmax over the vocabulary (fewer passes over [B, Tc, V] than logsumexp + gather).
    all_logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    logp = all_logp.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            detached = all_logp.detach()
            entropy = -(torch.exp(detached) * detached).sum(-1)
    return logp, entropy


def _cache_of(output):
    cache = getattr(output, "cache", None)
    return output.past_key_values if cache is None else cache  # before transformers renamed it


def _logits_sharing_prompts(model, prompt_ids, prompt_mask, completion_ids, completion_mask) -> Tensor:
    """Logits [B, Tc, V] predicting each completion token, each distinct prompt computed once.

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
    return stage2.logits[:, :-1]


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


def lr_factor(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
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


def config_differences(saved_yaml: Path, cfg: TrainConfig) -> list[str]:
    """'field: old -> new' for every field of ``cfg`` that differs from a saved config.yaml."""
    from pspo_eval.train.config import load_config

    try:
        old = load_config(saved_yaml).model_dump(mode="json")
    except PspoError:
        return []
    return _diff(old, cfg.model_dump(mode="json"))


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _diff(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}: {x!r} -> {y!r}")
    return out


def _quiet_transformers() -> None:
    """No per-file progress bars from transformers while loading and saving checkpoints."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover - a transformers without that switch
        pass


# ---------------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------------


class Trainer:
    """Set up once from a config and an output directory; :meth:`run` trains to ``total_steps``."""

    def __init__(self, cfg: TrainConfig, out: str | Path, *, resume: bool = False, verbose: bool = True):
        self.cfg = cfg
        self.out = Path(out)
        self.verbose = verbose
        self.mu = cfg.train.num_iterations
        self.objective = cfg.objective.name
        self.objective_params = cfg.objective.params()
        # Truncated importance sampling on the sampler's log-probs: on by default with vLLM rollouts.
        v = cfg.rollout.vllm
        self.tis_cap = v.importance_sampling_cap if cfg.rollout.backend == "vllm" and v.importance_sampling else None
        self.dist = Dist(resolve_device(cfg.model.device))
        self.dist.check_divides(cfg.train.prompts_per_step)
        self.device: torch.device = self.dist.device  # type: ignore[assignment]
        self.amp = autocast_dtype(cfg.model.dtype, self.device)
        self.config_yaml = dump_config(cfg)
        _quiet_transformers()
        self.config_hash = config_hash(cfg)

        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        import numpy as np

        np.random.seed(cfg.seed % 2**32)

        # -- data --------------------------------------------------------------------------------
        self.train_problems, self.val_problems = self._load_data()
        self.schedule = PromptSchedule(
            len(self.train_problems), cfg.train.prompts_per_step, shuffle=cfg.data.shuffle, seed=cfg.seed
        )
        self.total_steps = cfg.total_steps(len(self.train_problems))
        self.warmup = cfg.warmup_steps(len(self.train_problems))
        if cfg.eval.every and not self.val_problems:
            raise PspoError(
                "eval.every is set but there are no validation prompts",
                "lower data.train_size below the dataset size, or set eval.every=0",
            )

        # -- where to start from ---------------------------------------------------------------
        self.resume_from: Path | None = None
        self.start_state: dict[str, Any] | None = None
        if self.dist.is_main:
            remove_partial(self.out)
        found = latest_checkpoint(self.out)
        if found is not None and not resume:
            raise PspoError(
                f"{self.out} already holds checkpoints (latest: {found[1].name})",
                "add --resume to continue that run, or choose another --out",
            )
        if resume and found is not None:
            self.resume_from = found[1]
            self.start_state = read_state(found[1])

        # -- model, reference, optimizer ----------------------------------------------
        from pspo_eval.models import resolve_model

        self.model_path = resolve_model(cfg.model.path)
        self.tokenizer = load_tokenizer(self.model_path)
        policy = load_policy(cfg.model, model_path=self.model_path, device=self.device, weights_from=self.resume_from)
        self.ref_model = None
        if cfg.loss.beta > 0:
            self.ref_model = load_reference(cfg.model, model_path=self.model_path, device=self.device)
        self.model = self.dist.prepare_model(policy)
        # The prompt-sharing pass runs the model several times per micro-batch; DDP wants one forward
        # per backward, and transformers turns the cache off under gradient checkpointing.
        self.share_prefix = self.dist.world_size == 1 and not cfg.model.gradient_checkpointing
        self.policy = unwrap(self.model)
        named = [(n, p) for n, p in self.policy.named_parameters() if p.requires_grad]
        decay = [(n, p) for n, p in named if p.ndim >= 2]
        no_decay = [(n, p) for n, p in named if p.ndim < 2]
        self.param_names = [n for n, _ in decay + no_decay]
        self.params = [p for _, p in decay + no_decay]
        o = cfg.optim
        groups = [
            {"params": [p for _, p in decay], "weight_decay": o.weight_decay},
            {"params": [p for _, p in no_decay], "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.AdamW(
            [g for g in groups if g["params"]], lr=o.learning_rate, betas=(o.adam_betas[0], o.adam_betas[1]), eps=o.adam_eps
        )
        # The learning rate is a pure function of the step, assigned before every update (as in
        # nanoGPT): no scheduler object, so nothing about it needs saving or restoring on resume.
        self.lr_factor = lr_factor(o.schedule, self.warmup, self.total_steps)

        # -- rollout machinery ---------------------------------------------------------------------
        from pspo_eval.generation.hf import stop_token_ids

        self.stop_ids = stop_token_ids(self.tokenizer, self.policy, end_of_turn=cfg.rollout.stop == "eos+end_of_turn")
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]
        self._prompt_cache: dict[str, list[int]] = {}  # before the generator: vLLM's sizes its context from the prompts
        self.generator = self._make_generator()
        dataset_name = self.train_problems[0].dataset if self.train_problems else None
        self.reward_set = RewardSet(cfg.rewards, dataset=dataset_name)

        # -- state ------------------------------------------------------------------------------------
        self.step = 0
        self.batch: RolloutBatch | None = None
        self.best: dict[str, Any] | None = None
        self.elapsed_before = 0.0
        if self.start_state is not None:
            self._restore(self.start_state)
        self.metrics = MetricsLog(
            self.out,
            keep_through=self.step if self.start_state is not None else None,
            report_to=list(cfg.logging.report_to),
            run_name=cfg.name,
            config=cfg.model_dump(mode="json"),
            enabled=self.dist.is_main,
        )
        self._trim_completions_log(self.step if self.start_state is not None else None)
        if self.dist.is_main:
            from pspo_eval.store import atomic_write_text

            atomic_write_text(self.out / "config.yaml", self.config_yaml)

    # -- setup helpers ---------------------------------------------------------------------------------
    def _load_data(self):
        from pspo_eval.data import load_dataset, load_file, split_train_validation

        d = self.cfg.data
        problems = load_file(d.file) if d.file else load_dataset(d.dataset)
        if d.train_size > len(problems):
            raise PspoError(
                f"data.train_size is {d.train_size} but the data has only {len(problems)} problems",
                f"set data.train_size to at most {len(problems)}",
            )
        return split_train_validation(problems, d.train_size, d.split_seed)

    def _make_generator(self):
        r = self.cfg.rollout
        if r.backend == "vllm":
            longest = max(len(self._encode(p)) for p in self.train_problems + self.val_problems)
            gen = VLLMGenerator(
                self.model_path,
                r.vllm,
                dtype=self.cfg.model.dtype,
                seed=self.cfg.seed,
                max_model_len=longest + r.max_new_tokens,
                stop_ids=self.stop_ids,
                world_size=self.dist.world_size,
            )
            gen.top_k = r.top_k
            return gen
        is_lora = self.cfg.model.lora is not None
        return HFGenerator(
            self.policy,
            self.tokenizer,
            self.stop_ids,
            batch_size=r.generation_batch_size,
            top_k=r.top_k,
            allow_fast=not is_lora,
            autocast_dtype=self.amp,
        )

    def _encode(self, problem) -> list[int]:
        ids = self._prompt_cache.get(problem.id)
        if ids is None:
            ids = encode_prompt(problem.question, self.tokenizer, self.cfg.data.system_prompt)
            self._prompt_cache[problem.id] = ids
        return ids

    def _restore(self, state: dict[str, Any]) -> None:
        assert self.resume_from is not None
        if state.get("world_size", 1) != self.dist.world_size and state.get("mid_rollout"):
            raise PspoError(
                f"{self.resume_from} was saved between the steps of a rollout by {state.get('world_size')} "
                f"processes; it can only be resumed with that many",
                "resume with the same number of processes, or from a checkpoint at a rollout boundary",
            )
        if state.get("config_hash") != self.config_hash and self.verbose and self.dist.is_main:
            changed = config_differences(self.resume_from / "config.yaml", self.cfg)
            warn(
                f"resuming {self.resume_from.name} with changed settings ({', '.join(changed[:6]) or '?'}): "
                "not an exact continuation"
            )
        load_optimizer(self.optimizer, self.param_names, self.resume_from / "trainer")
        load_rng(self.resume_from, state)
        self.step = int(state["step"])
        self.best = state.get("best")
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        rollout_file = self.resume_from / "trainer" / f"rollout-rank{self.dist.rank}.safetensors"
        if state.get("mid_rollout") and rollout_file.exists():
            self.batch = RolloutBatch.load(rollout_file, self.device)
        if self.verbose and self.dist.is_main:
            log(f"resumed from {self.resume_from} at step {self.step}")

    # -- rollouts --------------------------------------------------------------------------------------
    def _sync_generator(self) -> None:
        if isinstance(self.generator, VLLMGenerator):
            self.generator.sync_from(self.model, self.step)
        else:
            self.generator.sync(self.step)

    def make_rollout(self, rollout_index: int) -> RolloutBatch:
        """Sample, score and compute advantages for rollout ``rollout_index`` (this process's share)."""
        cfg = self.cfg
        started = time.perf_counter()
        chosen = [self.train_problems[i] for i in self.schedule.indices(rollout_index)]
        mine = self.dist.shard(chosen)
        self._sync_generator()
        batch = make_rollout(
            rollout_index=rollout_index,
            problems=mine,
            prompt_ids=[self._encode(p) for p in mine],
            generator=self.generator,
            reward_set=self.reward_set,
            tokenizer=self.tokenizer,
            seed=cfg.seed,
            num_generations=cfg.rollout.num_generations,
            temperature=cfg.rollout.temperature,
            top_p=cfg.rollout.top_p,
            max_new_tokens=cfg.rollout.max_new_tokens,
            scale=cfg.advantage.scale,
            eps=cfg.advantage.eps,
            pad_id=self.pad_id,
            device=self.device,
            # One process: the batch's own std, computed exactly as before (bitwise-stable runs).
            reduce_sum=self.dist.sum if self.dist.world_size > 1 else None,
        )
        if self.ref_model is not None or (cfg.loss.beta > 0 and cfg.model.lora is not None):
            self._reference_logprobs(batch)
        # Logged rollout statistics cover every process's completions; kept with the batch so that a
        # checkpoint taken between its μ steps logs the same numbers after a resume.
        labels = list(batch.reward_parts)
        gathered = self.dist.gather(
            [
                (
                    float(batch.rewards[i]),
                    [float(batch.reward_parts[k][i]) for k in labels],
                    int(batch.completion_mask[i].sum()),
                    bool(batch.truncated[i]),
                )
                for i in range(len(batch))
            ]
        )
        metrics = rollout_metrics(
            [g[0] for g in gathered],
            {k: [g[1][j] for g in gathered] for j, k in enumerate(labels)},
            [g[2] for g in gathered],
            [g[3] for g in gathered],
            cfg.rollout.num_generations,
        )
        tokens = self.dist.sum([float(batch.generated_tokens)])[0]
        metrics["gen_tokens_per_s"] = tokens / max(batch.seconds, 1e-9)
        metrics["time/rollout_s"] = time.perf_counter() - started
        metrics["epoch"] = self.schedule.epoch_of(rollout_index)
        batch.extra["metrics"] = metrics
        self._log_completions(batch)
        return batch

    @torch.no_grad()
    def _reference_logprobs(self, batch: RolloutBatch) -> None:
        batch.ref_logp = torch.zeros(batch.completion_ids.shape, dtype=torch.float32, device=self.device)
        for idx in batch.micro_batches(self.cfg.train.micro_batch_size):
            mb = batch.take(idx)
            args = (mb["prompt_ids"], mb["prompt_mask"], mb["completion_ids"], mb["completion_mask"])
            kw: dict[str, Any] = {"with_entropy": False, "share_prefix": self.share_prefix}
            with autocast(self.device, self.amp):
                if self.ref_model is not None:
                    ref, _ = completion_logprobs(self.ref_model, *args, self.cfg.rollout.temperature, **kw)
                else:  # LoRA: the base model is the reference
                    with self.policy.disable_adapter():
                        ref, _ = completion_logprobs(self.policy, *args, self.cfg.rollout.temperature, **kw)
            batch.ref_logp[idx.to(self.device), : ref.shape[1]] = ref.float()

    # -- one optimizer step: the loss -----------------------------------------------------------------
    def set_learning_rate(self) -> float:
        """Assign the learning rate of the coming update: peak × schedule factor of the step number.

        The same number transformers' LambdaLR gives after ``self.step`` scheduler steps; after a
        resume it follows *this* config's schedule (the saved one, unless it was changed).
        """
        lr = self.cfg.optim.learning_rate * self.lr_factor(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def optimizer_step(self, batch: RolloutBatch) -> dict[str, float]:
        """One update over the whole rollout: gradients (micro-batches), clipping, AdamW, schedule."""
        result = self.accumulate_gradients(batch)
        max_norm = self.cfg.optim.max_grad_norm if self.cfg.optim.max_grad_norm is not None else math.inf
        result["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        batch.iterations_done += 1
        return result

    def accumulate_gradients(self, batch: RolloutBatch) -> dict[str, float]:
        """The loss of iteration ``batch.iterations_done`` on ``batch``, backpropagated micro-batch by
        micro-batch into ``.grad``. Returns its loss / ratio / entropy / KL statistics."""
        cfg, first = self.cfg, batch.iterations_done == 0
        mode, beta = cfg.loss.aggregation, cfg.loss.beta
        chunks = batch.micro_batches(cfg.train.micro_batch_size)
        n_items = self.dist.sum([float(sum(count_items(batch.completion_mask[i], mode) for i in chunks))])[0]
        stats, loss_sum = TokenStats(), 0.0
        for j, idx in enumerate(chunks):
            mb = batch.take(idx)
            mask, adv = mb["completion_mask"], mb["advantages"]
            with self.dist.sync_context(self.model, sync=j == len(chunks) - 1):
                with autocast(self.device, self.amp):
                    logp, entropy = completion_logprobs(
                        self.model, mb["prompt_ids"], mb["prompt_mask"], mb["completion_ids"], mask,
                        cfg.rollout.temperature, share_prefix=self.share_prefix,
                    )
                if first:  # no update since sampling: π_old = π_θ; kept for the other μ − 1 steps
                    old_logp = logp.detach()
                    if self.mu > 1:
                        batch.store_old_logp(idx, logp)
                else:
                    old_logp = mb["old_logp"]
                per_token = policy_loss(self.objective, logp, old_logp, adv, mask=mask, **self.objective_params)
                tis: Tensor | None = None
                if self.tis_cap is not None and "sampler_logp" in mb:
                    tis = tis_weights(old_logp, mb["sampler_logp"], self.tis_cap)
                    per_token = per_token * tis
                if beta > 0:
                    kl = kl_k3(logp, mb["ref_logp"])
                    per_token = per_token + beta * kl
                loss = aggregate(per_token, mask, mode, num_items_in_batch=n_items, max_len=cfg.rollout.max_new_tokens)
                (loss * self.dist.world_size).backward()
            loss_sum += float(loss.detach())
            self._record(stats, logp.detach(), old_logp, adv, mask, entropy, kl.detach() if beta > 0 else None)
            if tis is not None:
                self._record_tis(stats, tis, mb["sampler_logp"], mask)
        stats.reduce(self.dist)
        result = stats.result()
        result["loss"] = self.dist.sum([loss_sum])[0]
        return result

    def _record(self, stats: TokenStats, logp, old_logp, adv, mask, entropy, kl) -> None:
        valid = mask.bool()
        n = float(valid.sum())
        if n == 0:
            return
        if entropy is not None:
            stats.mean("entropy", float(entropy[valid].mean()), n)
        if kl is not None:
            stats.mean("kl", float(kl[valid].mean()), n)
        raw = ratio_stats(self.objective, logp, old_logp, adv, mask=mask, **self.objective_params)
        for key, value in summarize_stats(raw, mask).items():
            if key in ("ratio_min", "ratio_max"):
                (stats.min if key == "ratio_min" else stats.max)(f"ratio/{key[6:]}", value)
            elif key == "ratio":
                stats.mean("ratio/mean", value, n)
            else:
                stats.mean(f"{self.objective}/{key}", value, n)
        if "smoothed_deviation" in raw:
            stats.max(f"{self.objective}/smoothed_deviation_max", float(raw["smoothed_deviation"][valid].max()))

    def _record_tis(self, stats: TokenStats, weights: Tensor, sampler_logp: Tensor, mask: Tensor) -> None:
        """Log the importance-sampling weights: their mean and minimum, and the share of tokens capped."""
        assert self.tis_cap is not None
        valid = mask.bool() & ~torch.isnan(sampler_logp)
        n = float(valid.sum())
        if n == 0:
            return
        w = weights[valid]
        stats.mean("tis/weight_mean", float(w.mean()), n)
        stats.mean("tis/capped_frac", float((w >= self.tis_cap * (1 - 1e-6)).float().mean()), n)
        stats.min("tis/weight_min", float(w.min()))

    # -- evaluation on the validation prompts -----------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Greedy completions for the first ``eval.limit`` validation prompts, scored by the train rewards."""
        cfg = self.cfg
        started = time.perf_counter()
        problems = self.val_problems[: cfg.eval.limit] if cfg.eval.limit else self.val_problems
        mine = self.dist.shard(list(problems))
        self._sync_generator()
        size = cfg.rollout.generation_batch_size or 64
        texts, lengths, truncated = [], [], []
        for start in range(0, len(mine), size):
            chunk = mine[start : start + size]
            sampled = self.generator.generate(
                [self._encode(p) for p in chunk], [0] * len(chunk),
                temperature=0.0, top_p=1.0, max_new_tokens=cfg.rollout.max_new_tokens,
            )
            for s in sampled:
                tokens = s.token_ids[:-1] if s.finish_reason == "stop" else s.token_ids
                texts.append(self.tokenizer.decode(tokens, skip_special_tokens=True))
                lengths.append(len(s.token_ids))
                truncated.append(s.finish_reason == "length")
        total, parts = self.reward_set(texts, [str(p.answer) for p in mine]) if mine else ([], {})
        labels = self.reward_set.labels
        rows = self.dist.gather(
            [(total[i], [parts[k][i] for k in labels], lengths[i], truncated[i]) for i in range(len(mine))]
        )
        rewards = [r[0] for r in rows]
        out: dict[str, float] = {
            "eval/reward_mean": sum(rewards) / max(1, len(rewards)),
            "eval/reward_std": statistics.stdev(rewards) if len(rewards) > 1 else 0.0,
            "eval/completion_len": sum(r[2] for r in rows) / max(1, len(rows)),
            "eval/truncated_frac": sum(r[3] for r in rows) / max(1, len(rows)),
            "eval/n": float(len(rows)),
        }
        for j, k in enumerate(labels):
            out[f"eval/{k}/mean"] = sum(r[1][j] for r in rows) / max(1, len(rows))
        out["eval/seconds"] = time.perf_counter() - started
        return out

    # -- saving ------------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "rollout_index": (self.step - 1) // self.mu if self.step else 0,
            "total_steps": self.total_steps,
            "num_iterations": self.mu,
            "config_hash": self.config_hash,
            "best": self.best,
            "param_names": self.param_names,
            "world_size": self.dist.world_size,
            "elapsed_s": self.elapsed_before + (time.perf_counter() - self._started),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    def save_checkpoint(self) -> Path:
        target = checkpoint_path(self.out, self.step)
        mid = self.batch is not None and self.batch.iterations_done < self.mu
        staged = self.out / f".rollout-step{self.step}-rank{self.dist.rank}.safetensors"
        if mid:
            assert self.batch is not None
            self.batch.save(staged)
        self.dist.barrier()
        if self.dist.is_main:
            rollouts = sorted(self.out.glob(f".rollout-step{self.step}-rank*.safetensors")) if mid else []
            save_checkpoint(
                target,
                model=self.model,
                tokenizer=self.tokenizer,
                optimizer=self.optimizer,
                param_names=self.param_names,
                state=self._state(),
                config_yaml=self.config_yaml,
                staged={f"rollout-{p.name.split('-')[-1]}": p for p in rollouts},
            )
            prune_checkpoints(self.out, self.cfg.checkpoint.keep_last, protect={self.step})
        self.dist.barrier()
        return target

    def _save_model_copy(self, name: str, extra: dict[str, Any]) -> Path:
        """OUT/final or OUT/best: the model, its tokenizer and the config (no trainer state), atomically."""
        from pspo_eval.train.checkpoint import atomic_directory

        target = self.out / name
        with atomic_directory(target) as tmp:
            save_model_dir(self.model, self.tokenizer, tmp)
            (tmp / "config.yaml").write_text(self.config_yaml, encoding="utf-8")
            (tmp / f"{name}.json").write_text(json.dumps(extra, indent=1), encoding="utf-8")
        return target

    def _log_completions(self, batch: RolloutBatch) -> None:
        n = self.cfg.logging.log_completions
        if not n or not self.dist.is_main:
            return
        from pspo_eval.store import Shard

        rows = [
            {
                "key": f"{batch.rollout_index}:{i}",
                "step": self.step + 1,
                "rollout": batch.rollout_index,
                "problem_id": batch.problem_ids[i],
                "reward": float(batch.rewards[i]),
                "advantage": float(batch.advantages[i]),
                "truncated": bool(batch.truncated[i]),
                "text": batch.texts[i],
            }
            for i in range(min(n, len(batch)))
        ]
        Shard(self.out / "completions.jsonl").append(rows)

    def _trim_completions_log(self, keep_through: int | None) -> None:
        path = self.out / "completions.jsonl"
        if not self.dist.is_main or not path.exists():
            return
        from pspo_eval.store import Shard, atomic_write_text

        if keep_through is None:
            path.unlink()
            return
        kept = [r for r in Shard(path).read() if int(r.get("step", 0)) <= keep_through]
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in kept))

    # -- the loop ---------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        self._started = time.perf_counter()
        total = self.total_steps
        if self.verbose and self.dist.is_main:
            gen = self.generator.kind
            log(
                f"training {cfg.objective.name} on {cfg.model.path} ({self.device}, "
                f"{'fp32' if self.amp is None else 'autocast ' + str(self.amp).replace('torch.', '')}, rollouts: "
                f"{cfg.rollout.backend}/{gen}) for {total} steps: {cfg.train.prompts_per_step} prompts x "
                f"{cfg.rollout.num_generations} completions, μ={self.mu}, "
                f"{len(self.train_problems)} train / {len(self.val_problems)} validation prompts -> {self.out}"
            )
        last_saved = self.step if self.start_state is not None else None
        while self.step < total:
            step_started = time.perf_counter()
            new_rollout = self.batch is None or self.batch.iterations_done >= self.mu
            if new_rollout:
                self.batch = self.make_rollout(self.step // self.mu)
            assert self.batch is not None
            iteration = self.batch.iterations_done
            lr = self.set_learning_rate()
            train_started = time.perf_counter()
            stats = self.optimizer_step(self.batch)
            self.step += 1
            now = time.perf_counter()
            step_s = now - step_started
            completion_tokens = self.dist.sum([float(self.batch.completion_mask.sum())])[0]
            record: dict[str, Any] = {"step": self.step, "rollout": self.batch.rollout_index, "iteration": iteration}
            record.update(self.batch.extra.get("metrics", {}))
            if not new_rollout:
                record["time/rollout_s"] = 0.0
                record.pop("gen_tokens_per_s", None)
            record.update(stats)
            record["lr"] = lr
            record["time/step_s"] = step_s
            record["time/train_s"] = now - train_started
            record["tokens_per_s"] = completion_tokens / max(step_s, 1e-9)
            record["elapsed_s"] = self.elapsed_before + (now - self._started)
            record.update(peak_memory(self.device))
            if cfg.eval.every and self.step % cfg.eval.every == 0:
                record.update(self.evaluate())
                self._maybe_best(record["eval/reward_mean"])
            self.metrics.write(record)
            if self.verbose and self.dist.is_main and (self.step % cfg.logging.log_every == 0 or self.step == total):
                print_progress(progress_line(record, total, self.objective))
            every = cfg.checkpoint.save_every
            if every and (self.step % every == 0 or self.step == total):
                self.save_checkpoint()
                last_saved = self.step
        return self._finish(last_saved)

    def _maybe_best(self, reward: float) -> None:
        if not self.cfg.eval.select_best:
            return
        if self.best is None or reward > float(self.best["reward"]):
            self.best = {"step": self.step, "reward": reward}
            if self.dist.is_main:
                self._save_model_copy("best", {"step": self.step, "eval_reward_mean": reward})
                if self.verbose:
                    log(f"new best validation reward {reward:.4f} at step {self.step} -> {self.out / 'best'}")
            self.dist.barrier()

    def _finish(self, last_saved: int | None) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.cfg.checkpoint.save_final:
            if self.dist.is_main:
                final = self._save_model_copy("final", {"step": self.step, "config_hash": self.config_hash})
                extra["final"] = str(final)
            self.dist.barrier()
        if self.best is not None:
            extra["best"] = f"{self.out / 'best'} (step {self.best['step']}, {self.best['reward']:.4f})"
        if self.dist.is_main:  # a kill between a save and its pruning leaves one checkpoint too many
            prune_checkpoints(self.out, self.cfg.checkpoint.keep_last, protect={self.step})
        found = list_checkpoints(self.out)
        if found:
            extra["last_checkpoint"] = str(found[-1][1])
        summary = summarize(self.metrics.records, extra)
        summary["steps"] = self.step
        self.metrics.close()
        if self.dist.is_main:
            from pspo_eval.store import atomic_write_json

            atomic_write_json(self.out / "summary.json", summary)
            if self.verbose:
                print_summary(summary)
        return summary

    def close(self) -> None:
        self.generator.close()
        self.metrics.close()


def train(cfg: TrainConfig, out: str | Path, *, resume: bool = False, verbose: bool = True) -> dict[str, Any]:
    """Train to ``cfg``'s total steps into ``out`` (locked against a second trainer). Returns the summary."""
    from pspo_eval.store import RunStore

    out = Path(out)
    if int(os.environ.get("RANK", "0")) != 0:  # only the main process holds the run's lock
        trainer = Trainer(cfg, out, resume=resume, verbose=verbose)
        try:
            return trainer.run()
        finally:
            trainer.close()
    with RunStore(out).locked("pspo-eval train"):
        trainer = Trainer(cfg, out, resume=resume, verbose=verbose)
        try:
            return trainer.run()
        finally:
            trainer.close()
