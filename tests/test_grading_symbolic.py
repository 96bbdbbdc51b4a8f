"""Symbolic grading (MATH-500): extraction, math-verify equivalence on real gold formats, timeouts."""

from __future__ import annotations

import threading
import time

import pytest

from pspo_eval.grading import extract_answer, grade, grade_many, symbolic
from pspo_eval.grading.extract import balanced, boxed_groups, last_math_span
from pspo_eval.grading.grader import strip_assignment

# (response, gold, correct) on MATH-500's own gold formats, as a careful grader would judge them.
EQUIVALENCE = [
    # tuples / coordinates
    (
        "The polar coordinates are $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$.",
        "\\left( 3, \\frac{\\pi}{2} \\right)",
        True,
    ),
    ("\\boxed{(3, \\pi/2)}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("\\boxed{(\\frac{\\pi}{2}, 3)}", "\\left( 3, \\frac{\\pi}{2} \\right)", False),  # order matters
    ("\\boxed{(6, 31, -1)}", "(6,31,-1)", True),
    # fractions, mixed numbers, radicals
    ("\\boxed{\\frac{14}{3}}", "\\frac{14}{3}", True),
    ("\\boxed{4\\frac{2}{3}}", "\\frac{14}{3}", True),
    ("\\boxed{\\dfrac{14}{3}}", "\\frac{14}{3}", True),
    ("\\boxed{4.67}", "\\frac{14}{3}", False),  # MATH wants the exact value
    ("\\boxed{\\sqrt{117}}", "3\\sqrt{13}", True),
    ("\\boxed{11\\sqrt{2}}", "11\\sqrt2", True),
    ("\\boxed{\\frac{9}{5}}", "1\\frac{4}{5}", True),
    # text answers
    ("The winner is \\boxed{\\text{Evelyn}}.", "\\text{Evelyn}", True),
    ("\\boxed{Evelyn}", "\\text{Evelyn}", True),
    ("\\boxed{\\text{Navin}}", "\\text{Evelyn}", False),
    ("\\boxed{\\text{(C)}}", "\\text{(C)}", True),
    ("\\boxed{C}", "\\text{(C)}", True),
    # degrees, units, money, thousands separators
    ("\\boxed{90}", "90^\\circ", True),
    ("\\boxed{90^{\\circ}}", "90^\\circ", True),
    ("\\boxed{864}", "864 \\mbox{ inches}^2", True),
    ("\\boxed{18.90}", "\\$18.90", True),
    ("\\boxed{10080}", "10,\\!080", True),
    ("\\boxed{32,348}", "\\$32,\\!348", True),
    # equations and assignments
    ("\\boxed{x = 5}", "5", True),
    ("\\boxed{y = 2x + 3}", "y = 2x + 3", True),
    ("\\boxed{-5x+7y-11z-4=0}", "5x - 7y + 11z + 4 = 0", True),
    # intervals and sets
    ("\\boxed{[-2, 7]}", "x \\in [-2,7]", True),
    ("\\boxed{(-\\infty, 2) \\cup (3, \\infty)}", "(-\\infty, 2) \\cup (3, \\infty)", True),
    ("\\boxed{(2, \\infty)}", "(2,\\infty)", True),
    ("\\boxed{[2, \\infty)}", "(2,\\infty)", False),
    # several answers
    ("\\boxed{3, 5, 7}", "3, 5, 7", True),
    ("\\boxed{7, 5, 3}", "3, 5, 7", True),
    ("\\boxed{3, 5}", "3, 5, 7", False),
    ("The solutions are $\\boxed{2}$ and $\\boxed{-3}$.", "2, -3", True),
    ("\\boxed{1+\\sqrt{19}, 1-\\sqrt{19}}", "1 \\pm \\sqrt{19}", True),
    # matrices, complex numbers, polynomials, percent
    (
        "\\boxed{\\begin{pmatrix} -\\frac{1}{3} \\\\ \\frac{2}{3} \\\\ \\frac{5}{3} \\end{pmatrix}}",
        "\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}",
        True,
    ),
    ("\\boxed{7i - 2}", "-2 + 7i", True),
    ("\\boxed{(x+2)(x+5)}", "x^2+7x+10", True),
    ("\\boxed{10}", "10\\%", True),
    ("\\boxed{18}", "17", False),
]


@pytest.mark.parametrize("response,gold,correct", EQUIVALENCE)
def test_math500_equivalence(response, gold, correct):
    g = grade("math500", response, gold)
    assert g.correct is correct, g
    assert g.method == "boxed"
    assert g.strict is correct
    assert not g.timed_out


@pytest.mark.parametrize(
    "response,extracted,method",
    [
        ("So $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}", "boxed"),
        (
            "\\boxed{\\frac{\\sqrt{3}}{\\left(2 + \\frac{1}{x}\\right)}}",
            "\\frac{\\sqrt{3}}{\\left(2 + \\frac{1}{x}\\right)}",
            "boxed",
        ),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}", "boxed"),
        ("First \\boxed{3}, then \\boxed{5}. Hmm, finally the answer is \\boxed{7}.", "7", "boxed"),
        ("The answer is $\\frac{3}{4}$.", "\\frac{3}{4}", "answer_is"),
        ("The final answer is $\\$32,\\!348$.", "\\$32,\\!348", "answer_is"),
        ("#### 10,\\!080", "10,\\!080", "hash"),
        ("#### 10 apples", "10", "hash"),
        ("#### 5 \\pi", "5 \\pi", "hash"),
        ("Thus we get $y = 7$ in the end", "7", "latex_last"),
        ("so the area is \\[ 16\\sqrt{3} \\]", "16\\sqrt{3}", "latex_last"),
        ("the result is 42", "42", "last_sentence"),
        ("so 42", "42", "last_number"),
        ("Thus, the solutions are $x = 2$ and $x = -3$.", "x = 2, x = -3", "latex_last"),
        ("The answer is $2$ and $-3$.", "2, -3", "answer_is"),
        ("So $x=5$, giving $y = 7$", "7", "latex_last"),
        ("I cannot solve this.", None, "none"),
    ],
)
def test_math500_extraction(response, extracted, method):
    assert extract_answer("math500", response) == (extracted, method)


