"""Training metrics: one JSON line per optimizer step, a progress line, optional sinks, a summary.

``OUT/metrics.jsonl`` holds one record per optimizer step, appended with one write + fsync (a
crash cuts at most the last line, which the next run repairs). On ``--resume`` from checkpoint N
the lines of steps after N are dropped first, so the file never holds a step twice and reads as
if the run had never stopped.

Keys of a record (absent when they do not apply):

- ``step`` (optimizer steps taken), ``rollout``, ``iteration`` (0 .. μ−1), ``epoch``, ``elapsed_s``
- ``reward/mean``, ``reward/std`` (the weighted total), ``reward/<fn>/mean``, ``reward/<fn>/std``
- ``frac_zero_std`` (groups whose completions all scored the same: no learning signal)
- ``completion_len/mean``, ``completion_len/max`` (tokens, stop token included), ``truncated_frac``
- ``entropy`` (mean per-token entropy of the policy at the sampling temperature, on completion tokens)
- ``loss``, ``kl`` (k3, when β > 0), ``ratio/mean``, ``ratio/min``, ``ratio/max``
- objective diagnostics, token fractions / means: ``clip/low_clipped``, ``clip/high_clipped``,
  ``clip/clipped``; ``pspo/smoothed_deviation`` (mean |r̃ − 1|) and ``pspo/smoothed_deviation_max``;
  ``cispo/truncated``; ``sapo/gate_weight``; ``gspo/…``
- ``grad_norm`` (before clipping), ``lr`` (used by this step)
- ``time/step_s``, ``time/rollout_s`` (0 on steps that reuse a rollout), ``time/train_s``,
  ``tokens_per_s`` (completion tokens trained on / step time), ``gen_tokens_per_s`` (rollout steps)
- ``mem/peak_mib`` (process peak RSS; ``mem/cuda_peak_mib`` on GPUs)
- ``eval/reward_mean``, ``eval/reward_std``, ``eval/<fn>/mean``, ``eval/completion_len``,
  ``eval/truncated_frac``, ``eval/seconds`` on the steps where the validation prompts were scored
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from pspo_eval.console import err_console, log, out_console, quiet
from pspo_eval.errors import PspoError, require
from pspo_eval.store import Shard, atomic_write_text

METRICS_FILE = "metrics.jsonl"


class TokenStats:
    """Token-weighted means, minima and maxima accumulated over the micro-batches of one step."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.weights: dict[str, float] = defaultdict(float)
        self.mins: dict[str, float] = {}
        self.maxs: dict[str, float] = {}

    def mean(self, key: str, value: float, weight: float) -> None:
        self.sums[key] += value * weight
        self.weights[key] += weight

    def min(self, key: str, value: float) -> None:
        self.mins[key] = min(value, self.mins.get(key, math.inf))

    def max(self, key: str, value: float) -> None:
        self.maxs[key] = max(value, self.maxs.get(key, -math.inf))

    def reduce(self, dist) -> None:
        """Combine with the other processes' (no-op in a single process)."""
        if dist is None or dist.world_size == 1:
            return
        keys = sorted(self.sums)
        summed = dist.sum([self.sums[k] for k in keys] + [self.weights[k] for k in keys])
        for i, k in enumerate(keys):
            self.sums[k], self.weights[k] = summed[i], summed[len(keys) + i]
        mins = sorted(self.mins)
        for k, v in zip(mins, dist.min([self.mins[k] for k in mins]), strict=True):
            self.mins[k] = v
        maxs = sorted(self.maxs)
        for k, v in zip(maxs, dist.max([self.maxs[k] for k in maxs]), strict=True):
            self.maxs[k] = v

    def result(self) -> dict[str, float]:
        out = {k: self.sums[k] / self.weights[k] for k in self.sums if self.weights[k] > 0}
        out.update({k: v for k, v in self.mins.items() if math.isfinite(v)})
        out.update({k: v for k, v in self.maxs.items() if math.isfinite(v)})
        return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 0.0
    mean = sum(values) / len(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def rollout_metrics(
    rewards: list[float],
    parts: dict[str, list[float]],
    lengths: list[int],
    truncated: list[bool],
    group_size: int,
) -> dict[str, float]:
    """Reward, group and length statistics of one rollout (all processes' completions together)."""
    out: dict[str, float] = {}
    out["reward/mean"], out["reward/std"] = _mean_std(rewards)
    for label, values in parts.items():
        out[f"reward/{label}/mean"], out[f"reward/{label}/std"] = _mean_std(values)
    groups = [rewards[i : i + group_size] for i in range(0, len(rewards), group_size)]
    out["frac_zero_std"] = sum(1 for g in groups if len(set(g)) <= 1) / max(1, len(groups))
    out["completion_len/mean"] = sum(lengths) / max(1, len(lengths))
    out["completion_len/max"] = float(max(lengths, default=0))
    out["truncated_frac"] = sum(truncated) / max(1, len(truncated))
    return out


def batch_rollout_metrics(batch: Any, dist: Any, group_size: int) -> dict[str, float]:
    """:func:`rollout_metrics` of a :class:`~pspo_eval.train.rollout.RolloutBatch` over every process's completions."""
    labels = list(batch.reward_parts)
    gathered = dist.gather(
        [
            (
                float(batch.rewards[i]),
                [float(batch.reward_parts[k][i]) for k in labels],
                int(batch.completion_mask[i].sum()),
                bool(batch.truncated[i]),
            )
            for i in range(len(batch))
        ]
    )
    return rollout_metrics(
        [g[0] for g in gathered],
        {k: [g[1][j] for g in gathered] for j, k in enumerate(labels)},
        [g[2] for g in gathered],
        [g[3] for g in gathered],
        group_size,
    )


def peak_memory(device: Any = None) -> dict[str, float]:
    """Peak resident memory of this process in MiB; on a CUDA device also its peak allocations."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"mem/peak_mib": rss / 1024 if sys.platform != "darwin" else rss / 2**20}
    if device is not None and getattr(device, "type", str(device)).startswith("cuda"):
        import torch

        out["mem/cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


# --- the log ----------------------------------------------------------------------------------------


def _clean(record: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe values: non-finite floats become null."""
    out = {}
    for k, v in record.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out


def read_metrics(out: Path) -> list[dict[str, Any]]:
    return Shard(Path(out) / METRICS_FILE, key_field="step").read()


class MetricsLog:
    """``OUT/metrics.jsonl`` plus TensorBoard / W&B when configured."""

    def __init__(
        self,
        out: Path,
        *,
        keep_through: int | None,
        report_to: list[str] = (),  # type: ignore[assignment]
        run_name: str | None = None,
        config: dict[str, Any] | None = None,
        enabled: bool = True,
    ):
        self.path = Path(out) / METRICS_FILE
        self.enabled = enabled
        self.records: list[dict[str, Any]] = []
        self._sinks: list[Any] = []
        if not enabled:
            return
        shard = Shard(self.path, key_field="step")
        if keep_through is None:
            if self.path.exists():
                self.path.unlink()
        elif self.path.exists():
            kept = [r for r in shard.read() if int(r.get("step", 0)) <= keep_through]
            text = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in kept)
            atomic_write_text(self.path, text)
            self.records = kept
        self.shard = Shard(self.path, key_field="step")
        for sink in report_to:
            if sink == "tensorboard":
                self._sinks.append(_TensorBoard(Path(out) / "tensorboard", purge_step=(keep_through or 0) + 1))
            elif sink == "wandb":
                self._sinks.append(_WandB(Path(out), run_name, config))
            else:
                raise PspoError(f"unknown metrics sink '{sink}'", "logging.report_to takes tensorboard and wandb")

    def write(self, record: dict[str, Any]) -> None:
        record = _clean(record)
        self.records.append(record)
        if not self.enabled:
            return
        self.shard.append([record])
        for sink in self._sinks:
            sink.log(record)

    def close(self) -> None:
        for sink in self._sinks:
            sink.close()
        self._sinks = []


