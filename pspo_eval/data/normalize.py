"""Normalization rules shared by the build script (raw releases) and the hub loader.

Both paths turn a source row into the same :class:`~pspo_eval.records.Problem`, so a benchmark
loaded from ``datasets/`` and the same benchmark loaded from the Hugging Face hub agree item by
item. The rules are written once, here; ``scripts/build_datasets.py`` and ``hub.py`` only adapt
column names. Every function is pure and raises ``ValueError`` on a row it cannot normalize (the
callers turn that into a clear error naming the row).

The rules, in one place (``datasets/README.md`` repeats them for readers of the data):

- Numbers are written canonically: no thousands commas, no trailing zeros, no exponent
  (``"1,080"`` -> ``"1080"``, ``51.0`` -> ``"51"``, ``"0.50"`` -> ``"0.5"``).
- GSM8K: ``answer`` is the number after ``####``; ``solution`` is the worked solution with the
  ``<<48/2=24>>`` calculator annotations and the final ``#### n`` line removed. The question is
  kept byte for byte (including its double spaces after full stops).
- SVAMP and ASDiv: ``question`` is body and question joined by one space, with runs of
  whitespace collapsed and the ends trimmed; a body ending without punctuation gets a full stop
  (``"If there are 692 girls"`` -> ``"If there are 692 girls."``). Nothing else is rewritten.
- ASDiv: the unit in parentheses is removed (``"9 (apples)"`` -> ``"9"``). Answers that are not a
  single number (several ``;``-separated values, ratios, clock times, names) are kept and flagged.
- MATH-500: problem, solution and LaTeX answer are kept unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from pspo_eval.records import Problem

# ---------------------------------------------------------------------------------------------
# numbers


_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?")
_FRACTION = re.compile(r"(?P<sign>[+-]?)(?P<num>\d+)\s*/\s*(?P<den>\d+)")
_PAREN_FRACTION = re.compile(r"(?P<sign>[+-]?)\((?P<num>\d+)\s*/\s*(?P<den>\d+)\)")


def canonical_number(value: Any) -> str:
    """Write a number (int, float, or numeric string) the one way the project compares it.

    ``51.0`` -> ``"51"``, ``"1,080"`` -> ``"1080"``, ``"0.50"`` -> ``"0.5"``, ``-0.0`` -> ``"0"``.
    Thousands commas are only accepted in proper groups of three (``"1,080"``, not ``"10,80"``),
    because a stray comma more likely separates two numbers than groups one.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"not a finite number: {value!r}")
        number = Decimal(repr(value))
    elif isinstance(value, str):
        text = value.strip()
        if _THOUSANDS.fullmatch(text):
            text = text.replace(",", "")
        if not _DECIMAL.fullmatch(text):
            raise ValueError(f"not a number: {value!r}")
        try:
            number = Decimal(text)
        except InvalidOperation as exc:  # pragma: no cover - the pattern above rules this out
            raise ValueError(f"not a number: {value!r}") from exc
    else:
        raise ValueError(f"not a number: {value!r}")
    if number == number.to_integral_value():
        return str(int(number))
    return format(number.normalize(), "f")


def parse_number(text: str) -> Fraction | None:
    """The exact value of a gold answer written as a plain number or a simple fraction, else None.

    Accepts what the normalized files contain for single-number answers: ``"12"``, ``"-3.5"``,
    ``"1080"``, ``"5/2"``, ``"-1/3"``. Exact (a :class:`~fractions.Fraction`) so that ``"0.1"`` and
    ``"1/10"`` compare equal without floating-point noise. Never evaluates the text.
    """
    text = text.strip()
    try:
        return Fraction(Decimal(canonical_number(text)))
    except ValueError:
        pass
    match = _FRACTION.fullmatch(text) or _PAREN_FRACTION.fullmatch(text)
    if match and int(match["den"]) != 0:
        value = Fraction(int(match["num"]), int(match["den"]))
        return -value if match["sign"] == "-" else value
    return None


# ---------------------------------------------------------------------------------------------
# text


def squash_whitespace(text: str) -> str:
    """Collapse runs of whitespace (spaces, tabs, newlines) to one space and trim the ends."""
    return " ".join(text.split())


_SENTENCE_END = re.compile(r"""[.?!,;:]["'\u201d\u2019)]*$""")


