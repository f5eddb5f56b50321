"""Does a fact still write into memory that long noise has moved? For held-out samples of one length (rmt eval's
own sample seeds): where the fact lands, whether the memory had already switched before it, how far the fact's
segment moved memory, and whether the model answers right. With reason's two facts, "the fact" is the later one,
and the earlier one's segment and move are recorded beside it.

    .venv/bin/python scripts/fact_writes.py --checkpoint checkpoints/detect --segments 1024 --samples 100 \
        --babi-dir ../shared/data/babi/en-10k --noise-file ../shared/data/quality/questions.dev.txt --json OUT

A memory has *switched before the fact* when, between segment `--reference` (counted from 0: the default 8 is the
ninth) and the fact's segment, its cosine with the memory after segment `--reference` falls below `--threshold`. A segment's
*move* is the memory's relative squared change, |out - in|^2 / |in|^2 (`rmt_core.model.memory_change`).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch


def switched_before(cosine: np.ndarray, reference: int, fact: int, threshold: float) -> bool:
    """cosine[t]: memory after segment t against the memory after segment `reference`. True when it falls below
    `threshold` at some segment from `reference` up to the one before the fact's."""
    return bool(fact > reference + 1 and (cosine[reference:fact] < threshold).any())


def fact_writes(model, builder, segments: int, samples: int, reference: int, threshold: float, seed: int = 0,
                batch_size: int = 25) -> list[dict]:
    from rmt_core.evaluate import eval_sample_seed
    from rmt_core.inputs import SegmentBatch
    from rmt_core.model import memory_moves

    rows = []
    for start in range(0, samples, batch_size):
        batch = [builder.sample(segments, eval_sample_seed(seed, segments, i))
                 for i in range(start, min(start + batch_size, samples))]
        ids = np.array([s.input_ids for s in batch], dtype=np.int32)
        change, cosine, out = memory_moves(model, SegmentBatch.from_ids(ids, model.config.segment_size), reference)
        change, cosine = change.numpy(), cosine.numpy()
        predictions = out.logits.argmax(-1).tolist()
        for b, sample in enumerate(batch):
            segments_with_facts = sorted({f.segment for f in sample.facts})
            fact, first = segments_with_facts[-1], segments_with_facts[0]
            noise = change[reference + 1:fact, b]
            rows.append({"seed": sample.seed, "fact_segment": fact, "right": predictions[b] == sample.answer,
                         "switched_before": switched_before(cosine[:, b], reference, fact, threshold),
                         "fact_move": float(change[fact, b]),
                         "first_fact_segment": first, "first_fact_move": float(change[first, b]),
                         "noise_move_median": float(np.median(noise)) if len(noise) else None})
    return rows


def summary(rows: list[dict], reference: int) -> list[dict]:
    """Counts and the median fact move, by (switched before the fact, right); facts after the reference only."""
    out = []
    late = [r for r in rows if r["fact_segment"] > reference + 1]
    for switched in (False, True):
        for right in (True, False):
            group = [r for r in late if r["switched_before"] == switched and r["right"] == right]
            out.append({"switched_before": switched, "right": right, "samples": len(group),
                        **{f"{key}_median": float(np.median([r[key] for r in group])) if group else None
                           for key in ("fact_move", "first_fact_move")}})
    return out


DISTANCES = {"the last fact from the question": lambda r, n: n - 1 - r["fact_segment"],
             "the first fact from the question": lambda r, n: n - 1 - r["first_fact_segment"],
             "the first fact from the last": lambda r, n: r["fact_segment"] - r["first_fact_segment"]}


def by_distance(rows: list[dict], segments: int) -> list[dict]:
    """Answers right by distance range (`rmt_core.stats.distance_buckets`), for each distance of DISTANCES: all
    samples, so that it says whether the fact's place in the input is what decides."""
    from rmt_core.stats import distance_buckets, wilson_interval

    out = []
    for name, distance in DISTANCES.items():
        for low, high in distance_buckets(segments):
            group = [r["right"] for r in rows if low <= distance(r, segments) <= high]
            if group:
                ci_low, ci_high = wilson_interval(sum(group), len(group))
                out.append({"distance": name, "range": (low, high), "samples": len(group), "right": sum(group),
                            "accuracy": sum(group) / len(group), "ci_low": ci_low, "ci_high": ci_high})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/detect", help="an encoder checkpoint folder")
    parser.add_argument("--segments", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--babi-dir", default=None, help="bAbI folder (its test split); default: built-in facts")
    parser.add_argument("--noise-file", default=None, help="noise text, one passage a line; default: built-in")
    parser.add_argument("--reference", type=int, default=8,
                        help="the segment (counted from 0) whose memory is the reference")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0, help="rmt eval's seed (the same samples as its eval.json)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="write every sample's numbers to this file")
    args = parser.parse_args(argv)
    if args.segments < args.reference + 3 or args.samples < 1:
        sys.exit(f"fact_writes: --segments must be at least --reference + 3 ({args.reference + 3}) and --samples "
                 "at least 1")
    from rmt_core.checkpoint import load_checkpoint, portable_path
    from rmt_core.errors import RMTError
    from rmt_core.files import write_json_atomic
    from rmt_core.tasks import TaskBuilder

    torch.set_num_threads(args.threads)
    try:
        model = load_checkpoint(args.checkpoint, device="cpu")
        builder = TaskBuilder(model.config.task, model.tokenizer, model.config.segment_size,
                              babi_dir=args.babi_dir, noise_file=args.noise_file, split="test")
    except RMTError as error:
        sys.exit(f"fact_writes: {error}")
    rows = fact_writes(model, builder, args.segments, args.samples, args.reference, args.threshold, args.seed)
    table = summary(rows, args.reference)
    print(f"{args.checkpoint}: {args.samples} samples of {args.segments} segments; facts after segment "
          f"{args.reference + 1}")
    # reason's two facts: the first one's move too (where facts share a segment, it is the same move)
    two = any(r["first_fact_segment"] != r["fact_segment"] for r in rows)
    extra = (" first fact's move (median) |", " --- |") if two else ("", "")
    print("| memory switched before the (last) fact | answer | samples | its move (median) |" + extra[0])
    print("| --- | --- | --- | --- |" + extra[1])
    for row in table:
        move, first = ("-" if row[key] is None else f"{row[key]:.3f}"
                       for key in ("fact_move_median", "first_fact_move_median"))
        print(f"| {'yes' if row['switched_before'] else 'no'} | {'right' if row['right'] else 'wrong'} | "
              f"{row['samples']} | {move} |" + (f" {first} |" if two else ""))
    distances = by_distance(rows, args.segments)
    print("\n| distance | segments | samples | right (95% CI) |\n| --- | --- | --- | --- |")
    for row in distances:
        if row["distance"] == "the last fact from the question" or two:  # detect: one fact, one distance
            low, high = row["range"]
            print(f"| {row['distance']} | {low if low == high else f'{low}-{high}'} | {row['samples']} | "
                  f"{100 * row['accuracy']:.1f}% ({100 * row['ci_low']:.1f}-{100 * row['ci_high']:.1f}) |")
    if args.json:
        write_json_atomic(args.json, {"checkpoint": portable_path(args.checkpoint), "segments": args.segments,
                                      "samples": args.samples, "reference": args.reference,
                                      "threshold": args.threshold, "seed": args.seed,
                                      "babi_dir": portable_path(args.babi_dir),
                                      "noise_file": portable_path(args.noise_file),
                                      "summary": table, "by_distance": distances, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