class _TensorBoard:
    def __init__(self, directory: Path, purge_step: int):
        require("tensorboard", what="logging.report_to: tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(directory), purge_step=purge_step)

    def log(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, out: Path, run_name: str | None, config: dict[str, Any] | None):
        wandb = require("wandb", what="logging.report_to: wandb")
        from pspo_eval.store import stable_hash

        self.wandb = wandb
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "pspo-eval"),
            name=run_name or out.name,
            id=stable_hash(str(out.resolve()), 16),  # the same run directory resumes the same W&B run
            resume="allow",
            dir=str(out),
            config=config,
        )

    def log(self, record: dict[str, Any]) -> None:
        values = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
        self.run.log(values, step=int(record["step"]))

    def close(self) -> None:
        self.run.finish()


# --- what people read ----------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def progress_line(record: dict[str, Any], total_steps: int, objective: str) -> str:
    """One line per step for the terminal (stderr)."""
    r = record
    parts = [f"step {r['step']}/{total_steps}"]
    parts.append(f"reward {r.get('reward/mean', 0):.3f}±{r.get('reward/std', 0):.3f}")
    parts.append(f"0-std {_pct(r.get('frac_zero_std', 0))}")
    parts.append(f"len {r.get('completion_len/mean', 0):.0f}/{r.get('completion_len/max', 0):.0f}")
    parts.append(f"trunc {_pct(r.get('truncated_frac', 0))}")
    if "entropy" in r:
        parts.append(f"H {r['entropy']:.2f}")
    if r.get("kl") is not None:
        parts.append(f"kl {r['kl']:.2e}")
    if objective == "clip":
        parts.append(f"clip lo/hi {_pct(r.get('clip/low_clipped', 0))}/{_pct(r.get('clip/high_clipped', 0))}")
    elif objective == "pspo":
        parts.append(
            f"|r̃-1| {r.get('pspo/smoothed_deviation', 0):.1e}/{r.get('pspo/smoothed_deviation_max', 0):.1e}"
        )
    if "ratio/min" in r and "ratio/max" in r:
        parts.append(f"r [{r['ratio/min']:.3f},{r['ratio/max']:.3f}]")
    if r.get("grad_norm") is not None:
        parts.append(f"|g| {r['grad_norm']:.3g}")
    parts.append(f"lr {r.get('lr', 0):.1e}")
    timing = f"{r.get('time/step_s', 0):.1f}s"
    if r.get("time/rollout_s"):
        timing += f" (gen {r['time/rollout_s']:.1f}s)"
    parts.append(timing)
    if r.get("tokens_per_s"):
        parts.append(f"{r['tokens_per_s']:.0f} tok/s")
    if r.get("eval/reward_mean") is not None:
        parts.append(f"eval {r['eval/reward_mean']:.3f}")
    return "  ".join(parts)