def test_several_answers_in_math_spans():
    assert grade("math500", "Thus, the solutions are $x = 2$ and $x = -3$.", "2, -3").correct
    assert grade("math500", "The answer is $-3$ or $2$.", "2, -3").correct
    assert not grade("math500", "The answer is $2$ and $3$.", "2, -3").correct


def test_hash_and_answer_is_work_for_math500():
    assert grade("math500", "#### \\frac{14}{3}", "\\frac{14}{3}").strict
    g = grade(
        "math500", "Therefore, the final answer is $4\\frac{2}{3}$. I hope it is correct.", "\\frac{14}{3}"
    )
    assert (g.correct, g.strict, g.method) == (True, False, "answer_is")
    g = grade("math500", "So we get $x=5$ and we are done.", "5")
    assert (g.correct, g.method) == (True, "latex_last")


def test_wrong_math_answers_containing_the_gold_earlier():
    assert not grade(
        "math500",
        "We have $r = 3$ and $\\theta = \\pi$, so \\boxed{(3, \\pi)}",
        "\\left( 3, \\frac{\\pi}{2} \\right)",
    ).correct
    assert not grade(
        "math500", "Since 14/3 is not an integer, the answer is \\boxed{5}.", "\\frac{14}{3}"
    ).correct


@pytest.mark.parametrize(
    "text,stripped",
    [
        ("x = 58,500", "58,500"),
        ("\\theta = \\frac{\\pi}{2}", "\\frac{\\pi}{2}"),
        ("a_{1} = 3", "3"),
        ("\\sum_{k=1}^{n} k", "\\sum_{k=1}^{n} k"),  # not an assignment
        ("x = y = 2", "x = y = 2"),
        ("f(x) = 2x", "f(x) = 2x"),
    ],
)
def test_strip_assignment(text, stripped):
    assert strip_assignment(text) == stripped


