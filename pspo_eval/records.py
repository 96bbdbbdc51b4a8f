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
    why: str = Field(
        default="",
        description="Why the verdict came out so ('equals the gold', 'math-verify: not equivalent'), and the rules "
        "passed over before `method` chose the answer.",
    )
    # A tuple, not a list: the shared empty default costs no allocation per Grade (grading is a hot loop).
    alternatives: tuple[str, ...] = Field(
        default=(),
        description="With explain: what each lower-priority rule would have read, and its verdict ('last_number 20: wrong').",
    )


class Sample(BaseModel):
    """One generated response to one problem under one sampling setting, graded.

    Stored in ``RUN_DIR/samples/<model>/<dataset>/<setting>.jsonl``; ``key`` determines it (a hash of
    the model identity, dataset item, prompt, sampling setting, sample index and seed).
    """

    model_config = ConfigDict(extra="allow")

    key: str
    model: str = Field(description="Display label of the model (NAME= on the command line).")
    model_id: str = Field(description="Resolved model path or hub id (with checkpoint step where known).")
    dataset: str
    problem_id: str
    sample_index: int
    setting: str = Field(description="Sampling-setting id, e.g. 't0.8-p0.9-n128'.")
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int
    prompt: str = Field(description="The exact text fed to the model (chat template applied).")
    response: str
    finish_reason: Literal["stop", "length", "error"]
    prompt_tokens: int
    completion_tokens: int
    gold: str
    extracted: str | None
    correct: bool
    strict: bool
    method: str
    timed_out: bool = False
    why: str = Field("", description="Grade.why: which rule chose the answer and why the verdict came out so.")
    alternatives: tuple[str, ...] = Field((), description="Grade.alternatives (explain mode).")
    category: str | None = None
    level: str | None = None
    gen_seconds: float = Field(0.0, description="This sample's share of its batch's generation wall time.")
    step: int | None = Field(None, description="Training step of the checkpoint, when known.")


class SampleVerdict(BaseModel):
    """What a reader of results needs of a :class:`Sample`: its identity and verdict, not its texts.

    The report reads every sample of several runs; the prompt and response texts can run to
    gigabytes, so it reads shards through this model (unknown fields, the texts among them, are
    dropped). A stored Sample always validates as a SampleVerdict.
    """

    model_config = ConfigDict(extra="ignore")

    key: str | None = None
    model: str
    model_id: str | None = None
    dataset: str
    problem_id: str
    sample_index: int
    setting: str
    temperature: float
    top_p: float
    max_new_tokens: int
    finish_reason: str
    completion_tokens: int
    gold: str | None = None
    extracted: str | None
    correct: bool
    strict: bool
    method: str
    timed_out: bool = False
    why: str = ""
    alternatives: tuple[str, ...] = ()
    category: str | None = None
    level: str | None = None
    gen_seconds: float = 0.0
    step: int | None = None
