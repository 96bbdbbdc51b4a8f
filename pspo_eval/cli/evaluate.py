"""`pspo-eval evaluate` and `pspo-eval merge`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer

from pspo_eval.errors import PspoError


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError as exc:
        raise PspoError(f"--temperature '{text}' is not a comma-separated list of numbers", "e.g. --temperature 0,0.4,0.8") from exc


def _per_dataset(values: list[str]) -> dict[str, int]:
    out = {}
    for v in values:
        name, sep, num = v.partition("=")
        if not sep or not num.strip().isdigit():
            raise PspoError(f"--max-new-tokens-for '{v}' is not DATASET=N", "e.g. --max-new-tokens-for math500=512")
        out[name.strip()] = int(num)
    return out


def evaluate(
    model: list[str] = typer.Option([], "--model", "-m", help="NAME=PATH or PATH: a model directory, checkpoint, hub id or 'smollm2-135m-instruct'. Repeatable."),
    checkpoints: list[Path] = typer.Option([], "--checkpoints", help="A training output directory: evaluates every checkpoint-N in step order (and its final model). Repeatable."),
    datasets: str = typer.Option(None, "--datasets", "-d", help="Comma-separated: gsm8k, svamp, asdiv, math500, gsm8k_train, or 'all' (default gsm8k, or only the --dataset-file)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (created; rerunning resumes it)."),
    source: str = typer.Option("local", "--source", help="local (bundled files) or hub (Hugging Face hub)."),
    dataset_file: Path | None = typer.Option(None, "--dataset-file", help="Your own JSONL with question/answer; its file stem becomes a dataset name."),
    temperature: str = typer.Option("0", "--temperature", "-t", help="Comma-separated temperatures, e.g. 0,0.2,0.4,0.6,0.8. 0 = greedy (one sample)."),
    samples: int = typer.Option(1, "--samples", "-k", help="Samples per problem at temperatures > 0 (for pass@k / maj@k)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling threshold (temperatures > 0)."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Generation budget (the paper's 128)."),
    max_new_tokens_for: list[str] = typer.Option([], "--max-new-tokens-for", help="Per-dataset budget, DATASET=N (repeatable), e.g. math500=512."),
    seed: int = typer.Option(0, "--seed", help="Run seed; each sample's seed derives from (seed, problem, sample index)."),
    system_prompt: str | None = typer.Option(None, "--system-prompt", help="Replace the paper's system prompt."),
    prompt_file: Path | None = typer.Option(None, "--prompt-file", help="YAML/JSON with system, user ({question}), fewshot: overrides the prompt."),
    math500_boxed: bool = typer.Option(False, "--math500-boxed", help="For MATH-500 ask for \\boxed{} instead of '####'."),
    chat_template: str = typer.Option("auto", "--chat-template", help="auto | always | never (never: the plain 'Question:/Answer:' format)."),
    fewshot: int = typer.Option(0, "--fewshot", help="Few-shot examples from GSM8K train (plain format or chat turns)."),
    limit: int | None = typer.Option(None, "--limit", help="First N problems of each dataset."),
    shard: str | None = typer.Option(None, "--shard", help="i/n: this machine's deterministic share of the problems (1-based)."),
    backend: str = typer.Option("hf", "--backend", help="hf (our fast decoder over transformers weights; the fastest on a CPU), vllm (vLLM's offline engine, GPU or CPU: scripts/setup_vllm.sh) or openai (any OpenAI-compatible server)."),
    batch_size: int = typer.Option(64, "--batch-size", help="hf: rows decoded at once (finished rows are refilled). hf and vllm take 4 batches per call, stored when it returns."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (bf16 where supported, else fp32), bf16, fp16, fp32."),
    device: str = typer.Option("auto", "--device", help="hf: auto, cpu, cuda, cuda:1, …"),
    decoder: str = typer.Option("auto", "--decoder", help="hf: auto (fast loop for Llama-family, else generate), fast, generate."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow model code from the hub (off by default)."),
    base_url: str | None = typer.Option(None, "--base-url", help="openai: server URL, e.g. http://127.0.0.1:8000/v1."),
    api_model: str | None = typer.Option(None, "--api-model", help="openai: the model name the server expects."),
    api_key_env: str | None = typer.Option(None, "--api-key-env", help="openai: environment variable holding the API key (never stored)."),
    concurrency: int = typer.Option(8, "--concurrency", help="openai: requests in flight."),
    tensor_parallel_size: int = typer.Option(1, "--tensor-parallel-size", help="vllm: GPUs per model."),
    gpu_memory_utilization: float = typer.Option(0.9, "--gpu-memory-utilization", help="vllm: fraction of GPU memory."),
) -> None:
    """Evaluate models/checkpoints on GSM8K, SVAMP, ASDiv and MATH-500 (resumable run directory).

    Writes RUN_DIR/manifest.json, RUN_DIR/samples/<model>/<dataset>/<setting>.jsonl (one graded
    record per sample) and RUN_DIR/results.json, and prints the results table. Killing it at any
    moment and running the same command again continues where it stopped.
    """
    from pspo_eval.console import out_console
    from pspo_eval.evaluate import BackendConfig, SamplingConfig, run_evaluate
    from pspo_eval.metrics import results_table

    _check_backend(backend, base_url, api_model)  # before the config: the option's own message
    specs = _model_specs(model, checkpoints, backend, api_model)
    prompt_fields = _prompt_fields(system_prompt, prompt_file, math500_boxed, chat_template, fewshot)
    config = _eval_config(
        specs, datasets, source, dataset_file, limit, shard, prompt_fields,
        lambda: SamplingConfig(temperatures=_floats(temperature), samples=samples, top_p=top_p,
                               max_new_tokens=max_new_tokens,
                               max_new_tokens_per_dataset=_per_dataset(max_new_tokens_for), seed=seed),
        lambda: BackendConfig(name=backend, batch_size=batch_size, dtype=dtype, device=device, decoder=decoder,
                              trust_remote_code=trust_remote_code, base_url=base_url, api_model=api_model,
                              api_key_env=api_key_env, concurrency=concurrency,
                              tensor_parallel_size=tensor_parallel_size, gpu_memory_utilization=gpu_memory_utilization),
    )
    results = run_evaluate(config, out)
    out_console.print(results_table(results, title=f"results: {out}"))
    out_console.print(f"results: {out / 'results.json'}")


def _model_specs(model: list[str], checkpoints: list[Path], backend: str, api_model: str | None) -> list:
    """--model and --checkpoints; a served model alone (--backend openai --api-model) needs neither."""
    from pspo_eval.evaluate import ModelSpec, discover_checkpoints, parse_model_specs

    specs = parse_model_specs(model)
    for directory in checkpoints:
        specs += discover_checkpoints(directory)
    if not specs and backend == "openai" and api_model:
        specs = [ModelSpec(name=api_model.rstrip("/").split("/")[-1], ref=api_model)]
    if not specs:
        raise PspoError("no model to evaluate", "give --model NAME=PATH (repeatable) or --checkpoints DIR")
    return specs


def _prompt_fields(system_prompt: str | None, prompt_file: Path | None, math500_boxed: bool, chat_template: str,
                   fewshot: int) -> dict:
    """The PromptConfig fields the options set (a --prompt-file overrides the single options)."""
    from pspo_eval.generation.prompts import load_prompt_file

    fields: dict = {"math500_boxed": math500_boxed, "chat_template": chat_template, "fewshot": fewshot}
    if system_prompt:
        fields["system"] = system_prompt
    if prompt_file:
        fields.update(load_prompt_file(prompt_file))
    if chat_template not in {"auto", "always", "never"}:
        raise PspoError(f"--chat-template '{chat_template}' is not one of auto, always, never")
    return fields


def _eval_config(specs: list, datasets: str | None, source: str, dataset_file: Path | None, limit: int | None,
                 shard: str | None, prompt_fields: dict, sampling: Callable, backend: Callable):
    """The EvalConfig of the options; a value pydantic refuses becomes one line naming the option.

    ``sampling`` and ``backend`` build their sub-configs inside the ``try``, so that their validation
    errors are reported the same way.
    """
    from pydantic import ValidationError

    from pspo_eval.config import describe_validation_error
    from pspo_eval.data import resolve_datasets
    from pspo_eval.evaluate import EvalConfig, parse_shard
    from pspo_eval.generation.prompts import PromptConfig

    file = str(dataset_file) if dataset_file else None
    try:
        return EvalConfig(
            models=specs,
            datasets=resolve_datasets(datasets if datasets is not None else ("" if dataset_file else "gsm8k"),
                                      source=source, dataset_file=file),
            source=source,
            dataset_file=file,
            limit=limit,
            shard=parse_shard(shard),
            sampling=sampling(),
            prompt=PromptConfig(**prompt_fields),
            backend=backend(),
        )
    except ValidationError as exc:
        raise PspoError(f"invalid option {describe_validation_error(exc)}", "see pspo-eval evaluate --help") from None


def _check_backend(backend: str, base_url: str | None, api_model: str | None) -> None:
    from pspo_eval.generation.registry import BACKENDS

    if backend not in BACKENDS:
        raise PspoError(f"unknown backend '{backend}'", f"use one of: {', '.join(BACKENDS)}")
    if backend == "openai" and not (base_url and api_model):
        raise PspoError("--backend openai needs --base-url and --api-model", "e.g. --base-url http://127.0.0.1:8000/v1 --api-model my-model")


def merge(
    runs: list[Path] = typer.Argument(..., help="Run directories (e.g. the shards of one evaluation)."),
    out: Path = typer.Option(..., "--out", "-o", help="Merged run directory."),
) -> None:
    """Join run directories (shards from several machines) into one; duplicate samples are dropped."""
    from pspo_eval.console import out_console
    from pspo_eval.merge import merge_runs
    from pspo_eval.metrics import results_table

    results = merge_runs(runs, out)
    out_console.print(results_table(results, title=f"merged: {out}"))
