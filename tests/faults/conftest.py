"""Fault tests share the helpers in tests/ (fault server, run builders)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def kill_at_progress(proc, progress, target: int, extra: float, timeout: float = 600.0) -> bool:
    """SIGKILL ``proc``'s process group once ``progress()`` reaches ``target``, ``extra`` seconds later.

    Kill points are chosen by progress (records or steps written), not by wall time, so they land
    whatever the machine's speed: a fixed delay once outlived a whole run on a faster start-up.
    Returns True when the kill landed, False when the process exited first.
    """
    import os
    import signal
    import time

    deadline = time.monotonic() + timeout
    while proc.poll() is None and progress() < target:
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if extra > 0:
        try:
            proc.wait(timeout=extra)
        except Exception:  # still running: kill it below
            pass
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True
