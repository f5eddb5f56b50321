"""Where an encoder checkpoint's errors fall: the wrong answers of an `rmt eval --json` file, by how many segments
separate the last fact from the question segment.

    .venv/bin/rmt eval --checkpoint checkpoints/detect --segments 32 --samples 500 --babi-dir ../shared/data/babi/en-10k \
        --split test --noise-file ../shared/data/quality/questions.dev.txt --json runs/detect-32.json
    .venv/bin/python scripts/errors_by_distance.py runs/detect-32.json

The samples are rebuilt from the file's seed and sources (`eval_sample_seed`, `TaskBuilder`), so no model runs.
Distance 0 is a fact in the question's own segment; a fact in segment f of N is N - 1 - f segments back.
Files of `rmt eval` record every wrong sample's index (`wrong_indexes`); older ones list only the first 20
wrong seeds of a length, and for those the script counts only the samples up to the last one listed, where the
list is complete. Few
errors at large distances and many at small ones mean the model holds what it wrote but fails to write a fact
that comes late, after much noise; the opposite means it forgets.
"""

from __future__ import annotations

import argparse
import sys

from rmt_core.errors import RMTError
from rmt_core.evaluate import eval_sample_seed
from rmt_core.files import read_json
from rmt_core.stats import distance_buckets as buckets, wilson_interval


def errors_by_distance(result: dict, tokenizer) -> list[dict]:
    """Per length of the eval file, per distance range: samples, wrong answers, accuracy and its Wilson interval."""
    from rmt_core.tasks import TaskBuilder

    sources = result.get("sources") or {}
    babi_file = None if sources.get("babi") in (None, "builtin") else sources["babi"]
    noise = None if sources.get("noise") in (None, "builtin") else sources["noise"]
    builder = TaskBuilder(result["task"], tokenizer, result["segment_size"], babi_file=babi_file,
                          noise_file=noise, split=sources.get("split", "test"))
    rows = []
    for row in result["results"]:
        n, listed = row["segments"], list(row.get("wrong_seeds") or [])
        wrong, total_wrong = set(listed), row["samples"] - row["correct"]
        counts = {b: [0, 0] for b in buckets(n)}
        seeds = [eval_sample_seed(result["seed"], n, index) for index in range(row["samples"])]
        if row.get("wrong_indexes") is not None:
            wrong = {seeds[index] for index in row["wrong_indexes"]}
        elif len(listed) < total_wrong:
            # rmt eval lists the wrong answers of the first samples only (MAX_WRONG_SEEDS, in sample order): up
            # to the last one listed, the list is complete, so count that prefix of the samples.
            seeds = seeds[:seeds.index(listed[-1]) + 1] if listed else []
        for seed in seeds:
            distance = n - 1 - max(fact.segment for fact in builder.sample(n, seed).facts)
            bucket = next(b for b in counts if b[0] <= distance <= b[1])
            counts[bucket][0] += 1
            counts[bucket][1] += seed in wrong
        for (low, high), (total, bad) in counts.items():
            if total:
                ci_low, ci_high = wilson_interval(total - bad, total)
                rows.append({"segments": n, "distance": (low, high), "samples": total, "wrong": bad,
                             "accuracy": (total - bad) / total, "ci_low": ci_low, "ci_high": ci_high,
                             "of_samples": len(seeds), "evaluated": row["samples"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_json", help="a results file of rmt eval --json (its checkpoint's task, an encoder's)")
    parser.add_argument("--checkpoint", help="the evaluated checkpoint, for its tokenizer (default: the shipped "
                        "checkpoints' vocabulary, all-MiniLM-L6-v2's)")
    args = parser.parse_args(argv)
    try:
        result = read_json(args.eval_json, RMTError, "give the file rmt eval --json wrote",
                           "run rmt eval --json again")
        if result.get("task") not in ("memorize", "detect", "reason"):
            raise RMTError(f"{args.eval_json} is an eval of task {result.get('task')!r}; this script reads the "
                           "encoder tasks memorize, detect and reason")
        if args.checkpoint:
            from rmt_core.checkpoint import load_checkpoint

            tokenizer = load_checkpoint(args.checkpoint, device="cpu").tokenizer
        else:
            from transformers import AutoTokenizer

            from rmt_core.model import minilm_dir

            tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
        rows = errors_by_distance(result, tokenizer)
    except (RMTError, OSError) as error:
        print(f"errors_by_distance: error: {error}", file=sys.stderr)
        return 1
    for n, counted, evaluated in sorted({(r["segments"], r["of_samples"], r["evaluated"]) for r in rows}):
        if counted < evaluated:
            print(f"{n} segments: the file lists the wrong answers of its first {counted} of {evaluated} samples "
                  "only (files of rmt eval before wrong_indexes kept the first 20); the rows count those samples")
    print("| segments | last fact, segments before the question | samples | wrong | accuracy (95% CI) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        low, high = r["distance"]
        span = f"{low}" if low == high else f"{low}-{high}"
        print(f"| {r['segments']} | {span} | {r['samples']} | {r['wrong']} | {100 * r['accuracy']:.1f}% "
              f"({100 * r['ci_low']:.1f}-{100 * r['ci_high']:.1f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
