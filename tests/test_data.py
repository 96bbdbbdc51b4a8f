"""Benchmark data: the bundled files, the build script, the loaders, the hub mapping, the CLI.

Everything runs on the real files in datasets/ (and, where present, the raw releases in
../shared/data/raw); nothing here needs the network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pspo_eval.data import (
    EVAL_DATASETS,
    dataset_checksum,
    list_datasets,
    load_dataset,
    load_file,
    loaders,
    parse_number,
    read_manifest,
    resolve_datasets,
    split_train_validation,
    verify,
)
from pspo_eval.data import hub as hub_module
from pspo_eval.data.hub import hub_row_to_problem, hub_rows_to_problems, load_hub_rows
from pspo_eval.data.normalize import asdiv_answer, canonical_number, gsm8k_solution, join_question
from pspo_eval.errors import PspoError
from pspo_eval.paths import REPO_DIR, datasets_dir
from pspo_eval.records import Problem

RAW = Path(os.environ.get("PSPO_EVAL_RAW_DATA", REPO_DIR.parent / "shared" / "data" / "raw"))
needs_raw = pytest.mark.skipif(not (RAW / "ASDiv.xml").is_file(), reason=f"raw releases not found in {RAW}")
SCRIPT = REPO_DIR / "scripts" / "build_datasets.py"

EXPECTED_ROWS = {"gsm8k": 1319, "gsm8k_train": 7473, "svamp": 1000, "asdiv": 2305, "math500": 500}


# ---------------------------------------------------------------------------------------------
# the bundled files


@pytest.mark.parametrize("name, rows", EXPECTED_ROWS.items())
def test_row_counts_and_unique_ids(name, rows):
    problems = load_dataset(name)
    assert len(problems) == rows
    assert len({p.id for p in problems}) == rows
    assert {p.dataset for p in problems} == {name}
    assert all(p.question.strip() and p.answer.strip() for p in problems)
    spec = next(s for s in list_datasets() if s.name == name)
    assert spec.size == rows
    assert (datasets_dir() / spec.file).read_bytes().count(b"\n") == rows


def test_ids_are_stable():
    gsm8k, train = load_dataset("gsm8k"), load_dataset("gsm8k_train")
    assert [gsm8k[0].id, gsm8k[-1].id] == ["gsm8k-test-0000", "gsm8k-test-1318"]
    assert gsm8k[0].question.startswith("Janet\u2019s ducks lay 16 eggs per day.") and gsm8k[0].answer == "18"
    assert [train[0].id, train[-1].id] == ["gsm8k-train-0000", "gsm8k-train-7472"]
    assert train[0].question.startswith("Natalia sold clips") and train[0].answer == "72"
    svamp = load_dataset("svamp")
    assert svamp[0].id == "chal-1" and svamp[0].answer == "51" and svamp[0].category == "Subtraction"
    assert svamp[0].meta == {"equation": "( 76.0 - 25.0 )"}
    asdiv = load_dataset("asdiv")
    assert [asdiv[0].id, asdiv[-1].id] == ["nluds-0001", "nluds-2305"]
    assert asdiv[0].answer == "9" and asdiv[0].level == "1" and asdiv[0].meta["unit"] == "apples"
    math = load_dataset("math500")
    assert [math[0].id, math[-1].id] == ["math500-000", "math500-499"]
    assert math[0].answer == r"\left( 3, \frac{\pi}{2} \right)" and math[0].level == "2"


def test_gsm8k_solution_has_no_calculator_annotations_or_final_line():
    for problem in load_dataset("gsm8k") + load_dataset("gsm8k_train"):
        assert "<<" not in problem.solution and "####" not in problem.solution
    first = load_dataset("gsm8k_train")[0]
    assert first.solution == (
        "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May."
    )


@pytest.mark.parametrize("name", ["gsm8k", "gsm8k_train", "svamp"])
def test_numeric_answers_parse_and_are_canonical(name):
    for problem in load_dataset(name):
        assert parse_number(problem.answer) is not None, problem.id
        assert canonical_number(problem.answer) == problem.answer, problem.id
    if name.startswith("gsm8k"):
        assert all("," not in p.answer for p in load_dataset(name))


def test_gsm8k_thousands_commas_removed():
    # gsm8k-test: the raw '#### 2,125' style answers exist (14 of them); none keeps its comma.
    big = [p for p in load_dataset("gsm8k") if len(p.answer.lstrip("-")) >= 4]
    assert len(big) >= 14 and all(p.answer.lstrip("-").isdigit() for p in big)


def test_asdiv_single_number_rows_parse_and_multi_answers_are_flagged():
    problems = load_dataset("asdiv")
    single = [p for p in problems if not p.meta["multi_answer"]]
    flagged = [p for p in problems if p.meta["multi_answer"]]
    assert len(single) == 2093 and len(flagged) == 212
    for problem in single:
        assert parse_number(problem.answer) is not None, problem.id
        assert problem.meta["answer_kind"] in ("number", "fraction")
    kinds = Counter(p.meta["answer_kind"] for p in problems)
    assert kinds == {"number": 2084, "fraction": 9, "multi": 90, "ratio": 43, "time": 18, "text": 61}
    # the harnesses that keep 2,215 drop exactly the ';' multi-value rows
    assert len(problems) - kinds["multi"] == 2215
    for problem in flagged:
        assert problem.meta["raw_answer"] and problem.answer
    by_id = {p.id: p for p in problems}
    multi = next(
        p for p in flagged if p.meta["raw_answer"] == "5 (years old); 15 (years old); 20 (years old)"
    )
    assert multi.answer == "5; 15; 20"
    assert (
        all(p.meta["raw_answer"] for p in problems) and by_id["nluds-0001"].meta["raw_answer"] == "9 (apples)"
    )
    assert {p.answer for p in problems if p.meta["answer_kind"] == "ratio"} >= {"3:5", "2:3"}


def test_math500_answers_non_empty_latex_kept():
    problems = load_dataset("math500")
    assert all(p.answer.strip() for p in problems)
    assert {p.level for p in problems} == {"1", "2", "3", "4", "5"}
    assert len({p.category for p in problems}) == 7
    assert any(p.answer == r"\text{Evelyn}" for p in problems)


def test_questions_have_tidy_whitespace():
    for name in ("svamp", "asdiv"):
        for problem in load_dataset(name):
            assert problem.question == " ".join(problem.question.split()), problem.id
    chal1 = load_dataset("svamp")[0]
    assert chal1.question == (
        "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack. "
        "How much do you have to pay to buy each pack?"
    )


def test_no_package_marker_in_data_folder():
    assert not (datasets_dir() / "__init__.py").exists()


# ---------------------------------------------------------------------------------------------
# manifest and checksums


def test_manifest_checksums_match():
    checks = verify()
    assert {c.file for c in checks} == {s.file for s in list_datasets()}
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    manifest = read_manifest()
    for entry in manifest["files"]:
        assert dataset_checksum(entry["dataset"]) == entry["sha256"]
        assert entry["rows"] == EXPECTED_ROWS[entry["dataset"]]
        assert entry["license"] and entry["source"] and len(entry["raw_sha256"]) == 64
    asdiv = next(e for e in manifest["files"] if e["dataset"] == "asdiv")
    assert asdiv["license"] == "CC BY-NC 4.0" and asdiv["answers"]["multi_answer"] == 212
    readme = (datasets_dir() / "README.md").read_text(encoding="utf-8")
    assert "CC BY-NC 4.0" in readme and "212" in readme


def test_verify_reports_a_changed_file(tmp_path, monkeypatch):
    copy = tmp_path / "datasets"
    shutil.copytree(datasets_dir(), copy)
    with (copy / "svamp.jsonl").open("ab") as handle:
        handle.write(b"\n")
    (copy / "math500.jsonl").unlink()
    monkeypatch.setenv("PSPO_EVAL_DATASETS", str(copy))
    bad = {c.file: c for c in verify() if not c.ok}
    assert set(bad) == {"svamp.jsonl", "math500.jsonl"}
    assert bad["math500.jsonl"].actual_sha is None
    result = CliRunner().invoke(_app(), ["datasets", "verify"])
    assert result.exit_code == 1
    assert "DIFFERS  svamp.jsonl" in result.output and "MISSING  math500.jsonl" in result.output


def test_missing_bundled_file_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PSPO_EVAL_DATASETS", str(tmp_path))
    with pytest.raises(PspoError, match="make datasets"):
        load_dataset("gsm8k")
    with pytest.raises(PspoError, match="manifest missing"):
        verify()


def test_loading_is_cached_and_returns_fresh_lists():
    first = load_dataset("gsm8k_train")
    first.clear()
    again = load_dataset("gsm8k_train")
    assert len(again) == 7473 and again[0] is load_dataset("gsm8k_train")[0]
    assert load_dataset("gsm8k_train", limit=3) == again[:3]
    assert load_dataset("gsm8k", limit=0) == []
    with pytest.raises(PspoError, match="invalid limit"):
        load_dataset("gsm8k", limit=-1)
    with pytest.raises(PspoError, match="unknown dataset source"):
        load_dataset("gsm8k", source="s3")


# ---------------------------------------------------------------------------------------------
# the build script


@needs_raw
def test_build_script_reproduces_identical_bytes(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--raw", str(RAW), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "2093 single-number" in result.stdout
    produced = sorted(p.name for p in out.iterdir())
    assert produced == sorted(p.name for p in datasets_dir().iterdir() if p.is_file())
    for name in produced:
        assert (out / name).read_bytes() == (datasets_dir() / name).read_bytes(), name


@needs_raw
def test_build_script_refuses_a_changed_raw_file(tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(RAW, raw)
    (raw / "SVAMP.json").chmod(0o644)
    (raw / "SVAMP.json").write_bytes((raw / "SVAMP.json").read_bytes().replace(b"51.0", b"52.0", 1))
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--raw", str(raw), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "SVAMP.json: sha256" in result.stderr and "nothing was written" in result.stderr
    assert not out.exists()


@needs_raw
def test_hub_mapping_of_every_asdiv_row_matches_the_bundled_file():
    """The hub's ASDiv columns, built from the same XML, map to the same problems as the file."""
    import xml.etree.ElementTree as ET

    root = ET.parse(RAW / "ASDiv.xml").getroot()
    rows = [
        {
            "body": e.find("Body").text,
            "question": e.find("Question").text,
            "solution_type": e.find("Solution-Type").text,
            "answer": e.find("Answer").text,
            "formula": e.find("Formula").text,
        }
        for e in root.iter("Problem")
    ]
    from_hub = hub_rows_to_problems("asdiv", rows)
    bundled = load_dataset("asdiv")
    for hub_problem, local in zip(from_hub, bundled, strict=True):
        assert (hub_problem.id, hub_problem.question, hub_problem.answer, hub_problem.category) == (
            local.id,
            local.question,
            local.answer,
            local.category,
        )
        assert hub_problem.meta["multi_answer"] == local.meta["multi_answer"]


