"""How natural.jsonl and faireval.jsonl were made from princeton-nlp/LLMBar (see README.md).

Run from anywhere with the LLMBar repository checked out: ``python convert.py /path/to/LLMBar``.
It reads only the files named in README.md and writes our `pspo-eval judge import` format.
"""

import json
import sys
from pathlib import Path

SETS = {
    "natural.jsonl": ("Dataset/LLMBar/Natural", "Vanilla", ["GPT-4", "ChatGPT", "LLaMA2"]),
    "faireval.jsonl": ("Dataset/Processed/FairEval", "Vanilla_NoRules", ["GPT-4", "ChatGPT"]),
}
WINNER = {"1": "a", "2": "b", None: None}


def convert(root: Path, folder: str, protocol: str, evaluators: list[str]) -> list[dict]:
    dataset = json.loads((root / folder / "dataset.json").read_text())
    lines = [{"item_id": str(i), "judge": "gold", "model_a": "output_1", "model_b": "output_2",
              "winner": WINNER[str(row["label"])]} for i, row in enumerate(dataset)]
    for evaluator in evaluators:
        result = json.loads((root / folder / "evaluators" / evaluator / protocol / "result.json").read_text())
        assert len(result) == len(dataset)
        for i, row in enumerate(result):
            verdicts = row["results"][-1]
            for swap, order in (("swap = False", "ab"), ("swap = True", "ba")):
                lines.append({"item_id": str(i), "judge": evaluator, "model_a": "output_1", "model_b": "output_2",
                              "winner": WINNER[verdicts[swap]["winner"]], "order": order})
    return lines


if __name__ == "__main__":
    root = Path(sys.argv[1])
    for name, (folder, protocol, evaluators) in SETS.items():
        rows = convert(root, folder, protocol, evaluators)
        Path(name).write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows))
