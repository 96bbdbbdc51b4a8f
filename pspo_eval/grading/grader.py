"""grade(dataset, response, gold) -> Grade: the final answer, whether it is right, and which rule found it.

Numeric datasets are graded here, in pure Python; symbolic ones (MATH-500) extract here and ask
math-verify in a worker process (:mod:`pspo_eval.grading.symbolic`) only when a cheap exact check
cannot decide. docs/grading.md states every rule with examples.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from pspo_eval.grading import extract
from pspo_eval.grading.extract import Candidate
from pspo_eval.grading.numeric import (
    NUMBER_RE,
    WORD_RE,
    Num,
    clean_latex,
    num_from_match,
    numbers_match,
    parse_number,
    word_number,
)
from pspo_eval.grading.policy import GradingPolicy, policy_for
from pspo_eval.records import Grade


def _grade(
    *, extracted: str | None, correct: bool, strict: bool, method: str, timed_out: bool = False
) -> Grade:
    """A Grade straight from pydantic's core validator (grading is a hot loop; this is ~3x cheaper)."""
    return _GRADE_VALIDATOR.validate_python(
        {
            "extracted": extracted,
            "correct": correct,
            "strict": strict,
            "method": method,
            "timed_out": timed_out,
        }
    )


_GRADE_VALIDATOR = Grade.__pydantic_validator__


# --- gold answers ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GoldAnswer:
    """A gold answer as the numeric grader sees it.

    - ``number``: one number ('18', '1,234', '51.0', '9 (apples)', '5/2', '-(1/3)');
    - ``list``: several numbers separated by ';' (ASDiv: '5 (years old); 15 (years old)');
    - ``text``: anything else (ASDiv: 'Mrs. Hilt', '3:30 p.m.', '3:5'), compared as words.
    """

    kind: Literal["number", "list", "text"]
    numbers: tuple[Num, ...] = ()
    words: tuple[str, ...] = ()


_UNIT_PARENS_RE = re.compile(r"\s*\([^()\d]{0,60}\)")
_SIGNED_PARENS_RE = re.compile(r"^([-\u2212]?)\s*\(\s*([^()]*?)\s*\)$")


@lru_cache(maxsize=65536)
def parse_gold(gold: str) -> GoldAnswer:
    """Read a gold answer once (cached): a number, a ';' list of numbers, or text."""
    text = gold.strip()
    if "####" in text:  # a whole GSM8K solution: the answer follows its last '####'
        text = text.rsplit("####", 1)[1].strip()
    text = _UNIT_PARENS_RE.sub("", text).strip()
    parts = [p.strip() for p in text.split(";")] if ";" in text else [text]
    numbers: list[Num] = []
    for part in parts:
        m = _SIGNED_PARENS_RE.match(part)
        if m:
            part = m.group(1) + m.group(2)
        n = parse_number(part)
        if n is None:
            numbers = []
            break
        numbers.append(n)
    if numbers and len(numbers) == len(parts):
        return GoldAnswer("number" if len(numbers) == 1 else "list", tuple(numbers))
    return GoldAnswer("text", words=words_of(text))


_ARTICLES = {"the", "a", "an"}
_WORD_TOKEN_RE = re.compile(r"[0-9][0-9:/]*|[a-z]+")
_ORDINAL_RE = re.compile(r"(\d)(?:st|nd|rd|th)\b")  # '3rd' ~ '3', '60th caller' ~ '60 caller'
_COLON_RE = re.compile(r"\s*:\s*(?=\d)")
# A ratio or clock-time gold ('3:5', '3:30 p.m.') falls back to the last such token in the text.
RATIO_TOKEN_RE = re.compile(
    r"(?<![\d:])\d{1,6}\s?:\s?\d{1,6}(?![\d:])(?:\s?[ap]\.?\s?m\b\.?)?", re.IGNORECASE
)


def words_of(text: str) -> tuple[str, ...]:
    """Lower-case word tokens for text answers: 'The 3:30 p.m. train.' -> ('3:30', 'pm', 'train');
    'February 3rd' -> ('february', '3')."""
    cleaned = clean_latex(text[:500]).lower().replace(".", "").replace("'", "").replace("\u2019", "")
    tokens = _WORD_TOKEN_RE.findall(_ORDINAL_RE.sub(r"\1", _COLON_RE.sub(":", cleaned)))
    while tokens and tokens[0] in _ARTICLES:
        tokens = tokens[1:]
    return tuple(tokens)


