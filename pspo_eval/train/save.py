"""What the trainer writes besides metrics: step checkpoints, the best / final model copies, the completions log.

The on-disk layout is :mod:`pspo_eval.train.checkpoint`'s; this module decides what goes into it
at a step (the trainer's state, the rollout when a checkpoint falls between its μ steps).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pspo_eval.train.checkpoint import atomic_directory, checkpoint_path, prune_checkpoints, save_checkpoint
from pspo_eval.train.dist import Dist
from pspo_eval.train.policy import save_model_dir
from pspo_eval.train.rollout import RolloutBatch


def save_step_checkpoint(
    out: Path,
    step: int,
    *,
    dist: Dist,
    batch: RolloutBatch | None,
    num_iterations: int,
    model,
    tokenizer,
    optimizer,
    param_names: list[str],
    state: Callable[[], dict[str, Any]],
    config_yaml: str,
    keep_last: int | None,
) -> Path:
    """OUT/checkpoint-STEP: weights, AdamW, RNG, ``state()`` and, between the μ steps of a rollout,
    every process's rollout; then the old checkpoints beyond ``keep_last`` go."""
    target = checkpoint_path(out, step)
    mid = batch is not None and batch.iterations_done < num_iterations
    staged = out / f".rollout-step{step}-rank{dist.rank}.safetensors"
    if mid:
        assert batch is not None
        batch.save(staged)
    dist.barrier()
    if dist.is_main:
        rollouts = sorted(out.glob(f".rollout-step{step}-rank*.safetensors")) if mid else []
        save_checkpoint(
            target,
            model=model,
            tokenizer=tokenizer,
            optimizer=optimizer,
            param_names=param_names,
            state=state(),
            config_yaml=config_yaml,
            staged={f"rollout-{p.name.split('-')[-1]}": p for p in rollouts},
        )
        prune_checkpoints(out, keep_last, protect={step})
    dist.barrier()
    return target


def save_model_copy(out: Path, name: str, *, model, tokenizer, config_yaml: str, extra: dict[str, Any]) -> Path:
    """OUT/final or OUT/best: the model, its tokenizer and the config (no trainer state), atomically."""
    target = out / name
    with atomic_directory(target) as tmp:
        save_model_dir(model, tokenizer, tmp)
        (tmp / "config.yaml").write_text(config_yaml, encoding="utf-8")
        (tmp / f"{name}.json").write_text(json.dumps(extra, indent=1), encoding="utf-8")
    return target


def log_completions(out: Path, batch: RolloutBatch, step: int, n: int) -> None:
    """Append the first ``n`` completions of a rollout to OUT/completions.jsonl (``step`` is the coming one)."""
    from pspo_eval.store import Shard

    rows = [
        {
            "key": f"{batch.rollout_index}:{i}",
            "step": step,
            "rollout": batch.rollout_index,
            "problem_id": batch.problem_ids[i],
            "reward": float(batch.rewards[i]),
            "advantage": float(batch.advantages[i]),
            "truncated": bool(batch.truncated[i]),
            "text": batch.texts[i],
        }
        for i in range(min(n, len(batch)))
    ]
    Shard(out / "completions.jsonl").append(rows)


def trim_completions_log(out: Path, keep_through: int | None) -> None:
    """On resume from step N, drop the logged completions of later steps (None: a fresh run, drop all)."""
    path = out / "completions.jsonl"
    if not path.exists():
        return
    from pspo_eval.store import Shard, atomic_write_text

    if keep_through is None:
        path.unlink()
        return
    kept = [r for r in Shard(path).read() if int(r.get("step", 0)) <= keep_through]
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in kept))