def print_progress(line: str) -> None:
    if not quiet():
        err_console.print(line, markup=False, highlight=False, soft_wrap=True)


def summarize(records: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Numbers for the end-of-run table (and the return value of ``train``)."""
    out: dict[str, Any] = dict(extra or {})
    if not records:
        return out
    steps = [r for r in records if "step" in r]
    out["steps"] = steps[-1]["step"]
    times = [r["time/step_s"] for r in steps if r.get("time/step_s") is not None]
    if times:
        out["step_s_mean"] = sum(times) / len(times)
        out["step_s_median"] = statistics.median(times)
        out["train_s_total"] = sum(times)
    first_rollout = [r for r in steps if r.get("rollout") == steps[0].get("rollout")]
    last_rollout = [r for r in steps if r.get("rollout") == steps[-1].get("rollout")]
    out["reward_first"] = first_rollout[0].get("reward/mean")
    out["reward_last"] = last_rollout[0].get("reward/mean")
    evals = [r for r in steps if r.get("eval/reward_mean") is not None]
    if evals:
        best = max(evals, key=lambda r: r["eval/reward_mean"])
        out["eval_best"] = best["eval/reward_mean"]
        out["eval_best_step"] = best["step"]
        out["eval_last"] = evals[-1]["eval/reward_mean"]
    peaks = [r["mem/peak_mib"] for r in steps if r.get("mem/peak_mib") is not None]
    if peaks:
        out["peak_mem_mib"] = max(peaks)
    cuda_peaks = [r["mem/cuda_peak_mib"] for r in steps if r.get("mem/cuda_peak_mib") is not None]
    if cuda_peaks:
        out["peak_cuda_mem_mib"] = max(cuda_peaks)
    return out


def print_summary(summary: dict[str, Any], title: str = "training summary") -> None:
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    labels = {
        "steps": "optimizer steps",
        "train_s_total": "time in steps (s)",
        "step_s_mean": "step time, mean (s)",
        "step_s_median": "step time, median (s)",
        "reward_first": "reward, first rollout",
        "reward_last": "reward, last rollout",
        "eval_best": "validation reward, best",
        "eval_best_step": "  at step",
        "eval_last": "validation reward, last",
        "peak_mem_mib": "peak host memory (MiB)",
        "peak_cuda_mem_mib": "peak GPU memory (MiB)",
        "final": "final model",
        "best": "best model",
        "last_checkpoint": "last checkpoint",
    }
    for key, label in labels.items():
        value = summary.get(key)
        if value is None:
            continue
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        table.add_row(label, text)
    console = out_console if not quiet() else None
    if console is not None:
        console.print(table)
    else:  # pragma: no cover
        log(json.dumps(summary))
