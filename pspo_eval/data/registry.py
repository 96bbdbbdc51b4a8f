"""The benchmark registry: which datasets exist, where their files are, what they may be used for.

A benchmark is data, not code: one normalized JSON Lines file under ``pspo_eval/resources/datasets/`` (see
``datasets/README.md``) plus one :class:`DatasetSpec` here naming it, its license and where the
same benchmark lives on the Hugging Face hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pspo_eval.errors import PspoError


@dataclass(frozen=True)
class DatasetSpec:
    """One registered benchmark: its bundled file and its counterpart on the Hugging Face hub."""

    name: str
    file: str  # file name under datasets_dir()
    split: str
    size: int  # rows in the bundled file
    license: str
    hub_id: str
    hub_config: str | None
    hub_split: str
    hub_size: int  # rows of the hub split (differs from `size` for SVAMP)
    description: str
    source: str  # the original release the bundled file was built from


REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="gsm8k",
            file="gsm8k_test.jsonl",
            split="test",
            size=1319,
            license="MIT",
            hub_id="openai/gsm8k",
            hub_config="main",
            hub_split="test",
            hub_size=1319,
            description="GSM8K test set: grade-school word problems, integer answers.",
            source="https://github.com/openai/grade-school-math (grade_school_math/data/test.jsonl)",
        ),
        DatasetSpec(
            name="gsm8k_train",
            file="gsm8k_train.jsonl",
            split="train",
            size=7473,
            license="MIT",
            hub_id="openai/gsm8k",
            hub_config="main",
            hub_split="train",
            hub_size=7473,
            description="GSM8K training set (the paper trains on 7,000 of it and validates on the rest).",
            source="https://github.com/openai/grade-school-math (grade_school_math/data/train.jsonl)",
        ),
        DatasetSpec(
            name="svamp",
            file="svamp.jsonl",
            split="all",
            size=1000,
            license="MIT",
            hub_id="ChilleD/SVAMP",
            hub_config=None,
            hub_split="test",
            hub_size=300,
            description=(
                "SVAMP: varied one-step word problems. Bundled: all 1,000; the hub's test split "
                "(source='hub') has 300 of them."
            ),
            source="https://github.com/arkilpatel/SVAMP (SVAMP.json)",
        ),
        DatasetSpec(
            name="asdiv",
            file="asdiv.jsonl",
            split="all",
            size=2305,
            license="CC BY-NC 4.0",
            hub_id="EleutherAI/asdiv",
            hub_config=None,
            hub_split="validation",
            hub_size=2305,
            description=(
                "ASDiv: diverse grade-school word problems (non-commercial license). All 2,305 rows; "
                "answers that are not one number are flagged meta.multi_answer."
            ),
            source="https://github.com/chaochun/nlu-asdiv-dataset (dataset/ASDiv.xml)",
        ),
        DatasetSpec(
            name="math500",
            file="math500.jsonl",
            split="test",
            size=500,
            license="MIT",
            hub_id="HuggingFaceH4/MATH-500",
            hub_config=None,
            hub_split="test",
            hub_size=500,
            description="MATH-500: competition problems with LaTeX answers (graded symbolically).",
            source="https://github.com/openai/prm800k (prm800k/math_splits/test.jsonl)",
        ),
    )
}

#: What ``--datasets all`` means: the four evaluation benchmarks of the paper (not the train set).
EVAL_DATASETS: tuple[str, ...] = ("gsm8k", "svamp", "asdiv", "math500")

#: Other spellings of the registry names (lower-case), for the CLI and for grading: the one table.
DATASET_ALIASES = {
    "gsm8k_test": "gsm8k",
    "gsm8k-train": "gsm8k_train",
    "gsm8ktrain": "gsm8k_train",
    "math": "math500",
    "math_500": "math500",
    "math-500": "math500",
}

SOURCES = ("local", "hub")


def list_datasets() -> list[DatasetSpec]:
    """All registered benchmarks, in a stable order (the evaluation four, then the train set)."""
    return [REGISTRY[name] for name in ("gsm8k", "gsm8k_train", "svamp", "asdiv", "math500")]


def known_names() -> str:
    return ", ".join(spec.name for spec in list_datasets())


def canonical_name(name: str) -> str | None:
    """The registry name for ``name`` (case and a few spellings forgiven), or None."""
    key = name.strip().lower()
    key = DATASET_ALIASES.get(key, key)
    return key if key in REGISTRY else None


def get_spec(name: str) -> DatasetSpec:
    """The spec of a registered benchmark, or a PspoError listing the known ones."""
    key = canonical_name(name)
    if key is None:
        raise PspoError(f"unknown dataset '{name}'", f"known datasets: {known_names()}; or pass a JSONL file")
    return REGISTRY[key]


def check_source(source: str) -> str:
    if source not in SOURCES:
        raise PspoError(f"unknown dataset source '{source}'", "use 'local' (bundled files) or 'hub'")
    return source


def resolve_datasets(
    spec: str | None, *, source: str = "local", dataset_file: str | Path | None = None
) -> list[str]:
    """Parse a ``--datasets`` value (``gsm8k,svamp,asdiv,math500`` or ``all``) into registry names.

    ``all`` means the four evaluation benchmarks (``gsm8k`` test, ``svamp``, ``asdiv``,
    ``math500``); the training set ``gsm8k_train`` is only used when named. Names are
    de-duplicated, order kept. With ``dataset_file`` (a user's JSONL), its file stem is added as a
    dataset name (load it with :func:`~pspo_eval.data.load_file`); ``spec`` may then be empty.
    """
    check_source(source)
    names: list[str] = []
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        if item.lower() == "all":
            candidates = list(EVAL_DATASETS)
        elif dataset_file is not None and item == Path(dataset_file).stem:
            continue  # the file's own name; added below
        else:
            key = canonical_name(item)
            if key is None:
                raise PspoError(
                    f"unknown dataset '{item}' in --datasets '{spec}'",
                    f"known datasets: {known_names()} (or 'all'); a file of your own goes in --dataset-file",
                )
            candidates = [key]
        names.extend(name for name in candidates if name not in names)
    if dataset_file is not None:
        path = Path(dataset_file)
        if not path.is_file():
            raise PspoError(f"dataset file not found: {path}", "pass the path of a .jsonl or .json file")
        stem = path.stem
        if stem in REGISTRY or canonical_name(stem) is not None:
            raise PspoError(
                f"dataset file {path} has the name of a bundled benchmark ('{stem}')",
                "rename the file so its results are not mixed up with the bundled benchmark",
            )
        if stem not in names:
            names.append(stem)
    if not names:
        raise PspoError("no dataset selected", f"pass --datasets with any of: {known_names()} (or 'all')")
    return names
