"""``pspo-eval judge``: parse options, hold the run lock, call :func:`judge_run`, print the aggregation.

Heavy imports (pandas, httpx, the stage itself) happen inside the command so ``pspo-eval --help``
stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pspo_eval.errors import PspoError


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


def judge(
    run: Path = typer.Option(..., "--run", help="The run directory (the --out of `pspo-eval evaluate`)."),
    judges: list[str] = typer.Option(
        ..., "--judge",
        help="Judge spec, repeatable: 'local' (transformers serve + demo model), 'openai:MODEL', or 'URL::MODEL'.",
    ),
    rubric: str = typer.Option("math_response_quality", "--rubric", help="Rubric file, or a bundled rubric's name (math_response_quality, math_pairwise, math_response_quality_reference)."),
    per_dataset: int = typer.Option(None, "--per-dataset", help="Judge a seeded stratified sample of N problems per dataset."),
    repeats: int = typer.Option(1, "--repeats", help="Judge each item k times (seeds seed..seed+k-1)."),
    concurrency: int = typer.Option(8, "--concurrency", help="Requests in flight per judge."),
    timeout: float = typer.Option(None, "--timeout", help="Seconds per request (default 120; 900 for local)."),
    max_retries: int = typer.Option(4, "--max-retries", help="Retries on 429/5xx/timeouts/malformed replies."),
    reasks: int = typer.Option(2, "--reasks", help="Re-asks quoting the validation error after an unusable reply."),
    seed: int = typer.Option(0, "--seed", help="Judge sampling seed (and the stratified sample's seed)."),
    temperature: float = typer.Option(0.0, "--temperature", help="Judge sampling temperature."),
    max_tokens: int = typer.Option(512, "--max-tokens", help="Token limit of each judge reply."),
    models: list[str] = typer.Option(None, "--model", help="Only these models (repeatable)."),
    datasets: list[str] = typer.Option(None, "--dataset", help="Only these datasets (repeatable)."),
    setting: str = typer.Option(None, "--setting", help="Judge this sampling setting (default: the greedy one)."),
    baseline: str = typer.Option(None, "--baseline", help="Pairwise rubrics: the model every other is compared with."),
    api_key_env: str = typer.Option(None, "--api-key-env", help="Environment variable holding the key of URL::MODEL judges."),
    price: list[str] = typer.Option(None, "--price", help="Judge price MODEL=IN/OUT in USD per 1M tokens (repeatable)."),
    structured: str = typer.Option("auto", "--structured", help="auto (probe), json_schema, json_object or prompt."),
    max_consecutive_failures: int = typer.Option(
        5, "--max-consecutive-failures", help="Stop (resumably) after this many items in a row cannot connect."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of tables."),
) -> None:
    """Judge a run's responses with LLM judges under a rubric; reruns only judge what is missing."""
    from pspo_eval.judge.run import judge_run
    from pspo_eval.store import RunStore

    if not run.is_dir():
        raise PspoError(f"run directory {run} does not exist", "give the --out directory of `pspo-eval evaluate`")
    with RunStore(run).locked("pspo-eval judge"):
        summary = judge_run(
            run, judges, rubric, per_dataset=per_dataset, repeats=repeats, concurrency=concurrency, timeout=timeout,
            max_retries=max_retries, reasks=reasks, seed=seed, temperature=temperature, max_tokens=max_tokens,
            models=models or None, datasets=datasets or None, setting=setting, pairwise_baseline=baseline,
            api_key_env=api_key_env, prices=_parse_prices(price or []), structured=structured,
            max_consecutive_failures=max_consecutive_failures,
        )
    if as_json:
        payload = summary.to_dict()
        payload["aggregation"] = summary.aggregation.to_dict()
        typer.echo(json.dumps(payload, indent=2, default=str))
        return
    print_summary(summary)


