"""`pspo-eval pipeline`: train → evaluate → judge → report from one experiment file, and `pspo-eval demo`.

Every stage reuses the run store, so running the same experiment again after a failure or an edit
redoes only what changed:

- **train**: each objective trains into ``OUT/train/<objective>-<config hash>``; a finished run
  (``final/`` present) is skipped, an interrupted one resumes from its last checkpoint, and an
  edited config trains into a new directory (the old one is kept).
- **evaluate**: one run directory ``OUT/eval`` for the base model and every trained model; samples
  already stored (same key) are not generated again.
- **judge**: verdicts are cached by judge, rubric, prompt and settings; a rerun sends no request
  for what is already judged.
- **report**: rebuilt from the records every time (seconds).

``OUT/pipeline.json`` records each stage's status, times and the error of a failed stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pspo_eval.errors import PspoError
from pspo_eval.evaluate import BackendConfig, SamplingConfig
from pspo_eval.generation.prompts import PromptConfig
from pspo_eval.judge.config import JudgeConfig


class TrainStage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: str | None = Field(None, description="Training config file or preset used for every objective (e.g. demo-cpu).")
    configs: dict[str, str] = Field(default_factory=dict, description="Per-objective config (e.g. the paper presets); overrides `config`.")
    objectives: list[str] = Field(default_factory=lambda: ["pspo", "clip"], description="One run per objective.")
    set: list[str] = Field(default_factory=list, description="--set overrides applied to every run.")
    set_per_objective: dict[str, list[str]] = Field(default_factory=dict, description="Extra overrides per objective.")
    evaluate: Literal["final", "all", "best"] = Field("final", description="Which checkpoints the evaluate stage reads.")


def _default(model: type[BaseModel], name: str) -> Any:
    """A field's default, as written once in the stage's own config model."""
    return model.model_fields[name].default


class EvaluateStage(SamplingConfig):
    """The evaluate stage: what to evaluate, the sampling (the evaluate stage's own ``SamplingConfig``
    fields, written flat: ``temperatures``, ``samples``, ``max_new_tokens``, …), and the backend."""

    model_config = ConfigDict(extra="forbid")

    datasets: list[str] = Field(default_factory=lambda: ["gsm8k", "svamp", "asdiv", "math500"])
    limit: int | None = None
    math500_boxed: bool = _default(PromptConfig, "math500_boxed")
    backend: str = _default(BackendConfig, "name")
    batch_size: int = _default(BackendConfig, "batch_size")
    dtype: str = _default(BackendConfig, "dtype")
    device: str = _default(BackendConfig, "device")

    def sampling(self) -> SamplingConfig:
        return SamplingConfig.model_validate(self.model_dump(include=set(SamplingConfig.model_fields)))

    def backend_config(self) -> BackendConfig:
        return BackendConfig(name=self.backend, batch_size=self.batch_size, dtype=self.dtype, device=self.device)


class JudgeSettings(BaseModel):
    """Judge settings that replace the stage's own when ``auto`` picks a given kind of judge."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int | None = None
    max_tokens: int | None = None
    reasks: int | None = Field(None, ge=0)
    pairwise_rubric: str | None = None


class JudgeStage(JudgeConfig):
    """The judge stage: a :class:`JudgeConfig` (every ``pspo-eval judge`` setting) with the pipeline's
    own defaults (a small stratified sample, the local judge), ``auto`` judges and a pairwise pass."""

    model_config = ConfigDict(extra="forbid")

    judges: list[str] = Field(
        default_factory=lambda: ["local"],
        description="Judge specs; 'auto' is vllm (vLLM's server, structured outputs) where vLLM is "
        "installed, else local (transformers serve).",
    )
    auto: dict[Literal["vllm", "local"], JudgeSettings] = Field(
        default_factory=dict, description="Settings per judge that 'auto' may pick (a CPU server's speed differs)."
    )
    per_dataset: int | None = 2
    concurrency: int = 4
    pairwise_rubric: str | None = Field(
        None, description="Also judge each model against the base model (base_label) with this pairwise rubric.")


class ReportStage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out: str = Field(description="Report directory.")
    baseline: str = "base"
    title: str | None = None


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    out: str = Field(description="Root directory of the experiment's runs.")
    base_model: str = Field(description="The model trained from and evaluated as the baseline.")
    base_label: str = "base"
    train: TrainStage | None = None
    evaluate: EvaluateStage = Field(default_factory=EvaluateStage)
    judge: JudgeStage | None = None
    report: ReportStage | None = None


