"""Benchmarks: the registry, loaders (bundled files, a user's file, the hub), checksums, the split.

Public API (other subsystems import these names)::

    list_datasets() -> list[DatasetSpec]
    load_dataset(name, *, source="local", limit=None) -> list[Problem]
    load_file(path, *, name=None) -> list[Problem]
    resolve_datasets(spec, *, source="local", dataset_file=None) -> list[str]
    split_train_validation(problems, n_train=7000, seed=42) -> (train, validation)
    verify() -> list[FileCheck]          # (file, expected_sha, actual_sha, ok)
    dataset_checksum(name) -> str        # sha256 of the normalized file

The normalized files live in :func:`pspo_eval.paths.datasets_dir` (``pspo_eval/resources/datasets/``); they are built
from the raw releases by ``scripts/build_datasets.py`` with the rules in :mod:`.normalize`.
Nothing here imports the ``datasets`` library until a hub load is asked for.
"""

from pspo_eval.data.loaders import (
    FileCheck,
    dataset_checksum,
    dataset_path,
    file_checksum,
    load_dataset,
    load_file,
    read_manifest,
    split_train_validation,
    verify,
)
from pspo_eval.data.normalize import canonical_number, parse_number
from pspo_eval.data.registry import (
    EVAL_DATASETS,
    REGISTRY,
    DatasetSpec,
    get_spec,
    list_datasets,
    resolve_datasets,
)

__all__ = [
    "EVAL_DATASETS",
    "REGISTRY",
    "DatasetSpec",
    "FileCheck",
    "canonical_number",
    "dataset_checksum",
    "dataset_path",
    "file_checksum",
    "get_spec",
    "list_datasets",
    "load_dataset",
    "load_file",
    "parse_number",
    "read_manifest",
    "resolve_datasets",
    "split_train_validation",
    "verify",
]
