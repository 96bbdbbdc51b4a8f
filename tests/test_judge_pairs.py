"""The judge stage's pairing (--pairs baseline | all), response lengths in records, and the logprob call site."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from judge_helpers import make_run, sample

from pspo_eval.errors import PspoError
from pspo_eval.judge.client import ChatReply
from pspo_eval.judge.records import Usage
from pspo_eval.judge.rubric import load_rubric
from pspo_eval.judge.run import _build_items, _expected, _tasks_for, judge_run
from pspo_eval.judge.select import load_samples, pick_responses
from pspo_eval.judge.specs import parse_judge_spec
from pspo_eval.store import RunStore


def _three_models(tmp_path: Path) -> dict:
    rows = [sample(m, f"p{i}", f"{m} says 3 + 4 = 7 " + "." * (10 * k) + "\n#### 7")
            for k, m in enumerate(["a", "b", "c"]) for i in range(2)]
    store = RunStore(make_run(tmp_path, rows))
    return pick_responses(load_samples(store))


def test_all_pairs_is_a_round_robin_and_baseline_mode_a_star(tmp_path):
    chosen = _three_models(tmp_path)
    rubric = load_rubric("math_pairwise")
    all_pairs = _build_items(rubric, chosen, {}, None, "all")
    pairs = sorted((i.base["model"], i.base["baseline"], i.base["problem_id"]) for i in all_pairs)
    assert pairs == sorted((m, b, p) for p in ("p0", "p1") for m, b in (("b", "a"), ("c", "a"), ("c", "b")))
    assert all(len(i.orders) == 2 for i in all_pairs)  # each pair asked in both orders
    # order 0 shows the baseline first, order 1 the candidate first
    item = next(i for i in all_pairs if i.base["model"] == "c" and i.base["baseline"] == "a")
    first, second = item.orders[0][-1]["content"], item.orders[1][-1]["content"]
    assert first.index("a says") < first.index("c says") and second.index("c says") < second.index("a says")
    star = _build_items(rubric, chosen, {}, "a", "baseline")
    assert sorted((i.base["model"], i.base["baseline"]) for i in star) == [("b", "a"), ("b", "a"), ("c", "a"),
                                                                            ("c", "a")]


def test_records_carry_both_responses_lengths(tmp_path):
    chosen = _three_models(tmp_path)
    items = _build_items(load_rubric("math_pairwise"), chosen, {}, None, "all")
    spec = parse_judge_spec("http://127.0.0.1:9/v1::m")
    task = next(t for t in _tasks_for(spec, load_rubric("math_pairwise"), items, repeats=1, seed=0, temperature=0.0,
                                      max_tokens=64) if t.base["model"] == "c" and t.base["baseline"] == "a")
    c, a = chosen[("c", "gsm8k", "p0")], chosen[("a", "gsm8k", "p0")]
    assert (task.base["response_chars"], task.base["baseline_chars"]) == (len(c["response"]), len(a["response"]))
    assert (task.base["response_tokens"], task.base["baseline_tokens"]) == (20, 20)  # the samples' completion_tokens
    absolute = _build_items(load_rubric("math_response_quality"), chosen, {}, None)
    assert absolute[0].base["response_chars"] == len(absolute[0].forbidden[0])
    assert "baseline_chars" not in absolute[0].base


def test_pairs_must_be_baseline_or_all(tmp_path):
    _three_models(tmp_path)
    with pytest.raises(PspoError, match="--pairs must be"):
        judge_run(tmp_path, ["http://127.0.0.1:9/v1::m"], "math_pairwise", pairs="some")


def test_expected_scores_are_read_from_the_reply_when_it_has_logprobs():
    rubric = load_rubric("math_response_quality")
    content = '{"overall_quality": 4}'
    reply = ChatReply(content=content, finish_reason="stop", refusal=None, usage=Usage(), latency_s=0.0)
    assert _expected(rubric, reply) is None  # today's client: no top_logprobs attribute, the sampled score stays
    tokens = ['{"', "overall_quality", '":', " ", "4", "}"]
    reply.top_logprobs = [{t: 0.0} for t in tokens]  # what the SDK client will add
    reply.top_logprobs[4] = {"4": math.log(0.75), "5": math.log(0.25)}
    assert _expected(rubric, reply) == pytest.approx({"overall_quality": 4.25})
    assert _expected(load_rubric("math_pairwise"), reply) is None  # pairwise verdicts have no scale


def test_report_shows_agreement_with_people_length_control_and_the_panel(tmp_path):
    """The issue's "done when": human labels imported for a sample, two judges on it, one report."""
    from pspo_eval.judge.importer import import_verdicts
    from pspo_eval.judge.records import Judgment
    from pspo_eval.report.judging import judge_section
    from pspo_eval.report.load import load_runs

    rows = []
    for i in range(12):
        rows.append(sample("grpo", f"p{i}", "3 + 4 = 7\n#### 7"))
        rows.append(sample("pspo", f"p{i}", "Tom has 3 apples; buying 4 more gives 3 + 4 = 7.\n#### 7"))
    run = make_run(tmp_path / "run", rows)
    people = [1, 1, -1, 1, 0, 1, -1, 1, 1, -1, 1, 1]
    votes = {"j1": people[:10] + [0, 1], "j2": [1, 1, -1, 1, 1, 1, 1, 1, -1, -1, 1, 1]}
    records = []
    for judge, values in votes.items():
        for i, v in enumerate(values):
            key = f"{judge}|{i}"
            records.append(Judgment(
                key=key, item_key=key, model="pspo", baseline="grpo", dataset="gsm8k", problem_id=f"p{i}",
                sample_key=f"pspo|gsm8k|p{i}|t0|0", setting="t0", judge=judge, rubric="math_pairwise",
                rubric_version="1", rubric_hash="h", mode="pairwise", prompt_hash="p", temperature=0.0, seed=0,
                max_tokens=64, structured="prompt", outcome="ok", scores={"overall_quality": v}, flags={},
                flips={"overall_quality": False}, response_chars=48, baseline_chars=17))
    RunStore(run).shard("judgments", "llm", "math_pairwise").append(records)
    winners = {1: "b", 0: "tie", -1: "a"}
    labels = tmp_path / "people.jsonl"
    labels.write_text("".join(
        f'{{"item_id": "p{i}", "judge": "people", "model_a": "grpo", "model_b": "pspo", "winner": "{winners[v]}"}}\n'
        for i, v in enumerate(people)))
    import_verdicts(labels, run, dataset="gsm8k", gold="people")
    section = judge_section(load_runs([run]), n_boot=200, bt_boot=50)
    tables = {t.name: t for t in section.tables}
    gold = tables["judge_gold_0"]
    assert [r["judge"] for r in gold.records] == ["j1", "j2", "panel(j1+j2)"]
    j1 = gold.records[0]
    assert j1["n"] == 12 and j1["accuracy"] == pytest.approx(11 / 12)  # j1 differs from people on p10 only
    assert "judge_panel" in tables and "judge_length_bias" in tables
    pairwise = {(r["judge"], r["model"]): r for r in tables["judge_pairwise"].records}
    assert pairwise[("j2", "pspo")]["length_unit"] == "chars"
    assert pairwise[("j2", "pspo")]["win_low"] <= pairwise[("j2", "pspo")]["win_rate"]
    assert ("panel(j1+j2)", "pspo") in pairwise and ("people", "pspo") in pairwise


