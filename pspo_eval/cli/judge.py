"""``pspo-eval judge``: parse options, hold the run lock, call :func:`judge_run`, print the aggregation.

``pspo-eval judge --run RUN --judge SPEC`` judges (the group's own options, as before);
``pspo-eval judge import`` stores external verdicts (human labels, other tools) as judgments;
``pspo-eval judge agreement`` compares every judge with a gold one.

Heavy imports (pandas, httpx, the stage itself) happen inside the commands so ``pspo-eval --help``
stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from pspo_eval.errors import PspoError
from pspo_eval.judge.config import JudgeConfig


def _parse_prices(values: list[str]) -> dict[str, tuple[float, float]]:
    prices: dict[str, tuple[float, float]] = {}
    for value in values:
        name, sep, rest = value.rpartition("=")
        parts = rest.split("/")
        try:
            if not sep or not name or len(parts) != 2:
                raise ValueError
            prices[name] = (float(parts[0]), float(parts[1]))
        except ValueError:
            raise PspoError(f"--price '{value}' is not MODEL=INPUT/OUTPUT",
                            "USD per million tokens, e.g. --price gpt-4o-mini=0.15/0.60") from None
    return prices


judge = typer.Typer(
    name="judge", invoke_without_command=True, no_args_is_help=False, add_completion=False,
    rich_markup_mode=None, help="Judge a run's responses with LLM judges; import verdicts; agreement with people.",
)


def _default(name: str) -> Any:
    """An option's default: the one written in :class:`JudgeConfig`."""
    return JudgeConfig.model_fields[name].default


# command-line option (the callback's parameter name) -> JudgeConfig field
_FIELDS = {"judges": "judges", "rubric": "rubric", "per_dataset": "per_dataset", "repeats": "repeats",
           "concurrency": "concurrency", "timeout": "timeout", "max_retries": "max_retries", "reasks": "reasks",
           "seed": "seed", "temperature": "temperature", "max_tokens": "max_tokens", "models": "models",
           "datasets": "datasets", "setting": "setting", "baseline": "pairwise_baseline", "pairs": "pairs",
           "api_key_env": "api_key_env", "price": "prices", "structured": "structured",
           "max_consecutive_failures": "max_consecutive_failures"}


def _config(ctx: typer.Context, options: dict[str, Any], config_file: Path | None, sets: list[str]) -> JudgeConfig:
    """The options as a JudgeConfig; with ``--config FILE`` (and ``--set``), the options given override the file."""
    from pspo_eval.judge.config import judge_config

    values = {_FIELDS[k]: v for k, v in options.items()}
    values["models"] = values["models"] or None
    values["datasets"] = values["datasets"] or None
    values["judges"] = values["judges"] or []
    values["prices"] = _parse_prices(values["prices"] or [])
    if config_file is None:
        if sets:
            raise PspoError("--set needs --config FILE", "or give the setting as its own option")
        return judge_config(**values)
    from pspo_eval import config

    base = config.load_model(config.Schema(JudgeConfig), config_file, sets).model_dump(exclude_unset=True)
    given = {_FIELDS[k] for k in options if getattr(ctx.get_parameter_source(k), "name", None) == "COMMANDLINE"}
    return judge_config(**{**base, **{k: v for k, v in values.items() if k in given}})


