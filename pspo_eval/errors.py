"""The one exception type for errors a user can cause.

Anything a user can get wrong (a bad path, a malformed file, an unknown dataset, an invalid rubric,
a missing backend, an unreachable judge) raises :class:`PspoError` with a message that says what was
wrong and how to fix it. The CLI prints it on one line, without a traceback, and exits with code 2.
"""

from __future__ import annotations


class PspoError(Exception):
    """A user-facing error: ``message`` says what is wrong, ``hint`` how to fix it."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        self.message = message.strip()
        self.hint = hint.strip() if hint else None
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.message if not self.hint else f"{self.message} ({self.hint})"
        return " ".join(text.split())


class BackendMissing(PspoError):
    """An optional backend (vllm, peft, tensorboard, …) is not installed."""

    def __init__(self, package: str, extra: str | None = None, what: str | None = None):
        install = f"pip install 'pspo-eval[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{what or package} needs the '{package}' package, which is not installed", f"run: {install}")


def require(package: str, extra: str | None = None, what: str | None = None):
    """Import an optional package or raise a one-line :class:`BackendMissing`."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BackendMissing(package, extra, what) from exc
