"""Finding the final answer in a model response: where it is, not yet what it is worth.

The rules, in the order a careful reader looks for the answer (docs/grading.md has the details):

1. the response is cut where the model's turn ended: at an end-of-turn token (``<|im_end|>``,
   ``<|endoftext|>``, ``</s>``, …) or at a hallucinated next turn (a line starting ``Question:``,
   ``User:``, ``Human:``, ``Problem:``, ``Q:``) once a number has been written before it;
2. ``hash``: the FIRST ``####`` followed by an answer (the paper's format; whatever a small model
   writes after its first ``#### x`` is a continuation, often a made-up next problem). A
   ``####`` that opens a markdown heading (``#### Step 1: …``) is not an answer and is skipped;
3. ``boxed``: the LAST ``\\boxed{…}`` / ``\\fbox{…}``, braces matched (nested braces and ``\\{``
   are fine); a run of boxes joined by commas or 'and' (``\\boxed{2}, \\boxed{-3}``) is one answer;
4. ``answer_is``: the LAST 'the (final) answer is x' / 'Answer: x' / 'answer would be x';
5. ``latex_last`` (symbolic only): the last ``$…$`` / ``\\(…\\)`` / ``\\[…\\]`` math span;
6. ``last_number``: the last number in the response.

This module only locates answer *text*; :mod:`pspo_eval.grading.grader` decides what the text is
worth for a given gold answer, and moves on to the next candidate when it is worth nothing (a
``#### Step 1`` heading, a boxed word where a number is wanted).

All scanning is linear in the response length: delimiters are found with simple patterns or
``str.find``, the work per candidate is bounded (segments are capped at ``SEGMENT_CHARS``, boxed
contents at ``BOXED_CHARS``) and so is the number of candidates examined.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator
from typing import NamedTuple

SEGMENT_CHARS = 300  # an answer after '####' or 'the answer is' lives on one short line
BOXED_CHARS = 5000  # a boxed answer longer than this is not an answer (and brace scans stay bounded)
MAX_CANDIDATES = 200  # how many '####' / boxes / 'answer is' phrases are examined at most
TAIL_CHARS = 4000  # the last number is searched in this tail first

TURN_END_RE = re.compile(
    r"<\|im_end\|>|<\|endoftext\|>|<\|eot_id\|>|<\|end\|>|<\|im_start\|>|<\|user\|>|<\|assistant\|>"
    r"|<end_of_turn>|<start_of_turn>|</s>"
)
# A hallucinated next turn: one of these labels at the start of a line (after '#', '*', spaces).
# The pattern starts with the label (a literal the regex engine can skip to quickly); the
# line-start condition is checked in code.
NEW_TURN_RE = re.compile(r"(?:Question|Q|User|Human|Problem|Instruction)(?:\*\*)?[ \t]*[:\uff1a]")
_DIGIT_RE = re.compile(r"\d")
HASH_RE = re.compile(r"####(?!#)")  # and not preceded by '#' (checked in code: fast literal scan)
_NON_BLANK_RE = re.compile(r"\S")
_STRICT_HASH_RE = re.compile(r"[ \t]*[-\u2212]?\d")
BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE_RE = re.compile(r"\\[{}]|[{}]")
# Between two boxes that form one answer: '$\boxed{2}$, $\boxed{-3}$', '\boxed{2} and \boxed{-3}'.
_BOX_JOIN_RE = re.compile(
    r"(?:[\s$]*(?:,|;|and|or|\\text\{\s*(?:and|or)\s*\}|\\q?quad|\\[,;]|\\\]|\\\[)){0,4}[\s$]*"
)
# What follows the word 'answer' (found with str.find on the lower-cased text, which is much
# faster than a case-insensitive regex scan): 'is', 'was', 'would be', ':', '=', 'to <…> is'.
ANSWER_TAIL_RE = re.compile(
    r"(?:[ \t]*\([^()\n]{1,40}\))?(?:\s+to\s+[^.\n]{1,60}?)?(?:\*\*)?[ \t]*"
    r"(?:is\b(?![ \t]+not\b)|was\b(?![ \t]+not\b)|would\s+be\b|will\s+be\b|should\s+be\b|:|=)"
    r"[ \t]*(?:\*\*)?[ \t]*:?",
    re.IGNORECASE,
)
_ANSWER_WORD_RE = re.compile("answer", re.IGNORECASE)
_CHECKING_RE = re.compile(r"\b(?:check|verify|confirm|double-check)(?:ing)?\s+(?:our|the|my|this|your)\s+answer\b", re.I)
_SENTENCE_END_RE = re.compile(r"(?<!\\)(?:\.(?!\d)|[!?;])|\n")  # '\!' and '\;' are LaTeX spacing
# Math spans join only with an explicit separator: '$1$\n$000$' is two lines, not 1000.
_SPAN_JOIN_RE = re.compile(
    r"[\s$]*(?:,|;|\band\b|\bor\b|\\text\{\s*(?:and|or)\s*\}|\\quad)[\s$]*(?:,|and)?[\s$]*"
)
_MATH_DELIM_RE = re.compile(r"\$\$|(?<!\\)\$|\\\[|\\\]|\\\(|\\\)")
_OPENERS = {"$$": "$$", "$": "$", "\\[": "\\]", "\\(": "\\)"}


class Candidate(NamedTuple):
    """A place where the final answer may be: which rule found it and the text it found.

    ``strict_format`` marks a ``####`` directly followed by a number (lm-evaluation-harness's
    strict-match shape, ``#### (-?[0-9.,]+)``), the only form the strict score accepts.
    ``more_after`` tells a numbered markdown heading ('#### 1. Compute the cost', then more
    lines) from a last line such as '#### 18. That is the total.'. (A NamedTuple: cheap to make
    in the hot loop.)
    """

    method: str
    text: str
    strict_format: bool = False
    more_after: bool = False  # for '####': more non-blank text follows on later lines


def prepare(response: str) -> str:
    """The part of a response that belongs to the model's own turn (rule 1 above)."""
    m = TURN_END_RE.search(response) if "<" in response else None
    if m is not None:
        head = response[: m.start()]
        response = head if head.strip() else TURN_END_RE.sub(" ", response)
    if (
        "Q" in response
        or "User" in response
        or "Human" in response
        or "Problem" in response
        or "Instruction" in response
    ):
        for i, m in enumerate(NEW_TURN_RE.finditer(response)):
            if i >= MAX_CANDIDATES:
                break
            line_start = response.rfind("\n", 0, m.start())
            prefix = response[line_start + 1 : m.start()]
            if line_start < 0 or prefix.strip(" \t#*") or "* " in prefix or "- " in prefix:
                continue  # not at the start of a line (or on the first line), or a list item ('* **Question:** …')
            if _DIGIT_RE.search(response, 0, line_start):
                return response[:line_start]
            break  # a restated question before any working: keep everything
    return response


