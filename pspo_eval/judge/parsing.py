"""Tolerant, bounded parsing of a judge's reply into a verdict.

Small judges wrap JSON in prose or code fences, write numbers as strings, nest the scores under
``"scores"``, use Python's ``True``/``'quotes'``, or leave a trailing comma. The parser tries, in
order: the whole reply, the contents of code fences, and every balanced ``{…}`` span (found by one
linear scan that respects JSON strings; nested spans are tried when an outer one fails). The first
candidate that validates against the rubric's verdict model wins. Nothing is ever evaluated.

Bounds (so adversarial text cannot hang or crash it): the reply is cut at ``MAX_REPLY_CHARS``, at
most ``MAX_CANDIDATES`` spans are tried, nesting is explored ``MAX_DEPTH`` levels deep, and the
``json`` module's own ``RecursionError`` / huge-integer ``ValueError`` are caught. Every input
ends as a :class:`ParseResult`: a validated verdict, or an error message to quote in a re-ask.

A verdict that is a verbatim copy of a JSON object inside a candidate response is rejected: that is
how a prompt-injected response (``{"overall_quality": 5}``) would otherwise reach the score when a
weak judge parrots its input.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

MAX_REPLY_CHARS = 60_000
MAX_CANDIDATES = 64
MAX_DEPTH = 3
_CONTAINERS = ("scores", "ratings", "criteria", "flags", "verdict", "evaluation", "result", "results")

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]{0,20})[ \t]*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_PY_LITERALS = re.compile(r"(?<![\"\w])(True|False|None)(?![\"\w])")
_REFUSAL = re.compile(
    r"\b(?:I\s*(?:'m|am)\s+(?:sorry|unable|not able)|I\s+(?:can(?:no|')t|cannot|won't|will not)\s+"
    r"(?:help|assist|evaluate|comply|provide|do that|grade|judge|rate))",
    re.IGNORECASE,
)


@dataclass
class ParseResult:
    verdict: BaseModel | None
    error: str | None
    found_json: bool  # some JSON object was found (even if it did not validate)
    repaired: bool = False  # the accepted JSON needed a textual repair or unwrapping


def _balanced_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Top-level ``{…}`` spans of ``text[start:end]`` in one pass, skipping braces inside JSON strings."""
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    depth = 0
    open_at = -1
    in_string = False
    escaped = False
    i = start
    while i < end:
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"' and depth > 0:
            in_string = True
        elif ch == "{":
            if depth == 0:
                open_at = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append((open_at, i + 1))
                if len(spans) >= MAX_CANDIDATES:
                    break
        i += 1
    return spans


def _candidates(text: str) -> list[str]:
    out: list[str] = []
    stripped = text.strip()
    if stripped.startswith("{"):
        out.append(stripped)
    for match in _FENCE.finditer(text):
        body = match.group(2).strip()
        if body.startswith("{"):
            out.append(body)
        if len(out) >= MAX_CANDIDATES:
            return out
    # Balanced spans, outermost first, then (breadth-first) the spans nested inside them.
    frontier = [(0, len(text))]
    for _depth in range(MAX_DEPTH):
        next_frontier: list[tuple[int, int]] = []
        for lo, hi in frontier:
            for s, e in _balanced_spans(text, lo, hi):
                out.append(text[s:e])
                next_frontier.append((s + 1, e - 1))
                if len(out) >= MAX_CANDIDATES:
                    return out
        frontier = next_frontier
        if not frontier:
            break
    return list(dict.fromkeys(out))


def _loads(candidate: str) -> tuple[Any, bool]:
    """json.loads with a few textual repairs; returns (object or None, repaired)."""
    try:
        return json.loads(candidate), False
    except (ValueError, RecursionError):
        pass
    repaired = _TRAILING_COMMA.sub(r"\1", candidate)
    repaired = _PY_LITERALS.sub(lambda m: {"True": "true", "False": "false", "None": "null"}[m.group(1)], repaired)
    if '"' not in repaired and "'" in repaired:
        repaired = repaired.replace("'", '"')
    if repaired == candidate:
        return None, False
    try:
        return json.loads(repaired), True
    except (ValueError, RecursionError):
        return None, False


