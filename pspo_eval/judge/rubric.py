"""Rubrics are data: a YAML file per rubric, validated into pydantic, from which the verdict model is built.

A rubric names what a judge is asked (criteria, each with a scale that describes every point; yes/no
flags) and how (the prompt template). From it the tool derives, without further hand-written code:

- the **verdict model**: a pydantic class with one integer per criterion within its scale (pairwise
  rubrics: one choice ``A`` / ``B`` / ``tie`` per criterion), one boolean per flag and a short
  rationale; its validators are tolerant of the usual small-model slips (numbers written as strings,
  ``"4/5"``, ``"yes"`` for true) but never invent a value;
- the **JSON schema** sent to endpoints that enforce structured output (every property required,
  no additional properties, scores as ``enum`` so OpenAI's strict mode and vLLM's guided decoding
  both accept it);
- the **content hash** that is part of every judgment's cache key, so editing a rubric file (even
  without bumping its version) never reuses verdicts given under the old text.

Templates use ``{{placeholder}}`` fields filled in one pass by :func:`render_template`; a value is
never re-scanned, so braces inside a model's response cannot inject further placeholders.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)

from pspo_eval.errors import PspoError
from pspo_eval.paths import rubrics_dir
from pspo_eval.store import stable_hash

Mode = Literal["absolute", "reference", "pairwise"]
CHOICES = ("A", "B", "tie")
RATIONALE = "rationale"
RATIONALE_MAX_CHARS = 2000

_KEY = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

# Placeholders the tool fills in, per mode; the required ones must appear in the user template.
_COMMON = {"problem", "system_prompt", "grader", "criteria", "flags", "output_format"}
PLACEHOLDERS: dict[str, set[str]] = {
    "absolute": _COMMON | {"response"},
    "reference": _COMMON | {"response", "reference"},
    "pairwise": _COMMON | {"response_a", "response_b"},
}
REQUIRED: dict[str, set[str]] = {
    "absolute": {"problem", "response", "criteria", "output_format"},
    "reference": {"problem", "response", "reference", "criteria", "output_format"},
    "pairwise": {"problem", "response_a", "response_b", "criteria", "output_format"},
}


def _check_key(value: str) -> str:
    if not _KEY.match(value):
        raise ValueError(f"'{value}' is not a lower_snake_case identifier (letters, digits, _; max 48)")
    if value == RATIONALE:
        raise ValueError(f"'{RATIONALE}' is reserved for the judge's explanation")
    return value


class Criterion(BaseModel):
    """One thing the judge rates: a question, and (absolute/reference modes) a scale described point by point."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(description="Identifier (lower snake case); the verdict's field name.")
    question: str = Field(min_length=1, description="What the judge is asked about this criterion.")
    scale: dict[int, str] | None = Field(
        default=None, description="Point -> description, for every integer point of a contiguous range."
    )

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return _check_key(value)

    @field_validator("scale")
    @classmethod
    def _scale(cls, value: dict[int, str] | None) -> dict[int, str] | None:
        if value is None:
            return None
        points = sorted(value)
        if len(points) < 2:
            raise ValueError("a scale needs at least two points")
        if points != list(range(points[0], points[-1] + 1)):
            raise ValueError(f"scale points must be consecutive integers, got {points}")
        for point in points:
            if not str(value[point]).strip():
                raise ValueError(f"scale point {point} has no description")
        return {point: str(value[point]).strip() for point in points}

    @property
    def low(self) -> int:
        assert self.scale is not None
        return min(self.scale)

    @property
    def high(self) -> int:
        assert self.scale is not None
        return max(self.scale)


class Flag(BaseModel):
    """A yes/no question (e.g. instruction leakage)."""

    model_config = ConfigDict(extra="forbid")

    key: str
    question: str = Field(min_length=1)

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return _check_key(value)


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system: str = Field(min_length=1, description="The judge's system message.")
    user: str = Field(min_length=1, description="The user message; {{placeholders}} are filled per item.")