def hash_positions(text: str) -> Iterator[int]:
    """End offsets of each '####' that is not part of a longer run of '#', first to last."""
    if "####" not in text:
        return
    for i, m in enumerate(HASH_RE.finditer(text)):
        if i >= MAX_CANDIDATES:
            return
        if m.start() > 0 and text[m.start() - 1] == "#":
            continue
        yield m.end()


def line_after(text: str, pos: int) -> str:
    """The rest of the line from `pos` (or, when that is blank, the next non-blank line), capped."""
    end = text.find("\n", pos, pos + SEGMENT_CHARS)
    segment = text[pos : end if end >= 0 else pos + SEGMENT_CHARS]
    if segment.strip() or end < 0:
        return segment
    rest = text[end : end + SEGMENT_CHARS + 200].lstrip()
    nl = rest.find("\n")
    return rest[: nl if nl >= 0 else SEGMENT_CHARS][:SEGMENT_CHARS]


def hash_candidates(text: str) -> Iterator[Candidate]:
    """Every ``####`` segment, first to last (the grader takes the first usable one)."""
    for end in hash_positions(text):
        segment = line_after(text, end)
        newline = text.find("\n", end)
        more_after = newline >= 0 and _NON_BLANK_RE.search(text, newline) is not None
        yield Candidate("hash", segment, _STRICT_HASH_RE.match(segment) is not None, more_after)


def balanced(text: str, start: int) -> int | None:
    """Index of the brace closing the group opened just before `start`, or None (unbalanced)."""
    depth = 1
    for m in _BRACE_RE.finditer(text, start, min(len(text), start + BOXED_CHARS)):
        tok = m.group()
        if tok == "{":
            depth += 1
        elif tok == "}":
            depth -= 1
            if depth == 0:
                return m.start()
    return None


