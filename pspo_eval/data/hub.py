"""The same benchmarks from the Hugging Face hub, normalized exactly like the bundled files.

The ``datasets`` library is imported only here, and only when a hub load is asked for, so the
CLI stays fast and the offline path never touches it. Any failure (offline, repository or split
not found, a download error) becomes one PspoError line. Column names per hub dataset:

- ``openai/gsm8k`` (config ``main``): ``question``, ``answer``.
- ``ChilleD/SVAMP``: ``ID``, ``Body``, ``Question``, ``Equation``, ``Answer``, ``Type`` (and
  ``question_concat``); its ``test`` split is 300 of the 1,000 problems.
- ``EleutherAI/asdiv`` (split ``validation``): ``body``, ``question``, ``solution_type``, ``answer``,
  ``formula``; no id or grade.
- ``HuggingFaceH4/MATH-500``: ``problem``, ``solution``, ``answer``, ``subject``, ``level``,
  ``unique_id``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from pspo_eval.data.normalize import asdiv_problem, gsm8k_problem, math500_problem, svamp_problem
from pspo_eval.data.registry import DatasetSpec, get_spec
from pspo_eval.errors import PspoError
from pspo_eval.records import Problem


def hub_row_to_problem(name: str, row: dict[str, Any], index: int) -> Problem:
    """Map one hub row of benchmark ``name`` (the ``index``-th of its split) to a Problem.

    ASDiv rows on the hub carry no id; the ``index``-th row gets the id of the ``index``-th
    problem of the release (``nluds-0001`` for index 0), because the hub copy was generated from
    the same XML file in file order. Grade and web source are not on the hub (level is None).
    """
    spec = get_spec(name)
    if spec.name in ("gsm8k", "gsm8k_train"):
        return gsm8k_problem(row, split=spec.split, index=index, dataset=spec.name)
    if spec.name == "svamp":
        return svamp_problem(row, dataset=spec.name)
    if spec.name == "asdiv":
        return asdiv_problem(
            id=f"nluds-{index + 1:04d}",
            body=row["body"],
            question=row["question"],
            answer=row["answer"],
            solution_type=row.get("solution_type"),
            formula=row.get("formula"),
            dataset=spec.name,
        )
    if spec.name == "math500":
        return math500_problem(row, index=index, dataset=spec.name)
    raise PspoError(f"no hub mapping for dataset '{name}'")  # pragma: no cover - registry and mapping agree


def hub_rows_to_problems(name: str, rows: Iterable[dict[str, Any]]) -> list[Problem]:
    """Map a whole hub split; a row that does not fit names its index and the column problem."""
    spec = get_spec(name)
    problems = []
    for index, row in enumerate(rows):
        try:
            problems.append(hub_row_to_problem(spec.name, dict(row), index))
        except (KeyError, ValueError, TypeError) as exc:
            reason = f"missing column {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
            raise PspoError(
                f"{spec.hub_id} row {index} does not look like {spec.name}: {reason}",
                "the hub copy may have changed; use source='local' (the bundled, checksummed files)",
            ) from exc
    return problems


def load_hub_rows(hub_id: str, config: str | None, split: str) -> list[dict[str, Any]]:
    """Rows of one hub split, via the ``datasets`` library; every failure is one PspoError line."""
    try:
        # importlib keeps this heavy import lazy and out of the type checker's way.
        datasets = importlib.import_module("datasets")
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise PspoError(
            "loading from the hub needs the 'datasets' package", "run: pip install datasets"
        ) from exc
    where = f"{hub_id}" + (f" (config {config})" if config else "") + f", split {split}"
    try:
        table = datasets.load_dataset(hub_id, config, split=split)
        return [dict(row) for row in table]
    except Exception as exc:  # any hub failure (offline, not found, download) is reported on one line
        detail = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise PspoError(
            f"could not load {where} from the Hugging Face hub: {type(exc).__name__}: {detail}",
            "check the network (and HF_HUB_OFFLINE / HF_DATASETS_OFFLINE), or use the bundled files (source='local')",
        ) from exc


def load_hub_problems(spec: DatasetSpec) -> list[Problem]:
    """A registered benchmark from the hub, normalized like the bundled file."""
    return hub_rows_to_problems(spec.name, load_hub_rows(spec.hub_id, spec.hub_config, spec.hub_split))
