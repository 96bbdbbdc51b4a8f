"""The reward both trainers optimise in benchmarks/learning.py: plain Python, no imports from either tool.

The PSPO paper's reward shape (1 for the right final number, +0.05 for the '#### <number>' format,
-0.2 when no number is found, clipped to [0, 1]) with a deliberately simple grader, so that this very
file serves our trainer (``rewards: [{name: "learning_reward:reward"}]``, PYTHONPATH=benchmarks/learning)
and TRL's GRPOTrainer (benchmarks/trl_grpo_learning.py) bit for bit. The held-out accuracy is scored
later by ``pspo-eval evaluate``'s own grader, the same for every model.
"""

from __future__ import annotations

import re

FORMAT_RE = re.compile(r"####\s*(-?\d[\d,]*(?:\.\d+)?)")
NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> float | None:
    """The number after the last '####', else the last number in the text; None when there is none."""
    hashed = FORMAT_RE.findall(text)
    found = hashed or NUMBER_RE.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def has_format(text: str) -> bool:
    """Whether the text states an answer as '#### <number>'."""
    return FORMAT_RE.search(text) is not None


def score(text: str, gold: str) -> float:
    value = final_number(text)
    bonus = 0.05 if has_format(text) else 0.0
    if value is None:
        return max(0.0, bonus - 0.2)
    correct = abs(value - float(str(gold).replace(",", ""))) < 1e-6
    return min(1.0, (1.0 if correct else 0.0) + bonus)


def _text(item) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        return str(item.get("content", ""))
    return str(item[-1]["content"])  # chat messages: the last (assistant) message


def reward(responses, golds, **_) -> list[float]:
    """Our trainer's signature: fn(responses, golds, **kw) -> list[float]."""
    return [score(_text(r), g) for r, g in zip(responses, golds, strict=True)]
