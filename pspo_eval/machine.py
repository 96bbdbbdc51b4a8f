"""What this machine's CPU is, read once from ``/proc/cpuinfo`` (Linux; empty answers elsewhere)."""

from __future__ import annotations

import os
from functools import lru_cache


@lru_cache(maxsize=1)
def _cpuinfo() -> list[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            return fh.read().splitlines()
    except OSError:
        return []


def _first(key: str) -> str | None:
    for line in _cpuinfo():
        if line.startswith(key):
            return line.split(":", 1)[1].strip() if ":" in line else ""
    return None


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``avx512_bf16``, ``amx_bf16``, ...)."""
    return frozenset((_first("flags") or "").split())


def cpu_name() -> str:
    """The CPU's model name and this machine's core count, e.g. ``AMD EPYC x2``; ``cpu`` where unknown."""
    name = _first("model name")
    return f"{name} x{os.cpu_count()}" if name else "cpu"