def _fmt(value: object, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        return f"{value:.{digits}f}"
    return str(value)


def print_summary(summary) -> None:  # noqa: ANN001 - JudgeSummary (imported lazily)
    from rich.table import Table

    from pspo_eval.console import out_console
    from pspo_eval.judge.records import OUTCOMES

    agg = summary.aggregation
    usage = summary.usage or {}
    cost = usage.get("cost_usd")
    out_console.print(
        f"judged {summary.judged} new item(s), {summary.cached} already judged; "
        f"{usage.get('requests', 0)} requests ({usage.get('retries', 0)} retries, {usage.get('reasks', 0)} re-asks), "
        f"{usage.get('prompt_tokens', 0)}+{usage.get('completion_tokens', 0)} tokens"
        + (f", ${cost:.4f}" if cost is not None else "")
        + (f"; {summary.judgments_per_s:.2f} judgments/s" if summary.judged else "")
    )
    if summary.strategies:
        out_console.print("structured output: " + ", ".join(f"{j}: {s}" for j, s in summary.strategies.items()))

    t = Table(title=f"Outcomes ({summary.rubric})")
    for col in ("judge", "model", "n", *OUTCOMES):
        t.add_column(col, justify="right" if col not in ("judge", "model") else "left")
    for row in agg.outcomes.to_dict(orient="records"):
        t.add_row(row["judge"], row["model"], str(row["n"]), *(str(row[o]) for o in OUTCOMES))
    out_console.print(t)

    if not agg.scores.empty:
        t = Table(title="Scores: mean [95% bootstrap CI] over items")
        criteria = list(dict.fromkeys(agg.scores["criterion"]))
        t.add_column("judge")
        t.add_column("model")
        for c in criteria:
            t.add_column(c, justify="right")
        for (judge, model), group in agg.scores.groupby(["judge", "model"], sort=True):
            cells = {r["criterion"]: f"{r['mean']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
                     for r in group.to_dict(orient="records")}
            t.add_row(judge, model, *(cells.get(c, "–") for c in criteria))
        out_console.print(t)

    if not agg.flags.empty:
        t = Table(title="Flag rates (among ok items; injection_attempt: the tool's detector, all items)")
        flags = list(dict.fromkeys(agg.flags["flag"]))
        t.add_column("judge")
        t.add_column("model")
        for f in flags:
            t.add_column(f, justify="right")
        for (judge, model), group in agg.flags.groupby(["judge", "model"], sort=True):
            cells = {r["flag"]: f"{r['rate']:.0%} ({r['count']}/{r['n']})" for r in group.to_dict(orient="records")}
            t.add_row(judge, model, *(cells.get(f, "–") for f in flags))
        out_console.print(t)

    if not agg.pairwise.empty:
        t = Table(title="Pairwise vs baseline (win/tie/loss; disagreeing orders count as ties)")
        for col in ("judge", "model", "baseline", "criterion", "W", "T", "L", "win rate", "flip rate"):
            t.add_column(col, justify="right" if len(col) <= 9 and col not in ("judge", "model", "baseline") else "left")
        for r in agg.pairwise.to_dict(orient="records"):
            t.add_row(r["judge"], r["model"], r["baseline"], r["criterion"], str(r["wins"]), str(r["ties"]),
                      str(r["losses"]), _fmt(r["win_rate"]), _fmt(r["flip_rate"]))
        out_console.print(t)
    if not agg.bradley_terry.empty:
        t = Table(title="Bradley–Terry strength (log-odds) [95% bootstrap CI]")
        for col in ("judge", "criterion", "model", "score", "CI"):
            t.add_column(col)
        for r in agg.bradley_terry.to_dict(orient="records"):
            t.add_row(r["judge"], r["criterion"], r["model"], _fmt(r["score"]),
                      f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]")
        out_console.print(t)
    if not agg.agreement.empty:
        t = Table(title="Agreement between judges")
        for col in ("criterion", "judges", "n", "kappa", "kappa (quadratic)", "alpha (ordinal)"):
            t.add_column(col)
        for r in agg.agreement.to_dict(orient="records"):
            t.add_row(r["criterion"], r["judges"], str(r["n_items"]), _fmt(r["kappa"]), _fmt(r["kappa_quadratic"]),
                      _fmt(r["alpha"]))
        out_console.print(t)
    if not agg.self_consistency.empty:
        t = Table(title="Self-consistency over repeats")
        for col in ("judge", "criterion", "n", "exact agreement", "mean sd", "alpha (ordinal)"):
            t.add_column(col)
        for r in agg.self_consistency.to_dict(orient="records"):
            t.add_row(r["judge"], r["criterion"], str(r["n_items"]), _fmt(r["agreement"]), _fmt(r["mean_std"]),
                      _fmt(r["alpha"]))
        out_console.print(t)
    if not agg.contradictions.empty:
        out_console.print(
            f"{len(agg.contradictions)} item(s) where the judge's {agg.contradictions['criterion'].iloc[0]} "
            "contradicts the grader (listed in the report; --json for details)"
        )