# --- reading a number from an answer segment ------------------------------------------------------------

# Before the number, a '####' segment may hold wrappers and a label: '$', '**', '\(', '(',
# 'Final answer:', 'x =', 'Total cost = $'.
_PREFIX_RE = re.compile(
    r"[\s$\u20ac\u00a3\u00a5\u20b9*(\[:]*"
    r"(?:(?:the\s+)?(?:final\s+)?answer(?:\s+is)?\s*[:=]?|[A-Za-z][\w \t'\u2019]{0,30}?[ \t]*(?:[=:]|\bis\b|\bare\b))?"
    r"[\s$\u20ac\u00a3\u00a5\u20b9*(\[]*",
    re.IGNORECASE,
)
_HEADING_RE = re.compile(r"\s*(?:\*\*)?\s*(?:step|part|case|method|solution)\b", re.I)
_NUMBERED_HEADING_RE = re.compile(r"\s*\d{1,2}[.):]\s+[A-Za-z]")
_CHAIN_OP_RE = re.compile(
    r"[ \t]*\)?[ \t]*(?:[-+*/\u00d7\u00f7\u00b7\u2212]|\\times|\\cdot|\\div|(?<=\s)x(?=\s))[ \t]*\(?[ \t]*\$?[ \t]*"
)
_CHAIN_EQ_RE = re.compile(r"[ \t]*\)?[ \t]*=[ \t]*\$?[ \t]*")
_MAX_CHAIN = 40
_PLAIN_INT_RE = re.compile(r"[ \t]*(-?\d{1,30})[ \t]*\.?[ \t]*")
_WINDOW = 32  # the last number starts at most this far before its last digit (longer ones are refused)


def _chain_value(s: str, first: re.Match[str]) -> re.Match[str]:
    """Follow '16 - 3 - 4 = 9 * 2 = 18' from its first number; the number after the last '=' wins."""
    best, pos = first, first.end()
    for _ in range(_MAX_CHAIN):
        eq = _CHAIN_EQ_RE.match(s, pos)
        if eq:
            m = NUMBER_RE.match(s, eq.end())
            if m:
                best, pos = m, m.end()
                continue
        op = _CHAIN_OP_RE.match(s, pos)
        if op and op.end() > pos:
            m = NUMBER_RE.match(s, op.end())
            if m:
                pos = m.end()
                continue
        break
    return best


def number_in(segment: str, *, anchored: bool) -> Num | None:
    """The answer number of a segment: at its start (after wrappers/labels) or its first anywhere."""
    if anchored:
        plain = _PLAIN_INT_RE.fullmatch(segment)
        if plain:  # '#### 18': by far the most common answer, read without the general machinery
            return Num(int(plain.group(1)), 0)
    s = clean_latex(segment[: extract.SEGMENT_CHARS])
    if anchored:
        start = _PREFIX_RE.match(s)
        pos = start.end() if start else 0
        m = NUMBER_RE.match(s, pos)
        if m is None and start is not None and start.end() > 0:
            m = NUMBER_RE.match(s, len(s) - len(s.lstrip(" \t$\u20ac\u00a3\u00a5\u20b9*([")))
        if m is None:
            w = WORD_RE.match(s, pos)
            return word_number(w) if w else None
    else:
        m = NUMBER_RE.search(s)
        if m is None:
            w = WORD_RE.search(s)
            return word_number(w) if w else None
    return num_from_match(_chain_value(s, m))


def numbers_in(segment: str, limit: int) -> list[Num]:
    s = clean_latex(segment[: extract.SEGMENT_CHARS])
    out = []
    for m in NUMBER_RE.finditer(s):
        n = num_from_match(m)
        if n is not None:
            out.append(n)
            if len(out) >= limit:
                break
    return out


