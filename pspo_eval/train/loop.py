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

The pieces: :mod:`~pspo_eval.train.setup` builds the run, :mod:`~pspo_eval.train.rollout` samples,
:mod:`~pspo_eval.train.step` computes the loss and updates, :mod:`~pspo_eval.train.logprobs` holds
the forward pass, :mod:`~pspo_eval.train.save` writes checkpoints; :class:`Trainer` composes them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from pspo_eval.console import log
from pspo_eval.generation.prompts import encode_prompt
from pspo_eval.store import atomic_write_json, atomic_write_text
from pspo_eval.train import save, setup, step
from pspo_eval.train.checkpoint import list_checkpoints, load_optimizer, load_rng, prune_checkpoints
from pspo_eval.train.config import TrainConfig, config_hash, dump_config
from pspo_eval.train.dist import Dist
from pspo_eval.train.logprobs import (  # noqa: F401  (re-exported: the log-prob code lived here)
    MIN_SHARED_PREFIX,
    completion_logprobs,
    reference_logprobs,
    shared_prefix_length,
)
from pspo_eval.train.metrics import (
    MetricsLog,
    batch_rollout_metrics,
    peak_memory,
    print_progress,
    print_summary,
    progress_line,
    summarize,
)
from pspo_eval.train.policy import autocast_dtype, resolve_device, unwrap
from pspo_eval.train.rewards import RewardSet
from pspo_eval.train.rollout import PromptSchedule, RolloutBatch, VLLMGenerator, make_rollout
from pspo_eval.train.setup import config_differences  # noqa: F401  (re-exported)
from pspo_eval.train.step import lr_factor
from pspo_eval.train.validation import validation_metrics


