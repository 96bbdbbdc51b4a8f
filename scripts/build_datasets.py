#!/usr/bin/env python3
"""Build the normalized benchmark files in pspo_eval/resources/datasets/ from the authors' original releases.

    python scripts/build_datasets.py --raw ../shared/data/raw --out datasets

Why a script and not a download at run time: evaluation must be reproducible offline, so the
project ships normalized files with checksums, and this script is the one place that says how
they were made. It

1. checks the sha256 of every raw file against the pinned values (the ones in the raw folder's
   SOURCES.md, which is cross-checked when present) and stops before writing anything if one differs;
2. converts each release with the rules in ``pspo_eval/data/normalize.py`` (shared with the hub
   loader, so ``source="hub"`` gives the same problems);
3. writes ``*.jsonl`` (one Problem per line), ``MANIFEST.json`` and ``README.md`` atomically: all
   files are written to temporaries first and renamed only when every one succeeded.

The output is deterministic: the same raw files give the same bytes on every run and machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pspo_eval.data.normalize import (  # noqa: E402
    ANSWER_KINDS,
    asdiv_problem,
    gsm8k_problem,
    math500_problem,
    svamp_problem,
)
from pspo_eval.data.registry import REGISTRY  # noqa: E402
from pspo_eval.errors import PspoError  # noqa: E402
from pspo_eval.records import Problem  # noqa: E402

#: sha256 of the original releases, as listed in shared/data/SOURCES.md.
RAW_SHA256 = {
    "gsm8k_train.jsonl": "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465",
    "gsm8k_test.jsonl": "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
    "SVAMP.json": "5be77703a6d891ae476d7c082787ad361392aa02453b132516cdd5f4e7934e3e",
    "ASDiv.xml": "ef8904068482919ac48c8eeaaf6df344b8a308ba66d048c2d4d87eab82dc4929",
    "math500_test.jsonl": "34943b1a3660c7dc63c7bc89b5ecefc0ffdeeee32501c2ad161cdec34d7a4b4c",
}

#: registry name -> raw file it is built from.
RAW_FILE = {
    "gsm8k": "gsm8k_test.jsonl",
    "gsm8k_train": "gsm8k_train.jsonl",
    "svamp": "SVAMP.json",
    "asdiv": "ASDiv.xml",
    "math500": "math500_test.jsonl",
}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sources_md_hashes(raw: Path) -> dict[str, str]:
    """The ``<sha256>  raw/<file>`` lines of the SOURCES.md next to the raw folder, if there is one."""
    path = raw.parent / "SOURCES.md"
    if not path.is_file():
        return {}
    found = re.findall(r"^([0-9a-f]{64})\s+\*?(?:raw/)?(\S+)\s*$", path.read_text(encoding="utf-8"), re.M)
    return {name: digest for digest, name in found}


def check_raw(raw: Path) -> dict[str, bytes]:
    """Read every raw file and check its sha256; any difference stops the build before writing."""
    if not raw.is_dir():
        raise PspoError(
            f"raw data folder not found: {raw}", "pass --raw pointing at the folder of original releases"
        )
    listed = sources_md_hashes(raw)
    for name, digest in listed.items():
        if name in RAW_SHA256 and RAW_SHA256[name] != digest:
            raise PspoError(
                f"SOURCES.md lists sha256 {digest} for {name}, this script pins {RAW_SHA256[name]}",
                "update the pinned RAW_SHA256 in scripts/build_datasets.py only after checking the new release",
            )
    contents, problems = {}, []
    for name, expected in RAW_SHA256.items():
        path = raw / name
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        data = path.read_bytes()
        actual = sha256_bytes(data)
        if actual != expected:
            problems.append(f"{name}: sha256 {actual}, expected {expected}")
        contents[name] = data
    if problems:
        raise PspoError(
            f"raw files in {raw} differ from the pinned releases: " + "; ".join(problems),
            "restore the original files (see SOURCES.md); nothing was written",
        )
    return contents


# ---------------------------------------------------------------------------------------------
# converters: raw bytes -> Problems (the rules themselves live in pspo_eval/data/normalize.py)


def _jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode("utf-8").split("\n") if line.strip()]


def build_gsm8k(data: bytes, name: str) -> list[Problem]:
    split = REGISTRY[name].split
    return [gsm8k_problem(row, split=split, index=i, dataset=name) for i, row in enumerate(_jsonl(data))]


def build_svamp(data: bytes) -> list[Problem]:
    return [svamp_problem(row) for row in json.loads(data.decode("utf-8"))]


def build_asdiv(data: bytes) -> list[Problem]:
    root = ET.fromstring(data)
    problems = []
    for element in root.iter("Problem"):

        def text(tag: str, element: ET.Element = element) -> str:
            child = element.find(tag)
            if child is None or child.text is None:
                raise ValueError(f"ASDiv problem {element.get('ID')} has no <{tag}>")
            return child.text

        extra = {"source": element.get("Source")}
        if element.get("Class"):
            extra["class"] = element.get("Class")
        problems.append(
            asdiv_problem(
                id=str(element.get("ID")),
                body=text("Body"),
                question=text("Question"),
                answer=text("Answer"),
                solution_type=text("Solution-Type"),
                formula=text("Formula"),
                grade=element.get("Grade"),
                extra={key: value for key, value in extra.items() if value},
            )
        )
    return problems


def build_math500(data: bytes) -> list[Problem]:
    return [math500_problem(row, index=i) for i, row in enumerate(_jsonl(data))]


def serialize(problems: list[Problem]) -> bytes:
    """One compact JSON object per line, UTF-8 (not \\u-escaped), fields in record order."""
    lines = [json.dumps(p.model_dump(mode="json"), ensure_ascii=False) for p in problems]
    return ("\n".join(lines) + "\n").encode("utf-8")


# ---------------------------------------------------------------------------------------------
# manifest and README


def asdiv_counts(problems: list[Problem]) -> dict[str, Any]:
    kinds = Counter(p.meta["answer_kind"] for p in problems)
    flagged = sum(1 for p in problems if p.meta["multi_answer"])
    return {
        "rows": len(problems),
        "single_number": len(problems) - flagged,
        "multi_answer": flagged,
        "answer_kinds": {kind: kinds[kind] for kind in ANSWER_KINDS},
        "semicolon_multi_value": kinds["multi"],
        "rows_without_semicolon_multi_value": len(problems) - kinds["multi"],
    }


README = """# Benchmark data

