"""Evaluation throughput: pspo-eval's `hf` backend, its `vllm` backend and lm-evaluation-harness, side by side.

All three run as whole processes (model load / engine start included) on the same machine, model,
data and settings: the demo model, the first N GSM8K test problems, zero-shot with the paper's
system prompt and the chat template, greedy, 128 new tokens, batch 64, the same dtype:

- ours: ``pspo-eval evaluate`` (``--backend hf``, the default: our fast decode loop);
- vLLM: ``pspo-eval evaluate --backend vllm`` (vLLM's offline engine in our pipeline: eager on a
  CPU, see pspo_eval/generation/vllm_engine.py), skipped with ``nan`` where vllm does not import;
- lm-eval: ``../shared/bench/anchor_lm_eval.sh`` (lm-eval's HF backend, in its own venv).

By default it runs the work in bf16 and in fp32 on CPUs with native bf16 matrix instructions
(AVX512-BF16 / AMX), and in fp32 only elsewhere (emulated bf16 would only measure the emulation);
``--dtype bf16`` / ``fp32`` runs one. Every ratio is printed (seconds of the slower tool over ours).

It also reports how far our generation is from this machine's compute roofline: the FLOPs of the
tokens processed (2 × parameters per prompt and generated token) against the matrix-product rate
measured here at the same shapes.

One line per dtype reads ``eval_throughput n=… ours_s=… vllm_s=… lm_eval_s=… ours_gen_tok_s=…
vllm_gen_tok_s=… roofline=…% dtype=…`` (``*_gen_tok_s``: steady-state generation, new tokens over
the seconds spent generating, start-up excluded); the last line of the output is the last dtype's.
When both dtypes run, the fp32 line ends with ``bf16_fp32_same=k/n``: on how many problems our
greedy bf16 response is identical to the fp32 one (bf16 rounding flips near-tied tokens).

``evaluate`` hands a local backend 4 batches per call, so at ``--n 256`` both backends see all 256
prompts at once: our decoder keeps ``--batch-size`` rows decoding and refills finished ones; vLLM
schedules them itself (its CPU default admits up to 256 sequences), which is its best setting here.
``--n 256`` measures the larger run; ``--profile`` first prints where a decode step's time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def matmul_gflops(dtype_name: str, threads: int | None = None) -> float:
    """The rate of this machine's matrix products at the model's shapes (batch 64 × 576 → 1536)."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    x = torch.randn(64, 576, dtype=dtype)
    w = torch.randn(1536, 576, dtype=dtype)
    a = torch.randn(4096, 576, dtype=dtype)
    best = 0.0
    for inp in (x, a):
        torch.nn.functional.linear(inp, w)
        n = 20 if inp is x else 3
        t0 = time.perf_counter()
        for _ in range(n):
            torch.nn.functional.linear(inp, w)
        dt = (time.perf_counter() - t0) / n
        best = max(best, 2 * inp.shape[0] * 576 * 1536 / dt / 1e9)
    return best


def gen_tokens_per_s(rows: list[dict]) -> float:
    """Steady-state generation rate: new tokens over the seconds spent generating (no start-up)."""
    return sum(r["completion_tokens"] for r in rows) / max(sum(r["gen_seconds"] for r in rows), 1e-9)


def run_ours(model_dir: str, args, dtype: str, backend: str) -> tuple[float, list[dict]]:
    """One ``pspo-eval evaluate`` process on the benchmark's work: (whole-process seconds, its records)."""
    out = Path(tempfile.mkdtemp(prefix=f"pspo-bench-eval-{backend}-")) / "run"
    cmd = [sys.executable, "-m", "pspo_eval", "evaluate", "-m", f"demo={model_dir}", "-d", "gsm8k",
           "--limit", str(args.n), "--max-new-tokens", str(args.max_new_tokens), "--dtype", dtype,
           "--batch-size", str(args.batch_size), "--backend", backend, "--out", str(out)]
    env = {**os.environ, "PSPO_EVAL_QUIET": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    seconds = time.perf_counter() - t0
    rows = [json.loads(line) for f in sorted(out.rglob("*.jsonl")) for line in f.read_text().splitlines()]
    gen_s = sum(r["gen_seconds"] for r in rows)
    new_tok = sum(r["completion_tokens"] for r in rows)
    acc = sum(r["correct"] for r in rows) / len(rows)
    print(f"{backend}: {len(rows)} problems in {seconds:.1f}s whole process ({len(rows) / seconds:.3f} problems/s); "
          f"generation {gen_s:.1f}s, {new_tok} new tokens ({new_tok / max(gen_s, 1e-9):.1f} tok/s), accuracy {acc:.3f}")
    return seconds, rows


def same_responses(a: dict[str, str], b: dict[str, str]) -> tuple[int, int]:
    """How many problems two runs answered with the identical response text: (same, in both)."""
    common = a.keys() & b.keys()
    return sum(a[k] == b[k] for k in common), len(common)


def roofline(dtype: str, rows: list[dict]) -> float:
    """Print (and return) the share of this machine's matrix-product rate our generation reached."""
    import torch

    n_params = 134_515_008  # SmolLM2-135M, embeddings tied (the LM head is a 576×49152 product per token)
    gen_s = sum(r["gen_seconds"] for r in rows)
    tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows)
    gflops = matmul_gflops(dtype)
    flops = 2 * n_params * tokens
    floor_s = flops / (gflops * 1e9)
    print(f"roofline: {gflops:.0f} GFLOP/s measured for {dtype} matrix products on {torch.get_num_threads()} threads; "
          f"the {tokens} tokens processed need {flops / 1e12:.2f} TFLOP = {floor_s:.1f}s at that rate; "
          f"generation took {gen_s:.1f}s ({100 * floor_s / gen_s:.0f}% of roofline)")
    return floor_s / gen_s


