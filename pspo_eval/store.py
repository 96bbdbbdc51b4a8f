"""The run store: a directory with a manifest, a lock and append-only JSON Lines shards.

Layout of a run directory::

    RUN_DIR/
      manifest.json          config, config hash, versions, git revision, dataset checksums, times
      .lock                  held (flock) by the one process writing this run; names its holder
      samples/…/*.jsonl      one shard per (model, dataset, sampling setting)
      judgments/…/*.jsonl    one shard per (judge, rubric)
      results.json           derived summary (rewritten atomically; never the source of truth)

Guarantees (tested under tests/faults/):

- A batch of records is appended with one ``write`` and ``fsync``. A crash can only cut the last
  line; the next open of the shard truncates that partial line (with a warning), so a rerun redoes
  just the records in flight.
- Records carry a ``key``; readers keep the first record per key, so a record is never counted twice.
- A failed write (disk full, read-only directory) truncates the shard back to its size before the
  write and raises :class:`PspoError`: nothing half-written stays behind.
- Only one process writes a run directory at a time: a second one fails naming the holder.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, overload

from pydantic import BaseModel, ConfigDict, ValidationError

from pspo_eval.console import warn
from pspo_eval.errors import PspoError

M = TypeVar("M", bound=BaseModel)


def stable_hash(obj: Any, length: int = 16) -> str:
    """A short sha256 of a JSON-serialisable object (sorted keys), used for cache keys."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def safe_name(text: str, max_len: int = 80) -> str:
    """A file-system-safe rendering of a label (model name, dataset, judge id)."""
    keep = "".join(c if c.isalnum() or c in "-_.@=" else "_" for c in text)
    keep = keep.strip("._") or "x"
    if len(keep) > max_len:
        keep = keep[: max_len - 9] + "_" + stable_hash(text, 8)
    return keep


def _io_error(exc: OSError, path: Path, action: str) -> PspoError:
    if exc.errno == errno.ENOSPC:
        return PspoError(f"disk full while {action} {path}", "free some space and rerun the same command to resume")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return PspoError(f"cannot write {path}: {exc.strerror}", "make the output directory writable or choose another --out")
    return PspoError(f"I/O error while {action} {path}: {exc.strerror}", "check the disk and rerun the same command")


def atomic_write_bytes(path: Path, data: bytes, *, mode: int | None = 0o644) -> None:
    """Write a whole file atomically: a temp file in the same directory, fsync, rename.

    The one place the project writes a file that must never be seen half-written (manifests,
    results.json, reports, graded outputs). ``mode`` is the file's permission bits; ``None`` means
    what a plain ``open()`` would give (0o666 less the umask). Either way the file ends up readable
    by others: mkstemp creates it 0600, and run files and reports are meant to be shared.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _io_error(exc, path, "writing") from exc
    try:
        os.fchmod(fd, _umasked(0o666) if mode is None else mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise _io_error(exc, path, "writing") from exc


def _umasked(bits: int) -> int:
    umask = os.umask(0)  # the only way to read the umask is to set it; put it straight back
    os.umask(umask)
    return bits & ~umask


def atomic_write_text(path: Path, text: str, *, mode: int | None = 0o644) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False, default=str) + "\n")


def _to_dict(record: BaseModel | dict) -> dict:
    return record.model_dump(mode="json") if isinstance(record, BaseModel) else record


def _last_newline(fh: Any, size: int) -> int:
    """Offset of the last newline of a binary file of ``size`` bytes (-1 if none), read backwards in chunks."""
    chunk = 1 << 16
    end = size
    while end > 0:
        start = max(0, end - chunk)
        fh.seek(start)
        idx = fh.read(end - start).rfind(b"\n")
        if idx >= 0:
            return start + idx
        end = start
    return -1


def _truncate(path: Path, size: int) -> None:
    try:
        with open(path, "r+b") as fh:
            fh.truncate(size)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise _io_error(exc, path, "repairing") from exc


def _write_or_roll_back(fd: int, data: bytes, path: Path) -> None:
    """Write all of ``data`` at the end of ``fd`` and fsync; on failure truncate back (no partial record)."""
    before = os.fstat(fd).st_size
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except OSError as exc:
        try:  # leave no partial record behind
            os.ftruncate(fd, before)
        except OSError:
            pass
        raise _io_error(exc, path, "writing") from exc


def _first_error(exc: ValidationError) -> str:
    """'field.path: message' of a validation error's first complaint (config.py formats user input; this, files)."""
    first = exc.errors()[0]
    return f"{'.'.join(str(p) for p in first.get('loc', ())) or 'record'}: {first['msg']}"


