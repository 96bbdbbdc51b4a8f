"""The report's 'Least certain verdicts' section (pspo_eval/report/uncertain.py), from really graded samples."""

from __future__ import annotations

from test_report_helpers import rec, write_run

from pspo_eval.grading import grade
from pspo_eval.report.build import build_report, write_report
from pspo_eval.report.uncertain import doubt


def _graded(model: str, pid: str, response: str, gold: str, **kw):
    g = grade("gsm8k", response, gold, explain=True)
    sample = rec(model, "gsm8k", pid, g.correct, **kw)
    return sample.model_copy(update={"response": response, "gold": gold, "extracted": g.extracted,
                                     "method": g.method, "strict": g.strict, "why": g.why,
                                     "alternatives": g.alternatives})


def test_least_certain_verdicts_are_listed_per_model_weakest_first(tmp_path):
    samples = [
        _graded("demo", "p0", "She pays 3 * 6 = 18.\n#### 18", "18"),  # explicit and agreed: certain
        _graded("demo", "p1", "The answer is 20 apples, then 18 remain", "18"),  # answer_is vs last number
        _graded("demo", "p2", "First 9 * 2 = 18, then we add", "18", finish="length"),  # a guess, cut off
    ]
    run = write_run(tmp_path / "run", samples)
    report = build_report([run])
    section = next(s for s in report.sections if s.id == "uncertain")
    rows = section.tables[0].records
    # p2 (a last-number guess in a cut-off response: 2.5 + 1) before p1 (answer_is 0.5, one rule against: +2);
    # p0 is not doubtful at all.
    assert [r["problem_id"] for r in rows] == ["p2", "p1"]
    assert rows[1]["verdict"] == "wrong" and "last_number 18: right" in rows[1]["alternatives"]
    assert doubt(samples[0].model_dump())[0] == 0.0
    score, reasons = doubt(samples[2].model_dump())
    assert "the response was cut off" in reasons and "decided by last_number" in reasons and score >= 3.5
    out = write_report(report, tmp_path / "report")
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in (tmp_path / "report").rglob("*.md")]
    assert any("Least certain verdicts" in t and "p1" in t for t in texts), out
