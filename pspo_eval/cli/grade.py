"""`pspo-eval grade`: grade a JSONL file of responses against their gold answers.

Each input line is a JSON object with ``response`` and ``gold``, optionally the problem's ``question``
(other fields are kept); each output line adds ``extracted``, ``correct``, ``strict``, ``method``,
``timed_out`` and ``why`` (and, with ``--explain``, ``alternatives``: what every other rule read). A malformed input is
reported with its line numbers and nothing is written: the output appears (atomically, by rename)
only once every line is graded.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import typer

from pspo_eval.errors import PspoError

_MAX_REPORTED = 10
_CHUNK = 2000


def read_pairs(path: Path) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """The input rows and their (response, gold) pairs; every malformed line reported at once."""
    if not path.exists():
        raise PspoError(
            f"input file {path} does not exist", "give a JSONL file with 'response' and 'gold' on each line"
        )
    if path.is_dir():
        raise PspoError(f"input {path} is a directory", "give a JSONL file")
    rows: list[dict[str, Any]] = []
    pairs: list[tuple[str, str]] = []
    problems: list[str] = []
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"line {number}: not valid JSON ({exc.msg})")
                continue
            if not isinstance(row, dict):
                problems.append(f"line {number}: not a JSON object")
                continue
            missing = [key for key in ("response", "gold") if key not in row]
            if missing:
                problems.append(f"line {number}: missing {' and '.join(repr(k) for k in missing)}")
                continue
            response, gold = row["response"], row["gold"]
            if not isinstance(response, str):
                problems.append(f"line {number}: 'response' must be a string")
                continue
            if isinstance(gold, bool) or not isinstance(gold, (str, int, float)):
                problems.append(f"line {number}: 'gold' must be a string or a number")
                continue
            rows.append(row)
            pairs.append((response, gold if isinstance(gold, str) else _number_text(gold)))
    if problems:
        shown = "; ".join(problems[:_MAX_REPORTED])
        more = f" (and {len(problems) - _MAX_REPORTED} more)" if len(problems) > _MAX_REPORTED else ""
        raise PspoError(
            f"{path}: {len(problems)} malformed line(s): {shown}{more}",
            "each line must be a JSON object with a string 'response' and a 'gold' answer; nothing was written",
        )
    if not rows:
        raise PspoError(
            f"{path} has no rows to grade", "each line must be a JSON object with 'response' and 'gold'"
        )
    return rows, pairs


def _number_text(value: int | float) -> str:
    return str(value) if isinstance(value, int) else repr(value)


def write_jsonl_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write all rows at once (temp file beside `path`, fsync, rename): never a half-written output."""
    from pspo_eval.store import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def grade(
    dataset: str = typer.Option(
        ...,
        "--dataset",
        "-d",
        help="Grading policy: gsm8k, gsm8k_train, svamp, asdiv (numeric) or math500 (symbolic); any other "
        "name grades numerically when the gold is a number, symbolically otherwise.",
    ),
    input_path: Path = typer.Option(
        ...,
        "--input",
        "-i",
        help="JSONL file: one object per line with 'response' and 'gold' (other fields are kept).",
    ),
    output: Path = typer.Option(
        ...,
        "--output",
        "-o",
        help="JSONL file to write: each input line plus extracted, correct, strict, method, timed_out, why.",
    ),
    explain: bool = typer.Option(
        False,
        "--explain",
        help="Print, for every row, the rule that chose the answer, the other candidates and their verdicts, "
        "and why the comparison came out so (also stored as 'alternatives').",
    ),
    workers: int = typer.Option(
        0,
        "--workers",
        "-w",
        min=0,
        help="Parallel math-verify processes for symbolic grading (0: min(4, CPUs)).",
    ),
    timeout: float = typer.Option(
        0.0,
        "--timeout",
        min=0.0,
        help="Seconds per symbolic comparison before it counts as wrong (0: $PSPO_EVAL_GRADE_TIMEOUT or 10).",
    ),
) -> None:
    """Grade responses against gold answers and print accuracy, strict accuracy and extraction methods."""
    from pspo_eval.console import out_console, progress
    from pspo_eval.grading.grader import grade_many
    from pspo_eval.grading.policy import policy_for

    rows, pairs = read_pairs(input_path)
    grades = []
    with progress() as bar:
        task = bar.add_task(f"grading {dataset}", total=len(pairs))
        for start in range(0, len(pairs), _CHUNK):
            chunk = pairs[start : start + _CHUNK]
            questions = [_question(row) for row in rows[start : start + _CHUNK]]
            grades.extend(
                grade_many(
                    dataset, chunk, questions=questions, workers=workers or None, timeout_s=timeout or None,
                    explain=explain,
                )
            )
            bar.advance(task, len(chunk))
    out_rows = [{**row, **g.model_dump()} for row, g in zip(rows, grades, strict=True)]
    write_jsonl_atomic(output, out_rows)

    n = len(grades)
    kinds = sorted({policy_for(dataset, gold).kind for _, gold in pairs})
    if explain:
        for number, (row, g) in enumerate(zip(rows, grades, strict=True), start=1):
            out_console.print(explanation(row.get("id", f"row {number}"), g), markup=False, highlight=False)
    out_console.print(summary_table(dataset, "/".join(kinds), grades))
    out_console.print(f"wrote {n} graded rows to {output}")


def _question(row: dict[str, Any]) -> str | None:
    question = row.get("question")
    return question if isinstance(question, str) and question.strip() else None


def explanation(label: object, g: Any) -> str:
    """One row's verdict in a few lines: the verdict and answer, the reason, the other candidates."""
    verdict = "timed out" if g.timed_out else "right" if g.correct else "wrong"
    lines = [f"{label}: {verdict} ({'strict' if g.strict else 'not strict'}), answer {g.extracted!r} by {g.method}",
             f"  why: {g.why}"]
    lines += [f"  also: {alt}" for alt in g.alternatives] or ["  also: no other rule found an answer"]
    return "\n".join(lines)


def summary_table(dataset: str, kind: str, grades: list[Any]) -> Any:
    """A rich table: n, accuracy, strict accuracy, timeouts and how each answer was found."""
    from rich.table import Table

    n = len(grades)
    correct = sum(g.correct for g in grades)
    strict = sum(g.strict for g in grades)
    timed_out = sum(g.timed_out for g in grades)
    methods = Counter(g.method for g in grades)
    table = Table(title=f"grade: {dataset} ({kind})", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("n", str(n))
    table.add_row("accuracy", f"{correct / n:.4f} ({correct}/{n})" if n else "-")
    table.add_row("strict accuracy", f"{strict / n:.4f} ({strict}/{n})" if n else "-")
    if timed_out:
        table.add_row("timed out", str(timed_out))
    for method in (
        "hash", "boxed", "answer_is", "bold", "final_line", "last_sentence", "latex_last", "last_number", "none"
    ):
        if methods.get(method):
            table.add_row(f"method {method}", f"{methods[method]} ({methods[method] / n:.1%})")
    return table
