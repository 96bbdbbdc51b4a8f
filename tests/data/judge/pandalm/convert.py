"""How annotators.jsonl was made from WeOpenML/PandaLM's data/testset-v1.json (see README.md).

``python convert.py /path/to/PandaLM/data/testset-v1.json`` writes the three human annotators'
labels in our `pspo-eval judge import` format: "1" -> a (response1), "2" -> b (response2),
"0" -> tie; the models come from ``cmp_key`` ("model1_model2").
"""

import json
import sys
from pathlib import Path

WINNER = {"0": "tie", "1": "a", "2": "b"}

rows = json.loads(Path(sys.argv[1]).read_text())
with open("annotators.jsonl", "w") as out:
    for row in rows:
        model_a, model_b = row["cmp_key"].split("_")
        for k in (1, 2, 3):
            out.write(json.dumps({"item_id": str(row["idx"]), "judge": f"annotator-{k}", "model_a": model_a,
                                  "model_b": model_b, "winner": WINNER[str(row[f"annotator{k}"])]}, separators=(",", ":")) + "\n")
