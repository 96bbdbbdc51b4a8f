"""Using the problem's question to choose among several quantities an answer states.

"Answer: Jake has 136 apples and 3 peaches." answers "How many peaches does Jake have?" with 3,
and "How many apples …?" with 136. A reader takes the number whose noun the question asks about;
so does :func:`pick_by_noun`, and only when that choice is unambiguous (several numbers, each
followed by a noun, exactly one of them the asked-for one). Without a question, or when the choice
is not clear, the caller keeps its response-only rule.
"""

from __future__ import annotations

import re
from functools import lru_cache

from pspo_eval.grading.numeric import NUMBER_RE, Num, clean_latex, num_from_match

_HOW_MANY_RE = re.compile(
    r"\bhow\s+many\s+(?:more\s+|fewer\s+|less\s+|total\s+|different\s+)?([a-z][a-z-]{1,30})(?:\s+([a-z][a-z-]{1,30}))?",
    re.IGNORECASE,
)
_NOT_NOUNS = frozenset(
    "more fewer less of do does did are were is was will would can could have has had in on at the a an "
    "there they he she it we you".split()
)
_FOLLOWING_WORDS_RE = re.compile(r"[ \t]*((?:[A-Za-z][A-Za-z-]*[ \t]*){1,3})")


def _stem(word: str) -> str:
    """'peaches' -> 'peach', 'apples' -> 'apple', 'boxes' -> 'box', 'candies' -> 'candy' (enough to match)."""
    w = word.lower()
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(("ches", "shes", "xes", "sses")):
        return w[:-2]
    if w.endswith("s") and not w.endswith("ss") and len(w) > 3:
        return w[:-1]
    return w


@lru_cache(maxsize=4096)
def asked_nouns(question: str) -> frozenset[str]:
    """The stems of the noun a 'how many X …?' question asks about (the LAST such phrase: the question
    itself follows the story), or an empty set."""
    found = None
    for m in _HOW_MANY_RE.finditer(question[-2000:]):
        found = m
    if found is None:
        return frozenset()
    words = [w for w in found.groups() if w and w.lower() not in _NOT_NOUNS]
    return frozenset(_stem(w) for w in words)


def pick_by_noun(segment: str, nouns: frozenset[str]) -> Num | None:
    """The one number of `segment` followed (within three words) by an asked-for noun, when the segment
    states at least two quantities; None when there is no clear choice."""
    if not nouns:
        return None
    s = clean_latex(segment)
    quantities = 0
    chosen: list[Num] = []
    for m in NUMBER_RE.finditer(s):
        words = _FOLLOWING_WORDS_RE.match(s, m.end())
        if words is None:
            continue
        quantities += 1
        if any(_stem(w) in nouns for w in words.group(1).split()):
            n = num_from_match(m)
            if n is not None:
                chosen.append(n)
    if quantities >= 2 and len(chosen) == 1:
        return chosen[0]
    return None
