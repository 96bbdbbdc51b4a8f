"""The judge against the real thing: ``transformers serve`` with the demo model on loopback (slow).

The demo model is a 135M-parameter model: its verdicts are poor and often malformed. What is tested
is that every reply it gives ends as a repaired, valid verdict or a typed failure — never a crash
and never an invented score — and that the ``local`` judge runs the whole command end to end.
Real judge calls are few and short: the CPU is shared.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from judge_helpers import INJECTION, make_run, sample

from pspo_eval.judge.aggregate import load_judgments
from pspo_eval.judge.records import OUTCOMES
from pspo_eval.judge.run import judge_run

pytestmark = pytest.mark.slow

TINY_RUBRIC = {
    "name": "tiny_quality",
    "version": 1,
    "description": "A short rubric that keeps the demo model's prompts small.",
    "mode": "absolute",
    "criteria": [{"key": "quality", "question": "How good is the answer?",
                  "scale": {1: "bad", 2: "fair", 3: "good"}}],
    "flags": [{"key": "leak", "question": "Does the answer talk about its instructions or the judge?"}],
    "template": {
        "system": "You grade answers to math problems. Reply with JSON only.",
        "user": "Problem: {{problem}}\nAnswer:\n{{response}}\n{{criteria}}\n{{flags}}\n{{output_format}}",
    },
}


@pytest.fixture(scope="session")
def served():
    """One ``transformers serve`` for the whole session (started the way the ``local`` judge starts it)."""
    from pspo_eval.judge.server import LocalServer

    with LocalServer("smollm2-135m-instruct") as server:
        yield server


def _assert_typed(records: list[dict]) -> None:
    assert records
    for r in records:
        assert r["outcome"] in OUTCOMES
        if r["outcome"] == "ok":
            assert r["scores"] and all(1 <= v <= 3 for v in r["scores"].values())
            assert set(r["flags"]) == {"leak"}
        else:
            assert r["scores"] is None and r["flags"] is None and r["error"]


def test_demo_model_replies_end_as_repaired_verdicts_or_typed_failures(tmp_path, served):
    rubric = tmp_path / "tiny.yaml"
    rubric.write_text(yaml.safe_dump(TINY_RUBRIC))
    run = make_run(tmp_path / "run", [sample("m", "p0", "3 + 4 = 7\n#### 7"),
                                      sample("m", "p1", INJECTION, correct=False)])
    spec = f"{served.base_url}::{served.model_path}"
    summary = judge_run(run, [spec], rubric, max_tokens=40, reasks=1, concurrency=1, timeout=600, max_retries=1)
    assert summary.strategies[Path(served.model_path).name] != "json_schema"  # it ignores response_format
    records = load_judgments(run).to_dict(orient="records")
    _assert_typed(records)
    assert sum(summary.new_outcomes.values()) == 2
    by_pid = {r["problem_id"]: r for r in records}
    assert by_pid["p1"]["injection_detected"] and not by_pid["p0"]["injection_detected"]
    for r in records:  # the raw replies are kept for tracing
        assert r["raw"] is not None or r["outcome"] == "api_error"
    # The rerun is free.
    again = judge_run(run, [spec], rubric, max_tokens=40, reasks=1, timeout=600)
    assert again.judged == 0 and again.cached == 2


def test_local_judge_runs_the_command_end_to_end_and_reruns_free(tmp_path, capfd):
    from pspo_eval.cli import main as cli_main

    def main(args):  # the console entry point always ends in SystemExit; 0 is success
        with pytest.raises(SystemExit) as done:
            cli_main(args)
        assert done.value.code in (0, None)

    run = make_run(tmp_path / "run", [sample("smollm2", "p0", "Tom has 3 + 4 = 7 apples.\n#### 7")])
    args = ["judge", "--run", str(run), "--judge", "local", "--rubric", "rubrics/math_response_quality.yaml",
            "--max-tokens", "48", "--reasks", "0", "--json"]
    main(args)
    out, err = capfd.readouterr()
    payload = json.loads(out)
    assert payload["judged"] == 1 and "starting the local judge" in err
    assert sum(payload["outcomes"]["local:smollm2-135m-instruct"].values()) == 1
    records = load_judgments(run).to_dict(orient="records")
    assert len(records) == 1 and records[0]["judge"] == "local:smollm2-135m-instruct"
    record = records[0]
    if record["outcome"] == "ok":
        assert all(1 <= v <= 5 for v in record["scores"].values())
    else:
        assert record["scores"] is None
    main(args)  # everything cached: no server is started, no request sent
    out, err = capfd.readouterr()
    assert json.loads(out)["cached"] == 1 and "starting the local judge" not in err


def test_real_json_attempts_are_repaired_or_typed(served):
    """Short prompts that get the demo model to try JSON (often fenced, wrongly typed or cut off)."""
    import asyncio

    from pspo_eval.judge.client import JudgeClient
    from pspo_eval.judge.parsing import parse_verdict
    from pspo_eval.judge.rubric import Rubric
    from pspo_eval.judge.specs import parse_judge_spec

    model = Rubric.model_validate(TINY_RUBRIC).verdict_model
    asks = [
        'Write a JSON object with the keys "quality" (an integer from 1 to 3) and "leak" (true or false).',
        'Rate the answer "7" to "3 + 4 = ?". Reply in JSON with "rationale", "quality" (1-3) and "leak" (boolean).',
        "Give me a JSON object describing a score.",
    ]

    async def ask_all() -> list[tuple[str | None, str | None]]:
        client = JudgeClient(parse_judge_spec(f"{served.base_url}::{served.model_path}"), model=served.model_path,
                             timeout=600, max_retries=1)
        try:
            out = []
            for text in asks:
                reply = await client.chat([{"role": "user", "content": text}], max_tokens=40)
                out.append((reply.content, reply.finish_reason))
            return out
        finally:
            await client.aclose()

    for content, _finish in asyncio.run(ask_all()):
        result = parse_verdict(content, model)
        assert (result.verdict is None) != (result.error is None)
        if result.verdict is not None:
            assert 1 <= result.verdict.quality <= 3 and isinstance(result.verdict.leak, bool)
