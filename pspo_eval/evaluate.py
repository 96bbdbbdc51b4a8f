"""The evaluate stage: checkpoints × datasets × sampling settings → graded Sample records.

Records go to ``RUN_DIR/samples/<model>/<dataset>/<setting>.jsonl`` one batch at a time, so a killed
run loses at most the batch in flight; rerunning the same command skips every sample whose key is
already stored (and loads no model when nothing is left to do). A key hashes everything that
determines a sample (model fingerprint, problem, prompt, sampling, seed, sample index, backend), so
a changed setting produces new records, never mixed with old ones.
"""

from __future__ import annotations

import json
import platform
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pspo_eval.errors import PspoError
from pspo_eval.generation.base import GenRequest
from pspo_eval.generation.prompts import PromptConfig, render_messages
from pspo_eval.records import Problem, Sample
from pspo_eval.store import RunStore, stable_hash

if TYPE_CHECKING:
    from pspo_eval.metrics import EvalResults, GroupSummary


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    ref: str
    step: int | None = None


class SamplingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperatures: list[float] = Field(default_factory=lambda: [0.0])
    samples: int = Field(1, ge=1, description="Samples per problem at temperatures > 0 (greedy draws one).")
    top_p: float = 1.0
    max_new_tokens: int = Field(128, ge=1)
    max_new_tokens_per_dataset: dict[str, int] = Field(default_factory=dict)
    seed: int = 0

    @field_validator("temperatures")
    @classmethod
    def _temps(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("at least one temperature is needed")
        for t in v:
            if t < 0:
                raise ValueError(f"temperature must be >= 0, got {t}")
        return sorted(set(v), key=v.index)

    @field_validator("top_p")
    @classmethod
    def _top_p(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {v}")
        return v

    def max_new_for(self, dataset: str) -> int:
        return self.max_new_tokens_per_dataset.get(dataset, self.max_new_tokens)

    def n_samples(self, temperature: float) -> int:
        return 1 if temperature == 0 else self.samples


class BackendConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["hf", "vllm", "openai"] = "hf"  # generation.registry.BACKENDS
    batch_size: int = Field(64, ge=1)
    dtype: str = "auto"
    device: str = "auto"
    decoder: Literal["auto", "fast", "generate"] = "auto"
    trust_remote_code: bool = False
    threads: int | None = None
    # openai
    base_url: str | None = None
    api_model: str | None = None
    api_key_env: str | None = None
    concurrency: int = Field(8, ge=1)
    timeout: float = Field(120.0, gt=0)
    max_retries: int = Field(6, ge=0)
    # vllm
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int | None = None

    def identity(self) -> dict:
        """What about the backend changes its outputs (part of every sample key)."""
        if self.name == "openai":
            return {"backend": "openai", "base_url": self.base_url, "api_model": self.api_model}
        # The resolved dtype ("auto" means bf16 on one machine and fp32 on another): it decides outputs.
        if self.name == "vllm":
            from pspo_eval.generation.vllm_engine import vllm_dtype

            return {"backend": "vllm", "dtype": vllm_dtype(self.dtype)}
        from pspo_eval.generation.hf import default_device, resolve_dtype

        device = default_device() if self.device == "auto" else self.device
        dtype = str(resolve_dtype(self.dtype, device)).replace("torch.", "")
        return {"backend": "hf", "dtype": dtype, "device": device.split(":")[0]}

    def options(self) -> dict:
        data = self.model_dump(exclude={"name"})
        return {k: v for k, v in data.items() if v is not None}


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelSpec]
    datasets: list[str]
    source: str = "local"
    dataset_file: str | None = None
    limit: int | None = Field(None, ge=1)
    shard: tuple[int, int] | None = None  # (i, n), 1-based
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig())
    prompt: PromptConfig = Field(default_factory=lambda: PromptConfig())
    backend: BackendConfig = Field(default_factory=lambda: BackendConfig())

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        if not self.models:
            raise ValueError("no model given (use --model or --checkpoints)")
        names = [m.name for m in self.models]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate model names {sorted(dup)}: label them with NAME=PATH")
        if self.shard is not None:
            i, n = self.shard
            if n < 1 or not 1 <= i <= n:
                raise ValueError(f"shard {i}/{n} is invalid: use i/n with 1 <= i <= n")
        return self


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise PspoError(f"--shard '{text}' is not of the form i/n", "e.g. --shard 1/4 … --shard 4/4")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= i <= n:
        raise PspoError(f"--shard {i}/{n} is out of range", "i must be between 1 and n, e.g. 1/2 and 2/2")
    return i, n


