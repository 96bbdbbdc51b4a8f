"""Evaluation throughput: pspo-eval's `hf` backend against lm-evaluation-harness, side by side.

Both tools run as whole processes (model load included) on the same machine, model, data and
settings: the demo model, the first N GSM8K test problems, zero-shot with the paper's system prompt
and the chat template, greedy, 128 new tokens, batch 64, the same dtype. The anchor is
``../shared/bench/anchor_lm_eval.sh`` (lm-eval's HF backend, in its own venv).

The dtype defaults to bf16 on CPUs with native bf16 matrix instructions (AVX512-BF16 / AMX) and to
fp32 elsewhere, for both tools: on a CPU without them bf16 is emulated and several times slower than
fp32, which would only measure the emulation. ``--dtype bf16`` forces it.

It also reports how far our generation is from this machine's compute roofline: the FLOPs of the
tokens processed (2 × parameters per prompt and generated token) against the matrix-product rate
measured here at the same shapes.

Last line: ``eval_throughput ours_s=… anchor_s=… ratio=…`` (ratio = anchor seconds / our seconds,
i.e. how many times more problems per second we evaluate).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=64, help="GSM8K test problems (default 64)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--dtype", default="auto", help="auto | bf16 | fp32 (both tools)")
    parser.add_argument("--skip-anchor", action="store_true", help="only time pspo-eval")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    from pspo_eval.generation.hf import cpu_supports_bf16
    from pspo_eval.models import resolve_model

    dtype = args.dtype
    if dtype == "auto":
        dtype = "bf16" if cpu_supports_bf16() else "fp32"
        print(f"dtype: {dtype} ({'native bf16 on this CPU' if dtype == 'bf16' else 'this CPU has no native bf16: fp32 for both tools'})")
    model_dir = resolve_model("smollm2-135m-instruct")
    raw = SHARED / "data" / "raw" / "gsm8k_test.jsonl"

    # -- ours -------------------------------------------------------------------------------------
    out = Path(tempfile.mkdtemp(prefix="pspo-bench-eval-")) / "run"
    cmd = [sys.executable, "-m", "pspo_eval", "evaluate", "-m", f"demo={model_dir}", "-d", "gsm8k",
           "--limit", str(args.n), "--max-new-tokens", str(args.max_new_tokens), "--dtype", dtype,
           "--batch-size", str(args.batch_size), "--out", str(out)]
    env = {**os.environ, "PSPO_EVAL_QUIET": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, cwd=REPO)
    ours_s = time.perf_counter() - t0
    rows = [json.loads(line) for f in sorted(out.rglob("*.jsonl")) for line in f.read_text().splitlines()]
    gen_s = sum(r["gen_seconds"] for r in rows)
    prompt_tok = sum(r["prompt_tokens"] for r in rows)
    new_tok = sum(r["completion_tokens"] for r in rows)
    acc = sum(r["correct"] for r in rows) / len(rows)
    strict = sum(r["strict"] for r in rows) / len(rows)
    print(f"ours: {len(rows)} problems in {ours_s:.1f}s whole process ({len(rows) / ours_s:.3f} problems/s); "
          f"generation {gen_s:.1f}s, {new_tok} new tokens ({new_tok / gen_s:.1f} tok/s), accuracy {acc:.3f} strict {strict:.3f}")

    # -- roofline ---------------------------------------------------------------------------------
    import torch

    n_params = 134_515_008  # SmolLM2-135M, embeddings tied (the LM head is a 576×49152 product per token)
    gflops = matmul_gflops(dtype)
    flops = 2 * n_params * (prompt_tok + new_tok)
    floor_s = flops / (gflops * 1e9)
    print(f"roofline: {gflops:.0f} GFLOP/s measured for {dtype} matrix products on {torch.get_num_threads()} threads; "
          f"the {prompt_tok + new_tok} tokens processed need {flops / 1e12:.2f} TFLOP = {floor_s:.1f}s at that rate; "
          f"generation took {gen_s:.1f}s ({100 * floor_s / gen_s:.0f}% of roofline)")

    if args.skip_anchor:
        print(f"eval_throughput ours_s={ours_s:.1f} anchor_s=nan ratio=nan")
        return
    # -- anchor: lm-evaluation-harness ------------------------------------------------------------
    anchor = SHARED / "bench" / "anchor_lm_eval.sh"
    dtype_name = {"bf16": "bfloat16", "fp32": "float32"}[dtype]
    proc = subprocess.run(["bash", str(anchor), str(model_dir), str(raw), str(args.n), dtype_name, str(args.batch_size)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        raise SystemExit("anchor failed")
    lines = proc.stdout.strip().splitlines()
    for line in lines[:-1]:
        print("anchor:", line)
    m = re.search(r"seconds=([\d.]+)", lines[-1])
    anchor_s = float(m.group(1)) if m else float("nan")
    print(f"anchor: {args.n} problems in {anchor_s:.1f}s whole process ({args.n / anchor_s:.3f} problems/s)")
    ratio = anchor_s / ours_s
    print(f"eval_throughput ours_s={ours_s:.1f} anchor_s={anchor_s:.1f} ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