Normalized copies of the benchmarks pspo-eval evaluates on (and of the GSM8K training set), one
`pspo_eval.records.Problem` per line, UTF-8 JSON Lines. Built from the authors' original releases by
`scripts/build_datasets.py` (`make datasets`); **generated, do not edit by hand**. The build checks the
sha256 of each raw file first, and gives the same bytes on every run. `pspo-eval datasets verify`
checks these files against `MANIFEST.json`.

> **License notice: ASDiv (`asdiv.jsonl`) is licensed CC BY-NC 4.0** (Attribution-NonCommercial,
> Miao, Liang and Su, 2020). It may not be used for commercial purposes, and uses must credit the
> authors. The other files are MIT-licensed. Check the licenses before redistributing results or data.

| file | dataset | rows | license | original release |
| --- | --- | --- | --- | --- |
{table}

This folder is data, not a Python package: it must never hold an `__init__.py` (one would shadow the
Hugging Face `datasets` library for anything run from the repository root).

## Record fields

`id`, `dataset` (registry name), `question` (the text the model sees), `answer` (gold final answer),
`solution` (worked solution, GSM8K and MATH-500), `category`, `level`, `meta` (source extras).

## Normalization rules

- **Numbers** are written canonically: thousands commas removed, no trailing zeros, no exponent
  (`1,080` -> `1080`, `51.0` -> `51`, `0.50` -> `0.5`).
- **GSM8K** (`gsm8k_test.jsonl`, `gsm8k_train.jsonl`): `question` byte for byte as published;
  `answer` = the number after `####`; `solution` = the worked solution **with the `<<48/2=24>>`
  calculator annotations removed** and without the final `#### n` line (it is in `answer`), so it reads
  as a person would write it; `solution + "\\n#### " + answer` gives the published format without
  annotations. Ids `gsm8k-test-0000` / `gsm8k-train-0000`, in source-file order.
