"""One short GPU check of pspo-eval: the real CLI and the fast decoder on random-weight models.

Made for a lent GPU machine with no network, so no weights travel: the models are built from
their configs with seeded random weights and saved where the real CLI loads them as a path.

- ``demo``: SmolLM2-135M-Instruct's shapes (the demo model's config.json) and its real tokenizer;
- ``qwen``: Qwen2.5-0.5B(-Instruct)'s shapes (hidden 896, 24 layers, 14 heads / 2 KV heads, qkv bias,
  vocab 151,936, tied embeddings) written out below, with the SmolLM2 tokenizer: its ids are all
  < 49,152, valid inputs for the larger vocabulary (bos/eos/pad are set to the tokenizer's ids).
  The decoded text is gibberish; that is fine for timing.

Parts, each bounded by a timeout (run in a child process) and recorded separately, so one failure
does not stop the others:

1. ``env``        torch / transformers versions, GPU name, ``torch.cuda.is_available()``.
2. ``build``      build and save both random models (bf16) under ``--work``.
3. ``eval_cli``   ``python -m pspo_eval evaluate`` on the demo shapes (GSM8K, 64 problems, 128 new
                  tokens, batch 64, bf16): its records' generated tokens / generation seconds.
4. ``decode_demo`` the same 64 prompts (chat template, same tokenization) through ``FastDecoder``
                  and through plain ``model.generate`` (greedy, bf16, left padding), in process.
                  Both run with stopping disabled so both generate batch × max_new_tokens tokens;
                  a second pair with the real stop ids is also timed (what the CLI does).
5. ``agree``      greedy agreement of ``FastDecoder`` and ``model.generate`` in fp32 (TF32 off) on
                  16 prompts: identical rows, and for the others the first divergence with the
                  logit gap of the two competing tokens under a plain full forward (a near-tie
                  has a gap near 0; a real bug shows a large one). A report, not an assertion.
6. ``train_demo`` ``python -m pspo_eval train`` (paper preset ``paper/qwen2.5-0.5b-pspo`` pointed at
                  the demo-shaped model: 16 prompts × 4 completions, 128 tokens, μ = 2, bf16) for
                  3 optimizer steps: per-step wall time and peak CUDA memory from its metrics.
7. ``decode_qwen`` as ``decode_demo`` for the Qwen2.5-0.5B shapes at batch 64 and 256.
8. ``train_qwen`` as ``train_demo`` for the Qwen2.5-0.5B shapes, 2 steps (one rollout + μ updates).

Usage::

    python benchmarks/gpu_check.py --prepare-assets      # once, here: copy the demo model's config
                                                         # and tokenizer files (no weights) into
                                                         # benchmarks/gpu_assets/ (git-ignored)
    python benchmarks/gpu_check.py --out DIR             # on the GPU machine (about 5 minutes)
    python benchmarks/gpu_check.py --out DIR --cpu-smoke # here: every part, tiny sizes, on CPU

Writes ``DIR/gpu_check.json`` (the summary, rewritten after every part), ``DIR/gpu_check.log``
(everything printed, children included), ``DIR/parts/*.json`` and small copies of the CLI runs'
result files under ``DIR/artifacts/``. Exit code 0 when every part that ran succeeded, else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ASSETS = REPO / "benchmarks" / "gpu_assets" / "smollm2-135m-instruct"
ASSET_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "chat_template.jinja")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
SEED = 1234

# Qwen2.5-0.5B-Instruct's public config.json, except the special-token ids, which are the SmolLM2
# tokenizer's (bos <|im_start|> = 1, eos/pad <|im_end|> = 2) because that tokenizer is used with it.
QWEN25_05B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "use_sliding_window": False,
    "sliding_window": 32768,
    "max_window_layers": 21,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "use_cache": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}

# Sizes: the GPU check, and the CPU smoke run (every part and code path, tiny shapes and counts).
SIZES = {
    "gpu": dict(layers=None, n_eval=64, new_tokens=128, batch=64, demo_batches=[64], qwen_batches=[64, 256],
                n_agree=16, agree_tokens=128, train_demo_steps=3, train_qwen_steps=2, budget_s=330),
    "cpu": dict(layers=2, n_eval=4, new_tokens=8, batch=4, demo_batches=[4], qwen_batches=[4, 8],
                n_agree=4, agree_tokens=8, train_demo_steps=1, train_qwen_steps=1, budget_s=1800),
}
# Per-part timeouts in seconds (GPU, CPU smoke); a part also never runs past the overall budget.
TIMEOUTS = {
    "env": (60, 120), "build": (120, 300), "eval_cli": (150, 300), "decode_demo": (120, 300),
    "agree": (90, 300), "train_demo": (180, 600), "decode_qwen": (150, 300), "train_qwen": (180, 600),
}
PARTS = list(TIMEOUTS)
CHILD_PARTS = {"env", "build", "decode_demo", "agree", "decode_qwen"}


# ------------------------------------------------------------------------------------------------
# output: one log file for the parent and its children
# ------------------------------------------------------------------------------------------------

class Log:
    def __init__(self, path: Path | None, t0: float):
        self.fh = open(path, "a", encoding="utf-8") if path else None
        self.t0 = t0
        self.lock = threading.Lock()

    def __call__(self, msg: str, raw: bool = False) -> None:
        line = msg if raw else f"[{time.time() - self.t0:6.1f}s] {msg}"
        with self.lock:
            print(line, flush=True)
            if self.fh:
                self.fh.write(line + "\n")
                self.fh.flush()


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


class GpuPoller:
    """Samples nvidia-smi once a second (memory used, utilisation) while a part runs."""

    def __init__(self):
        self.exe = shutil.which("nvidia-smi")
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.exe:
            return
        self.samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run([self.exe, "--query-gpu=memory.used,utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout.splitlines()[0]
                mem, util = (float(x) for x in out.split(","))
                self.samples.append((mem, util))
            except Exception:
                pass
            self._stop.wait(1.0)

    def stop(self) -> dict:
        if not self._thread:
            return {}
        self._stop.set()
        self._thread.join(timeout=10)
        if not self.samples:
            return {}
        return {"nvidia_smi_peak_mem_mib": max(m for m, _ in self.samples),
                "nvidia_smi_mean_util_pct": sum(u for _, u in self.samples) / len(self.samples),
                "nvidia_smi_samples": len(self.samples)}


def run_streamed(cmd: list[str], timeout: float, log: Log, prefix: str, env: dict) -> tuple[int | None, float]:
    """Run a command in its own process group, echo its output, kill the group at the timeout.

    Returns (exit code or None on timeout, wall seconds).
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", start_new_session=True)

    def pump():
        assert proc.stdout is not None
        for line in proc.stdout:
            log(f"{prefix} {line.rstrip()}", raw=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code: int | None = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = None
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    reader.join(timeout=10)
    return code, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------
# helpers shared by the children (torch is imported only here, never in the parent)
# ------------------------------------------------------------------------------------------------

def _device(args):
    import torch

    return torch.device("cpu" if args.cpu_smoke else "cuda")


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def _model_dir(args, shape: str) -> Path:
    return Path(args.work) / f"{shape}-random"


def _config(args, shape: str):
    from transformers import AutoConfig

    if shape == "demo":
        data = json.loads((Path(args.assets) / "config.json").read_text())
    else:
        data = dict(QWEN25_05B)
    for key in ("transformers_version", "dtype", "torch_dtype"):
        data.pop(key, None)
    layers = SIZES["cpu" if args.cpu_smoke else "gpu"]["layers"]
    if layers:
        data["num_hidden_layers"] = layers
        data.pop("max_window_layers", None)
    return AutoConfig.for_model(data.pop("model_type"), **data)


def _load(args, shape: str, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = _model_dir(args, shape)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True)
    return tok, model.to(_device(args)).eval()


def _encode_prompts(tok, n: int) -> list[list[int]]:
    """The first n GSM8K test prompts exactly as ``pspo-eval evaluate`` builds and tokenizes them."""
    from pspo_eval.data import load_dataset
    from pspo_eval.generation.prompts import PromptConfig, render_prompt

    config = PromptConfig()
    problems = load_dataset("gsm8k", limit=n)
    # HFBackend.encode: a chat template already carries its special tokens.
    return [tok(render_prompt(p, config, tok), add_special_tokens=False)["input_ids"] for p in problems]


def _hf_generate(model, prompts, max_new: int, stop_ids: list[int], pad_id: int) -> list[list[int]]:
    """Greedy ``model.generate`` with left padding; rows cut at their first stop id (none if no stop_ids).

    With ``stop_ids=[]`` stopping is disabled (the model's generation config loses its eos for the
    call) and every row generates exactly ``max_new`` tokens.
    """
    import torch

    dev = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(p)
        mask[r, width - len(p):] = 1
    gc = model.generation_config
    saved = gc.eos_token_id
    gc.eos_token_id = list(stop_ids) if stop_ids else None
    try:
        with torch.inference_mode():
            out = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=max_new,
                                 min_new_tokens=0, do_sample=False, temperature=None, top_p=None, top_k=None,
                                 eos_token_id=gc.eos_token_id, pad_token_id=pad_id)
    finally:
        gc.eos_token_id = saved
    rows = out[:, width:].tolist()
    if not stop_ids:
        if any(len(r) != max_new for r in rows):
            raise RuntimeError(f"generate stopped early with stopping disabled ({out.shape[1] - width} of {max_new})")
        return rows
    stops = set(stop_ids)
    result = []
    for row in rows:
        cut = next((j for j, t in enumerate(row) if t in stops), None)
        result.append(row if cut is None else row[: cut + 1])  # keep the stop token (compared in `agree`)
    return result


