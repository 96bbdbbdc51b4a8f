"""The Judgment record: one judged item (one response, or one pair of responses) by one judge under one rubric.

Stored in ``RUN_DIR/judgments/<judge>/<rubric>.jsonl``. Every judged item ends in exactly one typed
``outcome``; ``scores`` and ``flags`` are filled only when it is ``ok`` — a failure is never turned
into a score, a zero or a tie.

Keys: ``item_key`` is the cache key (judge identity, rubric name + version + content hash, prompt
hash, sampling settings, the judged sample(s), repeat). ``key`` is unique per stored line: it equals
``item_key`` for final outcomes, and carries a suffix for ``api_error`` records, which a rerun
retries (a transient server failure is not a verdict); :func:`pspo_eval.judge.aggregate.load_judgments`
keeps, per ``item_key``, the final record if there is one.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Outcome = Literal["ok", "parse_error", "refusal", "truncated", "api_error"]
OUTCOMES: tuple[str, ...] = ("ok", "parse_error", "refusal", "truncated", "api_error")
# Outcomes a rerun keeps (deterministic at temperature 0); api_error is retried.
FINAL_OUTCOMES = frozenset({"ok", "parse_error", "refusal", "truncated"})

# Pairwise: (order index, the judge's choice of position) -> the candidate's result (+1 better, 0 tie,
# -1 worse). Order 0 shows the baseline as A ("baseline_first"), order 1 the candidate as A.
ORDER_NAMES = ("baseline_first", "candidate_first")
ORDER_PREFERENCE = {
    (0, "A"): -1, (0, "B"): 1, (0, "tie"): 0,
    (1, "A"): 1, (1, "B"): -1, (1, "tie"): 0,
}


class Usage(BaseModel):
    """Tokens and requests spent on one judged item (all attempts, re-asks and both pairwise orders)."""

    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = Field(default=0, description="HTTP requests sent (including retries and re-asks).")
    retries: int = Field(default=0, description="Requests repeated after a 429/5xx/timeout/malformed body.")
    reasks: int = Field(default=0, description="Follow-up requests quoting a validation error.")
    cost_usd: float | None = Field(default=None, description="From the configured prices; None when unpriced.")

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.requests += other.requests
        self.retries += other.retries
        self.reasks += other.reasks


class Judgment(BaseModel):
    """One judged item (see the module docstring)."""

    model_config = ConfigDict(extra="allow")

    key: str
    item_key: str
    # what was judged
    model: str = Field(description="The judged model (pairwise: the candidate compared with `baseline`).")
    dataset: str
    problem_id: str
    category: str | None = None
    sample_key: str
    setting: str
    correct: bool | None = Field(default=None, description="The grader's verdict on the final answer (context).")
    baseline: str | None = Field(default=None, description="Pairwise: the model the candidate is compared with.")
    baseline_sample_key: str | None = None
    baseline_correct: bool | None = None
    # who judged, how
    judge: str = Field(description="Judge identity (no URL, no key): 'openai:gpt-4o-mini', 'local:smollm2-135m-instruct', …")
    rubric: str
    rubric_version: str
    rubric_hash: str
    mode: Literal["absolute", "reference", "pairwise"]
    prompt_hash: str
    repeat: int = 0
    temperature: float
    seed: int
    max_tokens: int
    structured: str = Field(description="Structured-output strategy used: json_schema, json_object or prompt.")
    grader_check: str | None = Field(default=None, description="The rubric's criterion compared with the grader.")
    scale: dict[str, list[int]] | None = Field(default=None, description="criterion -> [low, high] (not pairwise).")
    # the verdict
    outcome: Literal["ok", "parse_error", "refusal", "truncated", "api_error"]
    scores: dict[str, int] | None = Field(
        default=None,
        description="criterion -> integer, None unless ok. Pairwise: +1 candidate better, 0 tie, -1 baseline better.",
    )
    flags: dict[str, bool] | None = None
    rationale: str | None = None
    flips: dict[str, bool] | None = Field(default=None, description="Pairwise: criterion -> the two orders disagreed.")
    orders: list[dict[str, Any]] | None = Field(default=None, description="Pairwise: the verdict of each order.")
    error: str | None = Field(default=None, description="Why the item is not ok (secrets redacted).")
    raw: str | None = Field(default=None, description="The judge's last reply (truncated), for tracing.")
    # lengths of the judged responses (the judge's length bias is measured from them)
    response_chars: int | None = Field(default=None, description="Characters of the judged (candidate) response.")
    response_tokens: int | None = Field(default=None, description="Tokens of the judged response (the generator's count).")
    baseline_chars: int | None = Field(default=None, description="Pairwise: characters of the baseline's response.")
    baseline_tokens: int | None = Field(default=None, description="Pairwise: tokens of the baseline's response.")
    expected_scores: dict[str, float] | None = Field(
        default=None, description="criterion -> probability-weighted score (G-Eval) when the endpoint gave logprobs.")
    source: Literal["judge", "import"] = Field(default="judge", description="import: `pspo-eval judge import`.")
    injection_detected: bool = Field(default=False, description="The response text addresses the judge.")
    injection_matches: list[str] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    latency_s: float = 0.0
    created_at: str = ""