def last_numbers(text: str, k: int = 1) -> list[Num]:
    """The last `k` numbers of the text, in reading order (searched in the tail first)."""
    if k == 1:
        # Fast path: find the last ASCII digit with C-level rfind, read numbers only near it.
        end = text[-256:]
        pos = max(map(end.rfind, "0123456789"))
        pos = pos + len(text) - len(end) if pos >= 0 else max(map(text.rfind, "0123456789"))
        if pos >= 0:
            start = max(0, pos - _WINDOW)
            window = clean_latex(text[start : pos + 30])
            matches = deque(NUMBER_RE.finditer(window), maxlen=1)
            last = matches[0] if matches else None
            if last is not None:
                if last.start() == 0 and start > 0 and text[start - 1].isdigit():
                    return []  # a number longer than the window: longer than any answer we accept
                n = num_from_match(last)
                return [n] if n is not None else []
    for scope in (extract.tail(text), text):
        found: deque[re.Match[str]] = deque(maxlen=k)
        for m in NUMBER_RE.finditer(scope):
            found.append(m)
        if len(found) >= k or scope is text:
            values = [num_from_match(m) for m in found]
            return [v for v in values if v is not None]
    return []  # pragma: no cover


def _is_heading(segment: str, more_after: bool = True) -> bool:
    """'#### Step 1: …', '#### Solution', or a numbered '#### 1. Compute …' with more lines after it."""
    if "answer" in segment.lower():
        return False
    return bool(_HEADING_RE.match(segment)) or (more_after and bool(_NUMBERED_HEADING_RE.match(segment)))


# --- candidates in priority order ---------------------------------------------------------------------


def numeric_candidates(text: str, *, several: bool = False) -> Iterator[Candidate]:
    """hash (first) > boxed (last; a joined run of boxes when `several` answers are wanted) >
    answer_is (last) > last_number."""
    yield from extract.hash_candidates(text)
    boxes = extract.boxed_groups(text)
    if boxes:
        yield Candidate("boxed", ", ".join(boxes) if several else boxes[-1])
    yield from extract.answer_is_candidates(text)
    yield Candidate("last_number", text)


def _grade_numeric(response: str, gold: GoldAnswer, policy: GradingPolicy) -> Grade:
    text = extract.prepare(response)
    for cand in numeric_candidates(text, several=gold.kind == "list"):
        if cand.method == "hash" and _is_heading(cand.text, cand.more_after):
            continue
        if gold.kind == "number":
            if cand.method == "last_number":
                found = last_numbers(text, 1)
                value = found[0] if found else None
            elif cand.method == "answer_is":
                value = number_in(extract.cut_sentence(cand.text), anchored=False)
            else:
                value = number_in(cand.text, anchored=cand.method == "hash")
            if value is None:
                continue
            correct = numbers_match(value, gold.numbers[0])
            extracted = value.canonical()
        elif gold.kind == "list":
            k = len(gold.numbers)
            if cand.method == "last_number":
                values = last_numbers(text, k)
            else:
                seg = extract.cut_sentence(cand.text) if cand.method == "answer_is" else cand.text
                values = numbers_in(seg, k)
            if not values:
                continue
            correct = len(values) == k and _same_multiset(values, list(gold.numbers))
            extracted = ", ".join(v.canonical() for v in values)
        else:
            if cand.method == "last_number":
                if not (gold.words and ":" in gold.words[0]):
                    break
                ratios = deque(RATIO_TOKEN_RE.finditer(extract.tail(text)), maxlen=1)
                if not ratios:
                    break
                words = words_of(ratios[0].group())
            else:
                words = words_of(cand.text)
            if not words:
                continue
            n = len(gold.words)
            correct = n > 0 and words[:n] == gold.words
            extracted = " ".join(words[: max(n, 1) + 8])
        # For numbers, strict '####' means lm-eval's shape: the number right after it ('#### 18').
        strict_shape = cand.method != "hash" or cand.strict_format or gold.kind == "text"
        strict = correct and cand.method in policy.strict_methods and strict_shape
        return _grade(extracted=extracted, correct=correct, strict=strict, method=cand.method)
    return _grade(extracted=None, correct=False, strict=False, method="none")


def _same_multiset(values: list[Num], golds: list[Num]) -> bool:
    remaining = list(golds)
    for v in values:
        for i, g in enumerate(remaining):
            if numbers_match(v, g):
                del remaining[i]
                break
        else:
            return False
    return not remaining


# --- symbolic -------------------------------------------------------------------------------------------