# ---------------------------------------------------------------------------------------------
# normalization rules


@pytest.mark.parametrize(
    "value, expected",
    [
        (51.0, "51"),
        ("1,080", "1080"),
        ("0.50", "0.5"),
        (-0.0, "0"),
        ("-3", "-3"),
        (0.1, "0.1"),
        ("850,000", "850000"),
        (7, "7"),
    ],
)
def test_canonical_number(value, expected):
    assert canonical_number(value) == expected


@pytest.mark.parametrize("value", ["10,80", "3:5", "", "abc", True, float("nan"), None])
def test_canonical_number_rejects(value):
    with pytest.raises(ValueError):
        canonical_number(value)


@pytest.mark.parametrize(
    "raw, solution_type, answer, kind",
    [
        ("9 (apples)", "Addition", "9", "number"),
        ("3.5 (dollars)", "Multiplication", "3.5", "number"),
        ("-(1/3)", "Algebra-1", "-1/3", "fraction"),
        ("5/2", "Algebra-1", "5/2", "fraction"),
        ("8 (ft); 128 (sq. ft)", "Geometry", "8; 128", "multi"),
        ("3:5", "Ratio", "3:5", "ratio"),
        ("5:45", "Addition", "5:45", "time"),
        ("3:30 p.m.", "Addition", "3:30 p.m.", "time"),
        ("Mrs. Hilt", "Comparison", "Mrs. Hilt", "text"),
    ],
)
def test_asdiv_answer(raw, solution_type, answer, kind):
    parsed = asdiv_answer(raw, solution_type)
    assert (parsed.answer, parsed.kind) == (answer, kind)
    assert parsed.multi_answer == (kind not in ("number", "fraction"))