def _iter_jsonl(path: Path, key_field: str, readonly: bool) -> Iterator[dict]:
    """The JSON objects of a JSON Lines file, first of each ``key_field`` value (see Shard.iter_dicts)."""
    hint = ("delete that line and rerun the command that wrote it" if readonly
            else "delete that line (or the file) and rerun the same command to redo it")
    seen: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if readonly and not line.endswith("\n"):
                break  # a partial record at the end: not (yet) a record
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PspoError(f"{path}:{lineno}: corrupt record ({exc.msg})", hint) from exc
            key = obj.get(key_field)
            if key is not None:
                if key in seen:
                    continue
                seen.add(key)
            yield obj


class Shard:
    """One append-only JSON Lines file of records, each with a unique ``key``."""

    def __init__(self, path: Path, key_field: str = "key"):
        self.path = Path(path)
        self.key_field = key_field
        self._repaired = False

    def exists(self) -> bool:
        return self.path.exists()

    def repair(self) -> int:
        """Cut a partial last line left by a crash. Returns the number of bytes removed."""
        if self._repaired or not self.path.exists():
            return 0
        self._repaired = True
        size = self.path.stat().st_size
        if size == 0:
            return 0
        with open(self.path, "rb") as fh:
            last_nl = _last_newline(fh, size)
        keep = last_nl + 1
        removed = size - keep
        if removed:
            _truncate(self.path, keep)
            warn(f"{self.path}: removed a partial last record ({removed} bytes) left by an interrupted run")
        return removed

    def iter_dicts(self, *, readonly: bool = False) -> Iterator[dict]:
        """Records in file order, first occurrence of each key only; unparsable lines are reported.

        ``readonly`` is for readers of a run another process may be writing (the report): a partial
        last line (a write in flight, or a crash) is skipped instead of truncated as the writer does.
        """
        if not readonly:
            self.repair()
        if self.path.exists():
            yield from _iter_jsonl(self.path, self.key_field, readonly)

    def iter_records(self, model: type[M], *, readonly: bool = False) -> Iterator[M]:
        """The records of :meth:`iter_dicts`, each validated as ``model`` (a record that is not one is an error)."""
        for obj in self.iter_dicts(readonly=readonly):
            try:
                yield model.model_validate(obj)
            except ValidationError as exc:
                raise PspoError(f"{self.path}: record {obj.get(self.key_field)!r} is not a {model.__name__} "
                                f"({_first_error(exc)})", "delete that line and rerun the command that wrote it") from None

    @overload
    def read(self) -> list[dict]: ...

    @overload
    def read(self, model: type[M]) -> list[M]: ...

    def read(self, model: type[M] | None = None) -> list[dict] | list[M]:
        """Every record: dicts, or validated as ``model`` when one is given."""
        return list(self.iter_dicts()) if model is None else list(self.iter_records(model))

    def keys(self) -> set[str]:
        return {obj[self.key_field] for obj in self.iter_dicts() if self.key_field in obj}

    def append(self, records: Iterable[BaseModel | dict]) -> int:
        """Append a batch of records with one write + fsync. Returns the number appended."""
        lines = [json.dumps(_to_dict(r), ensure_ascii=False, separators=(",", ":"), default=str) for r in records]
        if not lines:
            return 0
        self.repair()
        data = ("\n".join(lines) + "\n").encode("utf-8")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _io_error(exc, self.path, "writing") from exc
        try:
            _write_or_roll_back(fd, data, self.path)
        finally:
            os.close(fd)
        return len(lines)


def _holder(command: str) -> str:
    """Who holds a run's lock, as a second process is told."""
    return (f"pid {os.getpid()} on {socket.gethostname()} ({command or ' '.join(sys.argv[:3])}) "
            f"since {time.strftime('%Y-%m-%d %H:%M:%S')}")


