"""The run store's typed read path: records and manifests come back as their models."""

from __future__ import annotations

import json

import pytest
from test_report_helpers import rec, write_run

from pspo_eval.errors import PspoError
from pspo_eval.records import Sample, SampleVerdict
from pspo_eval.store import RunStore, Shard


def test_records_read_back_as_their_model_and_as_dicts(tmp_path):
    run = write_run(tmp_path / "run", [rec("m", "gsm8k", f"p{i}", i % 2 == 0) for i in range(3)])
    store = RunStore(run)
    typed = list(store.read_records("samples", Sample))
    assert [type(s) for s in typed] == [Sample] * 3 and [s.correct for s in typed] == [True, False, True]
    shard = store.shards("samples")[0]
    assert shard.read(Sample) == typed
    assert shard.read() == [s.model_dump(mode="json") for s in typed]  # the judge side still reads dicts
    slim = shard.read(SampleVerdict)
    assert [v.problem_id for v in slim] == ["p0", "p1", "p2"] and not hasattr(slim[0], "response")


def test_a_record_that_is_not_its_model_is_one_line_naming_the_file(tmp_path):
    shard = Shard(tmp_path / "s.jsonl")
    shard.append([{"key": "k1", "model": "m"}])
    with pytest.raises(PspoError) as info:
        shard.read(Sample)
    assert "s.jsonl" in str(info.value) and "'k1'" in str(info.value) and "Sample" in str(info.value)


def test_a_readonly_reader_skips_a_partial_last_line_and_leaves_it(tmp_path):
    shard = Shard(tmp_path / "s.jsonl")
    shard.append([{"key": "a"}, {"key": "b"}])
    with open(shard.path, "a") as fh:
        fh.write('{"key": "c", "tru')
    size = shard.path.stat().st_size
    assert [r["key"] for r in shard.iter_dicts(readonly=True)] == ["a", "b"]
    assert shard.path.stat().st_size == size  # untouched: the writer repairs, a reader does not


def test_the_manifest_reads_back_typed(tmp_path):
    run = write_run(tmp_path / "run", [rec("base", "gsm8k", "p0", True)], status="interrupted")
    manifest = RunStore(run).manifest()
    assert manifest.status == "interrupted" and manifest.model_names == ["base"]
    assert manifest.dataset_checksums == {"gsm8k": "sha-gsm8k"}
    assert RunStore(tmp_path / "none").manifest().status is None
    (run / "manifest.json").write_text(json.dumps({"history": [{"status": 3}]}))
    with pytest.raises(PspoError, match="history.0.status"):
        RunStore(run).manifest()