def test_parse_number_is_exact():
    assert parse_number("0.1") == parse_number("1/10") == Fraction(1, 10)
    assert parse_number("-1/3") == Fraction(-1, 3)
    assert parse_number("3:5") is None and parse_number("5; 15") is None and parse_number("1/0") is None


def test_join_question_and_gsm8k_solution():
    assert (
        join_question("If he had $ 4 at the start ", " How much?") == "If he had $ 4 at the start. How much?"
    )
    assert join_question("He has  7 cars,", "How many?") == "He has 7 cars, How many?"
    assert join_question('It said "35% off."', "What?") == 'It said "35% off." What?'
    assert gsm8k_solution("a = <<2*3=6>>6\nso\n#### 6") == "a = 6\nso"


# ---------------------------------------------------------------------------------------------
# the hub mapping (rows shaped like the hub's; the hub itself is not reachable here)


def test_hub_rows_map_like_the_bundled_files():
    gsm8k_row = {
        "question": load_dataset("gsm8k")[0].question,
        "answer": "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
        "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer\u2019s market.\n#### 18",
    }
    assert hub_row_to_problem("gsm8k", gsm8k_row, 0) == load_dataset("gsm8k")[0]

    svamp_row = {  # ChilleD/SVAMP columns
        "ID": "chal-1",
        "Body": "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack",
        "Question": "How much do you have to pay to buy each pack?",
        "Equation": "( 76.0 - 25.0 )",
        "Answer": 51.0,
        "Type": "Subtraction",
        "question_concat": "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack "
        "How much do you have to pay to buy each pack?",
    }
    assert hub_row_to_problem("svamp", svamp_row, 0) == load_dataset("svamp")[0]
    assert hub_row_to_problem("svamp", {**svamp_row, "Answer": "51.0"}, 0).answer == "51"

    asdiv_row = {  # EleutherAI/asdiv columns: no id, no grade
        "body": "Seven red apples and two green apples are in the basket.",
        "question": "How many apples are in the basket?",
        "solution_type": "Addition",
        "answer": "9 (apples)",
        "formula": "7+2=9",
    }
    problem = hub_row_to_problem("asdiv", asdiv_row, 0)
    local = load_dataset("asdiv")[0]
    assert (problem.id, problem.question, problem.answer, problem.category) == (
        local.id,
        local.question,
        local.answer,
        local.category,
    )
    assert (
        problem.level is None and problem.meta["unit"] == "apples" and problem.meta["multi_answer"] is False
    )

    local_math = load_dataset("math500")[0]
    math_row = {  # HuggingFaceH4/MATH-500 columns
        "problem": local_math.question,
        "solution": local_math.solution,
        "answer": local_math.answer,
        "subject": "Precalculus",
        "level": 2,
        "unique_id": "test/precalculus/807.json",
    }
    problem = hub_row_to_problem("math500", math_row, 0)
    assert problem.model_copy(update={"meta": {}}) == local_math
    assert problem.meta == {"unique_id": "test/precalculus/807.json"}