def run_lm_eval(model_dir: str, args, dtype: str) -> float:
    """The lm-evaluation-harness anchor's whole-process seconds (its own venv)."""
    anchor = SHARED / "bench" / "anchor_lm_eval.sh"
    raw = SHARED / "data" / "raw" / "gsm8k_test.jsonl"
    dtype_name = {"bf16": "bfloat16", "fp32": "float32"}[dtype]
    proc = subprocess.run(["bash", str(anchor), model_dir, str(raw), str(args.n), dtype_name, str(args.batch_size)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        raise SystemExit("anchor failed")
    lines = proc.stdout.strip().splitlines()
    for line in lines[:-1]:
        print("lm-eval:", line)
    m = re.search(r"seconds=([\d.]+)", lines[-1])
    seconds = float(m.group(1)) if m else float("nan")
    print(f"lm-eval: {args.n} problems in {seconds:.1f}s whole process ({args.n / seconds:.3f} problems/s)")
    return seconds


# -- where a decode step's time goes (--profile) ---------------------------------------------------
PROFILE_PARTS = {  # FastDecoder method → the part of the step it is
    "_lin": "projections (QKV, output, gate/up, down)",
    "_attend": "attention over the KV cache (cache write + products)",
    "_add_rms": "residual adds and RMS norms (C kernel where it runs)",
    "_rope": "rotary embedding",
    "_rope_heads": "rotary embedding (C kernel, bf16)",
    "_choose": "sampling (argmax / top-p)",
}


def _timed(acc: dict, phase: list, name: str, fn, label_of=None):
    """``fn`` wrapped to add its wall time to ``acc[(phase, label)]`` (all CPU work is synchronous)."""

    def wrapper(*a, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            label = label_of(*a) if label_of else name
            acc[(phase[0], label)] = acc.get((phase[0], label), 0.0) + time.perf_counter() - t0

    return wrapper


def profile_decode(n: int, dtype: str, max_new_tokens: int, batch_size: int) -> None:
    """Decode the benchmark's first batch in process with each part of the step timed; print the table.

    The parts are FastDecoder's own methods, each wrapped in a timer on the instance (nothing in the
    hot path changes when not profiling); "Python and the rest" is the decode step's wall time minus
    the timed parts (embedding, SiLU·up, the last residual add and the final norm, reshapes, loop
    bookkeeping, interpreter).
    """
    from pspo_eval.data import load_dataset
    from pspo_eval.generation.engine import _DecodeState
    from pspo_eval.generation.hf import HFBackend
    from pspo_eval.generation.prompts import PromptConfig, render_messages
    from pspo_eval.models import resolve_model

    backend = HFBackend(str(resolve_model("smollm2-135m-instruct")), dtype=dtype)
    dec = backend.decoder
    pc = PromptConfig()
    problems = load_dataset("gsm8k", limit=min(n, batch_size))
    prompts = [backend.encode(backend.render(render_messages(p, pc), p, pc)) for p in problems]
    acc: dict = {}
    phase = ["prefill"]
    for name in PROFILE_PARTS:
        vocab = (lambda x, w, b=None: "vocabulary projection (49,152 rows)" if w is dec.lm_head else "_lin") if name == "_lin" else None
        setattr(dec, name, _timed(acc, phase, name, getattr(dec, name), vocab))
    step = dec._decode_step
    steps = [0]

    def decode_step(*a):
        phase[0], steps[0] = "decode", steps[0] + 1
        return _timed(acc, phase, "step", step)(*a)

    dec._decode_step = decode_step
    record = _DecodeState.record
    _DecodeState.record = _timed(acc, phase, "_choose", record)  # token bookkeeping counts as sampling
    try:
        t0 = time.perf_counter()
        done = dec.generate(prompts, max_new_tokens=max_new_tokens, stop_ids=backend.stop_ids)
        total = time.perf_counter() - t0
    finally:
        _DecodeState.record = record
    _print_profile(acc, steps[0], total, sum(len(c.token_ids) for c in done), len(prompts), dtype)


def _print_profile(acc: dict, steps: int, total: float, tokens: int, batch: int, dtype: str) -> None:
    decode = {k[1]: v for k, v in acc.items() if k[0] == "decode"}
    step_s = decode.pop("step", 0.0)  # sampling and bookkeeping run between steps, timed apart
    prefill_s = total - step_s - decode.get("_choose", 0.0)
    rows = [(PROFILE_PARTS.get(k, k), v) for k, v in decode.items()]
    timed = sum(v for k, v in decode.items() if k != "_choose")
    rows.append(("Python and the rest of the step", step_s - timed))
    whole = step_s + decode.get("_choose", 0.0)
    print(f"profile ({dtype}, {batch} prompts, one batch): {total:.1f}s = prefill {prefill_s:.1f}s + "
          f"{steps} decode steps {whole:.1f}s ({1e3 * whole / max(steps, 1):.1f} ms/step), {tokens} new tokens")
    for name, sec in sorted(rows, key=lambda r: -r[1]):
        print(f"profile   {name:<58} {sec:6.2f}s {1e3 * sec / max(steps, 1):7.2f} ms/step {100 * sec / whole:5.1f}%")


def vllm_available() -> bool:
    return subprocess.run([sys.executable, "-c", "import vllm"], capture_output=True).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=64, help="GSM8K test problems (default 64)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--dtype", default="auto", help="auto (bf16 and fp32 where bf16 is native, else fp32) | bf16 | fp32")
    parser.add_argument("--skip-anchor", action="store_true", help="no lm-evaluation-harness run")
    parser.add_argument("--skip-vllm", action="store_true", help="no vllm backend run")
    parser.add_argument("--profile", action="store_true",
                        help="first print where a decode step's time goes (one batch of our decoder, in process)")
    parser.add_argument("--profile-only", action="store_true", help="print the profile and stop")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    from pspo_eval.generation.hf import cpu_supports_bf16
    from pspo_eval.models import resolve_model

    if args.dtype == "auto":
        dtypes = ["bf16", "fp32"] if cpu_supports_bf16() else ["fp32"]
        print(f"dtypes: {', '.join(dtypes)} ({'native bf16 on this CPU' if len(dtypes) == 2 else 'no native bf16 here: fp32 only'})")
    else:
        dtypes = [args.dtype]
    if args.profile or args.profile_only:
        for dtype in dtypes:
            profile_decode(args.n, dtype, args.max_new_tokens, args.batch_size)
        if args.profile_only:
            return
    model_dir = str(resolve_model("smollm2-135m-instruct"))
    with_vllm = not args.skip_vllm and vllm_available()
    if not args.skip_vllm and not with_vllm:
        print("vllm: not importable here (bash scripts/setup_vllm.sh installs it); vllm_s=nan")
    nan = float("nan")
    responses: dict[str, dict] = {}
    for dtype in dtypes:
        print(f"-- {dtype} --")
        ours_s, rows = run_ours(model_dir, args, dtype, "hf")
        responses[dtype] = {r["problem_id"]: r["response"] for r in rows}
        share = roofline(dtype, rows)
        vllm_s, vllm_rows = run_ours(model_dir, args, dtype, "vllm") if with_vllm else (nan, [])
        ours_tok, vllm_tok = gen_tokens_per_s(rows), gen_tokens_per_s(vllm_rows) if vllm_rows else nan
        lm_eval_s = nan if args.skip_anchor else run_lm_eval(model_dir, args, dtype)
        print(f"ratios ({dtype}): vllm/ours={vllm_s / ours_s:.2f} lm_eval/ours={lm_eval_s / ours_s:.2f} "
              f"lm_eval/vllm={lm_eval_s / vllm_s:.2f} (seconds over seconds: above 1, the first is slower); "
              f"generation tok/s ours/vllm={ours_tok / vllm_tok:.2f}")
        agree = ""
        if dtype == "fp32" and "bf16" in responses:
            same, n = same_responses(responses["bf16"], responses["fp32"])
            print(f"agreement: our bf16 and fp32 greedy responses are identical on {same}/{n} problems")
            agree = f" bf16_fp32_same={same}/{n}"
        print(f"eval_throughput n={args.n} ours_s={ours_s:.1f} vllm_s={vllm_s:.1f} lm_eval_s={lm_eval_s:.1f} "
              f"ours_gen_tok_s={ours_tok:.0f} vllm_gen_tok_s={vllm_tok:.0f} roofline={100 * share:.0f}% dtype={dtype}"
              f"{agree}")


if __name__ == "__main__":
    main()
