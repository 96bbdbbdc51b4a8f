"""The training reward: the config's reward functions, each weighted, each logged on its own.

``rewards:`` in the config lists functions by registered name (``paper``, ``correctness``, ``format``,
see :mod:`pspo_eval.grading.reward`) or by import path (``package.module:function``), each with a
weight and keyword arguments. A completion's reward is Σ_k w_k · f_k(completion); the trainer logs
every f_k's mean and std separately, because a total that rises can hide one part that falls.

All functions share the signature ``fn(responses, golds, **kwargs) -> list[float]``. The trainer
also passes ``dataset=`` (the problems' dataset name, which the built-in graders use to pick their
extraction rules) to every function whose signature accepts it or takes ``**kwargs``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pspo_eval.errors import PspoError
from pspo_eval.grading.reward import RewardFn, get_reward_function


def _accepts(fn: RewardFn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins / C callables: pass nothing extra
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


@dataclass(frozen=True)
class _Part:
    label: str  # the name used in logs (unique: 'format', 'format#2', 'mypkg.rewards:length')
    fn: RewardFn
    weight: float
    kwargs: dict[str, Any]


class RewardSet:
    """The weighted sum of the configured reward functions (built once; cheap to call)."""

    def __init__(self, specs: Sequence[Any], *, dataset: str | None = None):
        """``specs``: objects with ``name``, ``weight``, ``kwargs`` (the config's RewardSpec)."""
        if not specs:
            raise PspoError("no reward functions configured", "add one under `rewards:` (e.g. name: paper)")
        parts: list[_Part] = []
        seen: dict[str, int] = {}
        for spec in specs:
            fn = get_reward_function(spec.name)
            kwargs = dict(spec.kwargs or {})
            if dataset is not None and "dataset" not in kwargs and _accepts(fn, "dataset"):
                kwargs["dataset"] = dataset
            seen[spec.name] = seen.get(spec.name, 0) + 1
            label = spec.name if seen[spec.name] == 1 else f"{spec.name}#{seen[spec.name]}"
            parts.append(_Part(label, fn, float(spec.weight), kwargs))
        self.parts = parts

    @property
    def labels(self) -> list[str]:
        return [p.label for p in self.parts]

    def __call__(self, responses: Sequence[str], golds: Sequence[str]) -> tuple[list[float], dict[str, list[float]]]:
        """(total per completion, {label: unweighted values per completion})."""
        total = [0.0] * len(responses)
        values: dict[str, list[float]] = {}
        for part in self.parts:
            try:
                got = list(part.fn(list(responses), list(golds), **part.kwargs))
            except PspoError:
                raise
            except Exception as exc:
                raise PspoError(
                    f"reward function '{part.label}' failed: {type(exc).__name__}: {exc}",
                    "fix the function (it gets fn(responses, golds, **kwargs) and returns one float each)",
                ) from exc
            if len(got) != len(responses):
                raise PspoError(
                    f"reward function '{part.label}' returned {len(got)} values for {len(responses)} completions",
                    "a reward function must return one float per completion",
                )
            floats = []
            for i, v in enumerate(got):
                try:
                    f = float(v)
                except (TypeError, ValueError):
                    f = math.nan
                if not math.isfinite(f):
                    raise PspoError(
                        f"reward function '{part.label}' returned {v!r} for completion {i}",
                        "rewards must be finite numbers",
                    )
                floats.append(f)
            values[part.label] = floats
            total = [t + part.weight * f for t, f in zip(total, floats, strict=True)]
        return total, values
