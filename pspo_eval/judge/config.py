"""``JudgeConfig``: every setting of one ``judge_run`` (the ``pspo-eval judge`` options), each default written once.

``pspo-eval judge`` builds it from its options (or from ``--config FILE --set key=value``), the
pipeline's judge stage is one (plus the stage's own keys), and :func:`pspo_eval.judge.run.judge_run`
takes it. Range checks name the command-line option (``--repeats must be at least 1``); the one
formatter (:func:`pspo_eval.config.describe_validation_error`) turns them into one-line errors.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pspo_eval.errors import PspoError

STRATEGIES = ("json_schema", "json_object", "prompt")  # the structured-output strategies, best first
LOCAL_TIMEOUT = 900.0  # seconds per request for a server we start ourselves (a CPU server is slow)
REMOTE_TIMEOUT = 120.0
HINT = "see `pspo-eval judge --help`"


class JudgeConfig(BaseModel):
    """How to judge a run: the judges, the rubric, what to judge, and how to ask."""

    model_config = ConfigDict(extra="forbid")

    judges: list[str] = Field(
        default_factory=list,
        description="Judge specs: 'local' (transformers serve + demo model), 'vllm', 'openai:MODEL' or 'URL::MODEL'.",
    )
    rubric: str = Field("math_response_quality", description="Rubric file, or a bundled rubric's name.")
    # what to judge (field order = the order of the manifest's recorded settings)
    per_dataset: int | None = Field(None, description="Judge a seeded stratified sample of N problems per dataset.")
    repeats: int = Field(1, description="Judge each item k times (seeds seed..seed+k-1).")
    concurrency: int = Field(8, description="Requests in flight per judge.")
    timeout: float | None = Field(None, description="Seconds per request (default 120; 900 for local and vllm).")
    max_retries: int = Field(4, description="Retries on 429/5xx/timeouts/malformed replies.")
    reasks: int = Field(2, description="Re-asks quoting the validation error after an unusable reply.")
    seed: int = Field(0, description="Judge sampling seed (and the stratified sample's seed).")
    temperature: float = Field(0.0, description="Judge sampling temperature.")
    max_tokens: int = Field(512, description="Token limit of each judge reply.")
    models: list[str] | None = Field(None, description="Only these models.")
    datasets: list[str] | None = Field(None, description="Only these datasets.")
    setting: str | None = Field(None, description="Judge this sampling setting (default: the greedy one).")
    pairwise_baseline: str | None = Field(None, description="Pairwise rubrics: the model every other is compared with.")
    pairs: str = Field("baseline", description="Pairwise: 'baseline' (each model vs the baseline) or 'all' (round-robin).")
    structured: str = Field("auto", description="auto (probe), json_schema, json_object or prompt.")
    # how to reach the judges
    api_key_env: str | None = Field(None, description="Environment variable holding the key of URL::MODEL judges.")
    prices: dict[str, tuple[float, float]] | None = Field(
        None, description="Judge identity, model or spec -> (USD per 1M prompt tokens, USD per 1M completion tokens).")
    max_consecutive_failures: int = Field(5, description="Stop (resumably) after this many items in a row cannot connect.")
    backoff_base: float = Field(1.0, description="Seconds of the first retry's back-off (doubling after).")

    @model_validator(mode="after")
    def _in_range(self) -> JudgeConfig:
        timeout = 1.0 if self.timeout is None else self.timeout
        checks = [
            (self.repeats >= 1, f"--repeats must be at least 1, got {self.repeats}"),
            (self.concurrency >= 1, f"--concurrency must be at least 1, got {self.concurrency}"),
            (timeout > 0, f"--timeout must be positive, got {self.timeout}"),
            (self.max_retries >= 0, f"--max-retries must be >= 0, got {self.max_retries}"),
            (self.reasks >= 0, f"--reasks must be >= 0, got {self.reasks}"),
            (self.max_tokens >= 16, f"--max-tokens must be at least 16, got {self.max_tokens}"),
            (0.0 <= self.temperature <= 2.0, f"--temperature must lie in [0, 2], got {self.temperature}"),
            (self.structured in ("auto", *STRATEGIES), f"--structured must be auto, {', '.join(STRATEGIES)}"),
            (self.max_consecutive_failures >= 1, "--max-consecutive-failures must be at least 1"),
            (self.pairs in ("baseline", "all"), f"--pairs must be 'baseline' or 'all', got {self.pairs!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return self

    def timeout_for(self, kind: str) -> float:
        """Seconds per request for a judge of this kind (``timeout``, or the kind's default)."""
        if self.timeout is not None:
            return self.timeout
        return LOCAL_TIMEOUT if kind in ("local", "vllm") else REMOTE_TIMEOUT

    def manifest_settings(self, baseline: str | None) -> dict[str, Any]:
        """The settings recorded in the run's manifest (``baseline``: the one this run compared with)."""
        return dict(
            per_dataset=self.per_dataset, repeats=self.repeats, concurrency=self.concurrency, timeout=self.timeout,
            max_retries=self.max_retries, reasks=self.reasks, seed=self.seed, temperature=self.temperature,
            max_tokens=self.max_tokens, models=self.models, datasets=self.datasets, setting=self.setting,
            baseline=baseline, pairs=self.pairs, structured=self.structured,
        )


def judge_config(**settings: Any) -> JudgeConfig:
    """A :class:`JudgeConfig` from keyword settings; an invalid one is a one-line :class:`PspoError`."""
    from pspo_eval.config import describe_validation_error

    try:
        return JudgeConfig(**settings)
    except ValidationError as exc:
        raise PspoError(f"invalid option {describe_validation_error(exc)}", HINT) from None
