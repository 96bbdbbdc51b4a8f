"""`pspo-eval train`: resolve the config (file, preset, --objective, --set, --max-steps; or the run's
saved config on --resume), then call the training loop. torch is imported only when training starts.
"""

from __future__ import annotations

from pathlib import Path

import typer

from pspo_eval.errors import PspoError


def resolve_run_config(
    out: Path,
    *,
    config: str | None,
    objective: str | None,
    overrides: list[str],
    max_steps: int | None,
    resume: bool,
):
    """The config to train with, and the checkpoint a resume starts from (or None).

    Fresh run: ``--config`` with ``--objective`` / ``--set`` / ``--max-steps`` on top. Resume: the
    latest checkpoint's saved ``config.yaml`` with those options on top (the trainer warns when
    they change it); a ``--config`` given as well must resolve to the same config (same hash), so a
    typo cannot silently change a run.
    """
    from pspo_eval.train.checkpoint import latest_checkpoint
    from pspo_eval.train.config import config_hash, load_config

    sets = list(overrides) + ([f"train.max_steps={max_steps}"] if max_steps is not None else [])
    found = latest_checkpoint(out) if resume else None
    if found is None:
        if config is None:
            hint = "give --config FILE (or a preset such as demo-cpu)"
            if resume:
                raise PspoError(f"--resume: {out} holds no checkpoint to resume from", hint)
            raise PspoError("no config given", hint)
        return load_config(config, overrides=sets, objective=objective), None
    step, path = found
    cfg = load_config(path / "config.yaml", overrides=sets, objective=objective)
    if config is not None:
        given = load_config(config, overrides=sets, objective=objective)
        if config_hash(given) != config_hash(cfg):
            raise PspoError(
                f"--config {config} differs from the config of the run in {out} (checkpoint-{step})",
                "omit --config to continue with the saved config (change settings with --set), or use a new --out",
            )
        cfg = given
    return cfg, path  # the trainer warns when cfg differs from the checkpoint's config


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
    cfg, _ = resolve_run_config(
        out, config=config, objective=objective, overrides=list(set_), max_steps=max_steps, resume=resume
    )
    from pspo_eval.train.loop import train as run_training

    run_training(cfg, out, resume=resume, verbose=not quiet)
