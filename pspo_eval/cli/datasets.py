"""`pspo-eval datasets …`: list the benchmarks, verify their checksums, print their problems.

Thin on purpose: each command parses options, calls :mod:`pspo_eval.data`, prints. Problems go to
stdout as JSON lines (machine-readable); tables and messages are for people.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Benchmarks: list them, verify their checksums, show their problems.",
)


@app.command("list")
def list_command() -> None:
    """List the registered benchmarks: name, rows, license, and the hub dataset each maps to.

    Commands load the bundled file (pspo_eval/resources/datasets/) by default; with --source hub (show, and the
    evaluation commands) the same benchmark comes from the Hugging Face hub instead (SVAMP: the
    hub's 300-problem test split, not all 1,000).
    """
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    from pspo_eval.console import out_console
    from pspo_eval.data import list_datasets

    table = Table(title="pspo-eval benchmarks")
    table.add_column("name")
    table.add_column("rows", justify="right")
    table.add_column("license")
    table.add_column("file")
    table.add_column("hub (source=hub)")
    for spec in list_datasets():
        hub = (
            spec.hub_id
            + (f":{spec.hub_config}" if spec.hub_config else "")
            + f" ({spec.hub_split}, {spec.hub_size:,})"
        )
        table.add_row(spec.name, f"{spec.size:,}", spec.license, spec.file, hub)
    # In a terminal rich fits the table to its width; piped, print it whole (no 80-column ellipses).
    console = out_console
    if not console.is_terminal:
        width = Measurement.get(console, console.options.update_width(1000), table).maximum
        console = Console(highlight=False, width=max(width, console.width))
    console.print(table)
    console.print(
        "ASDiv is CC BY-NC 4.0: non-commercial use only, with attribution (see pspo-eval's bundled datasets/README.md)."
    )


@app.command("verify")
def verify_command() -> None:
    """Check every bundled file against the sha256 in the bundled MANIFEST.json (exit 1 if any differs)."""
    from pspo_eval.console import err_console
    from pspo_eval.data import verify

    bad = []
    for check in verify():
        if check.ok:
            status = "ok"
        elif check.actual_sha is None:
            status = "MISSING"
        elif not check.expected_sha:
            status = "NOT IN MANIFEST"
        else:
            status = "DIFFERS"
        shown = check.actual_sha or "-"
        typer.echo(f"{status:<8} {check.file:<20} {shown}")
        if not check.ok:
            expected = check.expected_sha or "(not listed)"
            typer.echo(f"         expected {expected}")
            bad.append(check.file)
    if bad:
        err_console.print(
            f"{len(bad)} file(s) do not match MANIFEST.json: {', '.join(bad)}; rebuild them with `make datasets`",
            markup=False,
        )
        raise typer.Exit(code=1)


@app.command("show")
def show_command(
    name: str = typer.Argument(
        ...,
        metavar="NAME",
        help="Benchmark name (gsm8k, gsm8k_train, svamp, asdiv, math500) or a .jsonl/.json file.",
    ),
    limit: int = typer.Option(
        5, "--limit", "-n", min=0, metavar="N", help="How many problems to print (0: all)."
    ),
    ids: list[str] | None = typer.Option(
        None, "--id", metavar="ID", help="Print only the problem with this id (repeatable)."
    ),
    source: str = typer.Option(
        "local", "--source", metavar="SOURCE", help="'local' (bundled files) or 'hub' (Hugging Face hub)."
    ),
) -> None:
    """Print problems as JSON lines (one Problem per line), e.g. to inspect an item or check a file.

    A file path instead of a name validates your own dataset file: any malformed line is reported
    with its line number.
    """
    from pspo_eval.data import load_dataset, load_file
    from pspo_eval.data.registry import canonical_name
    from pspo_eval.errors import PspoError

    path = Path(name)
    if canonical_name(name) is None and (path.suffix.lower() in (".jsonl", ".json") or path.is_file()):
        problems = load_file(path)
    else:
        problems = load_dataset(name, source=source)
    if ids:
        by_id = {problem.id: problem for problem in problems}
        missing = [i for i in ids if i not in by_id]
        if missing:
            sample = ", ".join(problem.id for problem in problems[:3])
            raise PspoError(
                f"no problem with id {', '.join(missing)} in {name}", f"ids look like: {sample}, …"
            )
        problems = [by_id[i] for i in ids]
    elif limit:
        problems = problems[:limit]
    for problem in problems:
        typer.echo(json.dumps(problem.model_dump(mode="json"), ensure_ascii=False))