def test_hub_row_that_does_not_fit_names_the_row():
    with pytest.raises(PspoError, match=r"openai/gsm8k row 1 does not look like gsm8k"):
        hub_rows_to_problems(
            "gsm8k", [{"question": "q", "answer": "x\n#### 1"}, {"question": "q", "answer": "no hashes"}]
        )
    with pytest.raises(PspoError, match="missing column"):
        hub_rows_to_problems("math500", [{"problem": "p"}])


def test_hub_failure_is_one_line():
    with pytest.raises(PspoError) as info:
        load_hub_rows("pspo-eval-tests/no-such-dataset", None, "test")
    message = str(info.value)
    assert (
        "\n" not in message and "pspo-eval-tests/no-such-dataset" in message and "source='local'" in message
    )


def test_load_dataset_from_hub_uses_the_mapping(monkeypatch):
    calls = []

    def rows(hub_id, config, split):
        calls.append((hub_id, config, split))
        return [
            {"question": "1+1?", "answer": "1+1=<<1+1=2>>2\n#### 2"},
            {"question": "2+2?", "answer": "#### 4"},
        ]

    monkeypatch.setattr(hub_module, "load_hub_rows", rows)
    monkeypatch.setattr(loaders, "_hub", {})
    problems = load_dataset("gsm8k_train", source="hub", limit=1)
    assert calls == [("openai/gsm8k", "main", "train")]
    assert problems == [
        Problem(id="gsm8k-train-0000", dataset="gsm8k_train", question="1+1?", answer="2", solution="1+1=2")
    ]
    assert len(load_dataset("gsm8k_train", source="hub")) == 2 and len(calls) == 1  # cached per process


