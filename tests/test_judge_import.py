"""`pspo-eval judge import` and `pspo-eval judge agreement`: the line format, its errors, and published figures.

The LLMBar files under tests/data/judge/llmbar/ (README.md there: source, commit, licence) hold the
verdicts of published evaluators in both orders with the gold labels; imported through our own
command, our numbers must equal the figures the authors published to their precision (0.1%).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pspo_eval.cli import app
from pspo_eval.errors import PspoError
from pspo_eval.judge.aggregate import load_judgments
from pspo_eval.judge.importer import build_records, import_verdicts, read_lines

DATA = Path(__file__).parent / "data" / "judge" / "llmbar"


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _line(**kw) -> dict:
    return {"item_id": "17", "judge": "annotator-1", "model_a": "llama-7b", "model_b": "bloom-7b", "winner": "a", **kw}


def test_both_orders_of_an_item_become_one_pairwise_record(tmp_path):
    src = _write(tmp_path / "v.jsonl", [
        _line(order="ab", winner="a", response_a="x" * 412, response_b="y" * 230, length_a=100, length_b=60),
        _line(order="ba", winner="b"),  # the orders disagree: a tie and a flip
        _line(item_id=18, winner="b"),  # one order only (default "ab")
        _line(item_id="19", winner="b"),
        _line(item_id="19", judge="tool", model_a="bloom-7b", model_b="llama-7b", winner="a", order="ba"),
        _line(item_id="20", winner=None),  # could not be parsed
    ])
    records = {(r.judge, r.problem_id): r for r in build_records(read_lines(src))}
    first = records[("annotator-1", "17")]
    assert (first.model, first.baseline, first.mode, first.outcome) == ("bloom-7b", "llama-7b", "pairwise", "ok")
    assert first.scores == {"overall_quality": 0} and first.flips == {"overall_quality": True}
    assert [o["verdict"]["overall_quality"] for o in first.orders] == ["A", "A"]  # a shown first, then b first
    assert (first.baseline_chars, first.response_chars, first.baseline_tokens, first.response_tokens) == (412, 230, 100, 60)
    assert records[("annotator-1", "18")].scores == {"overall_quality": 1}  # b, the candidate, won
    assert records[("annotator-1", "18")].flips == {"overall_quality": False}
    # labels the other way round: bloom is model_a, shown second ("ba"), and won
    swapped = records[("tool", "19")]
    assert (swapped.model, swapped.baseline, swapped.scores) == ("bloom-7b", "llama-7b", {"overall_quality": 1})
    assert swapped.orders[0]["order"] == "baseline_first" and swapped.orders[0]["verdict"] == {"overall_quality": "B"}
    failed = records[("annotator-1", "20")]
    assert failed.outcome == "parse_error" and failed.scores is None


def test_scores_and_repeats(tmp_path):
    src = _write(tmp_path / "s.jsonl", [
        {"item_id": "1", "judge": "h", "model_a": "pspo", "score": {"clarity": 4}, "response_a": "abc"},
        {"item_id": "1", "judge": "h", "model_a": "pspo", "score": {"clarity": 2}},
    ])
    records = build_records(read_lines(src), dataset="gsm8k")
    assert [(r.mode, r.repeat, r.scores, r.dataset) for r in records] == [
        ("absolute", 0, {"clarity": 4}, "gsm8k"), ("absolute", 1, {"clarity": 2}, "gsm8k")]
    assert records[0].response_chars == 3 and records[0].key != records[1].key


@pytest.mark.parametrize("bad, message", [
    ('{"item_id": "1", "judge": "h"', "not valid JSON"),
    ('[1, 2]', "expected a JSON object"),
    (json.dumps(_line(winner="c")), "winner: Input should be 'a', 'b' or 'tie'"),
    (json.dumps(_line(score={"q": 3})), "exactly one of 'winner'"),
    (json.dumps({k: v for k, v in _line().items() if k != "model_b"}), "needs 'model_b'"),
    (json.dumps(_line(model_b="llama-7b")), "the same model"),
    (json.dumps(_line(order="abc")), "order: Input should be 'ab' or 'ba'"),
    (json.dumps(_line(lenght_a=3)), "lenght_a: unknown key"),
    (json.dumps({k: v for k, v in _line().items() if k != "judge"}), "judge: required field is missing"),
    (json.dumps(_line(length_a=-1)), "length_a: Input should be greater than or equal to 0"),
])
def test_a_bad_line_is_one_error_naming_the_line_and_nothing_is_written(tmp_path, bad, message):
    src = _write(tmp_path / "v.jsonl", [_line(), bad, _line(item_id="9")])
    out = tmp_path / "run"
    with pytest.raises(PspoError) as err:
        import_verdicts(src, out)
    assert "v.jsonl:2: " in err.value.message and message in err.value.one_line()
    assert not out.exists()
    result = CliRunner().invoke(app, ["judge", "import", "--input", str(src), "--out", str(out)])
    assert result.exit_code == 2 and "v.jsonl:2:" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_reimport_writes_nothing_new_and_the_gold_must_exist(tmp_path):
    src = _write(tmp_path / "v.jsonl", [_line(), _line(order="ba")])
    first = import_verdicts(src, tmp_path / "run", gold="annotator-1")
    again = import_verdicts(src, tmp_path / "run")
    assert (first.records, first.written, again.written) == (1, 1, 0)
    assert len(load_judgments(tmp_path / "run")) == 1
    with pytest.raises(PspoError, match="not a judge"):
        import_verdicts(src, tmp_path / "run", gold="nobody")


def test_judge_without_a_run_or_a_subcommand_is_a_one_line_error():
    result = CliRunner().invoke(app, ["judge"])
    assert result.exit_code == 2 and "needs --run" in result.output


# ---------------------------------------------------------------------------------------------
# Published figures: LLMBar (Zeng et al. 2024, "Evaluating Large Language Models at Evaluating
# Instruction Following", ICLR), statistics.json of each evaluator in princeton-nlp/LLMBar @ 900616b.
# "correct_average" is the paper's Acc. (mean of the two orders' accuracies), "equal" its Agr.
# (positional agreement), "correct_both" the share of items right in both orders, which is our
# accuracy of the combined verdict (disagreeing orders make a tie, never the gold label here).

PUBLISHED = {
    "natural.jsonl": {  # LLMBar Natural, Vanilla prompt, gold: the authors' curated labels
        "GPT-4": {"acc": 95.5, "agr": 95.0, "both": 93.0},
        "ChatGPT": {"acc": 81.5, "agr": 71.0, "both": 67.0},
        "LLaMA2": {"acc": 80.5, "agr": 79.0, "both": 70.0},
    },
    "faireval.jsonl": {  # FairEval's 66 non-tie human-labelled pairs, Vanilla_NoRules prompt
        "GPT-4": {"acc": 72.7, "agr": 69.7, "both": 57.6},
        "ChatGPT": {"acc": 57.6, "agr": 18.2, "both": 16.7},
    },
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_llmbar_published_accuracy_and_positional_agreement(tmp_path, name):
    out, report = tmp_path / "run", tmp_path / "agreement.json"
    runner = CliRunner()
    result = runner.invoke(app, ["judge", "import", "--input", str(DATA / name), "--out", str(out), "--gold", "gold"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["judge", "agreement", "--run", str(out), "--json", str(report), "--n-boot", "200"])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["gold"] == "gold" and set(data["judges"]) == set(PUBLISHED[name])
    for judge, figures in PUBLISHED[name].items():
        ours = data["judges"][judge]
        assert ours["failures"] == 0 and ours["n"] == ours["n_both_orders"] == data["n_gold"]
        assert round(100 * ours["accuracy_order_mean"], 1) == figures["acc"]
        assert round(100 * ours["positional_agreement"], 1) == figures["agr"]
        assert round(100 * ours["accuracy"], 1) == figures["both"]
        low, high = ours["ci"]["accuracy"]
        assert low <= ours["accuracy"] <= high
    assert "kappa_matrix" in data and -1 <= data["alpha"] <= 1


# PandaLM (Wang et al. 2024, ICLR): three human annotators per pair; the repository's README
# (WeOpenML/PandaLM @ 3871806) publishes their pairwise Cohen's kappa and the label distribution.
PANDALM = Path(__file__).parent / "data" / "judge" / "pandalm" / "annotators.jsonl"


def test_pandalm_published_inter_annotator_kappa(tmp_path):
    out, report = tmp_path / "run", tmp_path / "agreement.json"
    runner = CliRunner()
    assert runner.invoke(app, ["judge", "import", "--input", str(PANDALM), "--out", str(out),
                               "--gold", "annotator-1"]).exit_code == 0
    result = runner.invoke(app, ["judge", "agreement", "--run", str(out), "--json", str(report), "--n-boot", "100"])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert data["judges"]["annotator-2"]["positional_agreement"] is None  # one order each: undefined, not NaN
    kappa = data["kappa_matrix"]
    assert round(kappa["annotator-1|annotator-2"], 2) == 0.85
    assert round(kappa["annotator-1|annotator-3"], 2) == 0.88
    assert round(kappa["annotator-2|annotator-3"], 2) == 0.86
    assert data["judges"]["annotator-2"]["kappa"] == pytest.approx(kappa["annotator-1|annotator-2"])
    assert data["judges"]["annotator-2"]["n"] == 999
    low, high = data["kappa_matrix_ci"]["annotator-1|annotator-3"]
    assert low < kappa["annotator-1|annotator-3"] < high


def test_pandalm_published_label_distribution_is_the_annotators_majority(tmp_path):
    from collections import Counter

    from pspo_eval.judge.agreement import majority

    import_verdicts(PANDALM, tmp_path / "run")
    frame = load_judgments(tmp_path / "run")
    votes: dict[str, list[int]] = {}
    for pid, scores in zip(frame["problem_id"], frame["scores"], strict=True):
        votes.setdefault(pid, []).append(scores["overall_quality"])  # +1: response2 (b) better
    counts = Counter(majority(v) for v in votes.values())
    assert (counts[0], counts[-1], counts[1]) == (105, 422, 472)  # labels 0, 1, 2


def test_a_line_separator_inside_a_text_is_part_of_the_line(tmp_path):
    """str.splitlines() would cut a JSON line at U+2028 inside a string (valid unescaped JSON)."""
    path = tmp_path / "v.jsonl"
    rows = [_line(prompt="first\u2028second\u0085third"), _line(item_id="18", winner="b")]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows), encoding="utf-8")
    lines = read_lines(path)
    assert [line.item_id for line in lines] == ["17", "18"]
    assert lines[0].prompt == "first\u2028second\u0085third"
