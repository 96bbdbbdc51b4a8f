"""Loading benchmarks: bundled files, a user's own file, the hub; checksums and the train split.

Parsed files are cached per process (keyed by path, size and modification time), so evaluating
several checkpoints on the same benchmark parses it once. Problems are frozen, so the cached
objects are shared safely; each call returns a new list.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import ValidationError

from pspo_eval.data.normalize import canonical_number
from pspo_eval.data.registry import DatasetSpec, check_source, get_spec, list_datasets
from pspo_eval.errors import PspoError
from pspo_eval.paths import datasets_dir
from pspo_eval.records import Problem

MANIFEST = "MANIFEST.json"
_BUILD_HINT = "rebuild the bundled files with `make datasets` (scripts/build_datasets.py)"

_parsed: dict[tuple[str, int, int], tuple[Problem, ...]] = {}
_digests: dict[tuple[str, int, int], str] = {}
_hub: dict[str, tuple[Problem, ...]] = {}


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise PspoError(f"invalid limit {limit!r}", "pass a whole number >= 0, or no limit for all problems")


def dataset_path(name: str) -> Path:
    """Where the bundled file of a registered benchmark lives (it may not exist yet)."""
    return datasets_dir() / get_spec(name).file


# ---------------------------------------------------------------------------------------------
# bundled files


def _read_bundled(spec: DatasetSpec) -> tuple[Problem, ...]:
    path = datasets_dir() / spec.file
    if not path.is_file():
        raise PspoError(f"bundled dataset file missing: {path}", _BUILD_HINT)
    key = _file_key(path)
    cached = _parsed.get(key)
    if cached is not None:
        return cached
    problems = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                problems.append(Problem.model_validate_json(line))
            except ValidationError as exc:
                raise PspoError(
                    f"{path}, line {number}: not a valid Problem record ({_first_error(exc)})", _BUILD_HINT
                ) from exc
    _parsed[key] = tuple(problems)
    return _parsed[key]


def load_dataset(name: str, *, source: str = "local", limit: int | None = None) -> list[Problem]:
    """The problems of a registered benchmark, in file order (the first ``limit`` when given).

    ``source="local"`` reads the bundled normalized file under :func:`~pspo_eval.paths.datasets_dir`;
    ``source="hub"`` loads the same benchmark from the Hugging Face hub (needs network or a warm
    cache) and normalizes it with the same rules. Note SVAMP: locally all 1,000 problems, on the hub
    the 300-problem test split of ``ChilleD/SVAMP``.
    """
    spec = get_spec(name)
    check_source(source)
    _check_limit(limit)
    if source == "hub":
        problems = _hub.get(spec.name)
        if problems is None:
            from pspo_eval.data.hub import load_hub_problems

            problems = _hub[spec.name] = tuple(load_hub_problems(spec))
    else:
        problems = _read_bundled(spec)
    return list(problems if limit is None else problems[:limit])


# ---------------------------------------------------------------------------------------------
# a user's file

_FILE_HINT = (
    "each record needs a string 'question' and an 'answer' (string or number); optional 'id', 'solution', "
    "'category', 'level'; other fields go to meta"
)
_OPTIONAL_TEXT = ("solution", "category", "level")


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid"))


def _record_to_problem(record: Any, *, where: str, name: str, index: int) -> Problem:
    """One user record -> Problem; ``where`` (``"file, line 3"``) prefixes every error."""
    if not isinstance(record, dict):
        raise PspoError(f"{where}: expected a JSON object, got {type(record).__name__}", _FILE_HINT)
    for field in ("question", "answer"):
        if field not in record or record[field] is None:
            raise PspoError(f"{where}: missing field '{field}'", _FILE_HINT)
    question = record["question"]
    if not isinstance(question, str) or not question.strip():
        got = "an empty string" if isinstance(question, str) else type(question).__name__
        raise PspoError(f"{where}: 'question' must be a non-empty string, got {got}", _FILE_HINT)
    answer = record["answer"]
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        try:
            answer = canonical_number(answer)
        except ValueError as exc:
            raise PspoError(f"{where}: 'answer' {answer!r} is not a finite number", _FILE_HINT) from exc
    if not isinstance(answer, str) or not answer.strip():
        got = "an empty string" if isinstance(answer, str) else type(answer).__name__
        raise PspoError(f"{where}: 'answer' must be a non-empty string or a number, got {got}", _FILE_HINT)
    fields: dict[str, Any] = {}
    for field in _OPTIONAL_TEXT:
        value = record.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise PspoError(f"{where}: '{field}' must be a string, got {type(value).__name__}", _FILE_HINT)
        fields[field] = str(value)
    raw_id = record.get("id")
    if raw_id is None:
        problem_id = f"{name}-{index:04d}"
    elif isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or not str(raw_id).strip():
        raise PspoError(f"{where}: 'id' must be a non-empty string or integer", _FILE_HINT)
    else:
        problem_id = str(raw_id).strip()
    meta = {
        key: value
        for key, value in record.items()
        if key not in {"id", "question", "answer", "meta", *_OPTIONAL_TEXT}
    }
    if isinstance(record.get("meta"), dict):
        meta = {**record["meta"], **meta}
    elif record.get("meta") is not None:
        meta["meta"] = record["meta"]
    return Problem(id=problem_id, dataset=name, question=question, answer=answer.strip(), meta=meta, **fields)


def load_file(path: str | Path, *, name: str | None = None) -> list[Problem]:
    """Problems from a user's file: JSON Lines (one object per line) or a ``.json`` array.

    Each record needs ``question`` (string) and ``answer`` (string or number; numbers are written
    canonically, ``42.0`` -> ``"42"``); ``id``, ``solution``, ``category`` and ``level`` are optional
    (ids default to ``<name>-0000``…); any other field, and a ``meta`` object, go to ``meta``. The
    dataset name is ``name`` or the file's stem. Any problem raises a PspoError naming the file and
    the line (item, for a JSON array) and saying how to fix it; nothing is returned half-read.
    """
    path = Path(path)
    dataset = name or path.stem
    if not path.is_file():
        raise PspoError(f"dataset file not found: {path}", "pass the path of a .jsonl or .json file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PspoError(f"{path} is not UTF-8 text (byte {exc.start})", "save the file as UTF-8") from exc
    if not text.strip():
        raise PspoError(f"{path} is empty", f"write one JSON object per line; {_FILE_HINT}")

    problems: list[Problem] = []
    first_seen: dict[str, str] = {}  # id -> where it first appeared

    def add(record: Any, where: str, label: str) -> None:
        problem = _record_to_problem(record, where=f"{path}, {where}", name=dataset, index=len(problems))
        if problem.id in first_seen:
            raise PspoError(
                f"{path}, {where}: id '{problem.id}' already used on {first_seen[problem.id]}",
                "give every record a unique 'id', or leave ids out to number them",
            )
        first_seen[problem.id] = label
        problems.append(problem)

    if path.suffix.lower() == ".json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PspoError(
                f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})", "fix the JSON syntax there"
            ) from exc
        if not isinstance(records, list):
            raise PspoError(
                f"{path}: a .json dataset must be an array of objects", "or write JSON Lines (.jsonl)"
            )
        if not records:
            raise PspoError(f"{path} is an empty array", _FILE_HINT)
        for index, record in enumerate(records):
            add(record, f"item {index} (0-based)", f"item {index}")
    else:
        # split on "\n" only: str.splitlines() would also split inside strings holding U+2028 etc.
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PspoError(
                    f"{path}, line {number}: not valid JSON ({exc.msg})",
                    'each line must be one complete JSON object, e.g. {"question": "...", "answer": "42"}',
                ) from exc
            add(record, f"line {number}", f"line {number}")
    return problems


# ---------------------------------------------------------------------------------------------
# the train/validation split


def split_train_validation(
    problems: list[Problem], n_train: int = 7000, seed: int = 42
) -> tuple[list[Problem], list[Problem]]:
    """Shuffle deterministically and cut: the first ``n_train`` train, the rest validate.

    The paper trains on 7,000 GSM8K training problems and validates on the remaining 473, seed 42.
    The order is ``numpy.random.default_rng(seed).permutation(len(problems))``, which is exactly the
    order of Hugging Face ``Dataset.shuffle(seed=seed)``, so a split made with the ``datasets``
    library (``ds.shuffle(seed=42)``, first 7,000) is the same split.
    """
    import numpy as np

    if isinstance(n_train, bool) or not isinstance(n_train, int) or not 0 <= n_train <= len(problems):
        raise PspoError(
            f"cannot take {n_train} training problems from {len(problems)}",
            f"choose n_train between 0 and {len(problems)}",
        )
    order = np.random.default_rng(seed).permutation(len(problems))
    shuffled = [problems[int(i)] for i in order]
    return shuffled[:n_train], shuffled[n_train:]


# ---------------------------------------------------------------------------------------------
# checksums


def file_checksum(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes, cached per process by path, size and modification time."""
    path = Path(path)
    if not path.is_file():
        raise PspoError(f"file not found: {path}", _BUILD_HINT)
    key = _file_key(path)
    digest = _digests.get(key)
    if digest is None:
        sha = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
        digest = _digests[key] = sha.hexdigest()
    return digest


