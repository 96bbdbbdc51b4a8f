"""Does a short RL run make the demo model better? GR-PSPO, GRPO-clip, GRPO-noclip and TRL, same budget.

The task: generated one- and two-step arithmetic word problems ("Tom has 18 marbles and gives 5
away..."), which SmolLM2-135M-Instruct solves about a quarter of the time, greedily. 400 problems
train (benchmarks/learning/train.jsonl), 200 others are held out (heldout.jsonl; no question in
both). Every run starts from the same model with the same seed, config (benchmarks/learning/
config.yaml: 4 prompts x 4 completions per rollout, 64 new tokens, lr 2e-5 constant, full
fine-tuning in float32) and number of rollouts: pspo and clip at mu = 2 (16 optimizer steps), noclip
at mu = 1 as in the paper presets (8 steps; the same 8 rollouts). TRL's GRPOTrainer runs the clip
setting for the same 16 steps (benchmarks/trl_grpo_learning.py, the anchor venv), with the same
reward file. Then the base model and every final model are scored greedily on the held-out set by
``pspo-eval evaluate`` (128 new tokens), and ``pspo-eval report`` draws the training curves and
the paired comparison with the base model.

Everything goes through the public CLI (train / evaluate / report); stages whose outputs exist are
skipped, so rerunning continues. The four trainings run in parallel (each at nice 19; on a crowded
machine use --threads 1).

    python benchmarks/learning.py [--out benchmarks/learning/out] [--steps 16] [--skip-trl] [--threads N]

Prints per objective the reward at the start and end of training, and on the held-out set the
format adherence ('#### <number>'), accuracy before/after and McNemar's exact p against the base.
Writes OUT/summary.md (the table), OUT/report/ (our report: report.md, figures/) and
benchmarks/learning/curves.png. Last line:
``learning base_acc=… pspo_acc=… pspo_p=… clip_acc=… clip_p=… noclip_acc=… noclip_p=… trl_acc=…``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HERE = REPO / "benchmarks" / "learning"
CONFIG = HERE / "config.yaml"
ANCHOR_ENV = Path(os.environ.get("PSPO_ANCHOR_DIR", "/work/shared/bench")) / "anchor_env.sh"
OBJECTIVES = {"pspo": ("GR-PSPO", 2), "clip": ("GRPO-clip", 2), "noclip": ("GRPO-noclip", 1)}
FORMAT_RE = re.compile(r"####\s*-?\d")

# --- the task ------------------------------------------------------------------------------------------

NAMES = ["Tom", "Anna", "Sam", "Lily", "Ben", "Mia", "Jack", "Emma", "Leo", "Zoe", "Max", "Ruby"]
ITEMS = ["apples", "marbles", "stickers", "books", "pencils", "cookies", "cards", "coins", "shells", "balloons"]
KINDS = ("add", "sub", "mul", "add_sub")


def make_problem(rng: random.Random) -> dict:
    """One word problem: {question, answer, category}; the answer is a non-negative integer string."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.choice(KINDS)
    if kind == "add":
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        q, ans = f"{name} has {a} {item}. {name} gets {b} more {item}. How many {item} does {name} have now?", a + b
    elif kind == "sub":
        a = rng.randint(10, 80)
        b = rng.randint(2, a - 1)
        q, ans = f"{name} had {a} {item} and gave {b} of them away. How many {item} does {name} have left?", a - b
    elif kind == "mul":
        a, b = rng.randint(2, 9), rng.randint(2, 12)
        q = f"{name} buys {a} boxes of {item}. Each box holds {b} {item}. How many {item} does {name} buy in total?"
        ans = a * b
    else:
        a, b = rng.randint(2, 30), rng.randint(2, 30)
        c = rng.randint(1, min(20, a + b - 1))  # never more lost than there is: the answer stays positive
        q, ans = f"{name} has {a} {item}, finds {b} more and then loses {c}. How many {item} does {name} have now?", a + b - c
    return {"question": q, "answer": str(ans), "category": kind}