def resolve_auto_judges(stage: JudgeStage) -> tuple[list[str], dict[str, Any]]:
    """The stage's judges with ``auto`` resolved, and its settings with that judge's ``auto`` entry applied."""
    from pspo_eval.judge.server import best_local_judge

    picked = best_local_judge() if "auto" in stage.judges else None
    judges = [picked if j == "auto" and picked else j for j in stage.judges]
    settings: dict[str, Any] = {
        "concurrency": stage.concurrency, "max_tokens": stage.max_tokens, "reasks": stage.reasks,
        "pairwise_rubric": stage.pairwise_rubric,
    }
    if picked in stage.auto:
        settings.update(stage.auto[picked].model_dump(exclude_none=True))
    return judges, settings


def resolve_experiment_path(spec: str | Path) -> Path:
    """An experiment file path, or the name of a bundled one (``demo``, ``paper-0.5b``).

    ``experiments/demo.yaml`` (the repository path before the data moved into the package) still
    resolves to the bundled file when no such file exists in the current directory.
    """
    from pspo_eval.paths import experiments_dir

    path = Path(spec).expanduser()
    if path.is_file():
        return path
    stem = path.name.removesuffix(".yaml").removesuffix(".yml")
    candidate = experiments_dir() / f"{stem}.yaml"
    if path.parent in (Path("."), Path("experiments")) and candidate.is_file():
        return candidate
    known = ", ".join(sorted(p.stem for p in experiments_dir().glob("*.yaml")))
    raise PspoError(f"experiment file {spec} not found", f"give a path to a YAML file or a bundled name: {known}")


