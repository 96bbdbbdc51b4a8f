"""Faults of the run store: a cut last line, a full disk, a read-only directory, two writers."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

from pspo_eval.errors import PspoError
from pspo_eval.store import LockHeld, RunStore, Shard, atomic_write_json


def _lines(path):
    return path.read_bytes().decode().splitlines()


def test_cut_last_line_is_repaired_with_a_warning(tmp_path, capsys):
    shard = Shard(tmp_path / "s.jsonl")
    shard.append([{"key": "a", "v": 1}, {"key": "b", "v": 2}])
    with open(shard.path, "ab") as fh:  # what a crash in the middle of a write leaves behind
        fh.write(b'{"key": "c", "v"')
    fresh = Shard(shard.path)
    assert [r["key"] for r in fresh.read()] == ["a", "b"]
    assert "partial last record" in capsys.readouterr().err
    fresh.append([{"key": "c", "v": 3}])
    assert [json.loads(line)["key"] for line in _lines(shard.path)] == ["a", "b", "c"]


def test_duplicate_keys_are_read_once(tmp_path):
    shard = Shard(tmp_path / "s.jsonl")
    shard.append([{"key": "a", "v": 1}])
    shard.append([{"key": "a", "v": 2}, {"key": "b", "v": 3}])
    assert [(r["key"], r["v"]) for r in shard.read()] == [("a", 1), ("b", 3)]


def test_disk_full_mid_write_leaves_no_partial_record(tmp_path, monkeypatch):
    shard = Shard(tmp_path / "s.jsonl")
    shard.append([{"key": "a"}])
    before = shard.path.read_bytes()
    real_write = os.write

    def half_then_enospc(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_enospc)
    with pytest.raises(PspoError) as info:
        shard.append([{"key": "b", "payload": "x" * 1000}])
    monkeypatch.undo()
    assert "disk full" in str(info.value) and "rerun" in str(info.value)
    assert shard.path.read_bytes() == before  # truncated back: nothing half-written


def test_read_only_directory_is_a_clear_error(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(PspoError) as info:
        Shard(tmp_path / "s.jsonl").append([{"key": "a"}])
    assert "cannot write" in str(info.value) and "writable" in str(info.value)


def test_atomic_json_never_leaves_a_half_file(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    atomic_write_json(target, {"ok": 1})
    import pspo_eval.store as store_mod

    def boom(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_mod.os, "replace", boom)
    with pytest.raises(PspoError):
        atomic_write_json(target, {"ok": 2, "big": "y" * 10000})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # the temp file was removed


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pspo_eval.store import RunStore\n"
         f"with RunStore({str(run)!r}).locked('evaluate --out run'):\n"
         "    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeld) as info:
            with RunStore(run).locked("judge"):
                pass
        assert f"pid {holder.pid}" in str(info.value) and "evaluate --out run" in str(info.value)
        cli = subprocess.run([sys.executable, "-m", "pspo_eval", "evaluate", "-m", "smollm2-135m-instruct",
                              "--limit", "1", "--out", str(run)], capture_output=True, text=True, timeout=300)
        assert cli.returncode == 2 and f"pid {holder.pid}" in cli.stderr and "Traceback" not in cli.stderr
    finally:
        holder.kill()
        holder.wait()
    with RunStore(run).locked("after"):  # released when the holder died
        pass


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_really_full_disk_then_rerun(small_fs):
    """A real 48 KiB file system: appends fail cleanly when it is full; after room is made, they go on."""
    shard = Shard(small_fs / "run" / "s.jsonl")
    written = 0
    with pytest.raises(PspoError) as info:
        for i in range(1000):
            shard.append([{"key": f"k{i}", "payload": "z" * 3000}])
            written += 1
    assert "disk full" in str(info.value)
    recs = Shard(shard.path).read()
    assert len(recs) == written and all(r["payload"] == "z" * 3000 for r in recs)
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_fs)], check=True)
    shard.append([{"key": "after", "payload": "ok"}])
    assert Shard(shard.path).read()[-1]["key"] == "after"


def test_a_really_read_only_directory(small_fs):
    shard = Shard(small_fs / "s.jsonl")
    shard.append([{"key": "a"}])
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    with pytest.raises(PspoError) as info:
        shard.append([{"key": "b"}])
    assert "cannot write" in str(info.value)
    with pytest.raises(PspoError):
        atomic_write_json(small_fs / "results.json", {"x": 1})
    assert [r["key"] for r in Shard(shard.path).read()] == ["a"]
