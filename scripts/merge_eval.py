"""Merge several `rmt eval --json` results of one checkpoint (e.g. many samples at short lengths, fewer at long
ones) into one eval.json, rows sorted by length, and refresh the checkpoint's model card.

    python scripts/merge_eval.py CHECKPOINT part1.json part2.json ...

The parts must have drawn their samples alike (task, seed, sources). At a length that several parts hold, pieces
that follow one another (`rmt eval --samples 100`, then `--samples 300 --first-sample 100`) are pooled into the
row that one run of 400 would write: counts and wrong answers added up, the Wilson interval recomputed, the
seconds summed. A later part that evaluated the same samples again replaces the earlier one; a row whose samples
lie inside a larger row's (the first 100 beside a pooled row of 400 that began with them) is left out, the larger
holding them; pieces that overlap otherwise, or leave a gap, are refused.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rmt_core.errors import RMTError
from rmt_core.evaluate import MAX_WRONG_SEEDS, draw_difference
from rmt_core.files import write_json_atomic
from rmt_core.stats import wilson_interval

def pooled_row(pieces: list[dict]) -> dict:
    """One row from the rows of one length, each a piece of samples (first_sample, samples); see the docstring."""
    kept = {}
    for row in pieces:  # a later piece over exactly the same samples replaces the earlier one
        kept[(row.get("first_sample", 0), row["samples"])] = row
    def inside(row, other):  # row's samples lie within other's, which holds more of them
        first, other_first = row.get("first_sample", 0), other.get("first_sample", 0)
        return (other["samples"] > row["samples"] and other_first <= first
                and first + row["samples"] <= other_first + other["samples"])

    rows = sorted((r for r in kept.values() if not any(inside(r, o) for o in kept.values())),
                  key=lambda r: r.get("first_sample", 0))
    start = 0
    for row in rows:
        first = row.get("first_sample", 0)
        if first != start:
            what = "overlap" if first < start else "leave a gap"
            raise RMTError(f"at {row['segments']} segments the pieces {what}: one starts at sample {first}, "
                           f"where the ones before end at {start}; evaluate --first-sample {start} onwards")
        start += row["samples"]
    if len(rows) == 1:
        return rows[0]
    samples, correct = start, sum(r["correct"] for r in rows)
    low, high = wilson_interval(correct, samples)
    wrong_seeds = []  # each piece lists its first wrong seeds in sample order; go on while a list is whole
    for row in rows:
        wrong_seeds += row.get("wrong_seeds", [])
        if len(row.get("wrong_seeds", [])) < row["samples"] - row["correct"]:
            break
    peaks = [r["peak_memory_bytes"] for r in rows if r.get("peak_memory_bytes") is not None]
    return {"segments": rows[0]["segments"], "tokens": rows[0]["tokens"], "accuracy": correct / samples,
            "samples": samples, "correct": correct, "ci_low": low, "ci_high": high,
            "seconds": round(sum(r["seconds"] for r in rows), 3),
            "wrong_seeds": wrong_seeds[:MAX_WRONG_SEEDS],
            "wrong_indexes": sorted(i for r in rows for i in r["wrong_indexes"]),
            "peak_memory_bytes": max(peaks) if peaks else None,
            "pieces": [piece for r in rows for piece in r.get("pieces") or
                       [{"first_sample": r.get("first_sample", 0), "samples": r["samples"], "correct": r["correct"]}]]}


def merge(parts: list[dict]) -> dict:
    """The merged results of `parts` (rmt eval --json results of one checkpoint); RMTError when they cannot be."""
    if not parts:
        raise RMTError("no parts given; give the checkpoint, then the rmt eval --json files to merge")
    shas = {(p.get("checkpoint") or {}).get("sha256") for p in parts}
    if len(shas) != 1:
        raise RMTError("the parts come from different checkpoints")
    for part in parts[1:]:
        difference = draw_difference(parts[0], part)
        if difference:
            raise RMTError(f"the parts drew their samples differently ({difference}); evaluate every part with "
                           "the same --seed and sources")
    by_length: dict[int, list[dict]] = {}
    for part in parts:
        for row in part["results"]:
            by_length.setdefault(row["segments"], []).append(row)
    merged = dict(parts[0])
    merged["results"] = [pooled_row(by_length[n]) for n in sorted(by_length)]
    merged["seconds"] = round(sum(p.get("seconds", 0) for p in parts), 3)
    merged["parts"] = [{"segments": [r["segments"] for r in p["results"]], "samples": p["results"][0]["samples"],
                        **({"first_sample": p["results"][0]["first_sample"]}
                           if p["results"][0].get("first_sample") else {}),
                        "command": p.get("command"), "date": p.get("date"), "seconds": p.get("seconds")}
                       for p in parts]
    return merged


def main(argv: list[str] | None = None) -> int:
    from rmt_core.model_card import write_model_card

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print("merge_eval: error: give the checkpoint folder, then the rmt eval --json files to merge",
              file=sys.stderr)
        return 2
    checkpoint = Path(argv[0])
    try:
        if not (checkpoint / "config.json").is_file():
            raise RMTError(f"{checkpoint} is not a checkpoint folder (no config.json); give the checkpoint first")
        parts = []
        for path in argv[1:]:
            try:
                part = json.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise RMTError(f"cannot read {path} ({error}); give files rmt eval --json wrote") from None
            if not isinstance(part, dict) or not isinstance(part.get("results"), list) or not part["results"]:
                raise RMTError(f"{path} holds no results of rmt eval; give files rmt eval --json wrote")
            parts.append(part)
        merged = merge(parts)
    except (RMTError, KeyError, TypeError) as error:
        print(f"merge_eval: error: {error}", file=sys.stderr)
        return 1
    write_json_atomic(checkpoint / "eval.json", merged)
    write_model_card(checkpoint)
    print(", ".join(f"{r['segments']}: {100 * r['accuracy']:.1f}% (n={r['samples']})" for r in merged["results"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
