"""Merge several `rmt eval --json` results of one checkpoint (e.g. many samples at short lengths, fewer at long
ones) into one eval.json, rows sorted by length, and refresh the checkpoint's model card.

    python scripts/merge_eval.py CHECKPOINT part1.json part2.json ...
"""

import json
import sys
from pathlib import Path

from rmt_core.files import write_json_atomic
from rmt_core.model_card import write_model_card


def main() -> None:
    checkpoint, parts = Path(sys.argv[1]), [json.loads(Path(p).read_text()) for p in sys.argv[2:]]
    shas = {(p.get("checkpoint") or {}).get("sha256") for p in parts}
    if len(shas) != 1:
        sys.exit("merge_eval: the parts come from different checkpoints")
    rows = {}
    for part in parts:
        for row in part["results"]:
            rows[row["segments"]] = row  # a later part overrides an earlier one at the same length
    merged = dict(parts[0])
    merged["results"] = [rows[n] for n in sorted(rows)]
    merged["seconds"] = round(sum(p.get("seconds", 0) for p in parts), 3)
    merged["parts"] = [{"segments": [r["segments"] for r in p["results"]], "samples": p["results"][0]["samples"],
                        "command": p.get("command"), "date": p.get("date"), "seconds": p.get("seconds")}
                       for p in parts]
    write_json_atomic(checkpoint / "eval.json", merged)
    write_model_card(checkpoint)
    print(", ".join(f"{r['segments']}: {100 * r['accuracy']:.1f}% (n={r['samples']})" for r in merged["results"]))


if __name__ == "__main__":
    main()