# ---------------------------------------------------------------------------------------------
# a user's file


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_file_accepts_jsonl_and_moves_extras_to_meta(tmp_path):
    path = _write(
        tmp_path,
        "mine.jsonl",
        '{"question": "2+2?", "answer": 4, "difficulty": "easy"}\n\n'
        '{"id": 7, "question": "1/2?", "answer": "0.5", "level": 3, "meta": {"src": "x"}}\n',
    )
    problems = load_file(path)
    assert [p.id for p in problems] == ["mine-0000", "7"]
    assert (
        problems[0].answer == "4"
        and problems[0].meta == {"difficulty": "easy"}
        and problems[0].dataset == "mine"
    )
    assert problems[1].level == "3" and problems[1].meta == {"src": "x"}
    assert load_file(path, name="custom")[0].dataset == "custom"


def test_load_file_accepts_a_json_array(tmp_path):
    path = _write(
        tmp_path,
        "arr.json",
        json.dumps([{"question": "q1", "answer": "1"}, {"question": "q2", "answer": "2"}]),
    )
    assert [p.answer for p in load_file(path)] == ["1", "2"]
    bad = _write(
        tmp_path, "bad.json", json.dumps([{"question": "q1", "answer": "1"}, {"question": 5, "answer": "2"}])
    )
    with pytest.raises(PspoError, match=r"item 1 .*'question' must be a non-empty string, got int"):
        load_file(bad)


