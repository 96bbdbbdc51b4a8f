"""One place for terminal output: messages to stderr (so stdout stays machine-readable), progress bars."""

from __future__ import annotations

import os
import sys

from rich.console import Console

err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False, soft_wrap=True)


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
