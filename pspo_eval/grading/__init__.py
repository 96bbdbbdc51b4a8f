"""Answer extraction, grading and the training reward.

- :func:`grade` / :func:`grade_many`: one response (or many) against its gold answer, under the
  dataset's :class:`GradingPolicy` (numeric for GSM8K/SVAMP/ASDiv, symbolic for MATH-500);
- :mod:`pspo_eval.grading.reward`: the paper's reward and a registry of reward functions;
- docs/grading.md: every rule, the tolerance, strict vs lenient, the symbolic method and timeout.

Importing this package is cheap: math-verify/sympy load only inside the symbolic worker processes.
"""

from pspo_eval.grading.gold import GoldAnswer, parse_gold
from pspo_eval.grading.grader import extract_answer, grade, grade_many
from pspo_eval.grading.policy import POLICIES, GradingPolicy, canonical_name, kind_of, policy_for
from pspo_eval.grading.reward import (
    REWARD_FUNCTIONS,
    format_reward,
    get_reward_function,
    has_answer_format,
    load_reward_function,
    paper_reward,
    weighted_reward,
)

__all__ = [
    "POLICIES",
    "REWARD_FUNCTIONS",
    "GoldAnswer",
    "GradingPolicy",
    "canonical_name",
    "extract_answer",
    "format_reward",
    "get_reward_function",
    "grade",
    "grade_many",
    "has_answer_format",
    "kind_of",
    "load_reward_function",
    "paper_reward",
    "parse_gold",
    "policy_for",
    "weighted_reward",
]