def parse_model_specs(values: list[str]) -> list[ModelSpec]:
    """``NAME=PATH`` or ``PATH`` (the name is then derived from the path)."""
    from pspo_eval.models import model_label

    specs = []
    for value in values:
        name, sep, ref = value.partition("=")
        if not sep or "/" in name or not name or Path(value).exists():
            name, ref = model_label(value), value
        specs.append(ModelSpec(name=name.strip(), ref=ref.strip(), step=_step_of(ref)))
    return specs


def _step_of(ref: str) -> int | None:
    m = re.search(r"checkpoint-(\d+)/?$", ref)
    return int(m.group(1)) if m else None


def discover_checkpoints(directory: str | Path) -> list[ModelSpec]:
    """Every ``checkpoint-N`` in a training output directory (in step order), then its final model."""
    from pspo_eval.models import is_model_dir

    root = Path(directory)
    if not root.is_dir():
        raise PspoError(f"--checkpoints {root}: no such directory", "give the training output directory (--out of train)")
    found = []
    for child in root.iterdir():
        m = re.fullmatch(r"checkpoint-(\d+)", child.name)
        if m and is_model_dir(child):
            found.append((int(m.group(1)), child))
    found.sort()
    specs = [ModelSpec(name=f"{root.name}@{step}", ref=str(path), step=step) for step, path in found]
    final = root / "final"
    if is_model_dir(final):
        specs.append(ModelSpec(name=f"{root.name}@final", ref=str(final), step=None))
    elif is_model_dir(root):
        specs.append(ModelSpec(name=f"{root.name}@final", ref=str(root), step=None))
    if not specs:
        raise PspoError(f"--checkpoints {root}: no checkpoint-N directories with config.json", "check the path")
    return specs


def model_fingerprint(ref: str) -> str:
    """Identity of a model's weights: config + weight file sizes and mtimes (cheap, changes on retrain)."""
    from pspo_eval.models import resolve_model

    resolved = resolve_model(ref)
    path = Path(resolved)
    if not path.is_dir():
        return resolved  # hub id
    parts = [(path / "config.json").read_text(encoding="utf-8")]
    for f in sorted(path.glob("*.safetensors")):
        st = f.stat()
        parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return f"{path.name}:{stable_hash(parts, 16)}"


def setting_id(temperature: float, top_p: float, max_new: int, extra_hash: str) -> str:
    return f"t{temperature:g}-p{top_p:g}-m{max_new}-{extra_hash}"


def sample_seed(seed: int, dataset: str, problem_id: str, index: int) -> int:
    return int(stable_hash([seed, dataset, problem_id, index], 12), 16) % (2**31 - 1)


def load_problems(config: EvalConfig) -> dict[str, list[Problem]]:
    from pspo_eval.data import load_dataset, load_file

    out: dict[str, list[Problem]] = {}
    for name in config.datasets:
        if config.dataset_file and name == Path(config.dataset_file).stem:
            problems = load_file(config.dataset_file, name=name)
            problems = problems[: config.limit] if config.limit else problems
        else:
            problems = load_dataset(name, source=config.source, limit=config.limit)
        if config.shard:
            i, n = config.shard
            problems = problems[i - 1 :: n]
        out[name] = problems
    return out


