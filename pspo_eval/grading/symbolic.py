"""Symbolic equivalence (MATH-500) with a hard per-item deadline that works from any thread.

math-verify (sympy underneath) can take seconds, or forever, on odd input, and its own timeout
relies on ``signal.alarm``: main thread only, and powerless inside long C-level arithmetic. So
math-verify runs in a small pool of persistent worker processes. Each item is sent to an idle
worker; if no answer comes back before the deadline, that worker is killed and the item is graded
incorrect with ``timed_out=True``. The calling process never runs math-verify, so it cannot hang,
whichever thread it grades from.

A worker is a plain ``python -c`` child speaking JSON lines over its stdin/stdout (not a
multiprocessing.Process, whose spawn/forkserver start would re-import the caller's ``__main__``
script). A killed worker is replaced at once, in the background: its ~1.5 s start (importing
sympy) overlaps with other work, and start-up time never counts against an item's deadline,
because a worker first says ``ready``.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from pspo_eval.errors import PspoError

DEFAULT_TIMEOUT_S = 10.0
STARTUP_TIMEOUT_S = 120.0


def default_timeout() -> float:
    """Per-item deadline in seconds: $PSPO_EVAL_GRADE_TIMEOUT or 10."""
    raw = os.environ.get("PSPO_EVAL_GRADE_TIMEOUT")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise PspoError(
            f"PSPO_EVAL_GRADE_TIMEOUT={raw!r} is not a number", "set it to seconds, e.g. 10"
        ) from None
    return value if value > 0 else DEFAULT_TIMEOUT_S


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class _Timeout(Exception):
    pass


class _Dead(Exception):
    pass


_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
_LAUNCH = (
    "import json, sys\n"
    f"sys.path.insert(0, {_PACKAGE_PARENT!r})\n"
    "try:\n"
    "    from pspo_eval.grading._mv_worker import main\n"
    "except Exception as exc:\n"
    "    print(json.dumps(['failed', repr(exc)]), flush=True)\n"
    "    raise SystemExit(1)\n"
    "main()\n"
)


class _Worker:
    """One math-verify process, the pipes to it and a thread that reads its replies.

    The reader thread turns the blocking pipe into a queue, so waiting for a reply with a
    deadline is a plain ``queue.get(timeout=…)`` on every platform.
    """

    def __init__(self) -> None:
        debug = os.environ.get("PSPO_EVAL_DEBUG") == "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None if debug else subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        self.replies: queue.Queue[Any] = queue.Queue()
        self.ready = False
        threading.Thread(target=self._read, daemon=True, name="pspo-grade-reader").start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                try:
                    self.replies.put(json.loads(line))
                except ValueError:
                    continue
        except (OSError, ValueError):
            pass
        self.replies.put(None)  # EOF: the process ended

    def _receive(self, timeout_s: float) -> list[Any]:
        try:
            reply = self.replies.get(timeout=timeout_s)
        except queue.Empty:
            raise _Timeout from None
        if reply is None:
            raise _Dead
        return reply  # type: ignore[no-any-return]

    def wait_ready(self) -> None:
        if self.ready:
            return
        try:
            status, detail = self._receive(STARTUP_TIMEOUT_S)
        except (_Timeout, _Dead):
            self.kill()
            raise PspoError(
                "the symbolic grader (math-verify) worker did not start",
                "check that math-verify is installed: pip install 'math-verify>=0.9' (PSPO_EVAL_DEBUG=1 shows its errors)",
            ) from None
        if status != "ready":
            self.kill()
            raise PspoError(
                f"the symbolic grader (math-verify) failed to load: {detail}",
                "pip install 'math-verify>=0.9'",
            )
        self.ready = True

    def ask(self, request: list[Any], timeout_s: float) -> Any:
        self.wait_ready()
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            raise _Dead from None
        status, value = self._receive(timeout_s)
        if status != "ok":
            raise _Dead
        return value

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(5)
        except Exception:  # pragma: no cover - already gone
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except Exception:  # pragma: no cover
                pass


class SymbolicPool:
    """A fixed number of worker slots; a slot's process starts on first use and after a kill.

    Thread-safe: each call takes an idle slot (waiting for one if all are busy), so N threads
    calling :meth:`verify` use up to N workers at once.
    """

    def __init__(self, size: int):
        self.pid = os.getpid()  # a forked child must not share this process's pipes
        self._slots: queue.LifoQueue[_Worker | None] = queue.LifoQueue()
        self._size = 0
        self._lock = threading.Lock()
        self._closed = False
        self.grow(size)

    @property
    def size(self) -> int:
        return self._size

    def grow(self, size: int) -> None:
        with self._lock:
            while self._size < size:
                self._slots.put(None)
                self._size += 1

    def _call(self, request: list[Any], timeout_s: float) -> tuple[Any, bool]:
        """(value, timed_out); value is None when the worker died or timed out."""
        if self._closed:
            raise PspoError("the symbolic grader was shut down", "start a new process to grade again")
        worker = self._slots.get()
        try:
            if worker is None or not worker.alive():
                worker = _Worker()
            return worker.ask(request, timeout_s), False
        except _Timeout:
            worker.kill()  # type: ignore[union-attr]
            worker = _Worker()  # the replacement starts now, in the background
            return None, True
        except _Dead:
            if worker is not None:
                worker.kill()
            worker = None
            return None, False
        except BaseException:
            if worker is not None:  # interrupted mid-request: its late reply must never be read
                worker.kill()
            worker = None
            raise
        finally:
            self._slots.put(worker)

    def verify(self, gold: str, answer: str, timeout_s: float | None = None) -> tuple[bool, bool]:
        """(equivalent, timed_out) for one gold/answer pair, within `timeout_s` seconds."""
        deadline = timeout_s or default_timeout()
        value, timed_out = self._call(["verify", gold, answer, deadline], deadline)
        return bool(value), timed_out

    def verify_default(self, gold: str, response: str, timeout_s: float | None = None) -> tuple[bool, bool]:
        """(math-verify's default verdict on the raw texts, timed_out): a benchmark baseline."""
        deadline = timeout_s or default_timeout()
        value, timed_out = self._call(["verify_default", gold, response, deadline], deadline)
        return bool(value), timed_out

    def close(self) -> None:
        self._closed = True
        for _ in range(self._size):
            try:
                worker = self._slots.get_nowait()
            except queue.Empty:
                break
            if worker is not None:
                worker.kill()


_POOL: SymbolicPool | None = None
_POOL_LOCK = threading.Lock()


def pool(min_size: int | None = None) -> SymbolicPool:
    """The process-wide pool, created on first use, grown to at least `min_size` slots."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._closed or _POOL.pid != os.getpid():
            _POOL = SymbolicPool(min_size or default_workers())
        elif min_size:
            _POOL.grow(min_size)
        return _POOL


def shutdown() -> None:
    """Kill the worker processes (also done at interpreter exit)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None and _POOL.pid == os.getpid():
            _POOL.close()
        _POOL = None


atexit.register(shutdown)