def join_question(body: str, question: str) -> str:
    """SVAMP/ASDiv: body and question as one text, ``Body + " " + Question``, whitespace tidied.

    Whitespace runs are collapsed and the ends trimmed, so a trailing space in a field never makes a
    double space. A body that stops without punctuation gets a full stop, because 358 SVAMP bodies
    end in an ``If ...`` clause and ``"... on each pack How much ..."`` reads as one run-on sentence
    (the same fix the common math-eval harnesses apply). Bodies ending in ``.?!`` or in ``,;:``
    (ASDiv's ``"If he gets twelve more cars,"``) are joined as they are; no other character changes.
    """
    body, question = squash_whitespace(body or ""), squash_whitespace(question or "")
    if body and question and not _SENTENCE_END.search(body):
        body += "."
    return " ".join(part for part in (body, question) if part)


# ---------------------------------------------------------------------------------------------
# GSM8K

_CALCULATOR = re.compile(r"<<[^<>]*>>")


def gsm8k_final_answer(answer_field: str) -> str:
    """The gold number of a GSM8K ``answer`` field: what follows the last ``####``, canonical."""
    if "####" not in answer_field:
        raise ValueError("GSM8K answer has no '####' line")
    return canonical_number(answer_field.rsplit("####", 1)[1].strip())


def gsm8k_solution(answer_field: str) -> str:
    """The worked solution of a GSM8K ``answer`` field, as a person would read it.

    The ``<<expr=result>>`` calculator annotations (an artefact of how GSM8K was written, meant for
    a calculator tool) and the final ``#### n`` line (already in ``Problem.answer``) are removed.
    ``f"{solution}\\n#### {answer}"`` gives back the published format without annotations.
    """
    body = answer_field.rsplit("####", 1)[0] if "####" in answer_field else answer_field
    return _CALCULATOR.sub("", body).strip()


def gsm8k_problem(row: dict[str, Any], *, split: str, index: int, dataset: str) -> Problem:
    """GSM8K row (``question``, ``answer``; the raw file and ``openai/gsm8k`` agree) -> Problem."""
    return Problem(
        id=f"gsm8k-{split}-{index:04d}",
        dataset=dataset,
        question=str(row["question"]).strip(),
        answer=gsm8k_final_answer(str(row["answer"])),
        solution=gsm8k_solution(str(row["answer"])),
    )


# ---------------------------------------------------------------------------------------------
# SVAMP


def svamp_problem(row: dict[str, Any], *, dataset: str = "svamp") -> Problem:
    """SVAMP row (``ID, Body, Question, Equation, Answer, Type``; raw file and ``ChilleD/SVAMP``).

    ``Answer`` is a float in the release (``51.0``) and may be a string in copies; both become the
    canonical number string.
    """
    if row.get("Body") is not None and row.get("Question") is not None:
        question = join_question(str(row["Body"]), str(row["Question"]))
    elif row.get("question_concat"):
        question = squash_whitespace(str(row["question_concat"]))
    else:
        raise ValueError("SVAMP row has neither Body/Question nor question_concat")
    equation = row.get("Equation")
    return Problem(
        id=str(row["ID"]).strip(),
        dataset=dataset,
        question=question,
        answer=canonical_number(row["Answer"]),
        category=(str(row["Type"]).strip() or None) if row.get("Type") is not None else None,
        meta={"equation": str(equation).strip()} if equation is not None else {},
    )


# ---------------------------------------------------------------------------------------------
# ASDiv

_UNIT = re.compile(r"(?P<value>.*?)\s*\((?P<unit>[^()]*[A-Za-z][^()]*)\)")
_CLOCK_OR_RATIO = re.compile(r"\d+(:\d+)+")

#: ASDiv answer kinds; the last four are flagged ``multi_answer`` (not one number).
ANSWER_KINDS = ("number", "fraction", "multi", "ratio", "time", "text")


@dataclass(frozen=True)
class AsdivAnswer:
    """An ASDiv ``Answer`` field taken apart: the normalized answer, what kind it is, its unit."""

    answer: str
    kind: str
    unit: str | None

    @property
    def multi_answer(self) -> bool:
        """True when the answer is not a single number (other harnesses drop or mis-grade these)."""
        return self.kind not in ("number", "fraction")


def _strip_unit(text: str) -> tuple[str, str | None]:
    """``"9 (apples)"`` -> ``("9", "apples")``; ``"-(1/3)"`` stays (its parentheses hold no unit)."""
    text = text.strip()
    match = _UNIT.fullmatch(text)
    if match and match["value"].strip():
        return match["value"].strip(), squash_whitespace(match["unit"])
    return text, None


