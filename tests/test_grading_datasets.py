"""Every gold answer of every bundled benchmark grades as correct against itself.

Numeric benchmarks: the gold written as '#### <gold>' and as '\\boxed{<gold>}'; MATH-500: as
'\\boxed{<gold>}' (and, marked slow, every gold through math-verify itself, bypassing the quick
exact check). ASDiv's multi-answer rows are included: their grading rules are in
test_grading.py::test_asdiv_multi_answer_rows.
"""

from __future__ import annotations

from collections import Counter

import pytest

from pspo_eval.grading import grade, grade_many, parse_gold

data = pytest.importorskip("pspo_eval.data")

NUMERIC = ["gsm8k", "gsm8k_train", "svamp", "asdiv"]


def _problems(name):
    try:
        return data.load_dataset(name)
    except Exception as exc:  # pragma: no cover - only while the dataset files are being built
        pytest.skip(f"dataset {name} not available: {exc}")


@pytest.mark.parametrize("name", NUMERIC)
def test_numeric_golds_grade_against_themselves(name):
    problems = _problems(name)
    assert problems
    failures = []
    for p in problems:
        for response, method in ((f"#### {p.answer}", "hash"), (f"\\boxed{{{p.answer}}}", "boxed")):
            g = grade(name, response, p.answer)
            if not (g.correct and g.method == method):
                failures.append((p.id, p.answer, response, g))
        if not grade(name, f"#### {p.answer}", p.answer).strict:
            failures.append((p.id, p.answer, "strict", None))
    assert not failures, failures[:20]


def test_asdiv_multi_answer_rows_are_graded_by_their_kind():
    problems = _problems("asdiv")
    multi = [p for p in problems if p.meta.get("multi_answer")]
    kinds = Counter(parse_gold(p.answer).kind for p in multi)
    # ';' lists are graded as number lists, ratios / clock times / names as text.
    assert kinds["list"] > 0 and kinds["text"] > 0
    single = [p for p in problems if not p.meta.get("multi_answer")]
    assert all(parse_gold(p.answer).kind == "number" for p in single)


def test_math500_golds_grade_against_themselves_boxed():
    problems = _problems("math500")
    assert len(problems) == 500
    grades = grade_many("math500", [(f"\\boxed{{{p.answer}}}", p.answer) for p in problems])
    bad = [
        (p.answer, g)
        for p, g in zip(problems, grades, strict=True)
        if not (g.correct and g.strict and g.method == "boxed")
    ]
    assert not bad, bad[:20]


@pytest.mark.slow
def test_math500_golds_are_equivalent_to_themselves_in_math_verify():
    from pspo_eval.grading import symbolic

    problems = _problems("math500")
    pool = symbolic.pool(2)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as executor:
        verdicts = list(executor.map(lambda p: pool.verify(p.answer, p.answer, 60), problems))
    bad = [(p.answer, v) for p, v in zip(problems, verdicts, strict=True) if v != (True, False)]
    assert not bad, bad[:20]
