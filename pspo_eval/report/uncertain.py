"""The least certain grading verdicts of each model: where a person should look first.

Every graded sample carries ``method`` (which rule chose the answer), ``why`` and, from evaluate,
``alternatives`` (what every lower-priority rule read, and its verdict). A verdict is less certain
when a weaker rule decided it (the last number of a response is a guess; a ``####`` or a box is
not), when other rules would have reached the opposite verdict, when math-verify ran out of time,
or when the response was cut off by the token budget. This module scores that, and lists the few
least certain verdicts per model, so a surprising accuracy can be audited from the records.
"""

from __future__ import annotations

from typing import Any

from pspo_eval.records import SampleVerdict
from pspo_eval.report.document import Section
from pspo_eval.report.tables import Cell, Table

PER_MODEL = 5
# How much each deciding rule leaves to doubt (docs/grading.md orders the rules the same way).
RULE_DOUBT = {
    "hash": 0.0, "boxed": 0.0, "answer_is": 0.5, "bold": 1.5, "final_line": 1.5, "last_sentence": 1.5,
    "latex_last": 2.0, "last_number": 2.5, "none": 1.0,
}  # fmt: skip


def doubt(record: SampleVerdict | dict[str, Any]) -> tuple[float, list[str]]:
    """(score, reasons): 0 for a verdict nothing argues against; higher is less certain."""
    if isinstance(record, dict):
        record = SampleVerdict.model_validate(record)
    method = str(record.method or "none")
    score = RULE_DOUBT.get(method, 1.0)
    reasons = [f"decided by {method}"] if score >= 1.5 else []
    verdict = "right" if record.correct else "wrong"
    against = [a for a in record.alternatives if not str(a).endswith(f": {verdict}")]
    if against:
        score += 2.0 * min(len(against), 2)
        reasons.append(f"{len(against)} other rule(s) disagree: {against[0]}")
    if record.timed_out:
        score += 5.0
        reasons.append("math-verify timed out")
    if record.finish_reason == "length" and method in ("last_number", "latex_last", "none"):
        score += 1.0
        reasons.append("the response was cut off")
    return score, reasons


def least_certain(records: list[SampleVerdict], n: int = PER_MODEL) -> list[tuple[float, list[str], SampleVerdict]]:
    scored = [(s, why, r) for r in records for s, why in [doubt(r)] if s >= 1.5]
    scored.sort(key=lambda t: (-t[0], str(t[2].dataset), str(t[2].problem_id)))
    return scored[:n]


def uncertain_section(coll: Any) -> Section:
    """The 'least certain verdicts' section: a few rows per model, with what to look at."""
    section = Section("uncertain", "Least certain verdicts",
                      f"Per model, the {PER_MODEL} graded samples whose verdict rests on the weakest evidence "
                      "(see docs/grading.md: the deciding rule, rules that disagree, time-outs, cut-off "
                      "responses). `pspo-eval grade --explain` shows the same reasoning for any response.")
    rows: list[list[Cell]] = []
    records: list[dict[str, Any]] = []
    for model in coll.models:
        samples = [r for g in coll.groups.values() if g.model.key == model.key for r in g.records]
        for score, reasons, r in least_certain(samples):
            verdict = "right" if r.correct else "wrong"
            rows.append([Cell(model.name), Cell(str(r.dataset)), Cell(str(r.problem_id)),
                         Cell(verdict), Cell(f"{r.extracted!s:.40} ({r.method})"),
                         Cell("; ".join(reasons), title=str(r.why or ""))])
            records.append({"model": model.name, "dataset": r.dataset, "problem_id": r.problem_id,
                            "key": r.key, "verdict": verdict, "extracted": r.extracted,
                            "method": r.method, "doubt": score, "why": r.why,
                            "alternatives": "; ".join(r.alternatives)})
    if rows:
        section.tables.append(Table("uncertain", "Least certain verdicts per model",
                                    ["model", "dataset", "problem", "verdict", "answer (rule)", "why uncertain"],
                                    rows, "Sorted by doubt, highest first; hover a row for the grader's reason.",
                                    align=["l"] * 6, records=records))
    else:
        section.notes.append("Every verdict was decided by an explicit answer format with no rule disagreeing.")
    return section