def boxed_groups(text: str) -> list[str]:
    """The contents of the last complete box and of the boxes joined to it, in reading order."""
    if "\\boxed" not in text and "\\fbox" not in text:
        return []
    opens: deque[re.Match[str]] = deque(maxlen=MAX_CANDIDATES)
    for m in BOXED_RE.finditer(text):
        opens.append(m)
    spans: list[tuple[int, int, int]] = []  # (box start, content start, close)
    for m in reversed(opens):
        close = balanced(text, m.end())
        if close is None:
            if spans:
                break
            continue
        if spans:
            gap = text[close + 1 : spans[-1][0]]
            if len(gap) > 40 or not _BOX_JOIN_RE.fullmatch(gap):
                break
        spans.append((m.start(), m.end(), close))
        if len(spans) >= 10:
            break
    return [text[s:c] for _, s, c in reversed(spans)]


def all_boxes(text: str, limit: int = 10) -> list[str]:
    """The contents of the last `limit` complete boxes anywhere in the text, in reading order,
    duplicates dropped (a gold list answered one box per item: '\\boxed{(2, 2)}' … '\\boxed{(6, 2)}')."""
    if "\\boxed" not in text and "\\fbox" not in text:
        return []
    opens: deque[re.Match[str]] = deque(maxlen=MAX_CANDIDATES)
    for m in BOXED_RE.finditer(text):
        opens.append(m)
    found: list[str] = []
    for m in reversed(opens):
        close = balanced(text, m.end())
        if close is None:
            continue
        content = text[m.end() : close].strip()
        if content and content not in found:
            found.append(content)
            if len(found) >= limit:
                break
    return found[::-1]


_BOILERPLATE_RE = re.compile(r"\s*(?:I hope (?:it|this) is correct|Hope (?:it|this) helps)[.!]?\s*$", re.IGNORECASE)
_BOLD_RE = re.compile(r"\*\*([^*\n]{1,200}?)\*\*")


def final_line(text: str) -> str:
    """The last non-blank line, capped, without a closing 'I hope it is correct.'."""
    stripped = text.rstrip()
    start = stripped.rfind("\n", max(0, len(stripped) - SEGMENT_CHARS)) + 1
    line = stripped[start:] if start > 0 or len(stripped) <= SEGMENT_CHARS else stripped[-SEGMENT_CHARS:]
    line = _BOILERPLATE_RE.sub("", line).strip()
    if not line:  # the boilerplate stood on its own line: the line before it
        return final_line(stripped[: max(0, start - 1)]) if start > 0 else ""
    return line


def last_bold(line: str) -> str | None:
    """The last bold span of a line that holds a digit or math (bold labels such as '**Step 2:**' are not answers)."""
    if "**" not in line:
        return None
    found = None
    for m in _BOLD_RE.finditer(line):
        content = m.group(1).strip()
        if content and (_DIGIT_RE.search(content) or "$" in content or "\\" in content) and not content.endswith(":"):
            found = content
    return found


_SENTENCE_BREAK_RE = re.compile(r"(?:[.!?]|\$\$|\\\])\s+(?=\S)")


def last_sentence(line: str) -> str:
    """The last sentence of a line (its final '.', '!', '?' removed); display math ends a sentence too."""
    body = line.rstrip().rstrip(".!?").rstrip()
    breaks = deque(_SENTENCE_BREAK_RE.finditer(body), maxlen=1)
    return body[breaks[0].end() :] if breaks else body


def answer_is_candidates(text: str) -> Iterator[Candidate]:
    """'the answer is …' segments (the rest of the line), last to first."""
    lowered = text.lower()
    if "answer" not in lowered:
        return
    if len(lowered) == len(text):
        positions: Iterable[int] = _find_all(lowered, "answer")
    else:  # lower-casing changed the length (rare Unicode): offsets must come from the text itself
        positions = (m.start() for m in _ANSWER_WORD_RE.finditer(text))
    found: deque[int] = deque(maxlen=MAX_CANDIDATES)
    for pos in positions:
        if pos == 0 or not text[pos - 1].isalnum():
            m = ANSWER_TAIL_RE.match(text, pos + 6)
            if m is not None:
                found.append(m.end())
    for end in reversed(found):
        before = lowered[max(0, end - 60) : end]
        if ("check" in before or "verif" in before or "confirm" in before) and _CHECKING_RE.search(before):
            continue  # "Let's check our answer: …" introduces a check, not the answer
        segment = line_after(text, end)
        if "?" in segment:
            stop = _SENTENCE_END_RE.search(segment.lstrip(), 1)
            if stop is not None and stop.group() == "?":
                continue  # 'Final Answer: How much is the boat worth?' restates the question
        yield Candidate("answer_is", segment)


