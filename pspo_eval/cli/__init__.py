"""The `pspo-eval` command line: parse options, call a stage, print. Nothing else lives here.

One thin module per command group (``pspo_eval/cli/<group>.py``), registered in :func:`_register`;
this module assembles them into one Typer app and turns user errors (:class:`PspoError`) into one line on stderr
and exit code 2 (a traceback only with ``--debug`` or ``PSPO_EVAL_DEBUG=1``).
"""

from __future__ import annotations

import os
import sys

import typer

from pspo_eval import __version__
from pspo_eval.errors import PspoError


class _Group(typer.core.TyperGroup):
    """Turns a user error into one line on stderr and exit code 2, wherever the app is invoked from
    (the console script, ``python -m pspo_eval``, or ``typer.testing.CliRunner`` in tests)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PspoError as exc:
            if os.environ.get("PSPO_EVAL_DEBUG") == "1":
                raise
            typer.echo(f"error: {exc.one_line()}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            typer.echo("interrupted: rerun the same command to resume", err=True)
            sys.exit(130)


app = typer.Typer(
    cls=_Group,
    name="pspo-eval",
    help="Train (GR-PSPO / GRPO-clip / GRPO-noclip), evaluate, judge and report math LMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pspo-eval {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Train (GR-PSPO / GRPO-clip / GRPO-noclip), evaluate, judge and report math LMs."""
    if debug:
        os.environ["PSPO_EVAL_DEBUG"] = "1"


def _register() -> None:
    """Every command group, in one place (each module is a thin layer over its stage)."""
    from pspo_eval.cli import datasets, evaluate, grade, judge, models, pipeline, report, train

    app.add_typer(models.app, name="models", help="The bundled demo model and model references.")
    app.add_typer(datasets.app, name="datasets", help="Benchmarks: list, verify checksums, show items.")
    app.command("grade")(grade.grade)
    app.command("evaluate")(evaluate.evaluate)
    app.command("merge")(evaluate.merge)
    app.command("train")(train.train)
    app.add_typer(judge.judge, name="judge")
    app.command("report")(report.report)
    app.command("regress")(report.regress)
    app.add_typer(report.baseline_app, name="baseline", help="Save a baseline for `regress`.")
    app.command("pipeline")(pipeline.pipeline)
    app.command("demo")(pipeline.demo)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `pspo-eval` console script (usage errors: exit 2, user errors: exit 2, Ctrl-C: 130)."""
    import signal

    def _terminated(signum, frame):  # SIGTERM (CI timeouts, `kill`): stop as Ctrl-C does, cleaning up
        raise KeyboardInterrupt

    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminated)
    command = typer.main.get_command(app)
    command.main(args=argv, prog_name="pspo-eval", standalone_mode=True)
