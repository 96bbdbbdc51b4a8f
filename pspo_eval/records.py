"""The typed records that flow between stages (load → generate → grade → judge → report).

Every record is a pydantic model, serialised as one JSON object per line in the run store.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Problem(BaseModel):
    """One benchmark item, whatever its source (bundled file, the hub, or a user's JSONL)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Stable id, unique within its dataset (e.g. 'gsm8k-test-0000').")
    dataset: str = Field(description="Registry name of the dataset (gsm8k, svamp, asdiv, math500, …).")
    question: str = Field(description="The text the model sees.")
    answer: str = Field(description="Gold final answer: a number for GSM8K/SVAMP/ASDiv, LaTeX for MATH-500.")
    solution: str | None = Field(default=None, description="Worked solution, where the source has one.")
    category: str | None = Field(default=None, description="Problem type / subject, where the source has one.")
    level: str | None = Field(default=None, description="Grade or difficulty level, where the source has one.")
    meta: dict[str, Any] = Field(default_factory=dict, description="Source-specific extras (e.g. multi_answer).")


GradeMethod = Literal[
    "hash",  # '#### x'
    "boxed",  # last \boxed{...}
    "answer_is",  # 'the (final) answer is x'
    "last_number",  # fallback: the last number in the text
    "latex_last",  # MATH fallback: last $...$ expression
    "none",  # nothing extractable
]


class Grade(BaseModel):
    """What the grader decided about one response."""

    model_config = ConfigDict(extra="forbid")

    extracted: str | None = Field(description="The final answer as extracted from the response, or None.")
    correct: bool = Field(description="Lenient correctness: the extracted answer equals the gold answer.")
    strict: bool = Field(description="Strict correctness: an explicit final-answer format is present and correct.")
    method: str = Field(description="Which extraction rule produced `extracted` (see GradeMethod).")
    timed_out: bool = Field(default=False, description="The symbolic comparison ran out of time (counted incorrect).")