class HistoryEntry(BaseModel):
    """One command that wrote the run (``manifest.json`` ``history``)."""

    model_config = ConfigDict(extra="allow")

    command: str | None = None
    status: str | None = None  # running | complete | incomplete | interrupted | failed


class RunManifest(BaseModel):
    """``manifest.json`` as its readers see it (writers update the JSON object; see RunStore.update_manifest).

    Every field is optional: a merged run, a run only judged, or one from an older version lacks some.
    Fields other stages add (``judging``, ``judge_gold``, …) are kept.
    """

    model_config = ConfigDict(extra="allow")

    kind: str | None = None
    created: str | None = None
    ended: str | None = None
    config: dict[str, Any] | None = None
    config_hash: str | None = None
    merged_config_hashes: list[str] | None = None
    git_revision: str | None = None
    system_prompt: str | None = None
    versions: dict[str, Any] | None = None
    dataset_checksums: dict[str, str | None] | None = None
    backends: dict[str, Any] | None = None
    history: list[HistoryEntry] | None = None
    judging: Any = None
    judge_gold: str | None = None

    @property
    def status(self) -> str | None:
        """How the last command that wrote the run ended (None when none is recorded)."""
        return self.history[-1].status if self.history else None

    @property
    def model_names(self) -> list[str | None]:
        """The configured models' names, in the configured order (None for a model entry without one)."""
        models = (self.config or {}).get("models") or []
        return [m.get("name") for m in models if isinstance(m, dict)]


def _release(fh: Any) -> None:
    """Clear the holder line and unlock (the file stays: removing it would race a waiting locker)."""
    try:
        fh.seek(0)
        fh.truncate()
    except OSError:
        pass
    fcntl.flock(fh, fcntl.LOCK_UN)
    fh.close()


class LockHeld(PspoError):
    pass


class RunStore:
    """A run directory (see the module docstring)."""

    MANIFEST = "manifest.json"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._lock_fh: Any = None

    # -- locking ---------------------------------------------------------------------------
    @contextmanager
    def locked(self, command: str = "") -> Iterator[RunStore]:
        """Hold the run's lock for the duration of a command; a second holder is refused."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fh = open(self.root / ".lock", "a+")
        except OSError as exc:
            raise _io_error(exc, self.root, "creating") from exc
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise LockHeld(f"run directory {self.root} is in use by {holder}",
                           "wait for it to finish, or use another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(_holder(command) + "\n")
        fh.flush()
        self._lock_fh = fh
        try:
            yield self
        finally:
            _release(fh)
            self._lock_fh = None

    # -- manifest ------------------------------------------------------------------------------
    def manifest_path(self) -> Path:
        return self.root / self.MANIFEST

    def read_manifest(self) -> dict:
        path = self.manifest_path()
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise PspoError(f"{path} is not valid JSON ({exc.msg})", "restore it or start a new run directory") from exc

    def manifest(self) -> RunManifest:
        """The manifest, typed (an empty one when the run has none yet)."""
        try:
            return RunManifest.model_validate(self.read_manifest())
        except ValidationError as exc:
            raise PspoError(f"{self.manifest_path()}: {_first_error(exc)}", "restore it or start a new run directory") from None

    def write_manifest(self, manifest: dict) -> None:
        atomic_write_json(self.manifest_path(), manifest)

    def update_manifest(self, **fields: Any) -> dict:
        manifest = self.read_manifest()
        manifest.update(fields)
        self.write_manifest(manifest)
        return manifest

    # -- shards --------------------------------------------------------------------------------
    def shard(self, *parts: str, key_field: str = "key") -> Shard:
        safe = [safe_name(p) for p in parts]
        return Shard(self.root.joinpath(*safe[:-1], safe[-1] + ".jsonl"), key_field=key_field)

    def shards(self, subdir: str) -> list[Shard]:
        base = self.root / subdir
        if not base.exists():
            return []
        return [Shard(p) for p in sorted(base.rglob("*.jsonl"))]

    def read_records(self, subdir: str, model: type[M], *, readonly: bool = False) -> Iterator[M]:
        """Every record of every shard under ``subdir`` (in path order), validated as ``model``."""
        for shard in self.shards(subdir):
            yield from shard.iter_records(model, readonly=readonly)
