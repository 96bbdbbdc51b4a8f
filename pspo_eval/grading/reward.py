"""The training reward: the PSPO paper's reward, its parts, and user-supplied reward functions.

The paper (arXiv 2509.21282; the authors' ``maths_rewards.py`` in github.com/MCDwyer/GR-PSPO)
rewards a GSM8K completion with

    r = clip(1.0 * [answer numerically correct] + 0.05 * [format] - 0.2 * [no number found], 0, 1)

so in practice r is 1.0 (correct), 0.05 (wrong but in the '#### <answer>' format) or 0.0. Their
format test was ``re.search(r'####\\s*\\d+[^\\n]+', text)``, which needs at least one character
after the first digit on the same line: ``#### 72`` earned the bonus, while ``#### 7`` (any
single-digit answer ending its line) and ``#### -7`` did not. Here the format test is fixed: a
``####`` followed by a number (optionally signed), and not a markdown heading such as
``#### 1. Compute the cost``. ``original_format_regex=True`` reproduces the authors' test exactly.

Correctness always uses this package's grader (:func:`pspo_eval.grading.grade`), not the authors'
extraction (which read '25%' as 0.25 and ran sympy's ``sympify`` on model output).

Reward functions share one signature, ``fn(responses, golds, **kw) -> list[float]``, so the trainer
can combine several with weights (:func:`weighted_reward`); a user's own function is named by its
import path ``"package.module:function"``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pspo_eval.errors import PspoError
from pspo_eval.grading import extract
from pspo_eval.grading.grader import _is_heading, grade

FORMAT_BONUS = 0.05
MISSING_PENALTY = 0.2
# The authors' format test, kept byte for byte for `original_format_regex=True`.
ORIGINAL_FORMAT_RE = re.compile(r"####\s*\d+[^\n]+")
# The fixed test: '####', optional whitespace (a line break included, as in the original), a number.
FIXED_FORMAT_RE = re.compile(r"\s*[-\u2212]?\d")

RewardFn = Callable[..., list[float]]


def has_answer_format(response: str, *, original: bool = False) -> bool:
    """Whether the response states its answer in the paper's '#### <number>' format."""
    if original:
        return ORIGINAL_FORMAT_RE.search(response) is not None
    text = extract.prepare(response)
    for cand in extract.hash_candidates(text):
        if FIXED_FORMAT_RE.match(cand.text) and not _is_heading(cand.text, cand.more_after):
            return True
    return False


def paper_reward(
    response: str, gold: str, *, dataset: str = "gsm8k", original_format_regex: bool = False
) -> float:
    """The paper's reward for one completion: 1.0 correct, +0.05 format, -0.2 no number, clipped to [0, 1]."""
    g = grade(dataset, response, gold)
    shaped = FORMAT_BONUS if has_answer_format(response, original=original_format_regex) else 0.0
    if g.extracted is None:
        return _clip(shaped - MISSING_PENALTY)
    return _clip((1.0 if g.correct else 0.0) + shaped)


def _clip(x: float) -> float:
    return max(0.0, min(1.0, x))


def _as_text(item: Any) -> str:
    """A completion as text: plain strings, or chat messages ({'content': …} or a list of them)."""
    if isinstance(item, str):
        return item
    if isinstance(item, Mapping):
        return str(item.get("content", ""))
    if isinstance(item, Sequence) and item and isinstance(item[-1], Mapping):
        return str(item[-1].get("content", ""))
    raise PspoError(f"a completion must be text or chat messages, got {type(item).__name__}")


def _pairs(responses: Sequence[Any], golds: Sequence[Any]) -> list[tuple[str, str]]:
    if len(responses) != len(golds):
        raise PspoError(
            f"{len(responses)} responses but {len(golds)} gold answers",
            "pass one gold answer per response (repeat a prompt's gold for each of its samples)",
        )
    return [(_as_text(r), str(g)) for r, g in zip(responses, golds, strict=True)]