def make_split(n_train: int, n_heldout: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Deterministic train and held-out problems; no question appears in both (nor twice in one)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[dict] = []
    while len(out) < n_train + n_heldout:
        p = make_problem(rng)
        if p["question"] in seen:
            continue
        seen.add(p["question"])
        split = "train" if len(out) < n_train else "heldout"
        index = len(out) if split == "train" else len(out) - n_train
        out.append({"id": f"{split}-{index}", **p})
    return out[:n_train], out[n_train:]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


# --- scoring helpers (tested in tests/test_bench_learning.py) ------------------------------------------


def has_format(response: str) -> bool:
    """'#### <number>' anywhere in the response (the answer format the system prompt asks for)."""
    return FORMAT_RE.search(response) is not None


def mcnemar_p(base: list[bool], other: list[bool]) -> tuple[int, int, float]:
    """Exact two-sided McNemar test on paired outcomes: (base-only right, other-only right, p)."""
    from pspo_eval.stats import mcnemar_from_pairs

    return mcnemar_from_pairs(base, other)


def read_samples(eval_dir: Path, model: str) -> dict[str, dict]:
    """The greedy records of one model on the held-out set, by problem id."""
    files = sorted((eval_dir / "samples" / model).rglob("*.jsonl"))
    if not files:
        raise SystemExit(f"no evaluation records for {model} under {eval_dir}/samples")
    out: dict[str, dict] = {}
    for f in files:
        for line in f.read_text(encoding="utf-8").split("\n"):
            if line.strip():
                r = json.loads(line)
                out[r["problem_id"]] = r
    return out


def rollout_rewards(metrics: Path) -> tuple[float, float, int]:
    """(mean reward of the first rollout, of the last rollout, optimizer steps) from a metrics.jsonl."""
    recs = [json.loads(line) for line in metrics.read_text(encoding="utf-8").split("\n") if line.strip()]
    recs = [r for r in recs if isinstance(r.get("reward/mean"), (int, float))]
    if not recs:
        return float("nan"), float("nan"), 0
    return float(recs[0]["reward/mean"]), float(recs[-1]["reward/mean"]), int(recs[-1]["step"])


def summarize(eval_dirs: dict[str, Path], models: list[str], train_dirs: dict[str, Path]) -> list[dict]:
    """Per model (records under eval_dirs[model]): n, format adherence, accuracy, McNemar against models[0]."""
    base = read_samples(eval_dirs[models[0]], models[0])
    ids = sorted(base)
    rows, by_model = [], {}
    for m in models:
        recs = by_model[m] = read_samples(eval_dirs[m], m)
        if sorted(recs) != ids:
            raise SystemExit(f"{m}: evaluated on other problems than {models[0]}")
        correct = [bool(recs[i]["correct"]) for i in ids]
        b, c, p = mcnemar_p([bool(base[i]["correct"]) for i in ids], correct)
        row = {"model": m, "n": len(ids), "format": sum(has_format(recs[i]["response"]) for i in ids) / len(ids),
               "acc": sum(correct) / len(ids), "only_base": b, "only_model": c, "p": p if m != models[0] else None,
               "tokens": sum(recs[i]["completion_tokens"] for i in ids) / len(ids)}
        if m in train_dirs:
            row["reward_start"], row["reward_end"], row["steps"] = rollout_rewards(train_dirs[m] / "metrics.jsonl")
        rows.append(row)
    if "trl" in models:  # each of our objectives against TRL's run, paired on the same problems
        trl = by_model["trl"]
        for row in rows:
            if row["model"] in OBJECTIVES:
                recs = by_model[row["model"]]
                row["only_trl"], row["only_ours"], row["p_vs_trl"] = mcnemar_p(
                    [bool(trl[i]["correct"]) for i in ids], [bool(recs[i]["correct"]) for i in ids])
    return rows


def markdown_table(rows: list[dict]) -> str:
    def f(x, nd=3):
        return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"

    vs_trl = any("p_vs_trl" in r for r in rows)
    lines = ["| model | optimizer steps | train reward, first rollout | train reward, last rollout | "
             "held-out format `#### n` | held-out accuracy | base-only / model-only right | McNemar p vs base |"
             + (" TRL-only / ours-only right | McNemar p vs TRL |" if vs_trl else ""),
             "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if vs_trl else "")]
    for r in rows:
        trl_cells = ""
        if vs_trl:
            trl_cells = (f" {r['only_trl']} / {r['only_ours']} | {f(r['p_vs_trl'], 4)} |" if "p_vs_trl" in r
                         else " – | – |")
        lines.append(f"| {r['model']} | {r.get('steps', 0)} | {f(r.get('reward_start'))} | {f(r.get('reward_end'))} | "
                     f"{r['format']:.1%} | {r['acc']:.1%} ({round(r['acc'] * r['n'])}/{r['n']}) | "
                     f"{r['only_base']} / {r['only_model']} | {f(r['p'], 4) if r['p'] is not None else '–'} |"
                     + trl_cells)
    return "\n".join(lines) + "\n"


# --- stages ----------------------------------------------------------------------------------------------


def sh(cmd: list[str], log: Path, env: dict | None = None) -> None:
    print("$ " + " ".join(cmd), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env).returncode
    if code:
        raise SystemExit(f"failed ({code}): see {log}\n" + log.read_text()[-3000:])


def cli(*args: str) -> list[str]:
    return ["nice", "-n", "19", sys.executable, "-m", "pspo_eval", *args]


def start_ours(objective: str, out: Path, steps_mu2: int, train_file: Path) -> subprocess.Popen | None:
    """Start `pspo-eval train` for one objective (None when its final model exists already)."""
    if (out / "final").is_dir():
        print(f"{objective}: {out}/final exists, skipped", flush=True)
        return None
    if out.exists():
        shutil.rmtree(out)
    title, mu = OBJECTIVES[objective]
    steps = steps_mu2 * mu // 2  # the same rollouts at every mu
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    cmd = cli("train", "-c", str(CONFIG), "-o", str(out), "--objective", objective, "-q",
              "--set", f"name={title}", "--set", f"train.num_iterations={mu}", "--set", f"train.max_steps={steps}",
              "--set", f"data.file={train_file}")
    print("$ " + " ".join(cmd) + " &", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = open(out.parent / f"{objective}.log", "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)


def wait(name: str, proc: subprocess.Popen | None, log: Path, started: float) -> None:
    if proc is None:
        return
    code = proc.wait()
    if code:
        raise SystemExit(f"{name} failed ({code}): see {log}\n" + log.read_text()[-3000:])
    print(f"{name}: trained, {time.perf_counter() - started:.0f} s after the start", flush=True)


def start_trl(out: Path, steps: int, train_file: Path, model_dir: str) -> subprocess.Popen | None:
    if (out / "final").is_dir():
        print(f"trl: {out}/final exists, skipped", flush=True)
        return None
    if out.exists():
        shutil.rmtree(out)
    python = subprocess.run(["bash", str(ANCHOR_ENV)], check=True, capture_output=True, text=True).stdout.strip()
    out.mkdir(parents=True)
    cmd = ["nice", "-n", "19", python, str(REPO / "benchmarks" / "trl_grpo_learning.py"), "--config", str(CONFIG),
           "--train", str(train_file), "--model", model_dir, "--out", str(out), "--steps", str(steps), "--iterations", "2"]
    print("$ " + " ".join(cmd) + " &", flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    log = open(out.parent / "trl.log", "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)


def training_figure(train_dirs: list[Path], png: Path) -> str:
    """Training curves (PNG) and the training table (Markdown) through our report package's functions."""
    from pspo_eval.report.plots import color_map, training_curves
    from pspo_eval.report.render_md import table_markdown
    from pspo_eval.report.training import load_train_dirs, present_panels, training_table

    runs = load_train_dirs([d for d in train_dirs if (d / "metrics.jsonl").is_file()
                            and (d / "metrics.jsonl").read_text(encoding="utf-8").strip()])
    if not runs:
        return ""
    png.write_bytes(training_curves(runs, present_panels(runs), color_map([r.label for r in runs])))
    return table_markdown(training_table(runs))


def start_eval(name: str, model: str, run_dir: Path, held_file: Path, max_new_tokens: int) -> subprocess.Popen:
    """`pspo-eval evaluate` of one model on the held-out file, greedy (resumable: a finished run is a no-op)."""
    cmd = cli("evaluate", "-m", f"{name}={model}", "--dataset-file", str(held_file), "-o", str(run_dir),
              "--max-new-tokens", str(max_new_tokens))
    print("$ " + " ".join(cmd) + " &", flush=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cmd, stdout=open(f"{run_dir}.log", "a"), stderr=subprocess.STDOUT, cwd=REPO)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=HERE / "out")
    p.add_argument("--steps", type=int, default=16, help="optimizer steps at mu = 2 (noclip, mu = 1: half)")
    p.add_argument("--train-size", type=int, default=400)
    p.add_argument("--heldout", type=int, default=200)
    p.add_argument("--max-new-tokens", type=int, default=128, help="held-out evaluation budget")
    p.add_argument("--skip-trl", action="store_true")
    p.add_argument("--sequential", action="store_true", help="train our objectives one after another")
    p.add_argument("--finalize", action="store_true",
                   help="no training or evaluation: report and summarize the models already evaluated under --out")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS for every child (1 on a crowded machine: "
                   "OpenMP threads spin at barriers when the other one is descheduled)")
    a = p.parse_args()
    if a.threads:
        os.environ["OMP_NUM_THREADS"] = str(a.threads)
    out: Path = a.out.resolve()
    started = time.perf_counter()
    train_rows, held_rows = make_split(a.train_size, a.heldout)
    train_file, held_file = HERE / "train.jsonl", HERE / "heldout.jsonl"
    write_jsonl(train_file, train_rows)
    write_jsonl(held_file, held_rows)
    model_dir = subprocess.run([sys.executable, "-m", "pspo_eval", "models", "path", "smollm2-135m-instruct"],
                               check=True, capture_output=True, text=True, cwd=REPO).stdout.strip().splitlines()[-1]
    print(f"learning: {len(train_rows)} train / {len(held_rows)} held-out problems, {a.steps} steps at mu=2, "
          f"model {model_dir}, out {out}", flush=True)

    train_dirs = {o: out / "train" / o for o in OBJECTIVES}
    if a.finalize:  # only the models whose evaluation finished; nothing is trained or evaluated
        train_dirs = {m: out / "train" / m for m in [*OBJECTIVES, "trl"]
                      if (out / "eval" / m / "results.json").is_file()}
    procs: dict[str, subprocess.Popen | None] = {}
    if a.finalize:
        pass
    elif not a.skip_trl:
        train_dirs["trl"] = out / "train" / "trl"
        procs["trl"] = start_trl(train_dirs["trl"], a.steps, train_file, model_dir)
    for objective in [] if a.finalize else OBJECTIVES:  # in parallel with each other and with TRL (--sequential: one at a time)
        procs[objective] = start_ours(objective, train_dirs[objective], a.steps, train_file)
        if a.sequential:
            wait(objective, procs[objective], out / "train" / f"{objective}.log", started)

    # Each model is scored in its own (resumable) run directory, as soon as it exists: the base model
    # while the others train, each trained model when its run ends.
    models = ["base", *train_dirs]
    eval_dirs = {m: out / "eval" / m for m in models}
    evals = {} if a.finalize else {"base": start_eval("base", "smollm2-135m-instruct", eval_dirs["base"], held_file, a.max_new_tokens)}
    pending = {} if a.finalize else dict(procs)
    while pending:
        for name, proc in list(pending.items()):
            if proc is None or proc.poll() is not None:
                wait(name, proc, out / "train" / f"{name}.log", started)
                evals[name] = start_eval(name, str(train_dirs[name] / "final"), eval_dirs[name], held_file,
                                         a.max_new_tokens)
                del pending[name]
        time.sleep(2)
    for name, proc in evals.items():
        if proc.wait():
            raise SystemExit(f"evaluating {name} failed: see {eval_dirs[name]}.log")
    report_dir = out / "report"
    train_md = ""
    try:
        sh(cli("report", *sum((["-r", str(d)] for d in eval_dirs.values()), []),
               *sum((["--train", str(d)] for d in train_dirs.values()), []),
               "--baseline", "base", "--title", "Learning benchmark: held-out arithmetic word problems", "-o",
               str(report_dir)), out / "report.log")
        curves = sorted((report_dir / "figures").glob("*train*.png"))
        if curves:
            shutil.copy(curves[0], HERE / "curves.png")
    except SystemExit as exc:
        # `pspo-eval report` (0.1.0) divides by zero in Table 1's average when no run holds one of the
        # paper's four datasets (a --dataset-file only); then the same report code draws the curves.
        print(f"pspo-eval report failed ({str(exc).splitlines()[0]}); training curves through "
              "pspo_eval.report.training / plots directly", flush=True)
        train_md = training_figure([out / "train" / m for m in [*OBJECTIVES, "trl"]], HERE / "curves.png")

    rows = summarize(eval_dirs, models, train_dirs)
    table = markdown_table(rows) + ("\nTraining (pspo_eval.report.training.training_table):\n\n" + train_md
                                    if train_md else "")
    (out / "summary.md").write_text(table, encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print(table, flush=True)
    for r in rows:
        print(f"{r['model']:7s} reward {r.get('reward_start', float('nan')):.3f} -> {r.get('reward_end', float('nan')):.3f}  "
              f"format {r['format']:.3f}  acc {rows[0]['acc']:.3f} -> {r['acc']:.3f}  "
              f"p={r['p'] if r['p'] is not None else float('nan'):.4g}", flush=True)
    print(f"learning: {time.perf_counter() - started:.0f} s in all", flush=True)
    by = {r["model"]: r for r in rows}
    parts = [f"base_acc={by['base']['acc']:.3f}"]
    for m in OBJECTIVES:
        parts += ([f"{m}_acc={by[m]['acc']:.3f}", f"{m}_p={by[m]['p']:.2g}"] if m in by
                  else [f"{m}_acc=nan", f"{m}_p=nan"])
    parts.append(f"trl_acc={by['trl']['acc']:.3f}" if "trl" in by else "trl_acc=nan")
    print("learning " + " ".join(parts))


if __name__ == "__main__":
    main()
