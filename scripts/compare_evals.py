"""Two models on the same samples: which answers the second fixes and which it breaks, from two `rmt eval --json`
files that drew the same samples (same seed and sources), with an exact McNemar test on the samples both hold
(a file of `rmt eval --first-sample 1000` is compared with another on indexes 1000 on).

    .venv/bin/python scripts/compare_evals.py checkpoints/detect/eval.json runs/other/eval.json
    .venv/bin/python scripts/compare_evals.py seed0.A.json seed0.B.json seed1.A.json seed1.B.json --segments 4096

Files come in pairs (reference, then the model compared with it); each length both files of a pair hold is a
row, and "all" pools every row of every pair. No model runs: the files' wrong_indexes say it all.
"""

from __future__ import annotations

import argparse
import sys

from rmt_core.errors import RMTError
from rmt_core.evaluate import draw_difference
from rmt_core.files import read_json
from rmt_core.stats import mcnemar_p


def wrong_by_length(result: dict, path: str) -> dict[int, tuple[set[int], range]]:
    """{segments: (wrong sample indexes, the indexes evaluated)}; RMTError when a row lists only part of its wrong
    answers."""
    rows = {}
    for row in result.get("results", []):
        wrong = set(row.get("wrong_indexes", []))
        if len(wrong) != row["samples"] - row["correct"]:
            raise RMTError(f"{path}: at {row['segments']} segments the file lists {len(wrong)} of its "
                           f"{row['samples'] - row['correct']} wrong answers; evaluate it again with this rmt eval")
        first = row.get("first_sample", 0)  # rmt eval --first-sample: indexes from there on
        rows[row["segments"]] = (wrong, range(first, first + row["samples"]))
    return rows


def compare(a: dict, b: dict, path_a: str, path_b: str, segments: list[int] | None = None) -> list[dict]:
    """One row per shared length (and the pooled "all"): samples, wrong in each, fixed and broken by b, p."""
    difference = draw_difference(a, b)
    if difference:
        raise RMTError(f"{path_a} and {path_b} drew different samples ({difference}); evaluate both with the same "
                       "--seed and sources")
    wa, wb = wrong_by_length(a, path_a), wrong_by_length(b, path_b)
    shared = sorted(set(wa) & set(wb) if segments is None else set(segments))
    rows = []
    for n in shared:
        if n not in wa or n not in wb:
            raise RMTError(f"{n} segments: not in both files (they share {sorted(set(wa) & set(wb))})")
        (first, indexes), (second, indexes_b) = wa[n], wb[n]
        both = range(max(indexes.start, indexes_b.start), min(indexes.stop, indexes_b.stop))
        if not both:
            raise RMTError(f"{n} segments: {path_a} holds samples {indexes.start}-{indexes.stop - 1} and {path_b} "
                           f"{indexes_b.start}-{indexes_b.stop - 1}, none in both; evaluate them on the same "
                           "samples (rmt eval --first-sample)")
        first, second = {i for i in first if i in both}, {i for i in second if i in both}
        rows.append({"segments": n, "samples": len(both), "wrong_a": len(first), "wrong_b": len(second),
                     "fixed": len(first - second), "broken": len(second - first)})
    if not rows:
        raise RMTError(f"{path_a} and {path_b} share no evaluated length")
    return rows


def pooled(rows: list[dict]) -> list[dict]:
    """`rows` and their sum ("all"), each with its McNemar p."""
    total = {key: sum(r[key] for r in rows) for key in ("samples", "wrong_a", "wrong_b", "fixed", "broken")}
    return [{**r, "p": mcnemar_p(r["fixed"], r["broken"])} for r in [*rows, {"segments": "all", **total}]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="pairs of results files (rmt eval --json): the reference "
                        "model's, then the compared model's on the same samples")
    parser.add_argument("--segments", help="only these lengths, comma-separated (default: every shared one)")
    args = parser.parse_args(argv)
    try:
        segments = None
        if args.segments:
            try:
                segments = [int(s) for s in args.segments.split(",")]
            except ValueError:
                raise RMTError(f"--segments {args.segments}: give whole numbers, comma-separated") from None
        if len(args.files) % 2:
            raise RMTError(f"{len(args.files)} files: give them in pairs, the reference's file then the other's")
        results = [read_json(p, RMTError, "give a file rmt eval --json wrote", "run rmt eval --json again")
                   for p in args.files]
        rows = pooled([row for i in range(0, len(results), 2)
                       for row in compare(results[i], results[i + 1], args.files[i], args.files[i + 1], segments)])
    except (RMTError, OSError) as error:
        print(f"compare_evals: error: {error}", file=sys.stderr)
        return 1
    print("| segments | samples | wrong, first | wrong, second | fixed by the second | broken by it | McNemar p |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['segments']} | {r['samples']} | {r['wrong_a']} | {r['wrong_b']} | {r['fixed']} | {r['broken']} "
              f"| {r['p']:.2g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
