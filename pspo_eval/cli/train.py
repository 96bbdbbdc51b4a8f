"""`pspo-eval train`: resolve the config (file, preset, --objective, --set, --max-steps; or the run's
saved config on --resume), then call the training loop. torch is imported only when training starts.
"""

from __future__ import annotations

from pathlib import Path

import typer


def train(
    config: str = typer.Option(None, "--config", "-c", help="YAML config file or preset name (e.g. demo-cpu, paper/qwen2.5-0.5b-pspo)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory: checkpoint-N/, final/, best/, metrics.jsonl, config.yaml."),
    objective: str = typer.Option(None, "--objective", help="Replace objective.name: pspo | clip | noclip (or gspo | cispo | sapo)."),
    set_: list[str] = typer.Option([], "--set", help="Override one config field, key.sub=value (YAML value). Repeatable."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in --out (its saved config)."),
    max_steps: int = typer.Option(None, "--max-steps", min=1, help="Shorthand for --set train.max_steps=N."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines or summary table."),
) -> None:
    """Train a policy with GR-PSPO (or GRPO-clip / GRPO-noclip) on GSM8K.

    Works under `accelerate launch -m pspo_eval train ...` for several GPUs.
    """
    from pspo_eval.train.checkpoint import resolve_run_config

    cfg, _ = resolve_run_config(
        out, config=config, objective=objective, overrides=list(set_), max_steps=max_steps, resume=resume
    )
    from pspo_eval.train.loop import train as run_training

    run_training(cfg, out, resume=resume, verbose=not quiet)