def correctness_reward(
    responses: Sequence[Any], golds: Sequence[Any], *, dataset: str = "gsm8k", **_: Any
) -> list[float]:
    """1.0 for a correct final answer (lenient grading), else 0.0."""
    return [1.0 if grade(dataset, r, g).correct else 0.0 for r, g in _pairs(responses, golds)]


def format_reward(
    responses: Sequence[Any],
    golds: Sequence[Any] | None = None,
    *,
    original_format_regex: bool = False,
    **_: Any,
) -> list[float]:
    """1.0 when the answer is given as '#### <number>' (the paper's bonus is 0.05 of this), else 0.0."""
    return [1.0 if has_answer_format(_as_text(r), original=original_format_regex) else 0.0 for r in responses]


def paper_rewards(
    responses: Sequence[Any],
    golds: Sequence[Any],
    *,
    dataset: str = "gsm8k",
    original_format_regex: bool = False,
    **_: Any,
) -> list[float]:
    """:func:`paper_reward` for each completion."""
    return [
        paper_reward(r, g, dataset=dataset, original_format_regex=original_format_regex)
        for r, g in _pairs(responses, golds)
    ]


REWARD_FUNCTIONS: dict[str, RewardFn] = {
    "correctness": correctness_reward,
    "format": format_reward,
    "paper": paper_rewards,
}


def load_reward_function(path: str) -> RewardFn:
    """Import a user's reward function named 'package.module:function' (same signature as the rest)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name.strip() or not attr.strip():
        raise PspoError(
            f"reward function '{path}' is not of the form 'package.module:function'",
            f"built-in rewards: {', '.join(REWARD_FUNCTIONS)}",
        )
    try:
        module = importlib.import_module(module_name.strip())
    except ImportError as exc:
        raise PspoError(
            f"cannot import module '{module_name}' for reward function '{path}': {exc}",
            "check the module name and that its folder is on PYTHONPATH",
        ) from exc
    obj: Any = module
    for part in attr.strip().split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise PspoError(
                f"module '{module_name}' has no attribute '{attr}'", "check the function name after ':'"
            )
    if not callable(obj):
        raise PspoError(
            f"'{path}' is not callable", "name a function fn(responses, golds, **kw) -> list[float]"
        )
    return obj  # type: ignore[no-any-return]


def get_reward_function(spec: str) -> RewardFn:
    """A built-in reward by name (correctness, format, paper) or a user's by 'package.module:function'."""
    if ":" in spec:
        return load_reward_function(spec)
    fn = REWARD_FUNCTIONS.get(spec.strip().lower())
    if fn is None:
        raise PspoError(
            f"unknown reward function '{spec}'",
            f"choose one of {', '.join(REWARD_FUNCTIONS)} or give 'package.module:function'",
        )
    return fn


def weighted_reward(weights: Mapping[str, float]) -> RewardFn:
    """One reward function summing several: weighted_reward({'correctness': 1.0, 'format': 0.05})."""
    if not weights:
        raise PspoError("no reward functions given", f"name at least one of {', '.join(REWARD_FUNCTIONS)}")
    parts = [(get_reward_function(name), float(w)) for name, w in weights.items()]

    def combined(responses: Sequence[Any], golds: Sequence[Any], **kw: Any) -> list[float]:
        total = [0.0] * len(responses)
        for fn, w in parts:
            values = list(fn(responses, golds, **kw))
            if len(values) != len(responses):
                raise PspoError(
                    f"reward function {getattr(fn, '__name__', fn)} returned {len(values)} values for {len(responses)} responses",
                    "a reward function must return one float per response",
                )
            total = [t + w * float(v) for t, v in zip(total, values, strict=True)]
        return total

    combined.__name__ = "weighted(" + ", ".join(f"{n}={w}" for n, w in weights.items()) + ")"
    return combined
