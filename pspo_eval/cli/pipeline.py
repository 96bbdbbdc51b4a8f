"""`pspo-eval pipeline` and `pspo-eval demo`: one experiment file, train → evaluate → judge → report."""

from __future__ import annotations

import typer

from pspo_eval.errors import PspoError
from pspo_eval.pipeline import resolve_experiment_path, run_pipeline


def pipeline(
    config: str = typer.Option(..., "--config", "-c", help="Experiment file, or a bundled one's name (demo, paper-0.5b)."),
    stage: list[str] = typer.Option([], "--stage", help="Run only these stages (train, evaluate, judge, report). Repeatable."),
    set_: list[str] = typer.Option([], "--set", help="Override one experiment field, key.sub=value (YAML value), e.g. evaluate.limit=8. Repeatable."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Less progress output."),
) -> None:
    """Train → evaluate → judge → report from one experiment file (reruns redo only what changed)."""
    from pspo_eval.console import out_console
    from pspo_eval.metrics import results_table

    bad = [s for s in stage if s not in {"train", "evaluate", "judge", "report"}]
    if bad:
        raise PspoError(f"unknown stage {bad[0]!r}", "stages: train, evaluate, judge, report")
    out = run_pipeline(config, stages=stage or None, verbose=not quiet, overrides=list(set_))
    if out.get("results"):
        out_console.print(results_table(out["results"], title="accuracy (greedy)"))
    if out.get("report") is not None:
        out_console.print(f"report: {out['report'].index}")


def demo(
    config: str = typer.Option("demo", "--config", "-c", help="The demo experiment: a file, or a bundled name."),
) -> None:
    """The CPU demo: short GR-PSPO and GRPO-clip runs of the demo model, evaluation, judging, report."""
    from pspo_eval.console import out_console
    out = run_pipeline(resolve_experiment_path(config))
    if out.get("report") is not None:
        report = out["report"]
        md = (report.out / "report.md")
        out_console.print(f"\nHTML report: {report.index.resolve()}")
        if md.exists():
            text = md.read_text(encoding="utf-8")
            start = text.find("## ")
            end = text.find("\n## ", start + 3)
            out_console.print(text[start:end if end > 0 else None].strip())