_TRAILING_WORDS_RE = re.compile(r"^\s*(-?\d[\d,]*(?:\.\d+)?)\s+([A-Za-z][A-Za-z .]*)$")
_KEEP_WORDS = {
    "pi",
    "i",
    "e",
    "sqrt",
    "x",
    "y",
    "z",
    "n",
    "inf",
    "infinity",
    "and",
    "or",
    "sin",
    "cos",
    "tan",
    "log",
    "ln",
}


def symbolic_text(segment: str, *, cut: bool = True) -> str:
    """The answer expression inside a '####' / 'answer is' segment: its first math span (with the
    spans joined to it by ',', 'and', 'or'), else the sentence; '10 apples' loses its unit words
    (never 'pi', 'sqrt', variables)."""
    s = segment.strip()
    spans = extract.first_math_spans(s)
    if spans is not None:
        s = spans
    elif cut:
        s = extract.cut_sentence(s)
    s = s.strip().strip("*").strip().rstrip(".").strip()
    if s.startswith("$") and s.endswith("$") and len(s) > 1:
        s = s.strip("$").strip()
    w = _TRAILING_WORDS_RE.match(s)
    if w and not (set(w.group(2).lower().replace(".", " ").split()) & _KEEP_WORDS):
        s = w.group(1)
    return s


_GREEK = "alpha|beta|gamma|delta|epsilon|varepsilon|zeta|eta|theta|kappa|lambda|mu|nu|xi|rho|sigma|tau|phi|varphi|chi|psi|omega"
_ASSIGNMENT_RE = re.compile(r"\s*(?:[A-Za-z]|\\(?:" + _GREEK + r"))(?:_(?:\w|\{\w{1,3}\}))?\s*=\s*")


def strip_assignment(s: str) -> str:
    """'x = 58,500' -> '58,500': a leading single-variable assignment says nothing math-verify needs
    (it compares an equation's right-hand side with a bare gold anyway) and can confuse its parser."""
    m = _ASSIGNMENT_RE.match(s)
    if m and "=" not in s[m.end() :] and s[m.end() :].strip():
        return s[m.end() :].strip()
    return s


def symbolic_candidates(text: str) -> Iterator[Candidate]:
    """boxed (last, joined) > hash (first) > answer_is (last) > latex_last > last_number."""
    for cand in _symbolic_candidates(text):
        yield Candidate(cand.method, strip_assignment(cand.text), cand.strict_format)


def _symbolic_candidates(text: str) -> Iterator[Candidate]:
    boxes = extract.boxed_groups(text)
    if boxes:
        yield Candidate("boxed", ", ".join(b.strip() for b in boxes))
    for cand in extract.hash_candidates(text):
        if not _is_heading(cand.text, cand.more_after):
            yield Candidate("hash", symbolic_text(cand.text), cand.strict_format)
    for cand in extract.answer_is_candidates(text):
        yield Candidate("answer_is", symbolic_text(cand.text))
    span = extract.last_math_span(text)
    if span is not None:  # 'x = 5' stays whole: math-verify compares its right-hand side with a bare gold
        yield Candidate("latex_last", span.strip())
    found = last_numbers(text, 1)
    if found:
        yield Candidate("last_number", found[0].canonical())


_NORM_DROP_RE = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\:|\\ |~|\s+|\$|\^\{?\\circ\}?|\\displaystyle")
_NORM_TEXT_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_INT_RE = re.compile(r"[-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d{1,60})")  # '1,234' yes; '7,5,3' is a list