- **SVAMP** (`svamp.jsonl`, all 1,000 problems): `question` = `Body + " " + Question`, with runs of
  whitespace collapsed and ends trimmed, and a full stop added to a body that ends without
  punctuation (358 bodies end in an `If ...` clause: `...on each pack How much...` becomes
  `...on each pack. How much...`, as common math-eval harnesses do); no other change. `answer` =
  `Answer` as a canonical number; `category` = `Type` (published spelling kept, including one
  `Common-Divison`); `meta.equation` = `Equation`; id = `ID`.
  The Hugging Face copy (`ChilleD/SVAMP`) splits these 1,000 into 700 train / 300 test;
  `load_dataset("svamp", source="hub")` gives that 300-problem test split, the offline default is all 1,000.
- **ASDiv** (`asdiv.jsonl`, **all {asdiv_rows} rows, none dropped**): `question` = `Body + " " + Question`
  (whitespace and full stop as for SVAMP; bodies ending in `,` are joined as they are); `answer` =
  the value with its unit in parentheses removed (`9 (apples)` -> `9`; the unit goes to `meta.unit`);
  simple fractions stay fractions (`5/2`, `-(1/3)` -> `-1/3`; {asdiv_fractions} rows), so a grader must read `a/b`.
  `category` = Solution-Type (published spelling kept), `level` = Grade, id = the ASDiv ID,
  `meta.formula` = Formula, `meta.raw_answer` = the Answer field as published, `meta.source` = the
  problem's web source. Answers that are not a single number are **flagged, not dropped**:
  `meta.multi_answer = true`, with `meta.answer_kind` saying what they are and `answer` holding the best
  normalized form (units removed from each `;`-separated value: `5 (years old); 15 (years old)` ->
  `5; 15`; ratios `3:5`, clock times `3:30 p.m.` and names `Mrs. Hilt` kept as published).
  `EleutherAI/asdiv` on the hub has no ids or grades: its rows get the ids of the release in file
  order (`nluds-0001` for the first row) and `level` None.
- **MATH-500** (`math500.jsonl`): `question` = problem, `answer` = the LaTeX answer unchanged,
  `solution` unchanged, `category` = subject, `level` = str(level); ids `math500-000`... in file order.
  The raw mirror has no `unique_id`; loaded from the hub, `meta.unique_id` holds it.
  Grade these answers symbolically, never by their last number.

## ASDiv answer counts

| `meta.answer_kind` | what it is | rows | flagged `multi_answer` |
| --- | --- | --- | --- |
{asdiv_table}
| **total** | | **{asdiv_rows}** | **{asdiv_flagged}** |

{asdiv_single} rows have a single-number answer. Harnesses that drop only the {asdiv_semicolon} rows with
several `;`-separated values keep {asdiv_without_semicolon}; filter on
`meta.multi_answer` (or `meta.answer_kind`) to choose explicitly.

## Provenance

Raw files (sha256 in `MANIFEST.json`, `raw_sha256`):

{provenance}

