"""One place for terminal output: messages to stderr (so stdout stays machine-readable), progress bars."""

from __future__ import annotations

import os
import sys

from rich.console import Console

# Tables printed to a pipe or a CI log keep their full width instead of rich's 80-column default.
_WIDE = None if os.environ.get("COLUMNS") else 200
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else _WIDE)
out_console = Console(highlight=False, width=None if sys.stdout.isatty() else _WIDE)


def quiet() -> bool:
    return os.environ.get("PSPO_EVAL_QUIET", "") not in {"", "0"}


def log(message: str) -> None:
    """An informational line on stderr."""
    if not quiet():
        err_console.print(message, markup=False)


def warn(message: str) -> None:
    err_console.print(f"warning: {message}", style="yellow", markup=False)


def progress(transient: bool = False):
    """A rich progress bar with ETA (disabled when stderr is not a terminal and PSPO_EVAL_PROGRESS is unset)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    enabled = sys.stderr.isatty() or os.environ.get("PSPO_EVAL_PROGRESS") == "1"
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
        disable=not enabled or quiet(),
    )
