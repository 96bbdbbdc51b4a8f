"""Join run directories (typically the ``--shard i/n`` parts of one evaluation) into one run.

Every sample and judgment shard is copied record by record, keeping the first record of each key,
so merging the same run twice or overlapping shards never duplicates anything. The merged manifest
lists its sources; results are recomputed from the merged records.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from pspo_eval.errors import PspoError
from pspo_eval.store import RunStore, Shard, atomic_write_json

if TYPE_CHECKING:
    from pspo_eval.metrics import EvalResults


def merge_runs(runs: list[Path], out: Path) -> EvalResults:
    from pspo_eval.metrics import compute_results

    if not runs:
        raise PspoError("nothing to merge", "give two or more run directories")
    sources = []
    for run in runs:
        run = Path(run)
        if not (run / "manifest.json").exists():
            raise PspoError(f"{run} is not a run directory (no manifest.json)", "give directories written by `pspo-eval evaluate`")
        if run.resolve() == Path(out).resolve():
            raise PspoError(f"{run} is also the output directory", "merge into a new --out directory")
        sources.append(RunStore(run))
    target = RunStore(out)
    with target.locked("merge"):
        manifest = target.read_manifest()
        merged_from = manifest.get("merged_from", [])
        config_hashes = set()
        for src in sources:
            m = src.read_manifest()
            config_hashes.add(m.get("config_hash"))
            merged_from.append({"run": str(src.root), "config_hash": m.get("config_hash"),
                                "shard": m.get("config", {}).get("shard")})
            for key in ("config", "system_prompt", "versions", "git_revision"):
                manifest.setdefault(key, m.get(key))
            manifest.setdefault("dataset_checksums", {}).update(m.get("dataset_checksums", {}))
            manifest.setdefault("backends", {}).update(m.get("backends", {}))
            for sub in ("samples", "judgments"):
                for shard in src.shards(sub):
                    rel = shard.path.relative_to(src.root)
                    dest = Shard(target.root / rel)
                    have = dest.keys()
                    new = [r for r in shard.iter_dicts() if r.get("key") not in have]
                    dest.append(new)
        manifest.update(
            {
                "kind": "pspo-eval run",
                "merged_from": merged_from,
                "merged_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "config_hash": manifest.get("config_hash") if len(config_hashes) > 1 else next(iter(config_hashes)),
                "merged_config_hashes": sorted(h for h in config_hashes if h),
            }
        )
        target.write_manifest(manifest)
        results = compute_results(target)
        atomic_write_json(target.root / "results.json", results.to_json())
        return results
