"""Scoring the policy on the held-out validation prompts during training (greedy, the train rewards)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from pspo_eval.train.dist import Dist
from pspo_eval.train.rewards import RewardSet


def validation_metrics(
    problems: Sequence,
    *,
    generator,
    tokenizer,
    encode: Callable[[object], list[int]],
    reward_set: RewardSet,
    dist: Dist,
    batch_size: int,
    max_new_tokens: int,
) -> dict[str, float]:
    """``eval/*`` metrics of greedy completions for ``problems`` (this process's share), over all processes."""
    mine = dist.shard(list(problems))
    texts, lengths, truncated = [], [], []
    for start in range(0, len(mine), batch_size):
        chunk = mine[start : start + batch_size]
        sampled = generator.generate(
            [encode(p) for p in chunk], [0] * len(chunk),
            temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens,
        )
        for s in sampled:
            tokens = s.token_ids[:-1] if s.finish_reason == "stop" else s.token_ids
            texts.append(tokenizer.decode(tokens, skip_special_tokens=True))
            lengths.append(len(s.token_ids))
            truncated.append(s.finish_reason == "length")
    total, parts = reward_set(texts, [str(p.answer) for p in mine]) if mine else ([], {})
    labels = reward_set.labels
    rows = dist.gather(
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
    return out