def load_experiment(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Experiment:
    """An experiment file (or a bundled name) with ``--set`` overrides, validated through the one config loader.

    Relative paths in the file (out, report.out) are relative to the current directory.
    """
    from pspo_eval import config

    return config.load_model(config.Schema(Experiment), resolve_experiment_path(path), overrides)


class _State:
    def __init__(self, root: Path):
        from pspo_eval.store import RunStore

        self.store = RunStore(root)
        self.path = root / "pipeline.json"
        import json

        self.data = json.loads(self.path.read_text()) if self.path.exists() else {"stages": {}}

    def set(self, stage: str, **fields) -> None:
        from pspo_eval.store import atomic_write_json

        self.data["stages"].setdefault(stage, {}).update(fields)
        atomic_write_json(self.path, self.data)


def _train_dirs(exp: Experiment, root: Path) -> dict[str, tuple[Path, Any]]:
    """objective -> (run directory, resolved TrainConfig)."""
    from pspo_eval.train.config import config_hash, load_config

    out = {}
    assert exp.train is not None
    for objective in exp.train.objectives:
        sets = [f"model.path={exp.base_model}", *exp.train.set, *exp.train.set_per_objective.get(objective, [])]
        source = exp.train.configs.get(objective) or exp.train.config
        if source is None:
            raise PspoError(f"train: no config for objective '{objective}'", "give train.config or train.configs.<objective>")
        cfg = load_config(source, overrides=sets, objective=objective)
        out[objective] = (root / "train" / f"{objective}-{config_hash(cfg)[:8]}", cfg)
    return out


def run_train_stage(exp: Experiment, root: Path, state: _State, *, verbose: bool) -> dict[str, Path]:
    from pspo_eval.console import log
    from pspo_eval.train.checkpoint import latest_checkpoint
    from pspo_eval.train.loop import train

    dirs = _train_dirs(exp, root)
    for objective, (out, cfg) in dirs.items():
        if (out / "final" / "config.json").exists():
            log(f"train {objective}: up to date ({out})")
            continue
        resume = latest_checkpoint(out) is not None
        log(f"train {objective}: {'resuming' if resume else 'starting'} in {out}")
        state.set("train", status="running", current=objective)
        train(cfg, out, resume=resume, verbose=verbose)
    return {objective: out for objective, (out, _) in dirs.items()}


def _models_to_evaluate(exp: Experiment, trained: dict[str, Path]):
    from pspo_eval.evaluate import ModelSpec, discover_checkpoints

    specs = [ModelSpec(name=exp.base_label, ref=exp.base_model)]
    for objective, out in trained.items():
        which = exp.train.evaluate if exp.train else "final"
        if which == "all":
            for spec in discover_checkpoints(out):
                specs.append(spec.model_copy(update={"name": spec.name.replace(out.name, objective)}))
        elif which == "best" and (out / "best" / "config.json").exists():
            specs.append(ModelSpec(name=objective, ref=str(out / "best")))
        else:
            specs.append(ModelSpec(name=objective, ref=str(out / "final")))
    return specs


def run_evaluate_stage(exp: Experiment, trained: dict[str, Path], eval_dir: Path) -> Any:
    """Evaluate the base model and every trained one into ``eval_dir`` (stored samples are reused)."""
    from pspo_eval.evaluate import EvalConfig, run_evaluate

    ev = exp.evaluate
    config = EvalConfig(
        models=_models_to_evaluate(exp, trained), datasets=ev.datasets, limit=ev.limit, sampling=ev.sampling(),
        prompt=PromptConfig(math500_boxed=ev.math500_boxed), backend=ev.backend_config(),
    )
    return run_evaluate(config, eval_dir, command=f"pipeline {exp.name}: evaluate")


def judge_configs(stage: JudgeStage, baseline: str) -> list[JudgeConfig]:
    """The stage's ``judge_run`` configs: its rubric, then (``pairwise_rubric``) every model against ``baseline``."""
    judges, settings = resolve_auto_judges(stage)
    fields = stage.model_dump(include=set(JudgeConfig.model_fields))
    fields.update(judges=judges, concurrency=settings["concurrency"], max_tokens=settings["max_tokens"],
                  reasks=settings["reasks"])
    first = JudgeConfig(**fields)
    if not settings["pairwise_rubric"]:
        return [first]
    # the pairwise pass asks both orders of every pair, once: the stage's repeats are for its rubric only
    return [first, first.model_copy(update={"rubric": settings["pairwise_rubric"], "pairwise_baseline": baseline,
                                            "repeats": _default(JudgeConfig, "repeats")})]


def run_judge_stage(exp: Experiment, eval_dir: Path) -> list[Any]:
    """Judge the evaluated responses (cached verdicts are reused); one summary per rubric."""
    from pspo_eval.judge.run import judge_run
    from pspo_eval.store import RunStore

    assert exp.judge is not None
    configs = judge_configs(exp.judge, exp.base_label)
    with RunStore(eval_dir).locked(f"pipeline {exp.name}: judge"):
        return [judge_run(eval_dir, config) for config in configs]


def run_report_stage(exp: Experiment, eval_dir: Path, trained: dict[str, Path]) -> Any:
    from pspo_eval.report.build import make_report

    assert exp.report is not None
    rp = exp.report
    return make_report([eval_dir], rp.out, train=[str(p) for p in trained.values()], baseline=rp.baseline,
                       title=rp.title or exp.name)


STAGES = ("train", "evaluate", "judge", "report")


def _run_stage(state: _State, wanted: set[str], name: str, fn: Callable[[], Any]) -> Any:
    """Run one stage if wanted, recording its status, time and error in ``pipeline.json``."""
    from pspo_eval.console import log

    if name not in wanted:
        return None
    t0 = time.time()
    state.set(name, status="running", started=time.strftime("%Y-%m-%dT%H:%M:%S"), error=None)
    try:
        value = fn()
    except BaseException as exc:
        message = exc.one_line() if isinstance(exc, PspoError) else f"{type(exc).__name__}: {exc}"
        state.set(name, status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                  error=message, seconds=round(time.time() - t0, 1))
        if isinstance(exc, PspoError):
            raise PspoError(f"pipeline stage '{name}' failed: {exc.message}",
                            exc.hint or "fix the cause and rerun the same command: finished work is reused") from exc
        raise
    state.set(name, status="done", seconds=round(time.time() - t0, 1))
    log(f"stage {name}: done in {time.time() - t0:.0f}s")
    return value


def run_pipeline(
    path: str | Path, *, stages: list[str] | None = None, verbose: bool = True, overrides: list[str] | tuple[str, ...] = ()
) -> dict:
    """Run an experiment file's stages in order; returns {eval_run, report, results}."""
    from pspo_eval.console import log

    exp = load_experiment(path, overrides)
    root = Path(exp.out)
    root.mkdir(parents=True, exist_ok=True)
    state = _State(root)
    wanted = set(stages or STAGES)

    trained: dict[str, Path] = {}
    if exp.train is not None:
        if "train" in wanted:
            trained = _run_stage(state, wanted, "train", lambda: run_train_stage(exp, root, state, verbose=verbose)) or {}
        else:
            trained = {o: d for o, (d, _) in _train_dirs(exp, root).items()}
    eval_dir = root / "eval"
    results = _run_stage(state, wanted, "evaluate", lambda: run_evaluate_stage(exp, trained, eval_dir))
    out: dict = {"eval_run": eval_dir, "results": results}
    if exp.judge is not None:
        _run_stage(state, wanted, "judge", lambda: run_judge_stage(exp, eval_dir))
    if exp.report is not None:
        result = _run_stage(state, wanted, "report", lambda: run_report_stage(exp, eval_dir, trained))
        if result is not None:
            out["report"] = result
    log(f"pipeline {exp.name}: finished ({root})")
    return out