def _find_all(haystack: str, needle: str) -> Iterator[int]:
    pos = haystack.find(needle)
    while pos >= 0:
        yield pos
        pos = haystack.find(needle, pos + len(needle))


def cut_sentence(segment: str) -> str:
    """The segment up to its first sentence end ('.' not followed by a digit, '!', '?', ';')."""
    stripped = segment.lstrip()
    # A leading "$18.50." must not be cut at its decimal point (handled by (?!\d)), nor a
    # leading '.5' before its digits: skip the first character when searching.
    m = _SENTENCE_END_RE.search(stripped, 1)
    return stripped[: m.start()] if m else stripped


def math_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of the complete ``$…$``, ``$$…$$``, ``\\(…\\)``, ``\\[…\\]`` spans
    (the last MAX_CANDIDATES of them), found by pairing delimiters in one linear pass."""
    spans: deque[tuple[int, int, str]] = deque(maxlen=MAX_CANDIDATES)
    opener: re.Match[str] | None = None
    for m in _MATH_DELIM_RE.finditer(text):
        tok = m.group()
        if opener is None:
            if tok in _OPENERS:
                opener = m
        elif tok == _OPENERS[opener.group()]:
            content = text[opener.end() : m.start()]
            inline_broken = opener.group() in ("$", "\\(") and "\n" in content
            if content.strip() and len(content) <= BOXED_CHARS and not inline_broken:
                spans.append((opener.start(), m.end(), content))
            opener = None
        elif opener.group() == "$" and tok == "$$":
            opener = None
    return list(spans)


def _joined(spans: list[tuple[int, int, str]], text: str) -> list[str]:
    """The spans joined by ',', 'and', 'or' into one answer ('$x = 2$ and $x = -3$')."""
    group = [spans[0]]
    for span in spans[1:]:
        gap = text[group[-1][1] : span[0]]
        if len(gap) > 40 or not _SPAN_JOIN_RE.fullmatch(gap):
            break
        group.append(span)
    return [content.strip() for _, _, content in group]


def in_broken_span(text: str) -> bool:
    """Whether the text ends inside an inline math span broken over lines ('Answer $\\n 9 \\n $'):
    an answer split over lines is no answer, so no number is read from it."""
    tail_text = text.rstrip()
    if not (tail_text.endswith("$") or tail_text.endswith("\\)")):
        return False
    closer = "$" if tail_text.endswith("$") else "\\)"
    body = tail_text[: -len(closer)]
    opener = body.rfind("$" if closer == "$" else "\\(")
    return opener >= 0 and "\n" in body[opener:]


def last_math_span(text: str) -> str | None:
    """The last math span, with the spans joined to it ('$x = 2$ or $x = -3$' -> 'x = 2, x = -3')."""
    spans = math_spans(text)
    if not spans:
        return None
    return ", ".join(_joined_back(spans, text))


def _joined_back(spans: list[tuple[int, int, str]], text: str) -> list[str]:
    group = [spans[-1]]
    for span in reversed(spans[:-1]):
        gap = text[span[1] : group[-1][0]]
        if len(gap) > 40 or not _SPAN_JOIN_RE.fullmatch(gap):
            break
        group.append(span)
    return [content.strip() for _, _, content in reversed(group)]


def first_math_spans(segment: str) -> str | None:
    """The first math span of a short segment, with the spans joined to it."""
    spans = math_spans(segment)
    return ", ".join(_joined(spans, segment)) if spans else None


def tail(text: str) -> str:
    """The last TAIL_CHARS of the text, starting at a whitespace so no number is cut in half."""
    if len(text) <= TAIL_CHARS:
        return text
    start = len(text) - TAIL_CHARS
    ws = re.compile(r"\s").search(text, start)
    return text[ws.start() :] if ws else text[start:]