On the Hugging Face hub the same data is `openai/gsm8k` (config `main`), `ChilleD/SVAMP`,
`EleutherAI/asdiv` (split `validation`) and `HuggingFaceH4/MATH-500`; `load_dataset(name,
source="hub")` normalizes those with the same code.
"""

_KIND_NOTES = {
    "number": "integer or decimal",
    "fraction": "simple fraction (one number)",
    "multi": "several `;`-separated values",
    "ratio": "ratio `a:b`",
    "time": "clock time",
    "text": "a name, a word or a phrase",
}


def render_readme(entries: list[dict[str, Any]], asdiv: dict[str, Any]) -> str:
    table = "\n".join(
        f"| `{e['file']}` | {e['dataset']} ({e['split']}) | {e['rows']:,} | {e['license']} | {e['source']} |"
        for e in entries
    )
    kind_rows = []
    for kind in ANSWER_KINDS:
        count = asdiv["answer_kinds"].get(kind, 0)
        flagged = "no" if kind in ("number", "fraction") else "yes"
        kind_rows.append(f"| `{kind}` | {_KIND_NOTES[kind]} | {count:,} | {flagged} |")
    provenance = "\n".join(f"- `{e['raw_file']}` -> `{e['file']}`: {e['source']}" for e in entries)
    return README.format(
        table=table,
        asdiv_rows=f"{asdiv['rows']:,}",
        asdiv_table="\n".join(kind_rows),
        asdiv_flagged=f"{asdiv['multi_answer']:,}",
        asdiv_fractions=asdiv["answer_kinds"].get("fraction", 0),
        asdiv_single=f"{asdiv['single_number']:,}",
        asdiv_semicolon=asdiv["semicolon_multi_value"],
        asdiv_without_semicolon=f"{asdiv['rows_without_semicolon_multi_value']:,}",
        provenance=provenance,
    )


# ---------------------------------------------------------------------------------------------


def build(raw: Path, out: Path) -> dict[str, Any]:
    """Check, convert and write everything; returns the manifest."""
    contents = check_raw(raw)
    builders = {
        "gsm8k": lambda: build_gsm8k(contents[RAW_FILE["gsm8k"]], "gsm8k"),
        "gsm8k_train": lambda: build_gsm8k(contents[RAW_FILE["gsm8k_train"]], "gsm8k_train"),
        "svamp": lambda: build_svamp(contents[RAW_FILE["svamp"]]),
        "asdiv": lambda: build_asdiv(contents[RAW_FILE["asdiv"]]),
        "math500": lambda: build_math500(contents[RAW_FILE["math500"]]),
    }
    outputs: dict[str, bytes] = {}
    entries: list[dict[str, Any]] = []
    asdiv: dict[str, Any] = {}
    for name, make in builders.items():
        spec = REGISTRY[name]
        try:
            problems = make()
        except (KeyError, ValueError, TypeError) as exc:
            raise PspoError(
                f"cannot convert {RAW_FILE[name]}: {exc}", "the raw file does not have the expected shape"
            ) from exc
        ids = [p.id for p in problems]
        if len(problems) != spec.size or len(set(ids)) != len(ids):
            raise PspoError(
                f"{RAW_FILE[name]} gave {len(problems)} problems ({len(set(ids))} distinct ids), expected {spec.size}",
                "the raw file or the converter changed; check both",
            )
        data = serialize(problems)
        outputs[spec.file] = data
        entry: dict[str, Any] = {
            "file": spec.file,
            "dataset": name,
            "split": spec.split,
            "rows": len(problems),
            "sha256": sha256_bytes(data),
            "license": spec.license,
            "source": spec.source,
            "raw_file": RAW_FILE[name],
            "raw_sha256": RAW_SHA256[RAW_FILE[name]],
            "hub": {
                "id": spec.hub_id,
                "config": spec.hub_config,
                "split": spec.hub_split,
                "rows": spec.hub_size,
            },
        }
        if name == "asdiv":
            asdiv = asdiv_counts(problems)
            entry["answers"] = asdiv
        entries.append(entry)

    manifest = {
        "format": "JSON Lines, UTF-8, one pspo_eval.records.Problem per line",
        "generator": "scripts/build_datasets.py",
        "files": entries,
    }
    outputs["MANIFEST.json"] = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    outputs["README.md"] = render_readme(entries, asdiv).encode("utf-8")

    out.mkdir(parents=True, exist_ok=True)
    temporaries = []
    try:
        for file, data in outputs.items():
            tmp = out / f".{file}.tmp"
            tmp.write_bytes(data)
            temporaries.append((tmp, out / file))
        for tmp, final in temporaries:
            os.replace(tmp, final)
    finally:
        for tmp, _ in temporaries:
            tmp.unlink(missing_ok=True)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--raw", type=Path, required=True, help="folder holding the original releases (see SOURCES.md)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (pspo_eval/resources/datasets in the repository)")
    args = parser.parse_args(argv)
    try:
        manifest = build(args.raw, args.out)
    except PspoError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 2
    for entry in manifest["files"]:
        print(
            f"{entry['file']:<20} {entry['rows']:>6} rows  sha256 {entry['sha256'][:16]}…  {entry['license']}"
        )
    answers = next(e["answers"] for e in manifest["files"] if e["dataset"] == "asdiv")
    print(
        f"asdiv: {answers['single_number']} single-number answers, {answers['multi_answer']} flagged multi_answer "
        f"({answers['semicolon_multi_value']} with ';'-separated values)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
