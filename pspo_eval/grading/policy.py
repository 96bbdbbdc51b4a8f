"""How each benchmark is graded: numerically (GSM8K, SVAMP, ASDiv) or symbolically (MATH-500).

A policy is data, looked up by the dataset's registry name. Any other name gets a policy decided
by its gold answer: numeric when the gold parses as a number, symbolic otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from pspo_eval.data.registry import DATASET_ALIASES
from pspo_eval.grading.gold import parse_gold

Kind = Literal["numeric", "symbolic"]


@dataclass(frozen=True)
class GradingPolicy:
    """The grading rules of one dataset.

    - ``kind``: ``numeric`` compares exact numbers (with the rounding and percent rules of
      :func:`pspo_eval.grading.numeric.numbers_match`); ``symbolic`` asks math-verify.
    - ``strict_methods``: the extraction rules that count for the strict score (with a correct
      answer). Numeric benchmarks: only the paper's ``#### <number>``; MATH-500: ``\\boxed{}`` or
      ``####``.
    """

    name: str
    kind: Kind
    strict_methods: frozenset[str]
    description: str = ""


NUMERIC_STRICT = frozenset({"hash"})
SYMBOLIC_STRICT = frozenset({"boxed", "hash"})

POLICIES: dict[str, GradingPolicy] = {
    "gsm8k": GradingPolicy("gsm8k", "numeric", NUMERIC_STRICT, "GSM8K test: integer answers"),
    "gsm8k_train": GradingPolicy("gsm8k_train", "numeric", NUMERIC_STRICT, "GSM8K train (the RL reward)"),
    "svamp": GradingPolicy("svamp", "numeric", NUMERIC_STRICT, "SVAMP: numbers written like 51.0"),
    "asdiv": GradingPolicy(
        "asdiv", "numeric", NUMERIC_STRICT, "ASDiv: numbers, some rounded, a few lists/texts"
    ),
    "math500": GradingPolicy(
        "math500", "symbolic", SYMBOLIC_STRICT, "MATH-500: LaTeX answers via math-verify"
    ),
}

@lru_cache(maxsize=1024)
def canonical_name(dataset: str) -> str:
    """The registry spelling of a dataset name ('MATH-500' -> 'math500'), or the name lower-cased."""
    name = dataset.strip().lower()
    return DATASET_ALIASES.get(name) or DATASET_ALIASES.get(name.replace("-", "_"), name.replace("-", "_"))


def policy_for(dataset: str, gold: str | None = None) -> GradingPolicy:
    """The policy of a registry dataset; for any other name, decided by whether `gold` is a number."""
    name = canonical_name(dataset)
    policy = POLICIES.get(name)
    if policy is not None:
        return policy
    numeric = gold is not None and parse_gold(gold).kind in ("number", "list")
    kind: Kind = "numeric" if numeric else "symbolic"
    return GradingPolicy(
        dataset,
        kind,
        NUMERIC_STRICT if numeric else SYMBOLIC_STRICT,
        "not a registry dataset: decided by its gold",
    )


def kind_of(dataset: str, gold: str | None = None) -> Kind:
    """'numeric' or 'symbolic' for a dataset (and, for unknown names, its gold answer)."""
    return policy_for(dataset, gold).kind
