"""Gold answers as the graders see them: read once (cached) into a number, a list of numbers or words.

Its own module, below both the grader and the grading policies: a policy decides a non-registry
dataset's kind by parsing its gold, and the grader needs the policy, so neither imports the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from pspo_eval.grading.numeric import Num, clean_latex, parse_number


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