def normalize_key(key: str) -> str:
    """``"Logical Coherence"`` / ``"logical-coherence"`` -> ``"logical_coherence"``."""
    return re.sub(r"[^a-z0-9]+", "_", key.strip().lower()).strip("_")


def _normalize(obj: dict, expected: set[str]) -> tuple[dict, bool]:
    """Lower-snake-case the keys and lift the fields of container objects (``{"scores": {...}}``)."""
    changed = False
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            continue
        nk = normalize_key(key)
        if nk != key:
            changed = True
        if nk in _CONTAINERS and isinstance(value, dict) and nk not in expected:
            for k2, v2 in value.items():
                if isinstance(k2, str):
                    flat.setdefault(normalize_key(k2), v2)
            changed = True
        elif isinstance(value, dict) and nk in expected and "score" in value:
            flat[nk] = value["score"]  # {"clarity": {"score": 4, "reason": "..."}}
            changed = True
        else:
            flat.setdefault(nk, value)
    return flat, changed


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _short(value: Any) -> str:
    """A short rendering of a bad value that cannot recurse or blow up (nested containers show their type)."""
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    if isinstance(value, str):
        return json.dumps(value[:30] + ("…" if len(value) > 30 else ""))
    try:
        return repr(value)[:30]
    except ValueError:  # an integer too large to print
        return "a huge number"


def describe_errors(exc: ValidationError, limit: int = 6) -> str:
    """A short, quotable summary of what is wrong with a verdict (for the re-ask and the record)."""
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "reply"
        msg = str(err.get("msg", "invalid"))
        value = err.get("input")
        shown = "" if err.get("type") == "missing" else f" (got {_short(value)})"
        parts.append(f"{loc}: {msg}{shown}")
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def parse_verdict(
    text: str | None, verdict_model: type[BaseModel], *, forbidden: list[str] | tuple[str, ...] = ()
) -> ParseResult:
    """Parse a judge's reply into ``verdict_model`` (see the module docstring). Never raises."""
    if text is None or not text.strip():
        return ParseResult(None, "the reply was empty", found_json=False)
    text = text[:MAX_REPLY_CHARS]
    expected = set(verdict_model.model_fields)
    forbidden_squashed = [_squash(f) for f in forbidden if f]
    best_error: str | None = None
    best_missing = 10**9
    found = False
    copied = False
    for candidate in _candidates(text):
        obj, repaired = _loads(candidate)
        if not isinstance(obj, dict):
            continue
        found = True
        squashed = _squash(candidate)
        if len(squashed) > 8 and any(squashed in f for f in forbidden_squashed):
            copied = True
            continue
        flat, changed = _normalize(obj, expected)
        try:
            verdict = verdict_model.model_validate(flat)
        except ValidationError as exc:
            missing = len(exc.errors()) + len(expected - set(flat))
            if missing < best_missing:
                best_missing, best_error = missing, describe_errors(exc)
            continue
        except (RecursionError, ValueError, TypeError) as exc:  # pathological values
            best_error = best_error or f"unusable value ({type(exc).__name__})"
            continue
        return ParseResult(verdict, None, found_json=True, repaired=repaired or changed or candidate != text.strip())
    if best_error is not None:
        return ParseResult(None, best_error, found_json=True)
    if copied:
        return ParseResult(None, "the only JSON in the reply is copied from a candidate response", found_json=True)
    if found:
        return ParseResult(None, "the JSON in the reply is not an object with the verdict fields", found_json=True)
    if "{" in text:
        return ParseResult(None, "the reply has an unterminated or malformed JSON object", found_json=False)
    return ParseResult(None, "the reply contains no JSON object", found_json=False)


def looks_like_refusal(text: str | None) -> bool:
    """A reply without JSON that declines the task ("I'm sorry, I can't evaluate …")."""
    return bool(text) and bool(_REFUSAL.search(text[:2000]))  # type: ignore[index]
