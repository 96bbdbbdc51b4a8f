"""SIGKILL `pspo-eval judge` at random moments (several seeds): the reruns end with every item judged once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys

import pytest
from judge_fault_server import FaultServer
from judge_helpers import VERDICT, make_run, sample

from pspo_eval.judge.aggregate import load_judgments

N = 12


def _run(tmp_path):
    return make_run(tmp_path / "run", [sample("m", f"p{i}", f"3 + 4 = 7\n#### 7 [{i}]") for i in range(N)])


def _cmd(run, server):
    return [sys.executable, "-m", "pspo_eval", "judge", "--run", str(run), "--judge", server.spec(),
            "--concurrency", "2", "--timeout", "10", "--json"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_sigkills_then_rerun_judge_everything_once(tmp_path, seed):
    rng = random.Random(seed)
    run = _run(tmp_path)
    env = {**os.environ, "PSPO_EVAL_QUIET": "1"}
    with FaultServer(verdict=VERDICT, latency_s=0.15) as server:
        kills = 0
        for _ in range(10):
            proc = subprocess.Popen(_cmd(run, server), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            try:
                proc.wait(timeout=rng.uniform(0.3, 2.5))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                kills += 1
                continue
            assert proc.returncode == 0
            break
        else:
            assert subprocess.run(_cmd(run, server), env=env, capture_output=True, timeout=300).returncode == 0
        sent = len(server.judge_requests())
    assert kills >= 1
    frame = load_judgments(run)
    assert len(frame) == N and frame["item_key"].is_unique
    assert set(frame["outcome"]) == {"ok"}
    assert sent >= N  # killed requests may have been sent twice; verdicts are stored once
    lines = [line for f in (run / "judgments").rglob("*.jsonl") for line in f.read_text().splitlines()]
    assert len(lines) == N  # no duplicate record on disk either


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(c) for c in fh.read().split()]
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_the_local_judge_server_never_outlives_a_killed_judge(tmp_path, how):
    """`--judge local` starts `transformers serve`; killing the judge (SIGKILL included) stops it too."""
    import time

    run = _run(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "pspo_eval", "judge", "--run", str(run), "--judge", "local",
                             "--max-tokens", "16", "--concurrency", "1"],
                            env={**os.environ, "PSPO_EVAL_QUIET": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    server = None
    while server is None and time.monotonic() < deadline and proc.poll() is None:
        server = next(iter(_children(proc.pid)), None)
        time.sleep(0.2)
    assert server is not None, proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no server"
    time.sleep(3)  # the server is starting up or answering
    os.kill(proc.pid, how)  # the judge process only, not its process group
    _, err = proc.communicate(timeout=60)
    if how == signal.SIGTERM:
        assert proc.returncode == 130 and b"Traceback" not in err, err.decode()[-2000:]
    deadline = time.monotonic() + 30
    while _alive(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(server), "transformers serve outlived the judge"