def test_assignment_answers():
    assert grade("math500", "So $x = 58,500$.", "58,500").correct
    assert grade("math500", "\\boxed{x = 10,\\!080}", "10,\\!080").correct
    assert grade("math500", "The line is \\boxed{y = 2x + 3}", "y = 2x + 3").correct


def test_brace_matching_helpers():
    text = "a \\boxed{\\frac{1}{2}} b"
    start = text.index("{") + 1
    assert text[start : balanced(text, start)] == "\\frac{1}{2}"
    assert balanced("\\boxed{{{", 7) is None
    assert boxed_groups("\\boxed{1} and \\boxed{2}") == ["1", "2"]
    assert boxed_groups("\\boxed{1} then some words \\boxed{2}") == ["2"]
    assert boxed_groups("no box") == []
    assert last_math_span("a $x$ b $y = 2$ c $unclosed") == "y = 2"
    assert last_math_span("\\(a\\) and \\[b\\]") == "a, b"  # joined by 'and': one answer
    assert last_math_span("\\(a\\) so we get \\[b\\]") == "b"


# --- timeouts and threads ------------------------------------------------------------------------------

SLOW = "\\boxed{10^{10^{10}}}"  # a real one: sympy evaluates the tower in C and never returns


def test_timeout_marks_incorrect_and_the_pool_recovers():
    t0 = time.monotonic()
    g = grade("math500", SLOW, "5", timeout_s=1.5)
    assert (g.correct, g.strict, g.timed_out) == (False, False, True)
    assert time.monotonic() - t0 < 60  # start-up (first use) + 1.5 s, never unbounded
    assert grade("math500", "\\boxed{\\sqrt{117}}", "3\\sqrt{13}").correct  # a fresh worker took over


def test_timeout_works_from_a_worker_thread():
    result = {}

    def run():
        result["grade"] = grade("math500", SLOW, "7", timeout_s=1.0)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(90)
    assert not thread.is_alive()
    assert result["grade"].timed_out and not result["grade"].correct


def test_fault_injected_hang_is_killed():
    pool = symbolic.pool()
    t0 = time.monotonic()
    value, timed_out = pool._call(["sleep", 30], 0.5)
    assert (value, timed_out) == (None, True)
    assert time.monotonic() - t0 < 30


def test_grade_many_parallel_matches_serial():
    pairs = [(r, g) for r, g, _ in EQUIVALENCE[:10]]
    many = grade_many("math500", pairs, workers=2)
    assert [g.correct for g in many] == [c for _, _, c in EQUIVALENCE[:10]]
    assert many == [grade("math500", r, g) for r, g in pairs]


def test_grade_many_with_a_timeout_in_the_batch():
    pairs = [("\\boxed{\\sqrt{117}}", "3\\sqrt{13}"), (SLOW, "3"), ("\\boxed{2}", "2")]
    grades = grade_many("math500", pairs, workers=2, timeout_s=1.5)
    assert [(g.correct, g.timed_out) for g in grades] == [(True, False), (False, True), (True, False)]


def test_default_timeout_env(monkeypatch):
    monkeypatch.setenv("PSPO_EVAL_GRADE_TIMEOUT", "3.5")
    assert symbolic.default_timeout() == 3.5
    monkeypatch.setenv("PSPO_EVAL_GRADE_TIMEOUT", "soon")
    from pspo_eval.errors import PspoError

    with pytest.raises(PspoError):
        symbolic.default_timeout()


def _grade_in_child(queue):
    queue.put(grade("math500", "\\boxed{\\sqrt{117}}", "3\\sqrt{13}").correct)


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork")
def test_forked_child_gets_its_own_workers():
    import multiprocessing

    grade("math500", "\\boxed{\\sqrt{117}}", "3\\sqrt{13}")  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_grade_in_child, args=(queue,))
    child.start()
    assert queue.get(timeout=120) is True
    child.join(30)
    assert (
        grade("math500", "\\boxed{\\sqrt{116}}", "3\\sqrt{13}").correct is False
    )  # parent's pool still fine