@judge.callback()
def _judge(
    ctx: typer.Context,
    run: Path = typer.Option(None, "--run", help="The run directory (the --out of `pspo-eval evaluate`)."),
    judges: list[str] = typer.Option(
        None, "--judge",
        help="Judge spec, repeatable: 'local' (transformers serve + demo model), 'openai:MODEL', or 'URL::MODEL'.",
    ),
    rubric: str = typer.Option(_default("rubric"), "--rubric", help="Rubric file, or a bundled rubric's name (math_response_quality, math_pairwise, math_response_quality_reference)."),
    per_dataset: int = typer.Option(_default("per_dataset"), "--per-dataset", help="Judge a seeded stratified sample of N problems per dataset."),
    repeats: int = typer.Option(_default("repeats"), "--repeats", help="Judge each item k times (seeds seed..seed+k-1)."),
    concurrency: int = typer.Option(_default("concurrency"), "--concurrency", help="Requests in flight per judge."),
    timeout: float = typer.Option(_default("timeout"), "--timeout", help="Seconds per request (default 120; 900 for local)."),
    max_retries: int = typer.Option(_default("max_retries"), "--max-retries", help="Retries on 429/5xx/timeouts/malformed replies."),
    reasks: int = typer.Option(_default("reasks"), "--reasks", help="Re-asks quoting the validation error after an unusable reply."),
    seed: int = typer.Option(_default("seed"), "--seed", help="Judge sampling seed (and the stratified sample's seed)."),
    temperature: float = typer.Option(_default("temperature"), "--temperature", help="Judge sampling temperature."),
    max_tokens: int = typer.Option(_default("max_tokens"), "--max-tokens", help="Token limit of each judge reply."),
    models: list[str] = typer.Option(None, "--model", help="Only these models (repeatable)."),
    datasets: list[str] = typer.Option(None, "--dataset", help="Only these datasets (repeatable)."),
    setting: str = typer.Option(_default("setting"), "--setting", help="Judge this sampling setting (default: the greedy one)."),
    baseline: str = typer.Option(_default("pairwise_baseline"), "--baseline", help="Pairwise rubrics: the model every other is compared with."),
    pairs: str = typer.Option(_default("pairs"), "--pairs",
                              help="Pairwise rubrics: 'baseline' (each model vs --baseline) or 'all' (round-robin)."),
    api_key_env: str = typer.Option(_default("api_key_env"), "--api-key-env", help="Environment variable holding the key of URL::MODEL judges."),
    price: list[str] = typer.Option(None, "--price", help="Judge price MODEL=IN/OUT in USD per 1M tokens (repeatable)."),
    structured: str = typer.Option(_default("structured"), "--structured", help="auto (probe), json_schema, json_object or prompt."),
    max_consecutive_failures: int = typer.Option(
        _default("max_consecutive_failures"), "--max-consecutive-failures",
        help="Stop (resumably) after this many items in a row cannot connect."),
    config_file: Path = typer.Option(
        None, "--config", help="A YAML file of these settings (JudgeConfig fields: judges, rubric, repeats, …); "
        "options given on the command line override it."),
    set_: list[str] = typer.Option(None, "--set", help="With --config: override one setting, key=value (YAML value). Repeatable."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of tables."),
) -> None:
    """Judge a run's responses with LLM judges under a rubric; reruns only judge what is missing."""
    if ctx.invoked_subcommand is not None:
        return
    options = {k: v for k, v in locals().items() if k in _FIELDS}
    config = _config(ctx, options, config_file, list(set_ or []))
    if run is None or not config.judges:
        raise PspoError("pspo-eval judge needs --run RUN_DIR and at least one --judge SPEC",
                        "or a subcommand: `pspo-eval judge import …`, `pspo-eval judge agreement …`")
    from pspo_eval.judge.run import judge_run
    from pspo_eval.store import RunStore

    if not run.is_dir():
        raise PspoError(f"run directory {run} does not exist", "give the --out directory of `pspo-eval evaluate`")
    with RunStore(run).locked("pspo-eval judge"):
        summary = judge_run(run, config)
    if as_json:
        payload = summary.to_dict()
        payload["aggregation"] = summary.aggregation.to_dict()
        typer.echo(json.dumps(payload, indent=2, default=str))
        return
    print_summary(summary)


@judge.command("import")
def import_command(
    input_path: Path = typer.Option(..., "--input", help="JSON Lines of verdicts (format: docs/judging.md)."),
    out: Path = typer.Option(..., "--out", help="The run directory to store them in (created if missing)."),
    dataset: str = typer.Option("imported", "--dataset", help="Dataset name of the items (item_id is the problem id)."),
    rubric: str = typer.Option("imported", "--rubric", help="Rubric name the records are stored under."),
    criterion: str = typer.Option("overall_quality", "--criterion", help="Criterion a pairwise `winner` is stored as."),
    gold: str = typer.Option(None, "--gold", help="Mark this judge (e.g. the human annotators) as the run's gold."),
) -> None:
    """Store human annotations or another tool's verdicts as judgment records; a bad line writes nothing."""
    from pspo_eval.judge.importer import import_verdicts, read_lines
    from pspo_eval.store import RunStore

    lines = read_lines(input_path)  # a bad line stops here, before the run directory is touched
    out.mkdir(parents=True, exist_ok=True)
    with RunStore(out).locked("pspo-eval judge import"):
        summary = import_verdicts(input_path, out, dataset=dataset, rubric=rubric, criterion=criterion, gold=gold,
                                  lines=lines)
    typer.echo(f"imported {summary.lines} line(s) as {summary.records} judgment(s) ({summary.written} new, "
               f"{summary.failures} unparsed) from {len(summary.judges)} judge(s) into {summary.run_dir}")


@judge.command("agreement")
def agreement_command(
    run: Path = typer.Option(..., "--run", help="The run directory."),
    gold: str | None = typer.Option(None, "--gold", help="The gold judge (default: the one `judge import --gold` marked)."),
    criterion: str = typer.Option(None, "--criterion", help="Criterion to compare (default: the gold's first)."),
    json_out: Path = typer.Option(None, "--json", help="Also write the agreement as JSON to this file."),
    tie_failures: bool = typer.Option(False, "--tie-failures", help="Count an unparseable pairwise verdict as a tie."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for the 95% intervals."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
) -> None:
    """How far each judge agrees with the gold judge: accuracy, macro F1, kappa, positional agreement, alpha."""
    from pspo_eval.judge.aggregate import load_judgments
    from pspo_eval.judge.gold import gold_agreement
    from pspo_eval.store import RunStore, atomic_write_json

    if not run.is_dir():
        raise PspoError(f"run directory {run} does not exist", "give a directory holding judgments/")
    gold = gold or RunStore(run).read_manifest().get("judge_gold")
    if not gold:
        raise PspoError("no gold judge given", "pass --gold JUDGE (e.g. the name of the imported human labels)")
    report = gold_agreement(load_judgments(run), gold, criterion=criterion, tie_failures=tie_failures,
                            n_boot=n_boot, seed=seed)
    if json_out is not None:
        atomic_write_json(json_out, report)
    print_agreement(report)


def print_agreement(report: dict) -> None:
    from pspo_eval.console import out_console

    keys = ("accuracy", "f1_macro", "kappa", "positional_agreement", "accuracy_order_mean")
    out_console.print(_table(
        f"Agreement with {report['gold']} on {report['criterion']} [95% bootstrap CI over items]",
        ["judge", "n", "fail", "accuracy", "macro F1", "kappa", "positional agr.", "acc. (order mean)"],
        [[name, str(r["n"]), str(r["failures"]), *(_with_ci(r, key) for key in keys)]
         for name, r in report["judges"].items()],
        left=("judge",)))
    alpha_ci = report.get("alpha_ci") or [None, None]
    out_console.print(f"Krippendorff's alpha over all {len(report['judges']) + 1} raters: {_fmt(report['alpha'])} "
                      f"[{_fmt(alpha_ci[0])}, {_fmt(alpha_ci[1])}] on {report['alpha_n']} items")


def _table(title: str, columns: list[str], rows: list[list[str]], *, left: tuple[str, ...] | None = None) -> Any:
    """A rich table; the ``left`` columns (default: all) are left-aligned, the others right-aligned."""
    from rich.table import Table

    t = Table(title=title)
    for col in columns:
        t.add_column(col, justify="left" if left is None or col in left else "right")
    for row in rows:
        t.add_row(*row)
    return t


def _pivot(title: str, frame: Any, column: str, cell: Any) -> Any:
    """One row per (judge, model), one column per value of ``frame[column]`` (first-seen order), ``cell(row)`` in it."""
    names = list(dict.fromkeys(frame[column]))
    rows = []
    for (judge, model), group in frame.groupby(["judge", "model"], sort=True):
        cells = {r[column]: cell(r) for r in group.to_dict(orient="records")}
        rows.append([judge, model, *(cells.get(n, "–") for n in names)])
    return _table(title, ["judge", "model", *names], rows, left=("judge", "model"))


def _print_pairwise(agg) -> None:  # noqa: ANN001 - Aggregation (imported lazily)
    """Win/tie/flip rates with intervals and the LC win rate, length preference, and panel support."""
    from pspo_eval.console import out_console

    if not agg.pairwise.empty:
        out_console.print(_table(
            "Pairwise (items: repeats combined; disagreeing orders count as ties) [95% bootstrap CI]",
            ["judge", "model", "vs", "criterion", "W", "T", "L", "win rate", "LC win rate", "tie rate", "flip rate"],
            [[r["judge"], r["model"], r["baseline"], r["criterion"], str(r["wins"]), str(r["ties"]), str(r["losses"]),
              _rate(r, "win_rate", "win"), _rate(r, "lc_win_rate", "lc"), _rate(r, "tie_rate", "tie"),
              _rate(r, "flip_rate", "flip")] for r in _rows(agg.pairwise)],
            left=("judge", "model", "vs", "criterion")))
    if not agg.length_bias.empty:
        out_console.print(_table(
            "Longer response preferred, among decisive verdicts [95% bootstrap CI]",
            ["judge", "criterion", "decisive", "longer preferred", "unit"],
            [[r["judge"], r["criterion"], str(r["decisive"]), _ci(r, "rate"), str(r["length_unit"])]
             for r in _rows(agg.length_bias)]))
    if not agg.panel.empty:
        out_console.print(_table(
            "Panels: share of judges backing the panel verdict [95% bootstrap CI]",
            ["panel", "criterion", "items", "support", "unanimous"],
            [[r["judge"], r["criterion"], str(r["n_items"]), _ci(r, "support"), _fmt(r["unanimous"])]
             for r in _rows(agg.panel)]))


def _rows(frame: Any) -> list[dict]:
    return frame.to_dict(orient="records")


def _ci(row: dict, key: str, low: str = "ci_low", high: str = "ci_high") -> str:
    """'0.62 [0.51, 0.73]' from a row's value and its interval columns."""
    return f"{_fmt(row[key])} [{_fmt(row[low])}, {_fmt(row[high])}]"


def _rate(row: dict, key: str, prefix: str) -> str:
    """'0.62 [0.51, 0.73]' from a pairwise row's rate and its ``<prefix>_low`` / ``<prefix>_high``."""
    return _ci(row, key, f"{prefix}_low", f"{prefix}_high")


def _with_ci(row: dict, key: str) -> str:
    """'0.955 [0.920, 0.985]' for a statistic and its interval (three digits: published figures have 0.1%)."""
    if row.get(key) is None:
        return "–"
    low, high = row.get("ci", {}).get(key, [None, None])
    return f"{_fmt(row[key], 3)} [{_fmt(low, 3)}, {_fmt(high, 3)}]"


def _fmt(value: object, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        return f"{value:.{digits}f}"
    return str(value)


def _usage_line(summary) -> str:  # noqa: ANN001 - JudgeSummary (imported lazily)
    usage = summary.usage or {}
    cost = usage.get("cost_usd")
    return (
        f"judged {summary.judged} new item(s), {summary.cached} already judged; "
        f"{usage.get('requests', 0)} requests ({usage.get('retries', 0)} retries, {usage.get('reasks', 0)} re-asks), "
        f"{usage.get('prompt_tokens', 0)}+{usage.get('completion_tokens', 0)} tokens"
        + (f", ${cost:.4f}" if cost is not None else "")
        + (f"; {summary.judgments_per_s:.2f} judgments/s" if summary.judged else "")
    )


def print_summary(summary) -> None:  # noqa: ANN001 - JudgeSummary (imported lazily)
    from pspo_eval.console import out_console
    from pspo_eval.judge.records import OUTCOMES

    agg = summary.aggregation
    out_console.print(_usage_line(summary))
    if summary.strategies:
        out_console.print("structured output: " + ", ".join(f"{j}: {s}" for j, s in summary.strategies.items()))
    out_console.print(_table(
        f"Outcomes ({summary.rubric})", ["judge", "model", "n", *OUTCOMES],
        [[r["judge"], r["model"], str(r["n"]), *(str(r[o]) for o in OUTCOMES)] for r in _rows(agg.outcomes)],
        left=("judge", "model")))
    if not agg.scores.empty:
        out_console.print(_pivot("Scores: mean [95% bootstrap CI] over items", agg.scores, "criterion",
                                 lambda r: f"{r['mean']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"))
    if not agg.flags.empty:
        out_console.print(_pivot("Flag rates (among ok items; injection_attempt: the tool's detector, all items)",
                                 agg.flags, "flag", lambda r: f"{r['rate']:.0%} ({r['count']}/{r['n']})"))
    _print_pairwise(agg)
    _print_consistency(agg)
    if not agg.contradictions.empty:
        out_console.print(
            f"{len(agg.contradictions)} item(s) where the judge's {agg.contradictions['criterion'].iloc[0]} "
            "contradicts the grader (listed in the report; --json for details)"
        )


def _print_consistency(agg) -> None:  # noqa: ANN001 - Aggregation (imported lazily)
    """Bradley–Terry strengths, agreement between judges, and self-consistency over repeats."""
    from pspo_eval.console import out_console

    if not agg.bradley_terry.empty:
        out_console.print(_table(
            "Bradley–Terry strength (log-odds) [95% bootstrap CI]", ["judge", "criterion", "model", "score", "CI"],
            [[r["judge"], r["criterion"], r["model"], _fmt(r["score"]), f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"]
             for r in _rows(agg.bradley_terry)]))
    if not agg.agreement.empty:
        out_console.print(_table(
            "Agreement between judges [95% bootstrap CI]",
            ["criterion", "judges", "n", "kappa", "kappa (quadratic)", "alpha (ordinal)"],
            [[r["criterion"], r["judges"], str(r["n_items"]), _ci(r, "kappa", "kappa_low", "kappa_high"),
              _fmt(r["kappa_quadratic"]), _ci(r, "alpha", "alpha_low", "alpha_high")] for r in _rows(agg.agreement)]))
    if not agg.self_consistency.empty:
        out_console.print(_table(
            "Self-consistency over repeats", ["judge", "criterion", "n", "exact agreement", "mean sd", "alpha (ordinal)"],
            [[r["judge"], r["criterion"], str(r["n_items"]), _fmt(r["agreement"]), _fmt(r["mean_std"]), _fmt(r["alpha"])]
             for r in _rows(agg.self_consistency)]))