def _check_template(mode: str, template: Template) -> None:
    """Every placeholder of the template is known in ``mode``, and the ones the mode needs are there."""
    for part in ("system", "user"):
        text = getattr(template, part)
        used = set(_PLACEHOLDER.findall(text))
        unknown = used - PLACEHOLDERS[mode]
        if unknown:
            raise ValueError(
                f"template.{part}: unknown placeholder(s) {', '.join('{{' + u + '}}' for u in sorted(unknown))}"
                f" (known in {mode} mode: {', '.join(sorted(PLACEHOLDERS[mode]))})"
            )
    used = set(_PLACEHOLDER.findall(template.user)) | set(_PLACEHOLDER.findall(template.system))
    missing = REQUIRED[mode] - used
    if missing:
        raise ValueError(
            f"template: the {mode} mode needs placeholder(s) {', '.join('{{' + m + '}}' for m in sorted(missing))}"
        )


class Rubric(BaseModel):
    """A validated rubric file (see docs/judging.md for the format)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: int | str
    description: str
    mode: Mode
    criteria: list[Criterion] = Field(min_length=1)
    flags: list[Flag] = Field(default_factory=list)
    template: Template
    grader_check: str | None = Field(
        default=None,
        description="The criterion compared against the grader's correctness verdict (contradictions are reported).",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,79}", value):
            raise ValueError(f"'{value}' is not a valid rubric name (letters, digits, '_', '-', '.')")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Rubric:
        keys = [c.key for c in self.criteria] + [f.key for f in self.flags]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"criterion/flag keys must be unique, repeated: {', '.join(dupes)}")
        for c in self.criteria:
            if self.mode == "pairwise" and c.scale is not None:
                raise ValueError(f"criteria.{c.key}.scale: pairwise criteria are answered A / B / tie, not on a scale")
            if self.mode != "pairwise" and c.scale is None:
                raise ValueError(f"criteria.{c.key}.scale: {self.mode} criteria need a scale")
        if self.grader_check is not None:
            if self.mode == "pairwise":
                raise ValueError("grader_check: only absolute and reference rubrics are compared with the grader")
            if self.grader_check not in {c.key for c in self.criteria}:
                raise ValueError(f"grader_check: '{self.grader_check}' is not one of the criteria")
        _check_template(self.mode, self.template)
        return self

    # -- identity ------------------------------------------------------------------------------
    @cached_property
    def content_hash(self) -> str:
        """Hash of the validated content (not of formatting or comments), part of every cache key."""
        return stable_hash(self.model_dump(mode="json"), 16)

    @property
    def ident(self) -> str:
        return f"{self.name}@{self.version}#{self.content_hash[:8]}"

    @property
    def criterion_keys(self) -> list[str]:
        return [c.key for c in self.criteria]

    @property
    def flag_keys(self) -> list[str]:
        return [f.key for f in self.flags]

    # -- derived models ------------------------------------------------------------------------
    @cached_property
    def verdict_model(self) -> type[BaseModel]:
        return build_verdict_model(self)

    @cached_property
    def verdict_schema(self) -> dict[str, Any]:
        return verdict_json_schema(self)


# ---------------------------------------------------------------------------------------------
# Tolerant value coercion (used by the verdict model's validators)

_INT_TEXT = re.compile(r"\s*\**\s*([+-]?\d{1,6})(?:\.0*)?\s*(?:/\s*(\d{1,6}))?\s*\**\s*")


def coerce_score(value: Any, high: int | None = None) -> Any:
    """Accept an integer score written as an int, an integral float, ``"4"``, ``"4.0"`` or ``"4/5"``.

    ``"4/5"`` is read as 4 only when 5 is the top of the criterion's scale (``high``); ``"4/10"`` on
    a 1–5 scale is left alone and fails. Anything else (a boolean, ``"good"``, ``4.5``) is passed on
    unchanged and fails validation: a value the judge did not give is never made up.
    """
    if isinstance(value, bool):
        return value  # rejected by the strict int check (True is not a score)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e9:
        return int(value)
    if isinstance(value, str) and len(value) < 40:
        match = _INT_TEXT.fullmatch(value)
        if match and (match.group(2) is None or (high is not None and int(match.group(2)) == high)):
            return int(match.group(1))
    return value


_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0", "none"}


def coerce_flag(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and len(value) < 20:
        text = value.strip().strip(".").lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return value


_CHOICE_TEXT = {
    "a": "A", "response a": "A", "response_a": "A", "a is better": "A", "first": "A",
    "b": "B", "response b": "B", "response_b": "B", "b is better": "B", "second": "B",
    "tie": "tie", "equal": "tie", "same": "tie", "both": "tie", "neither": "tie", "draw": "tie",
}


def coerce_choice(value: Any) -> Any:
    if isinstance(value, str) and len(value) < 40:
        return _CHOICE_TEXT.get(value.strip().strip(".").lower(), value)
    return value


def coerce_rationale(value: Any) -> Any:
    if isinstance(value, str):
        return value[:RATIONALE_MAX_CHARS]
    return value


def build_verdict_model(rubric: Rubric) -> type[BaseModel]:
    """The pydantic verdict class of a rubric: rationale, one field per criterion, one per flag."""
    fields: dict[str, Any] = {
        RATIONALE: (
            Annotated[str, BeforeValidator(coerce_rationale)],
            Field(default="", description="A short explanation (two or three sentences) of the verdict."),
        )
    }
    for c in rubric.criteria:
        if rubric.mode == "pairwise":
            typ: Any = Annotated[
                Literal["A", "B", "tie"],
                BeforeValidator(coerce_choice),
                WithJsonSchema({"type": "string", "enum": list(CHOICES), "description": c.question}),
            ]
        else:
            points = list(range(c.low, c.high + 1))
            typ = Annotated[
                int,
                BeforeValidator(lambda v, _high=c.high: coerce_score(v, _high)),
                Field(strict=True, ge=c.low, le=c.high),
                WithJsonSchema({"type": "integer", "enum": points, "description": c.question}),
            ]
        fields[c.key] = (typ, Field(...))
    for f in rubric.flags:
        fields[f.key] = (
            Annotated[
                bool,
                BeforeValidator(coerce_flag),
                Field(strict=True),
                WithJsonSchema({"type": "boolean", "description": f.question}),
            ],
            Field(...),
        )
    model_name = "Verdict_" + re.sub(r"\W", "_", rubric.name)
    return create_model(model_name, __config__=ConfigDict(extra="ignore"), **fields)


def verdict_json_schema(rubric: Rubric) -> dict[str, Any]:
    """The verdict's JSON schema in the strict form structured-output endpoints accept."""
    schema = rubric.verdict_model.model_json_schema()
    props = schema["properties"]
    for prop in props.values():
        prop.pop("title", None)
        prop.pop("default", None)
    schema["required"] = list(props)
    schema["additionalProperties"] = False
    schema.pop("title", None)
    return schema