def normalize_latex(s: str) -> str:
    """Presentation-only differences removed: '\\left( 3, \\dfrac{\\pi}{2} \\right)' -> '(3,\\frac{\\pi}{2})'."""
    s = _NORM_TEXT_RE.sub(r"\1", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return _NORM_DROP_RE.sub("", s).rstrip(".")


def _quick_verdict(answer: str, gold: str) -> bool | None:
    """True/False when a cheap exact check decides (same normalized LaTeX; two plain integers)."""
    a, g = normalize_latex(answer), normalize_latex(strip_assignment(gold))
    if a and a == g:
        return True
    if _INT_RE.fullmatch(a) and _INT_RE.fullmatch(g):
        return int(a.replace(",", "").replace("\u2212", "-")) == int(
            g.replace(",", "").replace("\u2212", "-")
        )
    return None


def _symbolic_extract(response: str) -> Candidate | None:
    text = extract.prepare(response)
    for cand in symbolic_candidates(text):
        if cand.text.strip():
            return cand
    return None


def _symbolic_grade(
    cand: Candidate | None, gold: str, policy: GradingPolicy, timeout_s: float | None
) -> Grade:
    if cand is None:
        return _grade(extracted=None, correct=False, strict=False, method="none")
    verdict = _quick_verdict(cand.text, gold)
    timed_out = False
    if verdict is None:
        from pspo_eval.grading import symbolic

        verdict, timed_out = symbolic.pool().verify(gold, cand.text, timeout_s)
    correct = bool(verdict) and not timed_out
    strict = correct and cand.method in policy.strict_methods
    return _grade(
        extracted=cand.text, correct=correct, strict=strict, method=cand.method, timed_out=timed_out
    )


# --- public API -----------------------------------------------------------------------------------------


def _check_str(name: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value) if isinstance(value, float) else str(value)
    from pspo_eval.errors import PspoError

    raise PspoError(f"{name} must be a string, got {type(value).__name__}", f"pass the {name} text")


def grade(dataset: str, response: str, gold: str, *, timeout_s: float | None = None) -> Grade:
    """Grade one response against its gold answer under the dataset's policy.

    `dataset` is a registry name (gsm8k, gsm8k_train, svamp, asdiv, math500) or any other name:
    then numeric grading when `gold` is a number, symbolic otherwise. `timeout_s` bounds the
    symbolic comparison (default $PSPO_EVAL_GRADE_TIMEOUT or 10 s); a timeout grades incorrect
    with ``timed_out=True``. Never raises on any response text.
    """
    response = _check_str("response", response)
    gold = _check_str("gold", gold)
    policy = policy_for(dataset, gold)
    if policy.kind == "numeric":
        parsed = parse_gold(gold)
        if parsed.kind == "text" and not parsed.words:
            return _grade(extracted=None, correct=False, strict=False, method="none")
        return _grade_numeric(response, parsed, policy)
    return _symbolic_grade(_symbolic_extract(response), gold, policy, timeout_s)


def grade_many(
    dataset: str,
    pairs: Iterable[tuple[str, str]],
    *,
    workers: int | None = None,
    timeout_s: float | None = None,
) -> list[Grade]:
    """Grade many (response, gold) pairs; results are in input order.

    Numeric grading runs in this thread (it is pure Python: threads would not help). Symbolic
    grading extracts here and sends the comparisons that need math-verify to `workers` worker
    processes at once (default: min(4, CPUs)).
    """
    items = [(_check_str("response", r), _check_str("gold", g)) for r, g in pairs]
    results: list[Grade | None] = [None] * len(items)
    symbolic_jobs: list[tuple[int, Candidate | None, str, GradingPolicy]] = []
    for i, (response, gold) in enumerate(items):
        policy = policy_for(dataset, gold)
        if policy.kind == "numeric":
            results[i] = grade(dataset, response, gold)
            continue
        cand = _symbolic_extract(response)
        if cand is None or _quick_verdict(cand.text, gold) is not None:
            results[i] = _symbolic_grade(cand, gold, policy, timeout_s)
        else:
            symbolic_jobs.append((i, cand, gold, policy))
    if symbolic_jobs:
        from pspo_eval.grading import symbolic

        n = max(1, workers or symbolic.default_workers())
        symbolic.pool(n)
        if n == 1 or len(symbolic_jobs) == 1:
            for i, cand, gold, policy in symbolic_jobs:
                results[i] = _symbolic_grade(cand, gold, policy, timeout_s)
        else:
            with ThreadPoolExecutor(max_workers=n, thread_name_prefix="pspo-grade") as executor:
                futures = {
                    i: executor.submit(_symbolic_grade, cand, gold, policy, timeout_s)
                    for i, cand, gold, policy in symbolic_jobs
                }
                for i, future in futures.items():
                    results[i] = future.result()
    return [r for r in results if r is not None]


def extract_answer(dataset: str, response: str, gold: str | None = None) -> tuple[str | None, str]:
    """(extracted answer, method) without judging it: what `grade` would read as the final answer."""
    policy = policy_for(dataset, gold)
    if policy.kind == "symbolic":
        cand = _symbolic_extract(response)
        return (cand.text, cand.method) if cand else (None, "none")
    g = grade(dataset, response, gold if gold is not None else "0")
    return g.extracted, g.method