class Recorder(dict):
    """A child's result, written to OUT/parts/<part>.json after every update (partial results survive)."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def put(self, key, value) -> None:
        self[key] = value
        write_json(self.path, dict(self))


# ------------------------------------------------------------------------------------------------
# children
# ------------------------------------------------------------------------------------------------

def child_env(args, rec: Recorder) -> None:
    import importlib.metadata as md

    import torch

    versions = {}
    for pkg in ("torch", "transformers", "tokenizers", "safetensors", "huggingface_hub", "accelerate", "pydantic",
                "typer", "rich", "numpy", "pyyaml", "jinja2", "regex"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    import transformers

    rec.put("python", sys.version.split()[0])
    rec.put("platform", platform.platform())
    rec.put("versions", versions)
    rec.put("transformers_file", transformers.__file__)
    rec.put("cuda_available", torch.cuda.is_available())
    rec.put("torch_cuda", torch.version.cuda)
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        rec.put("gpu", {"name": torch.cuda.get_device_name(0), "capability": list(torch.cuda.get_device_capability(0)),
                        "total_mem_mib": props.total_memory / 2**20, "sms": props.multi_processor_count,
                        "bf16": torch.cuda.is_bf16_supported(),
                        "matmul_allow_tf32_default": torch.backends.cuda.matmul.allow_tf32})
    smi = shutil.which("nvidia-smi")
    if smi:
        query = [smi, "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"]
        rec.put("nvidia_smi", subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip())
    # Everything the evaluate and train commands import, so a missing package shows here first.
    import pspo_eval.cli  # noqa: F401
    import pspo_eval.evaluate  # noqa: F401
    import pspo_eval.generation.engine  # noqa: F401
    import pspo_eval.generation.hf  # noqa: F401
    import pspo_eval.train.loop  # noqa: F401

    rec.put("pspo_eval_imports", "ok")
    # Which engine ran (the working tree travels without .git): hash of the decoder's source.
    import hashlib

    engine = REPO / "pspo_eval" / "generation" / "engine.py"
    rec.put("engine_py_sha256", hashlib.sha256(engine.read_bytes()).hexdigest()[:16])
    print(json.dumps(dict(rec), default=str), flush=True)


def child_build(args, rec: Recorder) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    dev = _device(args)
    for shape in ("demo", "qwen"):
        t0 = time.perf_counter()
        cfg = _config(args, shape)
        torch.manual_seed(SEED)
        with torch.device(dev):
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
        _sync(dev)
        built = time.perf_counter() - t0
        target = _model_dir(args, shape)
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        for name in TOKENIZER_FILES:
            shutil.copy2(Path(args.assets) / name, tmp / name)
        (tmp / "gpu_check_source.json").write_text(json.dumps(
            {"random_init_seed": SEED, "shape": shape, "note": "random weights built by benchmarks/gpu_check.py"}))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        n_params = sum(p.numel() for p in model.parameters())
        rec.put(shape, {"path": str(target), "model_type": cfg.model_type, "layers": cfg.num_hidden_layers,
                        "params": n_params, "build_s": built, "total_s": time.perf_counter() - t0})
        print(f"built {shape}: {cfg.model_type}, {cfg.num_hidden_layers} layers, {n_params / 1e6:.1f}M params, "
              f"init {built:.1f}s, saved in {time.perf_counter() - t0:.1f}s -> {target}", flush=True)
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()


def child_decode(args, rec: Recorder, shape: str) -> None:
    """FastDecoder vs model.generate, greedy bf16, same prompts and batch (see the module docstring)."""
    import torch

    from pspo_eval.generation.engine import FastDecoder
    from pspo_eval.generation.hf import stop_token_ids

    size = SIZES["cpu" if args.cpu_smoke else "gpu"]
    batches = size[f"{shape}_batches"]
    new = size["new_tokens"]
    dev = _device(args)
    dtype = torch.float32 if args.cpu_smoke else torch.bfloat16
    tok, model = _load(args, shape, dtype)
    prompts = _encode_prompts(tok, max(batches))
    stops = stop_token_ids(tok, model)
    pad = tok.pad_token_id
    dec = FastDecoder(model)
    rec.put("setup", {"shape": shape, "dtype": str(dtype), "stop_ids": stops, "max_new_tokens": new,
                      "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts)})

    def fast(batch, n, stop_ids):
        out = dec.generate(batch, max_new_tokens=n, stop_ids=stop_ids)
        return [c.token_ids for c in out]

    def hf(batch, n, stop_ids):
        return _hf_generate(model, batch, n, stop_ids, pad)

    def timed(fn, batch, stop_ids):
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        _sync(dev)
        t0 = time.perf_counter()
        rows = fn(batch, new, stop_ids)
        _sync(dev)
        dt = time.perf_counter() - t0
        tokens = sum(len(r) for r in rows)
        result = {"seconds": dt, "tokens": tokens, "tokens_per_s": tokens / dt,
                  "rows_full_length": sum(len(r) == new for r in rows)}
        if dev.type == "cuda":
            result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        return result

    for B in batches:
        batch = prompts[:B]
        # Warm-up at full length: kernels, allocator, cuBLAS handles and the longer cache shapes
        # (a 4-token warm-up left the first timed pair ~2x slow on an H100).
        for fn in (fast, hf):
            fn(batch, new, [])
        runs = {}
        modes = [("nostop", [])] + ([("stop", stops)] if B == batches[0] else [])
        for mode, stop_ids in modes:
            for name, fn in (("fast", fast), ("generate", hf)):
                r = timed(fn, batch, stop_ids)
                runs[f"{name}_{mode}"] = r
                print(f"{shape} batch {B} {name:8s} {mode:6s}: {r['tokens']} tokens in {r['seconds']:.2f}s = "
                      f"{r['tokens_per_s']:.0f} tok/s", flush=True)
            runs[f"speedup_{mode}"] = runs[f"generate_{mode}"]["seconds"] / runs[f"fast_{mode}"]["seconds"]
            rec.put(f"batch_{B}", runs)


def child_agree(args, rec: Recorder) -> None:
    """Greedy FastDecoder vs model.generate in fp32, TF32 off; first divergences with their logit gap."""
    import torch

    from pspo_eval.generation.engine import FastDecoder
    from pspo_eval.generation.hf import stop_token_ids

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    size = SIZES["cpu" if args.cpu_smoke else "gpu"]
    n, new = size["n_agree"], size["agree_tokens"]
    tok, model = _load(args, "demo", torch.float32)
    prompts = _encode_prompts(tok, n)
    stops = stop_token_ids(tok, model)
    fast_out = FastDecoder(model).generate(prompts, max_new_tokens=new, stop_ids=stops)
    fast_rows = [c.token_ids + ([c.stop_token] if c.stop_token is not None else []) for c in fast_out]
    gen_rows = _hf_generate(model, prompts, new, stops, tok.pad_token_id)
    dev = next(model.parameters()).device
    identical, divergences = 0, []
    for r, (a, b) in enumerate(zip(fast_rows, gen_rows)):
        if a == b:
            identical += 1
            continue
        pos = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        info = {"row": r, "position": pos, "fast_len": len(a), "generate_len": len(b)}
        if pos < len(a) and pos < len(b):
            seq = torch.tensor([prompts[r] + a[:pos]], device=dev)
            with torch.inference_mode():
                logits = model(input_ids=seq).logits[0, -1].float()
            top2 = logits.topk(2)
            info.update({
                "fast_token": a[pos], "generate_token": b[pos],
                "logit_gap_fast_minus_generate": float(logits[a[pos]] - logits[b[pos]]),
                "reference_argmax": int(top2.indices[0]), "reference_top2_gap": float(top2.values[0] - top2.values[1]),
            })
        divergences.append(info)
    rec.put("prompts", n)
    rec.put("max_new_tokens", new)
    rec.put("identical_rows", identical)
    rec.put("divergences", divergences)
    print(f"agreement fp32: {identical}/{n} rows identical; divergences: {json.dumps(divergences)}", flush=True)


def run_child(args) -> int:
    rec = Recorder(Path(args.out) / "parts" / f"{args.child}.json")
    sys.path.insert(0, str(REPO))
    try:
        if args.child == "env":
            child_env(args, rec)
        elif args.child == "build":
            child_build(args, rec)
        elif args.child == "decode_demo":
            child_decode(args, rec, "demo")
        elif args.child == "decode_qwen":
            child_decode(args, rec, "qwen")
        elif args.child == "agree":
            child_agree(args, rec)
        else:
            raise SystemExit(f"unknown child part {args.child}")
    except Exception:
        rec.put("error", traceback.format_exc())
        traceback.print_exc()
        return 1
    return 0


# ------------------------------------------------------------------------------------------------
# parent: the CLI parts
# ------------------------------------------------------------------------------------------------

def _check_exit(what: str, code: int | None) -> None:
    if code is None:
        raise TimeoutError(f"{what}: killed at the timeout")
    if code != 0:
        raise RuntimeError(f"{what}: exit code {code}")


def eval_cli(args, size, timeout, log, env) -> dict:
    run = Path(args.work) / "runs" / "eval-demo"
    shutil.rmtree(run, ignore_errors=True)
    cmd = [sys.executable, "-m", "pspo_eval", "evaluate", "-m", f"demo={_model_dir(args, 'demo')}", "-d", "gsm8k",
           "--limit", str(size["n_eval"]), "--max-new-tokens", str(size["new_tokens"]),
           "--batch-size", str(size["batch"]), "--dtype", "fp32" if args.cpu_smoke else "bf16",
           "--device", "cpu" if args.cpu_smoke else "cuda", "--out", str(run)]
    log("$ " + " ".join(cmd))
    code, wall = run_streamed(cmd, timeout, log, "  [evaluate]", env)
    result: dict = {"command": cmd, "exit_code": code, "process_s": wall}
    _check_exit("evaluate", code)
    rows = [json.loads(line) for f in sorted(run.rglob("samples/**/*.jsonl")) for line in f.read_text().splitlines()
            if line.strip()]
    tokens = sum(r["completion_tokens"] for r in rows)
    gen_s = sum(r["gen_seconds"] for r in rows)  # each sample holds its share of its batch's wall time
    manifest = json.loads((run / "manifest.json").read_text())
    results = json.loads((run / "results.json").read_text())
    result.update({
        "samples": len(rows), "completion_tokens": tokens, "generation_s": gen_s,
        "tokens_per_s": tokens / gen_s if gen_s else None,
        "finish": {k: sum(r["finish_reason"] == k for r in rows) for k in ("stop", "length")},
        "backend": manifest.get("backends"), "results_row": results["rows"][0] if results.get("rows") else None,
    })
    art = Path(args.out) / "artifacts" / "eval-demo"
    art.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", "manifest.json"):
        shutil.copy2(run / name, art / name)
    log(f"evaluate: {len(rows)} samples, {tokens} tokens in {gen_s:.2f}s generation = "
        f"{result['tokens_per_s'] or 0:.0f} tok/s; process {wall:.1f}s")
    return result


def train_cli(args, size, timeout, log, env, shape: str) -> dict:
    run = Path(args.work) / "runs" / f"train-{shape}"
    shutil.rmtree(run, ignore_errors=True)
    steps = size[f"train_{shape}_steps"]
    cmd = [sys.executable, "-m", "pspo_eval", "train", "-c", "paper/qwen2.5-0.5b-pspo", "--out", str(run),
           "--set", f"model.path={_model_dir(args, shape)}", "--max-steps", str(steps),
           "--set", "eval.every=0", "--set", "eval.select_best=false", "--set", "checkpoint.save_every=0", "--set", "checkpoint.save_final=false",
           "--set", "logging.log_completions=0"]
    if args.cpu_smoke:
        cmd += ["--set", "model.device=cpu", "--set", "model.dtype=float32", "--set", "train.prompts_per_step=2",
                "--set", "train.micro_batch_size=8", "--set", f"rollout.max_new_tokens={size['new_tokens']}"]
    else:
        cmd += ["--set", "model.device=cuda", "--set", "model.dtype=bfloat16"]
    log("$ " + " ".join(cmd))
    code, wall = run_streamed(cmd, timeout, log, f"  [train {shape}]", env)
    result: dict = {"command": cmd, "exit_code": code, "process_s": wall}
    metrics_file = run / "metrics.jsonl"
    records = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()] \
        if metrics_file.exists() else []
    keys = ("step", "time/step_s", "time/rollout_s", "time/train_s", "gen_tokens_per_s", "tokens_per_s",
            "completion_len/mean", "loss", "grad_norm", "mem/cuda_peak_mib", "mem/peak_mib")
    result["steps"] = [{k: r.get(k) for k in keys if k in r} for r in records if "time/step_s" in r]
    cuda_peaks = [r["mem/cuda_peak_mib"] for r in records if r.get("mem/cuda_peak_mib") is not None]
    result["cuda_peak_mib"] = max(cuda_peaks) if cuda_peaks else None
    art = Path(args.out) / "artifacts" / f"train-{shape}"
    art.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.jsonl", "summary.json", "config.yaml"):
        if (run / name).exists():
            shutil.copy2(run / name, art / name)
    _check_exit(f"train ({len(result['steps'])} steps recorded)", code)
    for s in result["steps"]:
        log(f"train {shape} step {s.get('step')}: {s.get('time/step_s', 0):.2f}s "
            f"(rollout {s.get('time/rollout_s') or 0:.2f}s), cuda peak {s.get('mem/cuda_peak_mib')} MiB")
    return result


# ------------------------------------------------------------------------------------------------
# parent
# ------------------------------------------------------------------------------------------------

def headlines(parts: dict) -> list[str]:
    """One line per measured number, for the end of the log (the JSON holds everything)."""
    lines = []

    def res(name):
        entry = parts.get(name) or {}
        return entry.get("result") or {}

    env = res("env")
    if env:
        gpu = (env.get("gpu") or {}).get("name", "no GPU")
        v = env.get("versions") or {}
        lines.append(f"env: {gpu}; torch {v.get('torch')}, transformers {v.get('transformers')}, "
                     f"cuda available {env.get('cuda_available')}")
    ev = res("eval_cli")
    if ev.get("tokens_per_s"):
        lines.append(f"eval_cli: {ev['samples']} samples, {ev['completion_tokens']} tokens, {ev['generation_s']:.2f}s "
                     f"generation = {ev['tokens_per_s']:.0f} tok/s (process {ev['process_s']:.1f}s)")
    for shape in ("demo", "qwen"):
        for key, runs in res(f"decode_{shape}").items():
            if not key.startswith("batch_"):
                continue
            for mode in ("nostop", "stop"):
                fast, gen = runs.get(f"fast_{mode}"), runs.get(f"generate_{mode}")
                if fast and gen:
                    lines.append(f"decode {shape} {key} {mode}: fast {fast['tokens_per_s']:.0f} tok/s "
                                 f"({fast['seconds']:.2f}s), generate {gen['tokens_per_s']:.0f} tok/s "
                                 f"({gen['seconds']:.2f}s), speedup x{gen['seconds'] / fast['seconds']:.2f}")
    ag = res("agree")
    if "identical_rows" in ag:
        pos = [(d["row"], d["position"], round(d.get("logit_gap_fast_minus_generate", float("nan")), 6))
               for d in ag.get("divergences", [])]
        lines.append(f"agree fp32: {ag['identical_rows']}/{ag['prompts']} rows identical; "
                     f"(row, first divergence, logit gap): {pos}")
    for shape in ("demo", "qwen"):
        tr = res(f"train_{shape}")
        if tr.get("steps"):
            steps = ", ".join(f"{s.get('time/step_s', 0):.2f}" for s in tr["steps"])
            lines.append(f"train {shape}: step seconds [{steps}], cuda peak {tr.get('cuda_peak_mib')} MiB, "
                         f"process {tr['process_s']:.1f}s")
    for name, entry in parts.items():
        if entry.get("status") not in {"ok"}:
            lines.append(f"{name}: {entry.get('status')} {entry.get('error') or entry.get('reason') or ''}".rstrip())
    return lines


def prepare_assets(target: Path) -> None:
    sys.path.insert(0, str(REPO))
    from pspo_eval.models import demo_model_path

    source = demo_model_path()
    target.mkdir(parents=True, exist_ok=True)
    for name in ASSET_FILES:
        shutil.copy2(source / name, target / name)
    size = sum((target / n).stat().st_size for n in ASSET_FILES)
    print(f"copied {len(ASSET_FILES)} files ({size / 2**20:.1f} MiB) from {source} to {target}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu-check-out"), help="result folder (default $OUT)")
    parser.add_argument("--work", default="/tmp/gpu-check", help="models and CLI runs (large files; not copied back)")
    parser.add_argument("--assets", default=str(DEFAULT_ASSETS), help="the demo model's config and tokenizer files")
    parser.add_argument("--cpu-smoke", action="store_true", help="every part at tiny sizes on CPU (a test of this script)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--budget-s", type=float, default=None, help="overall time limit (default 330 GPU, 1800 CPU)")
    parser.add_argument("--prepare-assets", action="store_true", help="copy the demo model's non-weight files to --assets")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.prepare_assets:
        prepare_assets(Path(args.assets))
        return 0
    if args.child:
        return run_child(args)

    t_start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    log = Log(out / "gpu_check.log", t_start)
    mode = "cpu" if args.cpu_smoke else "gpu"
    size = SIZES[mode]
    budget = args.budget_s or size["budget_s"]
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown parts {unknown}; known: {PARTS}")
    missing = [n for n in ASSET_FILES if not (Path(args.assets) / n).exists()]
    if missing:
        parser.error(f"{args.assets} lacks {missing}: run `python benchmarks/gpu_check.py --prepare-assets` first")

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([p for p in (env.get("PYTHONPATH", ""), str(REPO)) if p])
    summary: dict = {"mode": mode, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "budget_s": budget,
                     "sizes": size, "argv": sys.argv, "parts": {}}
    log(f"gpu_check ({mode}): parts {parts}, budget {budget:.0f}s, out {out}, work {args.work}")
    poller = GpuPoller()
    for part in parts:
        remaining = budget - (time.time() - t_start)
        timeout = min(TIMEOUTS[part][0 if mode == "gpu" else 1], remaining)
        entry: dict = {"status": "skipped"}
        summary["parts"][part] = entry
        if timeout < 20:
            entry["reason"] = f"overall budget spent ({remaining:.0f}s left)"
            log(f"== {part}: skipped, {entry['reason']}")
            write_json(out / "gpu_check.json", summary)
            continue
        if part in {"eval_cli", "decode_demo", "agree", "train_demo"} and "build" in summary["parts"] \
                and summary["parts"]["build"]["status"] != "ok" and not (_model_dir(args, "demo") / "config.json").exists():
            entry["reason"] = "no demo model (build failed)"
            log(f"== {part}: skipped, {entry['reason']}")
            continue
        log(f"== {part} (timeout {timeout:.0f}s)")
        t0 = time.perf_counter()
        poller.start()
        try:
            if part in CHILD_PARTS:
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child", part, "--out", str(out),
                       "--work", args.work, "--assets", args.assets] + (["--cpu-smoke"] if args.cpu_smoke else [])
                code, _ = run_streamed(cmd, timeout, log, f"  [{part}]", env)
                result_file = out / "parts" / f"{part}.json"
                entry["result"] = json.loads(result_file.read_text()) if result_file.exists() else None
                entry["exit_code"] = code
                entry["status"] = "ok" if code == 0 else ("timeout" if code is None else "failed")
            elif part == "eval_cli":
                entry["result"] = eval_cli(args, size, timeout, log, env)
                entry["status"] = "ok"
            elif part in {"train_demo", "train_qwen"}:
                entry["result"] = train_cli(args, size, timeout, log, env, part.split("_")[1])
                entry["status"] = "ok"
        except Exception as exc:
            entry["status"] = "timeout" if isinstance(exc, TimeoutError) else "failed"
            entry["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            log(traceback.format_exc().rstrip())
        entry["seconds"] = time.perf_counter() - t0
        entry.update(poller.stop())
        log(f"== {part}: {entry['status']} in {entry['seconds']:.1f}s")
        summary["total_s"] = time.time() - t_start
        write_json(out / "gpu_check.json", summary)

    summary["total_s"] = time.time() - t_start
    summary["headlines"] = headlines(summary["parts"])
    for line in summary["headlines"]:
        log("   " + line, raw=True)
    summary["ok"] = all(e["status"] in {"ok", "skipped"} for e in summary["parts"].values())
    write_json(out / "gpu_check.json", summary)
    log("== summary: " + ", ".join(f"{p} {e['status']}" for p, e in summary["parts"].items())
        + f"; {summary['total_s']:.0f}s in all; {out / 'gpu_check.json'}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