class Trainer:
    """Set up once from a config and an output directory; :meth:`run` trains to ``total_steps``."""

    def __init__(self, cfg: TrainConfig, out: str | Path, *, resume: bool = False, verbose: bool = True):
        self.cfg, self.out, self.verbose = cfg, Path(out), verbose
        self.mu = cfg.train.num_iterations
        self.objective = cfg.objective.name
        self.objective_params = cfg.objective.params()
        self.tis_cap = setup.tis_cap(cfg.rollout)
        self.dist = Dist(resolve_device(cfg.model.device))
        self.dist.check_divides(cfg.train.prompts_per_step)
        self.device: torch.device = self.dist.device  # type: ignore[assignment]
        self.amp = autocast_dtype(cfg.model.dtype, self.device)
        self.config_yaml, self.config_hash = dump_config(cfg), config_hash(cfg)
        setup.quiet_transformers()
        setup.seed_everything(cfg.seed)  # before anything draws random numbers (LoRA init, sampling)

        self.train_problems, self.val_problems = setup.load_problems(cfg)
        n = len(self.train_problems)
        self.schedule = PromptSchedule(n, cfg.train.prompts_per_step, shuffle=cfg.data.shuffle, seed=cfg.seed)
        self.total_steps, self.warmup = cfg.total_steps(n), cfg.warmup_steps(n)
        self.resume_from, self.start_state = setup.find_start(self.out, resume=resume, is_main=self.dist.is_main)

        from pspo_eval.models import resolve_model

        self.model_path = resolve_model(cfg.model.path)
        self.tokenizer, policy, self.ref_model = setup.load_models(cfg, self.model_path, self.device, self.resume_from)
        self.model = self.dist.prepare_model(policy)
        # The prompt-sharing pass runs the model several times per micro-batch; DDP wants one forward
        # per backward, and transformers turns the cache off under gradient checkpointing.
        self.share_prefix = self.dist.world_size == 1 and not cfg.model.gradient_checkpointing
        self.policy = unwrap(self.model)
        self.optimizer, self.param_names, self.params = setup.build_optimizer(self.policy, cfg)
        # The learning rate is a pure function of the step, assigned before every update (as in
        # nanoGPT): no scheduler object, so nothing about it needs saving or restoring on resume.
        self.lr_factor = lr_factor(cfg.optim.schedule, self.warmup, self.total_steps)

        self.stop_ids, self.pad_id = setup.stop_and_pad_ids(self.tokenizer, self.policy, cfg.rollout)
        self._prompt_cache: dict[str, list[int]] = {}  # before the generator: vLLM's sizes its context from the prompts
        longest = None
        if cfg.rollout.backend == "vllm":
            longest = max(len(self._encode(p)) for p in self.train_problems + self.val_problems)
        self.generator = setup.make_generator(
            cfg, model_path=self.model_path, policy=self.policy, tokenizer=self.tokenizer, stop_ids=self.stop_ids,
            amp=self.amp, world_size=self.dist.world_size, longest_prompt=longest,
        )
        self.reward_set = RewardSet(cfg.rewards, dataset=self.train_problems[0].dataset if self.train_problems else None)

        self.step, self.elapsed_before = 0, 0.0
        self.batch: RolloutBatch | None = None
        self.best: dict[str, Any] | None = None
        if self.start_state is not None:
            self._restore(self.start_state)
        resumed_at = self.step if self.start_state is not None else None
        self.metrics = MetricsLog(
            self.out, keep_through=resumed_at, report_to=list(cfg.logging.report_to), run_name=cfg.name,
            config=cfg.model_dump(mode="json"), enabled=self.dist.is_main,
        )
        if self.dist.is_main:
            save.trim_completions_log(self.out, resumed_at)
            atomic_write_text(self.out / "config.yaml", self.config_yaml)

    def _encode(self, problem) -> list[int]:
        ids = self._prompt_cache.get(problem.id)
        if ids is None:
            ids = encode_prompt(problem.question, self.tokenizer, self.cfg.data.system_prompt)
            self._prompt_cache[problem.id] = ids
        return ids

    def _restore(self, state: dict[str, Any]) -> None:
        assert self.resume_from is not None
        setup.check_resumable(state, self.resume_from, self.cfg, world_size=self.dist.world_size,
                              config_hash=self.config_hash, verbose=self.verbose and self.dist.is_main)
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

    # -- rollouts ----------------------------------------------------------------------------------------
    def _sync_generator(self) -> None:
        if isinstance(self.generator, VLLMGenerator):
            self.generator.sync_from(self.model, self.step)
        else:
            self.generator.sync(self.step)

    def make_rollout(self, rollout_index: int) -> RolloutBatch:
        """Sample, score and compute advantages for rollout ``rollout_index`` (this process's share)."""
        cfg, r = self.cfg, self.cfg.rollout
        started = time.perf_counter()
        mine = self.dist.shard([self.train_problems[i] for i in self.schedule.indices(rollout_index)])
        self._sync_generator()
        batch = make_rollout(
            rollout_index=rollout_index, problems=mine, prompt_ids=[self._encode(p) for p in mine],
            generator=self.generator, reward_set=self.reward_set, tokenizer=self.tokenizer, seed=cfg.seed,
            num_generations=r.num_generations, temperature=r.temperature, top_p=r.top_p,
            max_new_tokens=r.max_new_tokens, scale=cfg.advantage.scale, eps=cfg.advantage.eps,
            pad_id=self.pad_id, device=self.device,
            # One process: the batch's own std, computed exactly as before (bitwise-stable runs).
            reduce_sum=self.dist.sum if self.dist.world_size > 1 else None,
        )
        if self.ref_model is not None or (cfg.loss.beta > 0 and cfg.model.lora is not None):
            reference_logprobs(
                batch, ref_model=self.ref_model, policy=self.policy, micro_batch_size=cfg.train.micro_batch_size,
                temperature=r.temperature, device=self.device, amp=self.amp, share_prefix=self.share_prefix,
            )
        # Logged rollout statistics cover every process's completions; kept with the batch so that a
        # checkpoint taken between its μ steps logs the same numbers after a resume.
        metrics = batch_rollout_metrics(batch, self.dist, r.num_generations)
        metrics["gen_tokens_per_s"] = self.dist.sum([float(batch.generated_tokens)])[0] / max(batch.seconds, 1e-9)
        metrics["time/rollout_s"] = time.perf_counter() - started
        metrics["epoch"] = self.schedule.epoch_of(rollout_index)
        batch.extra["metrics"] = metrics
        if cfg.logging.log_completions and self.dist.is_main:
            save.log_completions(self.out, batch, self.step + 1, cfg.logging.log_completions)
        return batch

    # -- one optimizer step ------------------------------------------------------------------------------
    def set_learning_rate(self) -> float:
        """Assign the learning rate of the coming update: peak × schedule factor of the step number.

        The same number transformers' LambdaLR gives after ``self.step`` scheduler steps; after a
        resume it follows *this* config's schedule (the saved one, unless it was changed).
        """
        return step.set_learning_rate(self.optimizer, self.cfg.optim.learning_rate * self.lr_factor(self.step))

    def loss_settings(self) -> step.LossSettings:
        c = self.cfg
        return step.LossSettings(
            objective=self.objective, params=self.objective_params, aggregation=c.loss.aggregation,
            beta=c.loss.beta, tis_cap=self.tis_cap, num_iterations=self.mu,
            temperature=c.rollout.temperature, max_len=c.rollout.max_new_tokens,
        )

    def accumulate_gradients(self, batch: RolloutBatch) -> dict[str, float]:
        """The loss of iteration ``batch.iterations_done`` on ``batch``, backpropagated into ``.grad``; its statistics."""
        runtime = step.Runtime(self.model, self.dist, self.device, self.amp, self.share_prefix)
        return step.accumulate_gradients(runtime, batch, self.loss_settings(), self.cfg.train.micro_batch_size)

    def optimizer_step(self, batch: RolloutBatch) -> dict[str, float]:
        """One update over the whole rollout: gradients (micro-batches), clipping, AdamW."""
        result = self.accumulate_gradients(batch)
        result["grad_norm"] = step.clip_and_step(self.optimizer, self.params, self.cfg.optim.max_grad_norm)
        batch.iterations_done += 1
        return result

    # -- evaluation on the validation prompts -----------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Greedy completions for the first ``eval.limit`` validation prompts, scored by the train rewards."""
        cfg = self.cfg
        started = time.perf_counter()
        self._sync_generator()
        out = validation_metrics(
            self.val_problems[: cfg.eval.limit] if cfg.eval.limit else self.val_problems,
            generator=self.generator, tokenizer=self.tokenizer, encode=self._encode, reward_set=self.reward_set,
            dist=self.dist, batch_size=cfg.rollout.generation_batch_size or 64,
            max_new_tokens=cfg.rollout.max_new_tokens,
        )
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
        return save.save_step_checkpoint(
            self.out, self.step, dist=self.dist, batch=self.batch, num_iterations=self.mu, model=self.model,
            tokenizer=self.tokenizer, optimizer=self.optimizer, param_names=self.param_names, state=self._state,
            config_yaml=self.config_yaml, keep_last=self.cfg.checkpoint.keep_last,
        )

    def _save_model_copy(self, name: str, extra: dict[str, Any]) -> Path:
        return save.save_model_copy(self.out, name, model=self.model, tokenizer=self.tokenizer,
                                    config_yaml=self.config_yaml, extra=extra)

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

    # -- the loop ----------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg, total = self.cfg, self.total_steps
        self._started = time.perf_counter()
        self._log_start()
        last_saved = self.step if self.start_state is not None else None
        while self.step < total:
            record = self._train_step()
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

    def _train_step(self) -> dict[str, Any]:
        """Rollout (every μ-th step), learning rate, one update; the step's metrics record."""
        step_started = time.perf_counter()
        new_rollout = self.batch is None or self.batch.iterations_done >= self.mu
        if new_rollout:
            self.batch = self.make_rollout(self.step // self.mu)
        batch = self.batch
        assert batch is not None
        iteration = batch.iterations_done
        lr = self.set_learning_rate()
        train_started = time.perf_counter()
        stats = self.optimizer_step(batch)
        self.step += 1
        now = time.perf_counter()
        step_s = now - step_started
        completion_tokens = self.dist.sum([float(batch.completion_mask.sum())])[0]
        record: dict[str, Any] = {"step": self.step, "rollout": batch.rollout_index, "iteration": iteration}
        record.update(batch.extra.get("metrics", {}))
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
        return record

    def _log_start(self) -> None:
        if not (self.verbose and self.dist.is_main):
            return
        cfg = self.cfg
        precision = "fp32" if self.amp is None else "autocast " + str(self.amp).replace("torch.", "")
        log(
            f"training {cfg.objective.name} on {cfg.model.path} ({self.device}, {precision}, rollouts: "
            f"{cfg.rollout.backend}/{self.generator.kind}) for {self.total_steps} steps: "
            f"{cfg.train.prompts_per_step} prompts x {cfg.rollout.num_generations} completions, μ={self.mu}, "
            f"{len(self.train_problems)} train / {len(self.val_problems)} validation prompts -> {self.out}"
        )

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
