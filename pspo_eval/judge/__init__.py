"""LLM-as-judge: rubrics (data), judges behind one OpenAI-compatible client, typed outcomes, aggregation.

Public API::

    judge_run(run_dir, JudgeConfig(judges=[...], rubric=..., ...)) -> JudgeSummary  # or judge_run(run_dir, judges, rubric, **settings)
    load_judgments(run_dir, *, rubric=None, judges=None) -> pandas.DataFrame   # one row per judged item
    aggregate(frame) -> Aggregation                                            # tables (DataFrames)
    load_rubric(path_or_name) -> Rubric                                        # validated; .verdict_model, .verdict_schema
    import_verdicts(input_path, out, *, dataset=..., gold=None) -> ImportSummary  # human labels, other tools
    gold_agreement(frame, gold, *, criterion=None, tie_failures=False) -> dict   # agreement with people
    Judgment                                                                   # the stored record

See docs/judging.md for the rubric format, judge specs, the structured-output strategy, outcomes,
cache keys, aggregation, agreement with people, length control, panels and the injection defence. Submodules are imported on first use so that
importing this package stays cheap (the CLI's ``--help`` must be fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from pspo_eval.judge.aggregate import Aggregation, aggregate, load_judgments
    from pspo_eval.judge.config import JudgeConfig
    from pspo_eval.judge.gold import gold_agreement
    from pspo_eval.judge.importer import ImportSummary, import_verdicts
    from pspo_eval.judge.records import Judgment
    from pspo_eval.judge.rubric import Rubric, load_rubric
    from pspo_eval.judge.run import JudgeSummary, judge_run

__all__ = ["Aggregation", "ImportSummary", "JudgeConfig", "JudgeSummary", "Judgment", "Rubric", "aggregate", "gold_agreement",
           "import_verdicts", "judge_run", "load_judgments", "load_rubric"]

_WHERE = {
    "Aggregation": "aggregate", "aggregate": "aggregate", "load_judgments": "aggregate",
    "Judgment": "records", "Rubric": "rubric", "load_rubric": "rubric",
    "JudgeSummary": "run", "judge_run": "run", "gold_agreement": "gold", "ImportSummary": "importer",
    "import_verdicts": "importer", "JudgeConfig": "config",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"pspo_eval.judge.{_WHERE[name]}"), name)
    raise AttributeError(name)
