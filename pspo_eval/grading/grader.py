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
from typing import NamedTuple

from pspo_eval.grading import extract
from pspo_eval.grading.extract import Candidate
from pspo_eval.grading.gold import RATIO_TOKEN_RE, GoldAnswer, parse_gold, words_of
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
from pspo_eval.grading.question import asked_nouns, pick_by_noun
from pspo_eval.records import Grade


def _grade(
    *,
    extracted: str | None,
    correct: bool,
    strict: bool,
    method: str,
    timed_out: bool = False,
    why: str = "",
    alternatives: list[str] | None = None,
) -> Grade:
    """A Grade straight from pydantic's core validator (grading is a hot loop; this is ~3x cheaper)."""
    fields: dict[str, object] = {
        "extracted": extracted,
        "correct": correct,
        "strict": strict,
        "method": method,
        "timed_out": timed_out,
        "why": why,
    }
    if alternatives:  # the default (an empty list) is cheaper than validating one
        fields["alternatives"] = alternatives
    return _GRADE_VALIDATOR.validate_python(fields)


_GRADE_VALIDATOR = Grade.__pydantic_validator__


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
    answer_is (last) > bold (on the final line) > last_number."""
    yield from extract.hash_candidates(text)
    boxes = extract.boxed_groups(text)
    if boxes:
        yield Candidate("boxed", ", ".join(boxes) if several else boxes[-1])
    yield from extract.answer_is_candidates(text)
    if "**" in text:
        bold = extract.last_bold(extract.final_line(text))
        if bold is not None:
            yield Candidate("bold", bold)
    yield Candidate("last_number", text)


# What one candidate is worth against the gold: (the text shown, the verdict, the reason). A plain
# tuple: it is built for every graded response.
_Read = tuple[str, bool, str]


def _number_reason(value: Num, gold: Num, correct: bool) -> str:
    if value.value == gold.value and value.percent == gold.percent:
        return "equals the gold"
    if correct:
        return f"matches the gold {gold.canonical()} (rounding/percent rule)"
    return f"differs from the gold {gold.canonical()}"


def _number_read(value: Num, g: Num) -> _Read:
    correct = numbers_match(value, g)
    same = correct and value.value == g.value and value.percent == g.percent
    return value.canonical(), correct, "equals the gold" if same else _number_reason(value, g, correct)


def _read_number(cand: Candidate, text: str, gold: GoldAnswer, nouns: frozenset[str]) -> _Read | None:
    if cand.method == "hash" or cand.method == "boxed":
        value = number_in(cand.text, anchored=cand.method == "hash")
        return None if value is None else _number_read(value, gold.numbers[0])
    by_noun = None
    if cand.method == "last_number":
        by_noun = pick_by_noun(extract.last_sentence(extract.final_line(text)), nouns) if nouns else None
        found = [by_noun] if by_noun is not None else last_numbers(text, 1)
        value = found[0] if found else None
    elif cand.method in ("answer_is", "bold"):
        segment = extract.cut_sentence(cand.text)
        by_noun = pick_by_noun(segment, nouns) if nouns else None
        value = by_noun or number_in(segment, anchored=False)
    else:
        value = number_in(cand.text, anchored=False)
    if value is None:
        return None
    correct = numbers_match(value, gold.numbers[0])
    reason = _number_reason(value, gold.numbers[0], correct)
    return value.canonical(), correct, reason + (" (the quantity the question asks for)" if by_noun else "")


def _read_list(cand: Candidate, text: str, gold: GoldAnswer, nouns: frozenset[str]) -> _Read | None:
    k = len(gold.numbers)
    if cand.method == "last_number":
        values = last_numbers(text, k)
    else:
        seg = extract.cut_sentence(cand.text) if cand.method in ("answer_is", "bold") else cand.text
        values = numbers_in(seg, k)
    if not values:
        return None
    correct = len(values) == k and _same_multiset(values, list(gold.numbers))
    reason = "the same values as the gold, in any order" if correct else f"not the gold's {k} values"
    return ", ".join(v.canonical() for v in values), correct, reason


def _read_text(cand: Candidate, text: str, gold: GoldAnswer, nouns: frozenset[str]) -> _Read | None:
    if cand.method == "last_number":
        if not (gold.words and ":" in gold.words[0]):
            return None
        ratios = deque(RATIO_TOKEN_RE.finditer(extract.tail(text)), maxlen=1)
        if not ratios:
            return None
        words = words_of(ratios[0].group())
    else:
        words = words_of(cand.text)
    if not words:
        return None
    n = len(gold.words)
    correct = n > 0 and words[:n] == gold.words
    reason = "begins with the gold's words" if correct else "does not begin with the gold's words"
    return " ".join(words[: max(n, 1) + 8]), correct, reason


_NO_NOUNS: frozenset[str] = frozenset()
_READERS = {"number": _read_number, "list": _read_list, "text": _read_text}


def _grade_numeric(
    response: str, gold: GoldAnswer, policy: GradingPolicy, question: str | None = None, explain: bool = False
) -> Grade:
    text = extract.prepare(response)
    nouns = asked_nouns(question) if question and gold.kind == "number" else _NO_NOUNS
    read_one = _READERS[gold.kind]
    number_gold = gold.kind == "number"
    passed: list[str] | None = None  # built only when a rule is passed over (rare)
    candidates = numeric_candidates(text, several=gold.kind == "list")
    for cand in candidates:
        if cand.method == "hash" and _is_heading(cand.text, cand.more_after):
            passed = (passed or []) + ["hash (a heading)"]
            continue
        if number_gold and (cand.method == "hash" or cand.method == "boxed"):  # the common case, inline
            value = number_in(cand.text, anchored=cand.method == "hash")
            read = None if value is None else _number_read(value, gold.numbers[0])
        else:
            read = read_one(cand, text, gold, nouns)
        if read is None:
            passed = (passed or []) + [f"{cand.method} (no usable value)"]
            continue
        extracted, correct, reason = read
        # For numbers, strict '####' means lm-eval's shape: the number right after it ('#### 18').
        strict = (
            correct
            and cand.method in policy.strict_methods
            and (cand.method != "hash" or cand.strict_format or gold.kind == "text")
        )
        fields = {
            "extracted": extracted,
            "correct": correct,
            "strict": strict,
            "method": cand.method,
            "timed_out": False,
            # `why` holds the reason (method and extracted are fields of their own): no string
            # is built for the common verdict.
            "why": f"{reason}; passed over {', '.join(passed[:4])}" if passed else reason,
        }
        if explain:
            fields["alternatives"] = _later_reads(candidates, read_one, text, gold, nouns)
        return _GRADE_VALIDATOR.validate_python(fields)
    why = "no rule found an answer" + (f"; passed over {', '.join(passed)}" if passed else "")
    return _grade(extracted=None, correct=False, strict=False, method="none", why=why)


def _later_reads(candidates: Iterator[Candidate], read_one, text: str, gold: GoldAnswer, nouns) -> list[str]:
    """What each lower-priority rule would have read, and its verdict (explain mode)."""
    out: list[str] = []
    for cand in candidates:
        if cand.method == "hash" and _is_heading(cand.text, cand.more_after):
            continue
        read = read_one(cand, text, gold, nouns)
        if read is not None and len(out) < 8:
            out.append(f"{cand.method} {read[0]}: {'right' if read[1] else 'wrong'}")
    return out


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


_DIGIT_OR_MATH_RE = re.compile(r"[\d\\^_=]")
_IS_RE = re.compile(r"\s(?:is|are|equals|was)\s+")
_WORDY_RE = re.compile(r"[A-Za-z]{2,}")


def _lone_number(sentence: str) -> str | None:
    """'Jane started growing Sphere 3 hours ago': a sentence of words holding one number gives it."""
    if len(_WORDY_RE.findall(sentence)) < 3:
        return None
    found = list(NUMBER_RE.finditer(sentence))
    if len(found) != 1:
        return None
    n = num_from_match(found[0])
    return n.canonical() if n is not None else None


def symbolic_text(segment: str, *, cut: bool = True) -> str:
    """The answer expression inside a '####' / 'answer is' segment: its first math span (with the
    spans joined to it by ',', 'and', 'or'), else the sentence; '10 apples' loses its unit words
    (never 'pi', 'sqrt', variables)."""
    s = segment.strip()
    if cut:  # 'The volume of $ABCDEFGH$ is 120.': the value follows the sentence's last 'is'
        sentence = extract.cut_sentence(s)
        verbs = deque(_IS_RE.finditer(sentence), maxlen=1)
        if verbs and sentence[verbs[0].end() :].strip():
            s = s[verbs[0].end() :].strip()
        elif "$" not in sentence and "\\" not in sentence:
            lone = _lone_number(sentence)
            if lone is not None:
                return lone
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


def symbolic_candidates(text: str, gold: str | None = None) -> Iterator[Candidate]:
    """boxed (last, joined) > hash (first) > answer_is (last) > bold > final_line > last_sentence >
    latex_last > last_number. An equation gold keeps the answer's assignment ('y = …' is compared
    as an equation); otherwise a leading 'x =' is dropped."""
    bare = gold.strip().strip("$").strip() if gold else ""
    equation_gold = bool(bare) and _is_equation(bare)
    items = _gold_items(bare) if bare and len(bare) < 200 else 1
    for cand in _symbolic_candidates(text, items):
        value = cand.text if equation_gold else strip_assignment(cand.text)
        yield Candidate(cand.method, value, cand.strict_format)


def _is_equation(gold: str) -> bool:
    """'2x+4y-3=0', 'y=-\\frac12x+\\frac34': an equation with a variable on the right too, or a 0 side."""
    if gold.count("=") != 1 or "\\le" in gold or "\\ge" in gold:
        return False
    left, right = (_LATEX_COMMAND_RE.sub("", side).strip() for side in gold.split("="))
    return right == "0" or (_LETTER_RE.search(left) is not None and _LETTER_RE.search(right) is not None)


_LATEX_COMMAND_RE = re.compile(r"\\[A-Za-z]+")
_LETTER_RE = re.compile(r"[A-Za-z]")


def _gold_items(gold: str) -> int:
    """How many top-level comma-separated items a gold has: '(2, 2), (6, 2)' -> 2, '(1, 3]' -> 1."""
    depth, items = 0, 1
    for ch in gold[:2000]:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items += 1
    return items


_TAIL_VALUE = r"(?:\*\*)?\s*(\$[^$]{1,200}\$|\\\(.{1,200}?\\\)|-?\d[\d,.\s/]*(?:[ \t]*[A-Za-z]+){0,3})\s*(?:\*\*)?\s*[.!]?\s*$"
_FINAL_LINE_RE = re.compile(r"^\s*(?:\*\*)?[A-Za-z][A-Za-z0-9 _'()\\{}^]{0,40}?(?:\*\*)?\s*=\s*" + _TAIL_VALUE)
_LAST_SENTENCE_RE = re.compile(r"\b(?:is|are|was|equals|be|gives|get|of)\s+" + _TAIL_VALUE, re.IGNORECASE)


def _tail_candidates(text: str) -> Iterator[Candidate]:
    """The answer a final line states in words, which should beat the last LaTeX expression: a bold
    value, 'x = 128' / 'Distance = 108 meters', '… the value we want is 12.'."""
    line = extract.final_line(text)
    if not line:
        return
    bold = extract.last_bold(line)
    if bold is not None:
        yield Candidate("bold", symbolic_text(bold))
    m = _FINAL_LINE_RE.match(line)
    if m:
        yield Candidate("final_line", symbolic_text(m.group(1)))
    sentence = extract.last_sentence(line)
    m = _LAST_SENTENCE_RE.search(sentence + ".")
    if m:
        yield Candidate("last_sentence", symbolic_text(m.group(1)))
    elif "$" not in sentence and "\\" not in sentence:
        lone = _lone_number(sentence)  # 'Therefore, there are 12 distinct sequences that …'
        if lone is not None:
            yield Candidate("last_sentence", lone)


def _symbolic_candidates(text: str, items: int = 1) -> Iterator[Candidate]:
    final = text.lower().rfind("final answer")
    if final >= 0 and final > text.rfind("\\boxed"):  # 'Final Answer: …' written after the last box wins
        for cand in extract.answer_is_candidates(text[final:]):
            value = symbolic_text(cand.text)
            if _DIGIT_OR_MATH_RE.search(value):  # not 'The final answer is consistent with …'
                yield Candidate("answer_is", value)
            break
    boxes = extract.boxed_groups(text)
    if boxes:
        if items > 1 and len(boxes) < items:  # one gold list answered one box per item, apart
            spread = extract.all_boxes(text)
            boxes = spread[-items:] if len(spread) >= items else boxes
        yield Candidate("boxed", ", ".join(b.strip() for b in boxes))
    for cand in extract.hash_candidates(text):
        if not _is_heading(cand.text, cand.more_after):
            yield Candidate("hash", symbolic_text(cand.text), cand.strict_format)
    for cand in extract.answer_is_candidates(text):
        yield Candidate("answer_is", symbolic_text(cand.text))
    yield from _tail_candidates(text)
    span = extract.last_math_span(text)
    if span is not None:  # 'x = 5' stays whole: math-verify compares its right-hand side with a bare gold
        yield Candidate("latex_last", span.strip())
    if extract.in_broken_span(text):
        return
    comma = _DECIMAL_COMMA_RE.search(extract.final_line(text)[-40:])
    if comma:  # '1000,99', 'Soucis : 2,74 $': a decimal comma (two digits at most: '1,000' is a thousand)
        yield Candidate("last_number", f"{comma.group(1)}.{comma.group(2)}")
        return
    found = last_numbers(text, 1)
    if found:
        yield Candidate("last_number", found[0].canonical())


_DECIMAL_COMMA_RE = re.compile(r"(?<![\d,.])(\d+),(\d{1,2})(?![\d,.]|\s*\d)(?!.*\d)")


_NORM_DROP_RE = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\:|\\ |~|\s+|\$|\^\{?\\circ\}?|\u00b0|\\displaystyle")
_NORM_TEXT_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_INT_RE = re.compile(r"[-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d{1,60})")  # '1,234' yes; '7,5,3' is a list


def normalize_latex(s: str) -> str:
    """Presentation-only differences removed: '\\left( 3, \\dfrac{\\pi}{2} \\right)' -> '(3,\\frac{\\pi}{2})'."""
    s = _NORM_TEXT_RE.sub(r"\1", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return _NORM_DROP_RE.sub("", s).rstrip(".")


def _quick_verdict(answer: str, gold: str) -> tuple[bool | None, str]:
    """(True/False, reason) when a cheap exact check decides (same normalized LaTeX; two plain
    integers), else (None, '')."""
    a, g = normalize_latex(answer), normalize_latex(strip_assignment(gold))
    if a and a == g:
        return True, "the same LaTeX as the gold (up to spacing and presentation)"
    if _INT_RE.fullmatch(a) and _INT_RE.fullmatch(g):
        same = int(a.replace(",", "").replace("\u2212", "-")) == int(g.replace(",", "").replace("\u2212", "-"))
        return same, "equals the gold (two integers)" if same else "differs from the gold (two integers)"
    if _PLAIN_DECIMAL_RE.fullmatch(a) and _PLAIN_DECIMAL_RE.fullmatch(g):
        # Two plain decimals are compared exactly (with the numeric rounding rule), not to math-verify's
        # six decimal places: '0.000067' is not '.0000672'.
        na, ng = parse_number(a), parse_number(g)
        if na is not None and ng is not None:
            same = numbers_match(na, ng)
            return same, "equals the gold (two decimals)" if same else "differs from the gold (two decimals)"
    return None, ""


_PLAIN_DECIMAL_RE = re.compile(r"[-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d*)\.\d+|[-\u2212]?\d+")


class _Extraction(NamedTuple):
    """The chosen symbolic candidate, the rules passed over before it, and the later candidates."""

    chosen: Candidate | None
    passed: list[str]
    later: list[Candidate]


def _symbolic_extract(response: str, gold: str | None = None, explain: bool = False) -> _Extraction:
    text = extract.prepare(response)
    chosen: Candidate | None = None
    passed: list[str] = []
    later: list[Candidate] = []
    for cand in symbolic_candidates(text, gold):
        if not cand.text.strip():
            passed.append(f"{cand.method} (empty)")
        elif chosen is None:
            chosen = cand
            if not explain:
                break
        elif len(later) < 4 and all(c.text != cand.text for c in later) and cand.text != chosen.text:
            later.append(cand)
    return _Extraction(chosen, passed, later)


def _compare(answer: str, gold: str, timeout_s: float | None) -> tuple[bool, bool, str]:
    """(correct, timed_out, reason): the quick check, else math-verify in a worker under a deadline."""
    verdict, reason = _quick_verdict(answer, gold)
    if verdict is not None:
        return verdict, False, reason
    from pspo_eval.grading import symbolic

    ok, timed_out = symbolic.pool().verify(gold, answer, timeout_s)
    if timed_out:
        return False, True, "math-verify ran out of time (counted wrong)"
    return ok, False, "math-verify: equivalent" if ok else "math-verify: not equivalent"


ALT_TIMEOUT_S = 2.0  # seconds per alternative candidate in explain mode


def _symbolic_grade(ex: _Extraction, gold: str, policy: GradingPolicy, timeout_s: float | None) -> Grade:
    cand = ex.chosen
    if cand is None:
        why = "no rule found an answer" + (f"; passed over {', '.join(ex.passed)}" if ex.passed else "")
        return _grade(extracted=None, correct=False, strict=False, method="none", why=why)
    correct, timed_out, reason = _compare(cand.text, gold, timeout_s)
    strict = correct and cand.method in policy.strict_methods
    why = f"{reason}; passed over {', '.join(ex.passed[:4])}" if ex.passed else reason
    alternatives = []
    # Explain mode only. Each alternative gets a short deadline, so a pathological one costs at most
    # ALT_TIMEOUT_S, never the full per-item deadline again.
    alt_timeout = min(timeout_s or ALT_TIMEOUT_S, ALT_TIMEOUT_S)
    for alt in ex.later:
        ok, alt_timed_out, _ = _compare(alt.text, gold, alt_timeout)
        verdict = "timed out" if alt_timed_out else "right" if ok else "wrong"
        alternatives.append(f"{alt.method} {alt.text[:80]}: {verdict}")
    return _grade(
        extracted=cand.text, correct=correct, strict=strict, method=cand.method, timed_out=timed_out,
        why=why, alternatives=alternatives,
    )


# --- public API -----------------------------------------------------------------------------------------


def _check_str(name: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value) if isinstance(value, float) else str(value)
    from pspo_eval.errors import PspoError

    raise PspoError(f"{name} must be a string, got {type(value).__name__}", f"pass the {name} text")


def grade(
    dataset: str,
    response: str,
    gold: str,
    *,
    question: str | None = None,
    timeout_s: float | None = None,
    explain: bool = False,
) -> Grade:
    """Grade one response against its gold answer under the dataset's policy.

    `dataset` is a registry name (gsm8k, gsm8k_train, svamp, asdiv, math500) or any other name:
    then numeric grading when `gold` is a number, symbolic otherwise. `question` (the problem's
    text, optional) lets the grader pick the asked-for quantity when an answer states several.
    `timeout_s` bounds the symbolic comparison (default $PSPO_EVAL_GRADE_TIMEOUT or 10 s); a
    timeout grades incorrect with ``timed_out=True``. `explain` also fills ``alternatives`` (what
    every lower-priority rule would have read, and its verdict). Never raises on any response text.
    """
    response = _check_str("response", response)
    gold = _check_str("gold", gold)
    policy = policy_for(dataset, gold)
    if policy.kind == "numeric":
        parsed = parse_gold(gold)
        if parsed.kind == "text" and not parsed.words:
            return _grade(extracted=None, correct=False, strict=False, method="none", why="the gold is empty")
        return _grade_numeric(response, parsed, policy, question, explain)
    return _symbolic_grade(_symbolic_extract(response, gold, explain), gold, policy, timeout_s)


def grade_many(
    dataset: str,
    pairs: Iterable[tuple[str, str]],
    *,
    questions: Iterable[str | None] | None = None,
    workers: int | None = None,
    timeout_s: float | None = None,
    explain: bool = False,
) -> list[Grade]:
    """Grade many (response, gold) pairs (with their `questions`, when known); results are in input order.

    Numeric grading runs in this thread (it is pure Python: threads would not help). Symbolic
    grading extracts here and sends the comparisons that need math-verify to `workers` worker
    processes at once (default: min(4, CPUs)).
    """
    items = [(_check_str("response", r), _check_str("gold", g)) for r, g in pairs]
    qs = list(questions) if questions is not None else [None] * len(items)
    results: list[Grade | None] = [None] * len(items)
    symbolic_jobs: list[tuple[int, _Extraction, str, GradingPolicy]] = []
    for i, (response, gold) in enumerate(items):
        policy = policy_for(dataset, gold)
        if policy.kind == "numeric":
            results[i] = grade(dataset, response, gold, question=qs[i], explain=explain)
            continue
        ex = _symbolic_extract(response, gold, explain)
        if ex.chosen is None or (not ex.later and _quick_verdict(ex.chosen.text, gold)[0] is not None):
            results[i] = _symbolic_grade(ex, gold, policy, timeout_s)
        else:
            symbolic_jobs.append((i, ex, gold, policy))
    if symbolic_jobs:
        _grade_symbolic_jobs(symbolic_jobs, results, workers, timeout_s)
    return [r for r in results if r is not None]


def _grade_symbolic_jobs(jobs, results: list[Grade | None], workers: int | None, timeout_s: float | None) -> None:
    from pspo_eval.grading import symbolic

    n = max(1, workers or symbolic.default_workers())
    symbolic.pool(n)
    if n == 1 or len(jobs) == 1:
        for i, ex, gold, policy in jobs:
            results[i] = _symbolic_grade(ex, gold, policy, timeout_s)
        return
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="pspo-grade") as executor:
        futures = {i: executor.submit(_symbolic_grade, ex, gold, policy, timeout_s) for i, ex, gold, policy in jobs}
        for i, future in futures.items():
            results[i] = future.result()


def extract_answer(dataset: str, response: str, gold: str | None = None) -> tuple[str | None, str]:
    """(extracted answer, method) without judging it: what `grade` would read as the final answer."""
    policy = policy_for(dataset, gold)
    if policy.kind == "symbolic":
        cand = _symbolic_extract(response, gold).chosen
        return (cand.text, cand.method) if cand else (None, "none")
    g = grade(dataset, response, gold if gold is not None else "0")
    return g.extracted, g.method
