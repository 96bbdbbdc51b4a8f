"""Numbers as people and small models write them, parsed exactly and compared like a careful human.

Everything here is pure Python on pre-compiled regular expressions, with no sympy and no ``eval``:
the numeric benchmarks (GSM8K, SVAMP, ASDiv) are graded at tens of thousands of responses per
second. Values are exact :class:`fractions.Fraction` objects, so ``0.1 + 0.2`` style float noise
never decides a grade; the tolerance below only forgives float-printing artefacts in the *text*.

Every pattern is linear on adversarial input: each number match may start only where a digit run
starts (``(?<!\\d)``), quantifiers are never nested, and everything after the digits is optional,
so a failed match cannot backtrack through a long run of digits.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import NamedTuple

# Two numbers are equal when |a - b| <= max(REL_TOL * max(|a|, |b|), ABS_TOL), unless both are
# whole numbers (then only exact equality counts). Values are exact fractions, so this only
# forgives float-printing noise such as "0.30000000000000004" or "2.9999999999999996".
REL_TOL = Fraction(1, 10**9)
ABS_TOL = Fraction(1, 10**12)
# The rounding rule (see :func:`numbers_match`) applies when the less precise side shows at least
# this many decimals: "3.333" (ASDiv's rounding of 10/3) accepts "3.3333" or "10/3", while "7"
# never accepts "7.4" and "1.2" never accepts "1.24".
MIN_ROUNDED_DECIMALS = 2
# Numbers longer than this (digits) or with a larger exponent are not numbers anybody means as an
# answer; refusing them keeps Fraction arithmetic (and int() of 10^6 digits) out of reach.
MAX_DIGITS = 80
MAX_EXPONENT = 400

_MINUS = "-\u2212\u2013"  # hyphen-minus, the minus sign, the en dash small models sometimes use
_SCALE = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}

# One number token. Group names: neg, int, frac (".5"), exp, exp10 (x 10^n), den (a/b), scale,
# pct. The sign counts only when it is not a binary minus ("16-3" is 16 and 3, "x=-5" is -5).
NUMBER_PATTERN = (
    r"(?=[" + _MINUS + r".\d])"  # a leading lookahead lets the regex engine skip non-candidates fast
    r"(?:(?P<neg>[" + _MINUS + r"])(?<![\w)\]}][" + _MINUS + r"])\$?)?"  # '-5', 'x=-5', '-$5'; not '16-3'
    r"(?<![\d.A-Za-z])(?<!\d:)"  # not inside a word ('AZYUK2A'), a longer number, or a clock's minutes
    r"(?:(?P<int>\d{1,3}(?:(?:,\d{3})+(?!\d)"  # 1,234,567
    r"|(?:[ \u00a0\u2009\u202f]\d{3})+(?!\d|,\d)"  # 1 234 567 (space, no-break, thin)
    r"|(?:\.\d{3}){2,}(?!\d|[.,]\d))"  # 1.234.567 (two or more dot groups: never a decimal)
    r"|\d+)(?P<frac>\.\d+)?|(?P<lead>\.\d+))"
    r"(?:[eE](?P<exp>[-+]?\d+)(?![\w]))?"
    r"(?:[ \t]{0,3}(?:\\times|\u00d7|\\cdot)[ \t]{0,3}10\^\{?(?P<exp10>[-+\u2212]?\d+)\}?)?"
    r"(?:\s?/\s?(?P<den>\d+(?:\.\d+)?)(?![\d]))?"
    r"(?:\s?(?P<scale>thousand|million|billion|trillion)s?\b)?"
    r"(?P<pct>\s?(?:\\?%|percent\b))?"
)
NUMBER_RE = re.compile(NUMBER_PATTERN, re.IGNORECASE)

_GROUPING_RE = re.compile(r"[,. \u00a0\u2009\u202f]")

_WORD_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_WORD_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
    "ninety": 90,
}  # fmt: skip
WORD_RE = re.compile(
    r"\b(?P<tens>"
    + "|".join(_WORD_TENS)
    + r")(?:[-\s](?P<unit1>"
    + "|".join(list(_WORD_UNITS)[1:10])
    + r"))?\b"
    r"|\b(?P<unit>" + "|".join(_WORD_UNITS) + r")\b",
    re.IGNORECASE,
)


class Num(NamedTuple):
    """One number as written: its exact value, how many decimals it showed, whether it said '%'.

    ``decimals`` is None for a value with no finite decimal form as written (``3/4``, ``10/3``):
    such a value is infinitely precise for the rounding rule. (A NamedTuple: cheap to build in
    the hot loop.)
    """

    value: Fraction | int  # an int when the value is whole (cheaper to build and compare)
    decimals: int | None
    percent: bool = False

    def canonical(self) -> str:
        """A short canonical text: '18', '-0.75', '1234.5', '25%' (what `Grade.extracted` shows)."""
        return format_fraction(self.value) + ("%" if self.percent else "")


def format_fraction(value: Fraction | int) -> str:
    """Exact decimal text for terminating values ('0.75'), 'p/q' otherwise ('10/3')."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    twos = fives = 0
    while den % 2 == 0:
        den //= 2
        twos += 1
    while den % 5 == 0:
        den //= 5
        fives += 1
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    scaled = abs(value) * 10**places
    digits = str(scaled.numerator // scaled.denominator).rjust(places + 1, "0")
    text = f"{digits[:-places]}.{digits[-places:]}".rstrip("0").rstrip(".")
    return ("-" if value < 0 else "") + text


def num_from_match(m: re.Match[str]) -> Num | None:
    """The :class:`Num` of a :data:`NUMBER_RE` match, or None for absurd sizes (never raises)."""
    int_part, frac, lead, exp, exp10, den, scale, neg, pct = m.group(
        "int", "frac", "lead", "exp", "exp10", "den", "scale", "neg", "pct"
    )
    if lead is not None:
        int_part, frac = "0", lead
    if not int_part.isdigit():  # a grouped number: '1,234', '1 234', '1.234.567'
        int_part = _GROUPING_RE.sub("", int_part)
    if len(int_part) + len(frac or "") > MAX_DIGITS:
        return None
    decimals: int | None = len(frac) - 1 if frac else 0
    value: Fraction | int = int(int_part)
    if frac:
        value = Fraction(int(int_part + frac[1:]), 10 ** (len(frac) - 1))
    exponent = 0
    for text in (exp, exp10):
        if text:
            e = int(text.replace("\u2212", "-")) if len(text) <= 6 else MAX_EXPONENT + 1
            if abs(e) > MAX_EXPONENT:
                return None
            exponent += e
    if exponent:
        value *= Fraction(10) ** exponent
        decimals = max(0, (len(frac) - 1 if frac else 0) - exponent)
    if den:
        if len(den) > MAX_DIGITS:
            return None
        d = Fraction(den)
        if d == 0:
            return None
        value /= d
        decimals = _terminating_decimals(value)
    if scale:
        value *= _SCALE[scale.lower()]
        decimals = _terminating_decimals(value)
    if neg:
        value = -value
    return Num(value, decimals, bool(pct))


def _terminating_decimals(value: Fraction | int) -> int | None:
    text = format_fraction(value)
    if "/" in text:
        return None
    return len(text.split(".")[1]) if "." in text else 0


def word_number(m: re.Match[str]) -> Num:
    if m.group("unit"):
        return Num(_WORD_UNITS[m.group("unit").lower()], 0)
    value = _WORD_TENS[m.group("tens").lower()] + (
        _WORD_UNITS[m.group("unit1").lower()] if m.group("unit1") else 0
    )
    return Num(value, 0)


def parse_number(text: str) -> Num | None:
    """The number a whole short string denotes ('1,234', '-3/4', '25%', '$18.00'), else None."""
    cleaned = clean_latex(text).strip().strip("$").strip()
    cleaned = cleaned.rstrip(".").strip()
    m = NUMBER_RE.fullmatch(cleaned)
    return num_from_match(m) if m else None


# --- comparison -----------------------------------------------------------------------------------


def _close(a: Fraction | int, b: Fraction | int) -> bool:
    if a == b:
        return True
    if a.denominator == 1 and b.denominator == 1:
        return False  # two whole numbers are equal or not: no relative slack (999999999 != 10^9)
    fa, fb = _float(a), _float(b)
    if abs(fa - fb) > 1e-6 * max(abs(fa), abs(fb), 1.0):  # cheap rejection before exact arithmetic
        return False
    diff = abs(Fraction(a) - Fraction(b))
    scale = max(abs(Fraction(a)), abs(Fraction(b)))
    return diff <= ABS_TOL or diff <= REL_TOL * scale


def _float(x: Fraction | int) -> float:
    try:
        return float(x)
    except OverflowError:
        return float("inf") if x > 0 else float("-inf")


def _rounds_to(precise: Num, rounded: Num) -> bool:
    """True when `rounded` (showing >= MIN_ROUNDED_DECIMALS decimals, fewer than `precise`) is
    `precise` correctly rounded to that many decimals."""
    d = rounded.decimals
    if d is None or d < MIN_ROUNDED_DECIMALS:
        return False
    if precise.decimals is not None and precise.decimals <= d:
        return False
    if not abs(_float(precise.value) - _float(rounded.value)) <= 10.0**-d:
        return False
    return abs(Fraction(precise.value) - Fraction(rounded.value)) * 2 * 10**d <= 1


def numbers_match(answer: Num, gold: Num) -> bool:
    """Whether an extracted answer equals the gold number, the way a careful human would judge.

    - exact equality up to float-printing noise (REL_TOL / ABS_TOL);
    - a percentage also matches its fraction: '25%' matches gold 25 and gold 0.25 (a gold written
      '25%' likewise matches 25 and 0.25); a plain 0.25 does not match gold 25;
    - rounding, in one direction only: a gold showing at least two decimals accepts any more
      precise answer that rounds to it (gold '3.333' accepts '3.3333' and '10/3'; gold '2.42' does
      not accept '2.4'); an answer showing at least two decimals is accepted as a rounding only of
      a gold with no finite decimal form (gold '1/3' accepts '0.33'; gold '3.333' rejects '3.33').
    """
    if answer.value == gold.value and not (answer.percent or gold.percent):
        return True
    answers = [answer] + (
        [Num(Fraction(answer.value) / 100, _shift(answer.decimals))] if answer.percent else []
    )
    golds = [gold] + ([Num(Fraction(gold.value) / 100, _shift(gold.decimals))] if gold.percent else [])
    for a in answers:
        for g in golds:
            if _close(a.value, g.value) or _rounds_to(a, g) or (g.decimals is None and _rounds_to(g, a)):
                return True
    return False


def _shift(decimals: int | None) -> int | None:
    return None if decimals is None else decimals + 2


# --- LaTeX and markdown clean-up of a short answer segment --------------------------------------------

_TEXT_WRAPPERS_RE = re.compile(
    r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname|emph)\s*\{([^{}]{0,200})\}"
)
_FRAC_RE = re.compile(r"\\[dt]?frac\s*(?:\{\s*([^{}]{1,60}?)\s*\}|(\d))\s*(?:\{\s*([^{}]{1,60}?)\s*\}|(\d))")
_THOUSANDS_BANG_RE = re.compile(r",\\!\s?(?=\d)")
_LATEX_NOISE_RE = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\:|\\quad|\\qquad|\\displaystyle|\\boxed|\\fbox|~")
_CLEAN_TABLE = str.maketrans({"{": " ", "}": " ", "\u00a0": " ", "\u202f": " ", "\u2009": " "})


