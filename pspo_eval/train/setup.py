"""Building a training run: data, where to start from, model, tokenizer, reference, optimizer, generator.

Each function builds one thing from the config; :class:`pspo_eval.train.loop.Trainer` calls them in
a fixed order (the order matters: the seeds are set before anything draws random numbers).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from pspo_eval.console import warn
from pspo_eval.errors import PspoError
from pspo_eval.train.checkpoint import latest_checkpoint, read_state, remove_partial
from pspo_eval.train.config import RolloutConfig, TrainConfig
from pspo_eval.train.policy import load_policy, load_reference, load_tokenizer
from pspo_eval.train.rollout import HFGenerator, VLLMGenerator


def quiet_transformers() -> None:
    """No per-file progress bars from transformers while loading and saving checkpoints."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover - a transformers without that switch
        pass


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    import numpy as np

    np.random.seed(seed % 2**32)


def load_problems(cfg: TrainConfig) -> tuple[list, list]:
    """(training, validation) problems: the dataset or file, split by ``data.train_size`` and ``split_seed``."""
    from pspo_eval.data import load_dataset, load_file, split_train_validation

    d = cfg.data
    problems = load_file(d.file) if d.file else load_dataset(d.dataset)
    if d.train_size > len(problems):
        raise PspoError(
            f"data.train_size is {d.train_size} but the data has only {len(problems)} problems",
            f"set data.train_size to at most {len(problems)}",
        )
    train, val = split_train_validation(problems, d.train_size, d.split_seed)
    if cfg.eval.every and not val:
        raise PspoError(
            "eval.every is set but there are no validation prompts",
            "lower data.train_size below the dataset size, or set eval.every=0",
        )
    return train, val


def find_start(out: Path, *, resume: bool, is_main: bool) -> tuple[Path | None, dict[str, Any] | None]:
    """(checkpoint to resume from, its saved state), or (None, None) for a fresh run.

    A half-written checkpoint is removed first; a directory that already holds checkpoints needs
    ``resume`` (so that a second run cannot silently train on top of a first).
    """
    if is_main:
        remove_partial(out)
    found = latest_checkpoint(out)
    if found is not None and not resume:
        raise PspoError(
            f"{out} already holds checkpoints (latest: {found[1].name})",
            "add --resume to continue that run, or choose another --out",
        )
    if resume and found is not None:
        return found[1], read_state(found[1])
    return None, None


def load_models(cfg: TrainConfig, model_path: str, device: torch.device, weights_from: Path | None):
    """(tokenizer, policy, reference model or None). The policy's weights come from ``weights_from`` on resume."""
    tokenizer = load_tokenizer(model_path)
    policy = load_policy(cfg.model, model_path=model_path, device=device, weights_from=weights_from)
    ref_model = None
    if cfg.loss.beta > 0:
        ref_model = load_reference(cfg.model, model_path=model_path, device=device)
    return tokenizer, policy, ref_model


def build_optimizer(policy, cfg: TrainConfig) -> tuple[torch.optim.AdamW, list[str], list[torch.Tensor]]:
    """AdamW over the trainable parameters, weight decay on matrices only; (optimizer, names, params).

    The names fix the parameter order that the saved optimizer state is matched against on resume.
    """
    named = [(n, p) for n, p in policy.named_parameters() if p.requires_grad]
    decay = [(n, p) for n, p in named if p.ndim >= 2]
    no_decay = [(n, p) for n, p in named if p.ndim < 2]
    o = cfg.optim
    groups = [
        {"params": [p for _, p in decay], "weight_decay": o.weight_decay},
        {"params": [p for _, p in no_decay], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=o.learning_rate, betas=(o.adam_betas[0], o.adam_betas[1]), eps=o.adam_eps
    )
    return optimizer, [n for n, _ in decay + no_decay], [p for _, p in decay + no_decay]


def stop_and_pad_ids(tokenizer, policy, rollout: RolloutConfig) -> tuple[list[int], int]:
    """The token ids that end a completion, and the padding id (the tokenizer's, else the first stop id)."""
    from pspo_eval.generation.hf import stop_token_ids

    stop_ids = stop_token_ids(tokenizer, policy, end_of_turn=rollout.stop == "eos+end_of_turn")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    return stop_ids, pad_id


def tis_cap(rollout: RolloutConfig) -> float | None:
    """Truncated importance sampling on the sampler's log-probs: on by default with vLLM rollouts."""
    v = rollout.vllm
    return v.importance_sampling_cap if rollout.backend == "vllm" and v.importance_sampling else None


def make_generator(
    cfg: TrainConfig,
    *,
    model_path: str,
    policy,
    tokenizer,
    stop_ids: list[int],
    amp: torch.dtype | None,
    world_size: int,
    longest_prompt: int | None,
) -> HFGenerator | VLLMGenerator:
    """The rollout sampler: vLLM (its context sized from ``longest_prompt``) or the in-process HF one."""
    r = cfg.rollout
    if r.backend == "vllm":
        assert longest_prompt is not None
        gen = VLLMGenerator(
            model_path,
            r.vllm,
            dtype=cfg.model.dtype,
            seed=cfg.seed,
            max_model_len=longest_prompt + r.max_new_tokens,
            stop_ids=stop_ids,
            world_size=world_size,
        )
        gen.top_k = r.top_k
        return gen
    return HFGenerator(
        policy,
        tokenizer,
        stop_ids,
        batch_size=r.generation_batch_size,
        top_k=r.top_k,
        allow_fast=cfg.model.lora is None,
        autocast_dtype=amp,
    )


def check_resumable(state: dict[str, Any], checkpoint: Path, cfg: TrainConfig, *, world_size: int,
                    config_hash: str, verbose: bool) -> None:
    """Refuse a mid-rollout checkpoint from another world size; warn when the settings changed."""
    if state.get("world_size", 1) != world_size and state.get("mid_rollout"):
        raise PspoError(
            f"{checkpoint} was saved between the steps of a rollout by {state.get('world_size')} "
            f"processes; it can only be resumed with that many",
            "resume with the same number of processes, or from a checkpoint at a rollout boundary",
        )
    if state.get("config_hash") != config_hash and verbose:
        changed = config_differences(checkpoint / "config.yaml", cfg)
        warn(
            f"resuming {checkpoint.name} with changed settings ({', '.join(changed[:6]) or '?'}): "
            "not an exact continuation"
        )


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