def _single_value(text: str) -> tuple[str, str] | None:
    """(normalized, kind) for a plain number or a simple fraction, else None."""
    try:
        return canonical_number(text), "number"
    except ValueError:
        pass
    match = _FRACTION.fullmatch(text) or _PAREN_FRACTION.fullmatch(text)
    if match and int(match["den"]) != 0:
        sign = "-" if match["sign"] == "-" else ""
        return f"{sign}{int(match['num'])}/{int(match['den'])}", "fraction"
    return None


def asdiv_answer(raw: str, solution_type: str | None = None) -> AsdivAnswer:
    """Normalize an ASDiv ``Answer`` field.

    - ``"9 (apples)"`` -> ``"9"`` (kind ``number``, unit ``apples``); ``"5/2"``, ``"-(1/3)"`` ->
      ``"5/2"``, ``"-1/3"`` (kind ``fraction``: still one number).
    - ``"5 (years old); 15 (years old)"`` -> ``"5; 15"`` (kind ``multi``).
    - ``"3:5"`` -> ``"3:5"``: kind ``ratio`` when the Solution-Type is ``Ratio``, else ``time``
      (``"5:45"``, ``"3:30 p.m."``, ``"9:03:36 a.m."``).
    - anything else (``"Mrs. Hilt"``, ``"They are equal"``) -> unchanged, kind ``text``.
    """
    text = squash_whitespace(raw or "")
    if not text:
        raise ValueError("ASDiv answer is empty")
    if ";" in text:
        parts = []
        for part in text.split(";"):
            value, _unit = _strip_unit(part)
            single = _single_value(value)
            parts.append(single[0] if single else value)
        return AsdivAnswer("; ".join(parts), "multi", None)
    value, unit = _strip_unit(text)
    single = _single_value(value)
    if single:
        return AsdivAnswer(single[0], single[1], unit)
    if _CLOCK_OR_RATIO.match(value):
        is_ratio = (solution_type or "").strip().lower() == "ratio" and _CLOCK_OR_RATIO.fullmatch(value)
        return AsdivAnswer(value, "ratio" if is_ratio else "time", unit)
    return AsdivAnswer(text, "text", None)


def asdiv_problem(
    *,
    id: str,
    body: str,
    question: str,
    answer: str,
    solution_type: str | None,
    formula: str | None,
    grade: str | None = None,
    extra: dict[str, Any] | None = None,
    dataset: str = "asdiv",
) -> Problem:
    """One ASDiv problem -> Problem (the XML's tags and ``EleutherAI/asdiv``'s columns, renamed).

    ``meta`` always holds ``raw_answer``, ``answer_kind``, ``multi_answer`` and ``formula``, plus
    ``unit`` when the answer had one; ``extra`` adds source-specific fields (e.g. the XML's Source
    and Class attributes).
    """
    parsed = asdiv_answer(answer, solution_type)
    meta: dict[str, Any] = {
        "answer_kind": parsed.kind,
        "formula": squash_whitespace(formula) if formula else None,
        "multi_answer": parsed.multi_answer,
        "raw_answer": squash_whitespace(answer),
    }
    if parsed.unit:
        meta["unit"] = parsed.unit
    meta.update(extra or {})
    return Problem(
        id=id,
        dataset=dataset,
        question=join_question(body, question),
        answer=parsed.answer,
        category=squash_whitespace(solution_type) if solution_type else None,
        level=str(grade).strip() if grade not in (None, "") else None,
        meta=dict(sorted(meta.items())),
    )


# ---------------------------------------------------------------------------------------------
# MATH-500


def math500_problem(row: dict[str, Any], *, index: int, dataset: str = "math500") -> Problem:
    """MATH-500 row (``problem, solution, answer, subject, level[, unique_id]``) -> Problem.

    The LaTeX answer is kept exactly as published: it is graded symbolically, and any rewriting
    here would risk changing what counts as correct.
    """
    answer = str(row["answer"])
    if not answer.strip():
        raise ValueError("MATH-500 answer is empty")
    level = row.get("level")
    meta = {"unique_id": str(row["unique_id"])} if row.get("unique_id") else {}
    return Problem(
        id=f"math500-{index:03d}",
        dataset=dataset,
        question=str(row["problem"]),
        answer=answer,
        solution=str(row["solution"]) if row.get("solution") is not None else None,
        category=str(row["subject"]) if row.get("subject") is not None else None,
        level=str(level) if level is not None else None,
        meta=meta,
    )