def dataset_checksum(name: str) -> str:
    """sha256 of a registered benchmark's normalized file (what run manifests record)."""
    return file_checksum(dataset_path(name))


class FileCheck(NamedTuple):
    """One line of :func:`verify`: a file, the sha256 the manifest expects, the one on disk."""

    file: str
    expected_sha: str
    actual_sha: str | None  # None when the file is missing
    ok: bool


def read_manifest() -> dict[str, Any]:
    path = datasets_dir() / MANIFEST
    if not path.is_file():
        raise PspoError(f"dataset manifest missing: {path}", _BUILD_HINT)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PspoError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})", _BUILD_HINT) from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise PspoError(f"{path} has no 'files' list", _BUILD_HINT)
    return manifest


def verify() -> list[FileCheck]:
    """Compare every file listed in ``datasets/MANIFEST.json`` with its recorded sha256.

    Also reports registered benchmarks the manifest does not list (expected sha ``""``), so a
    file added without rebuilding the manifest does not pass silently.
    """
    manifest = read_manifest()
    checks = []
    listed = set()
    for entry in manifest["files"]:
        file, expected = str(entry["file"]), str(entry["sha256"])
        listed.add(file)
        path = datasets_dir() / file
        actual = file_checksum(path) if path.is_file() else None
        checks.append(FileCheck(file, expected, actual, actual == expected))
    for spec in list_datasets():
        if spec.file not in listed:
            path = datasets_dir() / spec.file
            checks.append(FileCheck(spec.file, "", file_checksum(path) if path.is_file() else None, False))
    return checks
