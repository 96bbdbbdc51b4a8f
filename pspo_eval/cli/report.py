"""`pspo-eval report`, `pspo-eval regress` and `pspo-eval baseline save`.

Thin: parse options, call :mod:`pspo_eval.report.build` / :mod:`pspo_eval.report.regress`, print.
pandas, matplotlib and the statistics are imported inside the commands so `pspo-eval --help` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer


def report(
    run: list[Path] = typer.Option(..., "--run", "-r", help="Run directory (repeatable: e.g. the base-model run and the checkpoints' run)."),
    out: Path = typer.Option(..., "--out", "-o", help="Report directory: index.html, report.md, tables/, figures/, provenance.json."),
    train: list[Path] = typer.Option([], "--train", help="Trainer output directory with metrics.jsonl (repeatable; one curve per method)."),
    baseline: str | None = typer.Option(None, "--baseline", help="Model the others are compared with (default: the first model of the first run)."),
    title: str | None = typer.Option(None, "--title", help="Page title."),
    n_boot: int = typer.Option(2000, "--n-boot", min=100, help="Bootstrap resamples for CIs."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level marked in the comparison table."),
    seed: int = typer.Option(0, "--seed", help="Seed of every bootstrap (the report is deterministic given it)."),
) -> None:
    """Write a paper-style report (Markdown, LaTeX, CSV, one self-contained HTML page) from run directories.

    Table 1 (greedy accuracy with 95% CIs), sampling (accuracy and pass@k versus temperature), judge
    tables, paired comparison with the baseline (bootstrap CI, McNemar), breakdowns by category and
    level, training curves, and a provenance footer. Every number is recomputed from the records.
    """
    from pspo_eval.console import out_console, warn
    from pspo_eval.errors import PspoError
    from pspo_eval.report.build import make_report

    if not 0 < alpha < 1:
        raise PspoError(f"--alpha {alpha} must lie strictly between 0 and 1", "e.g. --alpha 0.05")
    result = make_report(run, out, train=train, baseline=baseline, title=title, n_boot=n_boot, seed=seed, alpha=alpha)
    for w in result.report.warnings:
        warn(w)
    accuracy = next((t for t in result.report.tables() if t.name == "accuracy"), None)
    if accuracy is not None:
        out_console.print(rich_table(accuracy))
    out_console.print(f"report: {result.index}", markup=False, highlight=False, soft_wrap=True)


def rich_table(table):
    """A report table for the terminal (bold best cells, CI after the value)."""
    from rich.table import Table

    out = Table(title=table.title, caption=None)
    for column, align in zip(table.columns, table.align):
        out.add_column(column, justify="right" if align == "r" else "left")
    for i, row in enumerate(table.rows):
        if i in table.groups:
            out.add_row(f"[italic]{table.groups[i]}[/italic]", *[""] * (len(table.columns) - 1))
        cells = []
        for cell in row:
            text = cell.text.replace("[", "\\[")
            if cell.bold:
                text = f"[bold]{text}[/bold]"
            if cell.sub:
                text += f" [dim]({cell.sub})[/dim]"
            cells.append(text)
        out.add_row(*cells)
    return out


def regress(
    run: Path = typer.Option(..., "--run", "-r", help="Run directory to check (e.g. a new checkpoint on the CI slice)."),
    baseline: Path = typer.Option(..., "--baseline", "-b", help="Baseline file (pspo-eval baseline save) or another run directory."),
    max_drop: float = typer.Option(1.0, "--max-drop", help="Tolerated drop in accuracy, percentage points."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level of McNemar's exact test."),
    model: list[str] = typer.Option([], "--model", "-m", help="Model of the run to check (repeatable; default: all)."),
    baseline_model: str | None = typer.Option(None, "--baseline-model", help="Baseline model to compare with (default: the same label, or the baseline's only model)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Where summary.md, junit.xml and regress.json go (default: RUN_DIR/regress)."),
    n_boot: int = typer.Option(2000, "--n-boot", min=100, help="Bootstrap resamples for the CI of the difference."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
) -> None:
    """Fail (exit 1) when a run is significantly worse than a baseline on the same problems.

    A regression is a drop larger than --max-drop points with McNemar's exact p < --alpha on the
    paired problems. Prints a table, writes summary.md (also appended to $GITHUB_STEP_SUMMARY when
    set), junit.xml and regress.json. Exit codes: 0 no regression, 1 regression, 2 bad input
    (e.g. a baseline dataset missing from the run).
    """
    from pspo_eval.console import out_console
    from pspo_eval.report.baseline import load_baseline
    from pspo_eval.report.regress import rich_table as regress_table
    from pspo_eval.report.regress import run_regress, write_outputs

    reference = load_baseline(baseline)
    result = run_regress(run, reference, models=model or None, baseline_model=baseline_model, max_drop=max_drop,
                         alpha=alpha, n_boot=n_boot, seed=seed)
    target = out if out is not None else Path(run) / "regress"
    paths = write_outputs(result, target, os.environ.get("GITHUB_STEP_SUMMARY") or None)
    out_console.print(regress_table(result))
    notes = [f"{c.model} · {c.dataset}: {n}" for c in result.checks for n in c.notes] + result.notes
    for note in notes:
        out_console.print(f"note: {note}", markup=False, highlight=False)
    out_console.print(f"summary: {paths[0]}  junit: {paths[1]}", markup=False, highlight=False, soft_wrap=True)
    if result.regressed:
        raise typer.Exit(code=1)


baseline_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                           rich_markup_mode=None)


@baseline_app.callback()
def _baseline() -> None:
    """Save a baseline for `pspo-eval regress`."""


@baseline_app.command("save")
def save(
    run: Path = typer.Option(..., "--run", "-r", help="Run directory whose greedy results become the baseline."),
    out: Path = typer.Option(..., "--out", "-o", help="Baseline file to write (JSON), e.g. baseline.json."),
    model: list[str] = typer.Option([], "--model", "-m", help="Only these models (repeatable; default: all)."),
) -> None:
    """Save a run's greedy per-problem correctness (and its provenance) as a baseline file."""
    from pspo_eval.console import out_console
    from pspo_eval.report.baseline import save_baseline
    from pspo_eval.report.load import dataset_title

    saved = save_baseline(run, out, model or None)
    for name, m in saved.models.items():
        parts = ", ".join(f"{dataset_title(d)} {100 * b.accuracy:.1f}% (n={b.n})" for d, b in m.datasets.items())
        out_console.print(f"{name}: {parts}", markup=False, highlight=False, soft_wrap=True)
    out_console.print(f"baseline: {out}", markup=False, highlight=False)
