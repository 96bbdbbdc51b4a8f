"""The code that runs inside a symbolic-grading worker process (math-verify lives only here).

math-verify's own timeouts use ``signal.alarm``, which works only in the main thread and cannot
interrupt a long C-level operation (a huge integer power). So the worker calls math-verify with
its timeouts disabled, and the parent (:mod:`pspo_eval.grading.symbolic`) enforces a wall-clock
deadline per item by killing the worker. Parsed gold answers are cached per worker: a benchmark
grades many responses against the same few hundred golds.

Model output is parsed by math-verify's LaTeX parser (latex2sympy) only; nothing here calls
``sympify``/``eval`` on it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import OrderedDict
from typing import Any

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

# Boxed first: both sides are handed over as '\boxed{...}' so math-verify's normalisation (units,
# \text, \left/\right, thousands separators, degrees) applies to the whole answer.
_CONFIG = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
_GOLD_CACHE: OrderedDict[str, list[Any]] = OrderedDict()
_GOLD_CACHE_SIZE = 4096


def _balanced(text: str) -> bool:
    depth = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                return False
        i += 1
    return depth == 0


def parse_answer(text: str) -> list[Any]:
    """math-verify's parse of one answer string (LaTeX or plain), boxed when its braces allow."""
    text = text.strip()
    if not text:
        return []
    attempts = [f"\\boxed{{{text}}}"] if _balanced(text) else []
    attempts += [f"${text}$", text]
    if "$" in text or "\\boxed" in text or "\\[" in text:  # already delimited (a whole solution as gold)
        attempts.insert(0, text)
    for attempt in attempts:
        parsed = parse(attempt, extraction_config=_CONFIG, parsing_timeout=None)  # type: ignore[arg-type]
        if parsed:
            return parsed
    return []


def parse_gold(text: str) -> list[Any]:
    cached = _GOLD_CACHE.get(text)
    if cached is not None:
        _GOLD_CACHE.move_to_end(text)
        return cached
    parsed = parse_answer(text)
    _GOLD_CACHE[text] = parsed
    if len(_GOLD_CACHE) > _GOLD_CACHE_SIZE:
        _GOLD_CACHE.popitem(last=False)
    return parsed


def equivalent(gold: str, answer: str) -> bool:
    """math-verify's verdict, gold first (verify is not symmetric)."""
    g = parse_gold(gold)
    a = parse_answer(answer)
    if not g or not a:
        return False
    return bool(verify(g, a, timeout_seconds=None)) or same_equation(g[0], a[0])


def same_equation(gold: Any, answer: Any) -> bool:
    """Two equations with the same solution set: 'lhs - rhs' of one is a nonzero constant times the
    other's (2x+4y-3=0 and y=-x/2+3/4). math-verify accepts only the same equation up to sign.
    Both sides are sympy objects math-verify's LaTeX parser built; nothing is sympified from text."""
    import sympy

    if not (isinstance(gold, sympy.Equality) and isinstance(answer, sympy.Equality)):
        return False
    g, a = gold.lhs - gold.rhs, answer.lhs - answer.rhs
    if not g.free_symbols or g.free_symbols != a.free_symbols or a == 0:
        return False
    ratio = sympy.cancel(g / a)
    return not ratio.free_symbols and ratio != 0 and ratio.is_finite is not False


def default_verdict(gold: str, response: str) -> bool:
    """math-verify with its default settings on the texts as given: ``verify(parse(gold),
    parse(response))``. Not used for grading: it is the baseline benchmarks/grading_agreement.py
    compares the grader with (math-verify's own parse of a whole response)."""
    g = parse(gold, parsing_timeout=None)  # type: ignore[arg-type]
    a = parse(response, parsing_timeout=None)  # type: ignore[arg-type]
    return bool(g and a and verify(g, a, timeout_seconds=None))


def _limit_resources(deadline_s: float) -> None:
    """Bound this worker even if its parent dies mid-request (POSIX; best effort elsewhere).

    The parent kills a worker at the wall-clock deadline, but a parent killed with SIGKILL cannot.
    So before each item the CPU-time limit is set a little past the deadline: a runaway computation
    then ends by SIGXCPU (which stops even C-level arithmetic), never running on as an orphan. The
    address space is capped too ($PSPO_EVAL_GRADE_MEMORY_MB, default 4096), so a huge power fails
    with MemoryError instead of swapping the machine.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    try:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(usage.ru_utime + usage.ru_stime + deadline_s) + 5
        hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        if hard == resource.RLIM_INFINITY or soft <= hard:
            resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    except (ValueError, OSError):  # pragma: no cover - a platform that refuses
        pass


def _limit_memory() -> None:
    try:
        import resource

        megabytes = int(os.environ.get("PSPO_EVAL_GRADE_MEMORY_MB", "4096"))
        if megabytes > 0:
            limit = megabytes * 1024 * 1024
            hard = resource.getrlimit(resource.RLIMIT_AS)[1]
            if hard == resource.RLIM_INFINITY or limit <= hard:
                resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):  # pragma: no cover - not POSIX, or refused
        pass


def _handle(request: list[Any]) -> list[Any]:
    op = request[0] if request else None
    try:
        if op == "verify":
            _limit_resources(float(request[3]) if len(request) > 3 else 60.0)
            return ["ok", equivalent(str(request[1]), str(request[2]))]
        if op == "verify_default":
            _limit_resources(float(request[3]) if len(request) > 3 else 60.0)
            return ["ok", default_verdict(str(request[1]), str(request[2]))]
        if op == "sleep":  # fault injection for tests: a worker that hangs
            import time

            time.sleep(float(request[1]))
            return ["ok", True]
        return ["error", f"unknown request {op!r}"]
    except (Exception, MemoryError, RecursionError) as exc:  # odd input is an incorrect answer, not a crash
        return ["ok", False] if op in ("verify", "verify_default") else ["error", repr(exc)]


def main() -> None:
    """Serve JSON-line requests on stdin, one JSON-line reply each on stdout, until stdin closes.

    Requests: ["verify", gold, answer] -> ["ok", bool]. The first line out is ["ready", null].
    Anything else that writes to stdout (a stray print in a dependency) is sent to stderr instead,
    so it can never corrupt the protocol.
    """
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
    sys.stdout = sys.stderr
    logging.disable(logging.WARNING)  # "timeout is disabled" and parse noise: the parent times out
    _limit_memory()
    out.write(json.dumps(["ready", None]) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except ValueError:
            reply: list[Any] = ["error", "bad request"]
        else:
            reply = _handle(request if isinstance(request, list) else [])
        out.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