def test_all_pairs_run_end_to_end_on_a_loopback_endpoint(tmp_path):
    """--pairs all through judge_run: 3 pairs x 2 problems, both orders each, records with lengths, BT over all."""
    import json

    from judge_fault_server import FaultServer

    keys = ["overall_quality", "constraint_adherence", "logical_coherence", "mathematical_soundness", "clarity",
            "conciseness"]
    _three_models(tmp_path)
    with FaultServer(verdict={"rationale": "A is better", **{k: "A" for k in keys}}) as server:
        summary = judge_run(tmp_path, [server.spec()], "math_pairwise", pairs="all", concurrency=1,
                            backoff_base=0.01, timeout=5.0)
        sent = len(server.judge_requests())
        again = judge_run(tmp_path, [server.spec()], "math_pairwise", pairs="all", backoff_base=0.01, timeout=5.0)
        assert len(server.judge_requests()) == sent  # a rerun sends nothing
    assert sent == 12 and summary.judged == 6 and again.cached == 6
    shard = next((tmp_path / "judgments").rglob("*.jsonl"))
    records = [json.loads(line) for line in shard.read_text().splitlines()]
    assert sorted({(r["model"], r["baseline"]) for r in records}) == [("b", "a"), ("c", "a"), ("c", "b")]
    assert all(r["baseline_chars"] and r["response_chars"] and r["flips"]["overall_quality"] for r in records)
    assert set(summary.aggregation.bradley_terry["model"]) == {"a", "b", "c"}


def test_expected_scores_end_to_end_when_the_spec_asks_for_logprobs(tmp_path):
    """?logprobs=K on a judge spec: the request asks for the top-K alternatives and each record stores
    the G-Eval expected score next to the sampled one; without the option nothing is asked."""
    import json

    from judge_fault_server import FaultServer

    _three_models(tmp_path)
    verdict = {"rationale": "fine", "overall_quality": 4, "constraint_adherence": 4, "logical_coherence": 4,
               "mathematical_soundness": 4, "clarity": 4, "conciseness": 4,
               "instruction_leakage": False, "verbosity_repetition": False}
    with FaultServer(verdict=verdict, logprobs=True) as server:
        judge_run(tmp_path, [server.spec() + "?logprobs=3"], "math_response_quality", concurrency=1,
                  backoff_base=0.01, timeout=5.0)
        asked = server.judge_requests()
    assert asked and all(r["body"].get("logprobs") is True and r["body"].get("top_logprobs") == 3 for r in asked)
    records = [json.loads(line) for f in (tmp_path / "judgments").rglob("*.jsonl") for line in f.read_text().splitlines()]
    ok = [r for r in records if r["outcome"] == "ok"]
    assert ok and all(r["expected_scores"]["overall_quality"] == pytest.approx(4.2689, abs=1e-3) for r in ok)
    assert all(r["scores"]["overall_quality"] == 4 for r in ok)