@pytest.mark.parametrize(
    "text, pattern",
    [
        (
            '{"question": "a", "answer": "1"}\n{"question": "b", "answer": "2"}\n{"question": "c", "answer": \n',
            r"line 3: not valid JSON",
        ),
        ('{"question": "a", "answer": "1"}\n{"question": "b"}\n', r"line 2: missing field 'answer'"),
        ('{"answer": "1"}\n', r"line 1: missing field 'question'"),
        ('{"question": 12, "answer": "1"}\n', r"line 1: 'question' must be a non-empty string, got int"),
        (
            '\n\n{"question": "a", "answer": [1]}\n',
            r"line 3: 'answer' must be a non-empty string or a number, got list",
        ),
        ('["question", "answer"]\n', r"line 1: expected a JSON object, got list"),
        (
            '{"question": "a", "answer": "1", "solution": {"x": 1}}\n',
            r"line 1: 'solution' must be a string, got dict",
        ),
        (
            '{"id": "x", "question": "a", "answer": "1"}\n{"id": "x", "question": "b", "answer": "2"}\n',
            r"line 2: id 'x' already used on line 1",
        ),
    ],
)
def test_load_file_errors_name_the_line_and_the_fix(tmp_path, text, pattern):
    path = _write(tmp_path, "user.jsonl", text)
    with pytest.raises(PspoError, match=pattern) as info:
        load_file(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    if "JSON" not in pattern and "already used" not in pattern:
        assert "question" in message and "answer" in message  # the hint says what a record needs


def test_load_file_empty_and_missing(tmp_path):
    with pytest.raises(PspoError, match=r"is empty .*question"):
        load_file(_write(tmp_path, "empty.jsonl", "\n  \n"))
    with pytest.raises(PspoError, match="not found"):
        load_file(tmp_path / "nope.jsonl")


# ---------------------------------------------------------------------------------------------
# --datasets parsing and the train/validation split


def test_resolve_datasets():
    assert resolve_datasets("gsm8k,svamp,asdiv,math500") == list(EVAL_DATASETS)
    assert resolve_datasets("all") == ["gsm8k", "svamp", "asdiv", "math500"]
    assert resolve_datasets(" GSM8K , gsm8k_train,all ") == [
        "gsm8k",
        "gsm8k_train",
        "svamp",
        "asdiv",
        "math500",
    ]
    assert resolve_datasets("math500", source="hub") == ["math500"]


def test_resolve_datasets_errors(tmp_path):
    with pytest.raises(
        PspoError, match=r"unknown dataset 'gsm9k'.*gsm8k, gsm8k_train, svamp, asdiv, math500"
    ):
        resolve_datasets("gsm8k,gsm9k")
    with pytest.raises(PspoError, match="no dataset selected"):
        resolve_datasets(" , ")
    with pytest.raises(PspoError, match="unknown dataset source"):
        resolve_datasets("gsm8k", source="ftp")
    mine = _write(tmp_path, "mine.jsonl", '{"question": "q", "answer": "1"}\n')
    assert resolve_datasets("", dataset_file=mine) == ["mine"]
    assert resolve_datasets("svamp", dataset_file=mine) == ["svamp", "mine"]
    with pytest.raises(PspoError, match="not found"):
        resolve_datasets("svamp", dataset_file=tmp_path / "missing.jsonl")
    clash = _write(tmp_path, "asdiv.jsonl", '{"question": "q", "answer": "1"}\n')
    with pytest.raises(PspoError, match="name of a bundled benchmark"):
        resolve_datasets("", dataset_file=clash)


def test_split_train_validation_is_deterministic_and_matches_hf_shuffle():
    problems = load_dataset("gsm8k_train")
    train, validation = split_train_validation(problems)
    assert (len(train), len(validation)) == (7000, 473)
    assert {p.id for p in train}.isdisjoint(p.id for p in validation)
    assert len({p.id for p in train + validation}) == 7473
    again = split_train_validation(load_dataset("gsm8k_train"), n_train=7000, seed=42)
    assert [p.id for p in again[0]] == [p.id for p in train] and [p.id for p in again[1]] == [
        p.id for p in validation
    ]
    other = split_train_validation(problems, seed=43)
    assert [p.id for p in other[0]] != [p.id for p in train]

    import datasets

    order = datasets.Dataset.from_dict({"i": list(range(len(problems)))}).shuffle(seed=42)["i"]
    assert [p.id for p in train + validation] == [problems[i].id for i in order]
    with pytest.raises(PspoError, match="cannot take 8000"):
        split_train_validation(problems, n_train=8000)


# ---------------------------------------------------------------------------------------------
# the CLI


def _app():
    from pspo_eval.cli import app

    return app


def test_cli_list():
    result = CliRunner().invoke(_app(), ["datasets", "list"])
    assert result.exit_code == 0, result.output
    for text in (
        "gsm8k_train",
        "svamp",
        "asdiv",
        "math500",
        "7,473",
        "CC BY-NC 4.0",
        "HuggingFaceH4/MATH-500",
        "ChilleD/SVAMP (test, 300)",
    ):
        assert text in result.output


def test_cli_verify_ok():
    result = CliRunner().invoke(_app(), ["datasets", "verify"])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok ") == 5


def test_cli_show(tmp_path):
    runner = CliRunner()
    result = runner.invoke(_app(), ["datasets", "show", "gsm8k", "--limit", "2"])
    assert result.exit_code == 0, result.output
    lines = [Problem.model_validate_json(line) for line in result.output.splitlines()]
    assert [p.id for p in lines] == ["gsm8k-test-0000", "gsm8k-test-0001"]

    result = runner.invoke(_app(), ["datasets", "show", "asdiv", "--id", "nluds-0500", "--id", "nluds-0001"])
    assert [json.loads(line)["id"] for line in result.output.splitlines()] == ["nluds-0500", "nluds-0001"]

    assert len(runner.invoke(_app(), ["datasets", "show", "math500", "-n", "0"]).output.splitlines()) == 500

    mine = _write(tmp_path, "mine.jsonl", '{"question": "q", "answer": 3.0}\n')
    assert json.loads(runner.invoke(_app(), ["datasets", "show", str(mine)]).output)["answer"] == "3"

    # user errors end as one line on stderr and exit code 2, without a traceback
    result = runner.invoke(_app(), ["datasets", "show", "gsm8k", "--id", "nope"])
    assert result.exit_code == 2 and "nope" in result.output and "Traceback" not in result.output
    result = runner.invoke(_app(), ["datasets", "show", "gsm9k"])
    assert result.exit_code == 2 and "known datasets" in result.output


@pytest.mark.parametrize("command", [[], ["list"], ["verify"], ["show"]])
def test_cli_help(command):
    result = CliRunner().invoke(_app(), ["datasets", *command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output
    assert len(result.output.split("Usage", 1)[1].strip().splitlines()) > 2
