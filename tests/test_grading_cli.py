"""`pspo-eval grade`: real files in, graded JSONL out; malformed input exits 2 and writes nothing."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from pspo_eval.cli import grade as grading_cli
from pspo_eval.errors import PspoError

runner = CliRunner()


def _local_app() -> typer.Typer:
    """The command on its own Typer app (independent of what else the main app registers)."""
    app = typer.Typer()
    app.command("grade")(grading_cli.grade)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps 'grade' a subcommand, as in the real app
        pass

    return app


def _write(path, rows):
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )


ROWS = [
    {"id": "a", "response": "So she makes $18.\n#### 18", "gold": "18"},
    {"id": "b", "response": "The answer is 17.", "gold": "18"},
    {"id": "c", "response": "He runs 540 meters a week.", "gold": 540},
    {"id": "d", "response": "no idea", "gold": "3"},
]


def test_grade_command_writes_graded_rows(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out" / "graded.jsonl"
    _write(src, ROWS)
    result = runner.invoke(
        _local_app(), ["grade", "--dataset", "gsm8k", "--input", str(src), "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c", "d"]
    assert [(r["extracted"], r["correct"], r["strict"], r["method"]) for r in rows] == [
        ("18", True, True, "hash"),
        ("17", False, False, "answer_is"),
        ("540", True, False, "last_number"),
        (None, False, False, "none"),
    ]
    assert rows[2]["gold"] == 540  # other fields are kept as they were
    assert "accuracy" in result.output and "0.5000 (2/4)" in result.output
    assert "strict accuracy" in result.output and "0.2500 (1/4)" in result.output
    assert "last_number" in result.output


def test_malformed_lines_are_reported_and_nothing_is_written(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "graded.jsonl"
    _write(
        src,
        [ROWS[0], "not json", {"response": "#### 1"}, ["a list"], {"response": 3, "gold": "1"}, "", ROWS[1]],
    )
    result = runner.invoke(_local_app(), ["grade", "-d", "gsm8k", "-i", str(src), "-o", str(out)])
    assert result.exit_code != 0
    assert isinstance(result.exception, PspoError)
    message = str(result.exception)
    for fragment in ("line 2", "line 3", "missing 'gold'", "line 4", "line 5"):
        assert fragment in message
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [src]  # no temporary file left behind either


def test_main_entry_point_exits_2_on_malformed_input(tmp_path, capsys):
    cli = pytest.importorskip("pspo_eval.cli")
    src, out = tmp_path / "in.jsonl", tmp_path / "graded.jsonl"
    _write(src, ["{broken"])
    with pytest.raises(SystemExit) as exc:
        cli.main(["grade", "--dataset", "gsm8k", "--input", str(src), "--output", str(out)])
    assert exc.value.code == 2
    assert "line 1" in capsys.readouterr().err
    assert not out.exists()


def test_registered_in_the_main_app(tmp_path):
    cli = pytest.importorskip("pspo_eval.cli")
    src, out = tmp_path / "in.jsonl", tmp_path / "graded.jsonl"
    _write(src, ROWS[:2])
    result = runner.invoke(
        cli.app, ["grade", "--dataset", "gsm8k", "--input", str(src), "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 2


def test_missing_input_and_empty_input(tmp_path):
    result = runner.invoke(
        _local_app(),
        ["grade", "-d", "gsm8k", "-i", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o.jsonl")],
    )
    assert isinstance(result.exception, PspoError) and "does not exist" in str(result.exception)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    result = runner.invoke(
        _local_app(), ["grade", "-d", "gsm8k", "-i", str(empty), "-o", str(tmp_path / "o.jsonl")]
    )
    assert isinstance(result.exception, PspoError) and "no rows" in str(result.exception)
    assert not (tmp_path / "o.jsonl").exists()


def test_symbolic_dataset_through_the_cli(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "graded.jsonl"
    _write(
        src,
        [
            {"response": "So $\\boxed{\\frac{14}{3}}$.", "gold": "\\frac{14}{3}"},
            {"response": "The answer is $4\\frac{2}{3}$.", "gold": "\\frac{14}{3}"},
            {"response": "\\boxed{5}", "gold": "\\frac{14}{3}"},
        ],
    )
    result = runner.invoke(
        _local_app(), ["grade", "-d", "math500", "-i", str(src), "-o", str(out), "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["correct"], r["strict"], r["method"]) for r in rows] == [
        (True, True, "boxed"),
        (True, False, "answer_is"),
        (False, False, "boxed"),
    ]
    assert all(r["timed_out"] is False for r in rows)
    assert "symbolic" in result.output


def test_help_lists_the_options():
    result = runner.invoke(_local_app(), ["grade", "--help"])
    assert result.exit_code == 0
    for option in ("--dataset", "--input", "--output", "--workers", "--timeout"):
        assert option in result.output


def test_question_field_and_explain(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "graded.jsonl"
    rows = [
        {"id": "q", "question": "Jake has some apples. How many peaches does Jake have?",
         "response": "Answer: Jake has 136 apples and 3 peaches.", "gold": "3"},
        {"id": "noq", "response": "Answer: Jake has 136 apples and 3 peaches.", "gold": "3"},
    ]
    _write(src, rows)
    result = runner.invoke(_local_app(), ["grade", "-d", "svamp", "-i", str(src), "-o", str(out), "--explain"])
    assert result.exit_code == 0, result.output
    graded = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["correct"] for g in graded] == [True, False]  # without the question: the first stated number
    assert graded[0]["why"] == "equals the gold (the quantity the question asks for)"
    assert graded[1]["alternatives"] == ["last_number 3: right"]
    assert "q: right (not strict), answer '3' by answer_is" in result.output
    assert "also: last_number 3: right" in result.output