def clean_latex(text: str) -> str:
    """Turn a short LaTeX/markdown answer segment into plain text numbers can be read from.

    '\\$1{,}234.50' -> '$1,234.50'; '\\frac{3}{4}' -> '3/4'; '\\text{ eggs}' -> ' eggs';
    '**18**' -> ' 18 '; '\\(18\\)' -> ' 18 '. Only for short segments (callers cap the length).
    """
    if "\\" not in text and "{" not in text and "**" not in text:
        return text
    t = (
        text.replace("**", " ")
        .replace("{,}", ",")
        .replace("\\$", "$")
        .replace("\\%", "%")
        .replace("\\(", " ")
        .replace("\\)", " ")
    )
    t = (
        t.replace("\\[", " ")
        .replace("\\]", " ")
        .replace("\\times", " \\times ")
        .replace("\\cdot", " \\cdot ")
    )
    for _ in range(3):  # nested \text{\textbf{..}} unwraps in a few rounds
        t2 = _TEXT_WRAPPERS_RE.sub(r" \1 ", t)
        if t2 == t:
            break
        t = t2
    t = _THOUSANDS_BANG_RE.sub(",", t)  # MATH writes 10,\!080 and 11,\! 111
    t = _FRAC_RE.sub(_frac_sub, t)
    t = _LATEX_NOISE_RE.sub(" ", t)
    t = re.sub(r"\^\s*\\circ|\\circ|\^\s*\{\s*\\circ\s*\}", " degrees", t)
    t = t.replace("\\times", "\u00d7").replace("\\cdot", "\u00d7").replace("\\div", "\u00f7")
    # '10^{-5}' must keep its braces for the exponent; elsewhere braces are only grouping.
    t = re.sub(r"\^\{([-+\u2212]?\d{1,6})\}", r"^\1", t)
    return t.translate(_CLEAN_TABLE)


def _frac_sub(m: re.Match[str]) -> str:
    num = (m.group(1) or m.group(2) or "").strip()
    den = (m.group(3) or m.group(4) or "").strip()
    signed = m.start() > 0 and m.string[m.start() - 1] in _MINUS  # '-\frac{1}{3}' keeps its sign
    return f"{'' if signed else ' '}{num}/{den} "
