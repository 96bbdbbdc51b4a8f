"""``pspo-eval report``: read the runs, build every section, then write all outputs.

Layout of REPORT_DIR::

    index.html         one self-contained page (inline CSS, figures embedded as base64 PNG)
    report.md          the same content in Markdown, linking figures/*.png
    tables/<name>.csv  every table's records with unrounded values
    tables/<name>.tex  every table as a booktabs ``table`` environment, ready to \\input
    figures/<name>.png the figures (modest DPI, no timestamps: small and reproducible)
    provenance.json    runs, config hashes, git revisions, dataset checksums, versions, judges, files

Everything is computed in memory before the first file is written, and each file is written
atomically, so a failing report leaves the previous one intact. Files a previous report wrote that
this one does not (a section that disappeared) are removed, using the previous provenance.json.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pspo_eval.errors import PspoError
from pspo_eval.report.document import Figure, Report, Section
from pspo_eval.report.load import Collection, ModelRef, dataset_title, load_runs


@dataclass
class ReportResult:
    out: Path
    report: Report
    files: list[str]

    @property
    def index(self) -> Path:
        return self.out / "index.html"


def _now() -> str:
    """Generation time; honours SOURCE_DATE_EPOCH so a committed demo report can be rebuilt byte for byte."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = time.gmtime(int(epoch)) if epoch and epoch.isdigit() else time.gmtime()
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", moment)


@dataclass
class _Inputs:
    """What every section builder reads: the runs, the baseline, display names, colours, greedy summaries."""

    coll: Collection
    train_runs: list
    base: ModelRef
    names: list[str]
    colors: dict[str, str]
    titles: dict[str, str]
    summaries: dict
    n_boot: int
    seed: int
    alpha: float