# ---------------------------------------------------------------------------------------------
# Loading


def render_template(template: str, values: dict[str, str]) -> str:
    """Fill ``{{name}}`` placeholders in one pass (values are inserted verbatim, never re-scanned)."""

    def sub(match: re.Match[str]) -> str:
        return values.get(match.group(1), "")

    return _PLACEHOLDER.sub(sub, template)


def resolve_rubric_path(spec: str | Path) -> Path:
    """A rubric path, or a bare name looked up in the rubrics folder (``math_response_quality``)."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    # A bare name, or ``rubrics/NAME.yaml`` (the repository path before rubrics moved into the package).
    if path.parent in (Path("."), Path("rubrics")) and path.suffix in ("", ".yaml", ".yml"):
        stem = path.name.removesuffix(path.suffix) if path.suffix else path.name
        for candidate in (rubrics_dir() / f"{stem}.yaml", rubrics_dir() / f"{stem}.yml"):
            if candidate.exists():
                return candidate
    known = ", ".join(sorted(p.stem for p in rubrics_dir().glob("*.yaml"))) if rubrics_dir().exists() else "none"
    raise PspoError(f"rubric '{spec}' not found", f"give a rubric file path or one of: {known}")


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def load_rubric(spec: str | Path) -> Rubric:
    """Load and validate a rubric file; a bad file fails with the field and the reason."""
    path = resolve_rubric_path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PspoError(f"cannot read rubric {path}: {exc.strerror}", "check the path") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise PspoError(f"rubric {path} is not valid YAML{line}", "fix the syntax (see docs/judging.md)") from exc
    if not isinstance(data, dict):
        raise PspoError(f"rubric {path} must be a YAML mapping", "see docs/judging.md for the format")
    try:
        rubric = Rubric.model_validate(data)
    except ValidationError as exc:
        raise PspoError(f"invalid rubric {path}: {_first_error(exc)}", "see docs/judging.md for the rubric format") from exc
    return rubric