def _versions() -> dict:
    import importlib.metadata as md

    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("pspo-eval", "torch", "transformers", "math-verify", "openai", "vllm"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return versions


def git_revision() -> str | None:
    import subprocess

    from pspo_eval.paths import source_checkout

    checkout = source_checkout()
    if checkout is None:
        return None
    try:
        rev = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


class _Work:
    """Pending samples of one (model, dataset, setting)."""

    def __init__(self, model: ModelSpec, dataset: str, temperature: float, setting: str, shard_parts: tuple[str, ...]):
        self.model = model
        self.dataset = dataset
        self.temperature = temperature
        self.setting = setting
        self.shard_parts = shard_parts
        self.items: list[tuple[Problem, int, str, int]] = []  # (problem, sample_index, key, seed)
        self.failed = 0
        self.last_error = ""


def plan(config: EvalConfig, store: RunStore, problems: dict[str, list[Problem]]) -> tuple[list[_Work], int, int]:
    """Every (model, dataset, setting) with the samples still missing from the store."""
    backend_id = config.backend.identity()
    prompt_hash = stable_hash(config.prompt.model_dump(mode="json"), 8)
    works: list[_Work] = []
    total = done = 0
    for model in config.models:
        # A served model is identified by the backend identity (URL + model name) in every key.
        fingerprint = f"api:{model.ref}" if config.backend.name == "openai" else model_fingerprint(model.ref)
        for dataset, items in problems.items():
            max_new = config.sampling.max_new_for(dataset)
            for temperature in config.sampling.temperatures:
                top_p = config.sampling.top_p if temperature > 0 else 1.0
                extra = stable_hash([prompt_hash, backend_id, config.sampling.seed], 6)
                setting = setting_id(temperature, top_p, max_new, extra)
                parts = ("samples", model.name, dataset, setting)
                existing = store.shard(*parts).keys()
                work = _Work(model, dataset, temperature, setting, parts)
                for problem in items:
                    for index in range(config.sampling.n_samples(temperature)):
                        seed = sample_seed(config.sampling.seed, dataset, problem.id, index)
                        key = stable_hash(
                            [fingerprint, dataset, problem.id, stable_hash(problem.question, 12), prompt_hash,
                             temperature, top_p, max_new, seed, index, backend_id],
                            24,
                        )
                        total += 1
                        if key in existing:
                            done += 1
                        else:
                            work.items.append((problem, index, key, seed))
                works.append(work)
    return works, total, done


def run_evaluate(
    config: EvalConfig,
    run_dir: str | Path,
    *,
    command: str = "evaluate",
    on_progress: Callable[[str, int, int], None] | None = None,
    backend_factory: Callable[[ModelSpec], Any] | None = None,
) -> EvalResults:
    """Generate and grade every missing sample, then write ``results.json``; returns the results."""
    from pspo_eval.console import log
    from pspo_eval.metrics import compute_results
    from pspo_eval.store import atomic_write_json

    store = RunStore(run_dir)
    with store.locked(command):
        problems = load_problems(config)
        works, total, done = plan(config, store, problems)
        manifest = _start_manifest(config, store, problems, command, pending=total - done, total=total)
        log(f"{total} samples planned, {done} already in {store.root}, {total - done} to generate")
        _generate_all(config, works, store, manifest, on_progress, backend_factory)
        results = compute_results(store)
        atomic_write_json(store.root / "results.json", results.to_json())
        failed_works = [w for w in works if w.failed]
        if failed_works:
            n = sum(w.failed for w in failed_works)
            raise PspoError(
                f"{n} samples could not be generated (last error: {failed_works[-1].last_error}); "
                f"results.json covers the {sum(r.samples for r in results.rows)} stored samples",
                "rerun the same command to retry the missing ones",
            )
        return results


def _dataset_checksums(config: EvalConfig, problems: dict[str, list[Problem]]) -> dict[str, str | None]:
    """sha256 of each bundled dataset (``source=…`` for the hub, the file's own hash for --dataset-file)."""
    import hashlib

    from pspo_eval.data import dataset_checksum

    own_file = Path(config.dataset_file).stem if config.dataset_file else None
    checksums: dict[str, str | None] = {}
    for name in problems:
        try:
            checksums[name] = dataset_checksum(name) if config.source == "local" and name != own_file \
                else f"source={config.source}"
        except PspoError:
            checksums[name] = None
    if config.dataset_file:
        checksums[Path(config.dataset_file).stem] = hashlib.sha256(Path(config.dataset_file).read_bytes()).hexdigest()
    return checksums


def _start_manifest(config: EvalConfig, store: RunStore, problems: dict[str, list[Problem]], command: str, *,
                    pending: int, total: int) -> dict:
    """Record the config, versions and checksums, and open this command's history entry (status running)."""
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    manifest = store.read_manifest()
    checksums = _dataset_checksums(config, problems)
    cfg_json = config.model_dump(mode="json")
    config_hash = stable_hash({k: v for k, v in cfg_json.items() if k not in {"shard"}}, 16)
    manifest.setdefault("created", started)
    manifest.update(
        {
            "kind": "pspo-eval run",
            "config": cfg_json,
            "config_hash": config_hash,
            "system_prompt": config.prompt.system,
            "versions": _versions(),
            "git_revision": git_revision(),
            "dataset_checksums": {**manifest.get("dataset_checksums", {}), **checksums},
        }
    )
    history = manifest.setdefault("history", [])
    history.append({"command": command, "config_hash": config_hash, "started": started, "status": "running",
                    "pending_at_start": pending, "total": total})
    store.write_manifest(manifest)
    return manifest


def _generate_all(config: EvalConfig, works: list[_Work], store: RunStore, manifest: dict,
                  on_progress: Callable[[str, int, int], None] | None,
                  backend_factory: Callable[[ModelSpec], Any] | None) -> None:
    """Every model's pending work, one backend at a time; the history entry says how it ended."""
    entry = manifest["history"][-1]
    backend_info: dict = manifest.get("backends", {})
    try:
        by_model: dict[str, list[_Work]] = {}
        for work in works:
            if work.items:
                by_model.setdefault(work.model.name, []).append(work)
        for model in config.models:
            pending = by_model.get(model.name)
            if pending:
                _generate_model(config, model, pending, store, backend_info, on_progress, backend_factory)
        failed = sum(w.failed for w in works)
        entry["status"] = "complete" if not failed else "incomplete"
        entry["failed_requests"] = failed
    except KeyboardInterrupt:
        entry["status"] = "interrupted"
        raise
    except BaseException:
        entry["status"] = "failed"
        raise
    finally:
        entry["ended"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        manifest["backends"] = backend_info
        manifest["ended"] = entry["ended"]
        store.write_manifest(manifest)


def _generate_model(config: EvalConfig, model: ModelSpec, pending: list[_Work], store: RunStore, backend_info: dict,
                    on_progress: Callable[[str, int, int], None] | None,
                    backend_factory: Callable[[ModelSpec], Any] | None) -> None:
    """Load one model's backend and generate its pending (dataset, setting) work with a progress bar."""
    from pspo_eval.console import progress
    from pspo_eval.generation.registry import make_backend
    from pspo_eval.grading import grade

    backend = backend_factory(model) if backend_factory else make_backend(
        config.backend.name, model.ref, **config.backend.options()
    )
    backend_info[model.name] = backend.describe()
    try:
        with progress() as bar:
            for work in pending:
                desc = f"{model.name} · {work.dataset} · T={work.temperature:g}"
                task = bar.add_task(desc, total=len(work.items))
                _generate_work(config, work, backend, store, grade, lambda n, t=task: bar.advance(t, n))
                if on_progress:
                    on_progress(desc, len(work.items), len(work.items))
    finally:
        backend.close()


LOCAL_CALL_BATCHES = 4  # batches handed to a local backend per call (at most this many are lost to a kill)


def _generate_work(config: EvalConfig, work: _Work, backend, store: RunStore, grade, advance) -> None:
    """Generate a (model, dataset, setting)'s missing samples call by call, grading and appending each."""
    shard = store.shard(*work.shard_parts)
    requests = [_request(config, work, backend, problem, seed) for problem, _index, _key, seed in work.items]
    # Calls of similar prompt length; a call's samples are written as soon as they are graded.
    order = sorted(range(len(requests)), key=lambda i: (-len(requests[i].prompt), i))
    # hf and vllm take several batches per call: the fast decoder keeps batch_size rows decoding by
    # refilling finished ones, vLLM schedules them itself. openai sends requests.
    local = config.backend.name in ("hf", "vllm")
    step = max(1, config.backend.batch_size * LOCAL_CALL_BATCHES if local else config.backend.concurrency * 4)
    for start in range(0, len(order), step):
        chunk = order[start : start + step]
        results = backend.generate([requests[i] for i in chunk])
        records = []
        for i, res in zip(chunk, results):
            problem = work.items[i][0]
            if res.finish_reason == "error":
                # A failed request is not a sample: nothing is stored, so the next run retries it.
                work.failed += 1
                work.last_error = res.extra.get("error", "request failed")
                continue
            g = grade(work.dataset, res.response, problem.answer, question=problem.question, explain=True)
            records.append(_sample(work, work.items[i], requests[i], res, g))
        shard.append(records)
        advance(len(records))


def _request(config: EvalConfig, work: _Work, backend, problem: Problem, seed: int) -> GenRequest:
    messages = render_messages(problem, config.prompt)
    prompt = backend.render(messages, problem, config.prompt)
    top_p = config.sampling.top_p if work.temperature > 0 else 1.0
    return GenRequest(prompt, messages, work.temperature, top_p, config.sampling.max_new_for(work.dataset), seed)


def _sample(work: _Work, item: tuple[Problem, int, str, int], request: GenRequest, res, g) -> Sample:
    """The stored record of one graded response."""
    problem, index, key, seed = item
    return Sample(
        key=key,
        model=work.model.name,
        model_id=work.model.ref,
        dataset=work.dataset,
        problem_id=problem.id,
        sample_index=index,
        setting=work.setting,
        temperature=work.temperature,
        top_p=request.top_p,
        max_new_tokens=request.max_new_tokens,
        seed=seed,
        prompt=request.prompt,
        response=res.response,
        finish_reason=res.finish_reason,
        prompt_tokens=res.prompt_tokens,
        completion_tokens=res.completion_tokens,
        gold=problem.answer,
        extracted=g.extracted,
        correct=g.correct,
        strict=g.strict,
        method=g.method,
        timed_out=g.timed_out,
        why=g.why,
        alternatives=g.alternatives,
        category=problem.category,
        level=problem.level,
        gen_seconds=round(res.seconds, 6),
        step=work.model.step,
    )


def results_table_rows(results: EvalResults) -> list[GroupSummary]:
    return results.rows


def dump_config(config: EvalConfig) -> str:
    return json.dumps(config.model_dump(mode="json"), indent=2)