def build_report(runs: Sequence[str | Path], *, train: Sequence[str | Path] = (), baseline: str | None = None,
                 title: str | None = None, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> Report:
    """Build the report document (no file is written): one function per section, in page order."""
    from pspo_eval import __version__
    from pspo_eval.report.uncertain import uncertain_section

    inp = _inputs(runs, train, baseline, n_boot=n_boot, seed=seed, alpha=alpha)
    coll, base = inp.coll, inp.base
    sections = [_accuracy_section(inp), uncertain_section(coll), _sampling_section(inp)]
    judge, judges = _judges_section(inp)
    sections += [judge, _comparison_section(inp), _breakdowns_section(inp)]
    if inp.train_runs:
        sections.append(_training_section(inp))
    warnings = list(coll.warnings)
    provenance = _provenance(coll, inp.train_runs, judges, base, __version__)
    for run in provenance["runs"]:
        if run.get("status") not in (None, "complete"):
            warnings.append(f"run {run['name']} is {run['status']}: its last command did not finish; the tables "
                            "cover the records stored so far.")
    subtitle = (f"{len(coll.runs)} run(s): {', '.join(r.name for r in coll.runs)} · generated {provenance['generated']} "
                f"· pspo-eval {__version__}")
    return Report(title or "PSPO evaluation report", subtitle, sections, _highlights(inp), provenance, warnings)


def _inputs(runs: Sequence[str | Path], train: Sequence[str | Path], baseline: str | None, *, n_boot: int, seed: int,
            alpha: float) -> _Inputs:
    from pspo_eval.report import plots
    from pspo_eval.report.tables import greedy_summaries
    from pspo_eval.report.training import load_train_dirs

    coll = load_runs(list(runs))
    train_runs = load_train_dirs(list(train))
    base = coll.model_named(baseline) if baseline else coll.models[0]
    names = [m.name for m in coll.models]
    colors = plots.color_map(names)
    for run in train_runs:  # a training run named like an evaluated model keeps that model's colour
        same = [n for n in names if n.lower() == run.label.lower()]
        colors[run.label] = colors[same[0]] if same else plots.PALETTE[len(colors) % len(plots.PALETTE)]
    titles = {d: dataset_title(d) for d in coll.datasets()}
    return _Inputs(coll, train_runs, base, names, colors, titles, greedy_summaries(coll), n_boot, seed, alpha)


def _accuracy_section(inp: _Inputs) -> Section:
    """Table 1 and its bar chart."""
    from pspo_eval.report import plots
    from pspo_eval.report.tables import accuracy_table

    coll, summaries = inp.coll, inp.summaries
    acc = Section("accuracy", "Accuracy", "Greedy decoding (temperature 0), first sample of every problem; "
                  "all numbers are recomputed from the stored sample records.")
    acc.tables.append(accuracy_table(coll, summaries))
    if summaries:
        values = {(m.name, d): (s.accuracy, *s.ci95) for m in coll.models for d in coll.datasets()
                  if (s := summaries.get((m.key, d)))}
        acc.figures.append(Figure("accuracy", "Greedy pass@1 per dataset",
                                  plots.accuracy_bars(coll.datasets(), inp.titles, inp.names, values, inp.colors),
                                  "Greedy pass@1 per dataset with Wilson 95% intervals."))
    else:
        acc.notes.append("No model has a greedy (temperature 0) setting: Table 1 is empty by design.")
    return acc


def _sampling_section(inp: _Inputs) -> Section:
    """Every sampling setting: the table, and curves versus temperature when there are several."""
    from pspo_eval.report.tables import sampling_summaries, sampling_table

    samp = sampling_summaries(inp.coll)
    sampling = Section("sampling", "Sampling", "Every sampling setting of every model: accuracy over all samples, "
                       "pass@k and maj@k when several samples per problem were drawn, and response length.")
    sampling.tables.append(sampling_table(samp))
    temps = inp.coll.temperatures()
    if len(temps) > 1:
        sampling.figures += _temperature_figures(inp, samp)
    else:
        sampling.notes.append(f"Only one temperature (T={temps[0]:g}) was evaluated: no temperature curves.")
    return sampling


def _temperature_figures(inp: _Inputs, samp: list) -> list[Figure]:
    from pspo_eval.report import plots

    series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    kmax = max(s.samples_per_problem for *_, s in samp)
    kplot = max(k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if k <= kmax)
    for m, d, t, s in samp:
        series.setdefault((m.name, d), []).append({
            "t": t, "acc": 100 * s.accuracy, "low": 100 * s.ci95[0], "high": 100 * s.ci95[1],
            "pass": 100 * s.pass_at_k[str(kplot)] if str(kplot) in s.pass_at_k else None,
            "tokens": s.mean_completion_tokens})
    for pts in series.values():
        pts.sort(key=lambda p: p["t"])
    ds, titles, names, colors = inp.coll.datasets(), inp.titles, inp.names, inp.colors
    figures = [Figure("sampling_accuracy", "Accuracy versus temperature",
                      plots.temperature_curves(ds, titles, names, series, colors, "acc", "accuracy (%)", band=True),
                      "Accuracy over all samples versus temperature (band: 95% CI).")]
    if kplot > 1:
        figures.append(Figure(f"sampling_pass_at_{kplot}", f"pass@{kplot} versus temperature",
                              plots.temperature_curves(ds, titles, names, series, colors, "pass", f"pass@{kplot} (%)"),
                              f"Unbiased pass@{kplot} versus temperature (k = the largest power of two "
                              "every setting has samples for; greedy settings have k = 1 and are left out)."))
    figures.append(Figure("sampling_length", "Mean response length versus temperature",
                          plots.temperature_curves(ds, titles, names, series, colors, "tokens", "tokens"),
                          "Mean completion length (tokens) versus temperature."))
    return figures


def _judges_section(inp: _Inputs) -> tuple[Section, list[dict]]:
    """The judge tables (report/judging.py) and the score panels; also the judges for the provenance."""
    from pspo_eval.report import plots
    from pspo_eval.report.judging import judge_section

    judged = judge_section(inp.coll, n_boot=inp.n_boot, seed=inp.seed)
    judge = Section("judges", "LLM judges", "Rubric scores, flags, pairwise preferences and agreement from the "
                    "judgments stored in the runs (pspo-eval judge).")
    if judged is None:
        judge.notes.append("No judgments in these runs (pspo-eval judge --run RUN_DIR adds them).")
        return judge, []
    judge.tables += judged.tables
    by_rubric: dict[tuple[str, str], list[dict]] = {}
    for row in judged.scores:
        by_rubric.setdefault((row["judge"], row["rubric"]), []).append(row)
    panels = []
    for (jname, rubric), rows in list(by_rubric.items())[:6]:
        criteria = list(dict.fromkeys(r["criterion"] for r in rows))
        values = {(r["model"], r["criterion"]): (r["mean"], r["ci_low"], r["ci_high"]) for r in rows}
        panels.append((f"{jname} · {rubric}", criteria, values, judged.scales.get((jname, rubric))))
    if panels:
        judge.figures.append(Figure("judge_scores", "Judge scores per criterion",
                                    plots.judge_scores(panels, inp.names, inp.colors),
                                    "Mean judge score per criterion and model with a bootstrap 95% CI over "
                                    "items; one panel per judge and rubric."))
    return judge, judged.judges


def _comparison_section(inp: _Inputs) -> Section:
    from pspo_eval.report.tables import comparison_table

    comp = Section("comparison", "Comparison with the baseline",
                   f"Paired on the same problems: each model against the baseline {inp.base.name}.")
    if len(inp.coll.models) > 1:
        comp.tables.append(comparison_table(inp.coll, inp.base, n_boot=inp.n_boot, seed=inp.seed, alpha=inp.alpha))
    else:
        comp.notes.append("Only one model in these runs: nothing to compare.")
    return comp


def _breakdowns_section(inp: _Inputs) -> Section:
    """Per category and level; the MATH-500 subject × level heat map."""
    from pspo_eval.report import plots
    from pspo_eval.report.tables import breakdown_table, crosstab

    coll = inp.coll
    brk = Section("breakdowns", "Breakdowns", "Greedy accuracy per problem category and level, where the dataset "
                  "has them (MATH-500: subject and difficulty level 1–5).")
    table = breakdown_table(coll, inp.summaries)
    if table is not None:
        brk.tables.append(table)
    else:
        brk.notes.append("No category or level labels in the evaluated datasets.")
    heat_models = [m for m in coll.models if crosstab(coll.greedy(m, "math500") or [])]
    if heat_models:
        cells = {m.name: crosstab(coll.greedy(m, "math500") or []) for m in heat_models}
        subjects = sorted({r for c in cells.values() for r, _ in c})
        levels = sorted({lv for c in cells.values() for _, lv in c}, key=_level_key)
        brk.figures.append(Figure("math500_subject_level", "MATH-500: subject × level",
                                  plots.heatmaps([m.name for m in heat_models], subjects, levels, cells,
                                                 "MATH-500 greedy accuracy (%) by subject × level"),
                                  "Greedy accuracy per MATH-500 subject and level; each cell shows the accuracy "
                                  "and the number of problems in it."))
    return brk


def _training_section(inp: _Inputs) -> Section:
    from pspo_eval.report import plots
    from pspo_eval.report.training import present_panels, training_table

    tr = Section("training", "Training curves", "From the trainers' metrics.jsonl, one line per run (method); "
                 "panels appear for the quantities at least one trainer logged.")
    tr.tables.append(training_table(inp.train_runs))
    curves = present_panels(inp.train_runs)
    if curves:
        tr.figures.append(Figure("training_curves", "Training curves",
                                 plots.training_curves(inp.train_runs, curves, inp.colors),
                                 "Trainer metrics per optimizer step (faint: raw; solid: moving average "
                                 "for long runs)."))
    else:
        tr.notes.append("The trainers' metrics.jsonl files hold no steps yet.")
    return tr


def _highlights(inp: _Inputs) -> list[tuple[str, str]]:
    """The cards at the top of the page."""
    coll, summaries = inp.coll, inp.summaries
    highlights = [("Baseline", inp.base.name), ("Models", str(len(coll.models))),
                  ("Datasets", ", ".join(inp.titles[d] for d in coll.datasets()))]
    if summaries:
        problems = {d: max(s.problems for (k, dd), s in summaries.items() if dd == d)
                    for d in coll.datasets() if any(dd == d for (_, dd) in summaries)}
        highlights.append(("Problems (greedy)", str(sum(problems.values()))))
    highlights.append(("Temperatures", ", ".join(f"T = {t:g}" for t in coll.temperatures())))
    if inp.train_runs:
        highlights.append(("Training runs", str(len(inp.train_runs))))
    return highlights


def _level_key(value: str) -> tuple:
    digits = "".join(c for c in value if c.isdigit())
    return (int(digits) if digits else 1_000_000, value)


def _provenance(coll: Collection, train_runs: list, judges: list[dict], base: ModelRef, version: str) -> dict[str, Any]:
    runs = []
    for index, run in enumerate(coll.runs):
        manifest = run.manifest
        models = [m for m in coll.models if m.run_index == index]
        samples = sum(len(g.records) for (key, _, _), g in coll.groups.items() if key[0] == index)
        runs.append({
            "name": run.name, "path": str(run.path), "config_hash": manifest.config_hash,
            "merged_config_hashes": manifest.merged_config_hashes,
            "git_revision": manifest.git_revision, "created": manifest.created,
            "ended": manifest.ended, "status": manifest.status,
            "samples": samples,
            "models": [{"name": m.name, "label": m.label, "model_id": m.model_id, "size": m.size} for m in models],
            "settings": sorted({g.setting for (key, _, _), g in coll.groups.items() if key[0] == index}),
            "dataset_checksums": manifest.dataset_checksums, "versions": manifest.versions,
            "backends": manifest.backends, "system_prompt": manifest.system_prompt,
            "judging": manifest.judging,
        })
    return {
        "generated": _now(), "pspo_eval": version, "baseline": base.name, "runs": runs, "judges": judges,
        "training": [{"label": r.label, "path": str(r.path), "objective": r.method, "config_hash": r.config_hash,
                      "steps": int(r.records[-1]["step"]) if r.records else 0} for r in train_runs],
    }


def write_report(report: Report, out: str | Path) -> ReportResult:
    """Render and write every output file (see the module docstring)."""
    from pspo_eval.report.render_html import report_html
    from pspo_eval.report.render_latex import table_latex
    from pspo_eval.report.render_md import report_markdown, table_csv

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PspoError(f"--out {out} is a file", "give a directory for the report")
    files: dict[str, str | bytes] = {}
    for table in report.tables():
        files[f"tables/{table.name}.csv"] = table_csv(table)
        files[f"tables/{table.name}.tex"] = table_latex(table)
    for fig in report.figures():
        files[f"figures/{fig.name}.png"] = fig.png
    files["report.md"] = report_markdown(report)
    files["index.html"] = report_html(report)
    names = sorted(files) + ["provenance.json"]
    previous = _previous_files(out)
    for rel, content in files.items():
        _write(out / rel, content)
    _write(out / "provenance.json", json.dumps({**report.provenance, "warnings": report.warnings, "files": names},
                                               indent=2, ensure_ascii=False, default=str) + "\n")
    for rel in previous - set(names):
        stale = out / rel
        if stale.is_file() and ".." not in Path(rel).parts:
            stale.unlink()
    return ReportResult(out, report, names)


def _previous_files(out: Path) -> set[str]:
    try:
        data = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    files = data.get("files") if isinstance(data, dict) else None
    return {f for f in files if isinstance(f, str)} if isinstance(files, list) else set()


def _write(path: Path, content: str | bytes) -> None:
    """Write one output file atomically, readable by all like any other file the user creates.

    (A report is meant to be shared, served or committed: the umask decides, as for a plain open().)
    """
    from pspo_eval.store import atomic_write_bytes

    atomic_write_bytes(path, content.encode("utf-8") if isinstance(content, str) else content, mode=None)


def make_report(runs: Sequence[str | Path], out: str | Path, **options: Any) -> ReportResult:
    """Build and write the report: the function behind ``pspo-eval report``."""
    return write_report(build_report(runs, **options), out)
