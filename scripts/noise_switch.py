"""Does an encoder checkpoint's memory stay put in noise alone, or switch to another state, and after how many
segments? One pure-noise input per sample and noise source, run through the recurrence; prints a markdown table
(and writes every number with --json).

    .venv/bin/python scripts/noise_switch.py --checkpoint checkpoints/detect --segments 1024 --samples 16 \
        --noise training=builtin:vocab --noise quality-dev=../shared/data/quality/questions.dev.txt

The reference is the memory a sample has written after --reference segments of noise (by then the memory has
forgotten its start; the first segments move it most). A sample *switches* at the first later segment whose
memory has a cosine below --threshold with that reference. A model trained on one noise and evaluated in
another can hold in the first and switch in the second: the state its facts are written into and read from is
then one that training never showed it.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np
import torch

from rmt_core.errors import RMTError

DEFAULT_CHECKPOINT = "checkpoints/detect"


def first_switch(cosines: np.ndarray, reference: int, threshold: float) -> list[int | None]:
    """Per sample (columns of cosines (N, B)), the first segment (1-based) after `reference` whose cosine with
    the reference memory is below threshold; None when there is none."""
    out = []
    for column in cosines.T:
        below = np.nonzero(column[reference:] < threshold)[0]
        out.append(int(below[0]) + reference + 1 if len(below) else None)
    return out


def log_points(n: int) -> list[int]:
    """Segments 1, 2, 4, ... and n (1-based)."""
    points, t = [], 1
    while t < n:
        points.append(t)
        t *= 2
    return points + [n]


def memory_in_noise(model, noise_file: str, segments: int, samples: int, reference: int, threshold: float,
                    seed: int = 0) -> dict:
    """Cosine of every segment's written memory with the reference memory, memory norms, and switches."""
    from rmt_core import recurrence
    from rmt_core.inputs import SegmentBatch
    from rmt_core.noise import NoiseSource, pure_noise

    S = model.config.segment_size
    source = NoiseSource.load(noise_file, model.tokenizer)
    ids = np.array(pure_noise(source, segments * S, samples, seed), dtype=np.int32)
    cosines = np.zeros((segments, samples), dtype=np.float32)
    norms = np.zeros((segments, samples), dtype=np.float32)
    kept: dict[str, torch.Tensor] = {}

    def on_segment(result) -> None:
        memory = result.memory_out.flatten(1).float()  # (B, m * d)
        if result.t == reference - 1:
            kept["reference"] = memory.clone()
        if "reference" in kept:
            cosines[result.t] = torch.nn.functional.cosine_similarity(memory, kept["reference"], dim=-1).numpy()
        norms[result.t] = memory.norm(dim=-1).numpy()

    with torch.inference_mode():
        recurrence.run(model, SegmentBatch.from_ids(ids, S), on_segment=on_segment)
    switches = first_switch(cosines, reference, threshold)
    switched = [s for s in switches if s is not None]
    points = [t for t in log_points(segments) if t >= reference]
    return {"noise": noise_file, "segments": segments, "samples": samples, "reference": reference,
            "threshold": threshold, "switches": switches, "switched": len(switched),
            "median_switch": statistics.median(switched) if switched else None,
            "cosine_median": {t: float(np.median(cosines[t - 1])) for t in points},
            "norm_median": {t: float(np.median(norms[t - 1])) for t in points}}


def table(rows: dict[str, dict]) -> str:
    """Markdown: one row per noise source."""
    first = next(iter(rows.values()))
    points = list(first["cosine_median"])
    head = ["noise", "switched", "first switch (median)"] + [f"cos at {t}" for t in points]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, row in rows.items():
        when = "-" if row["median_switch"] is None else f"{row['median_switch']:g}"
        cells = [name, f"{row['switched']} of {row['samples']}", when]
        cells += [f"{row['cosine_median'][t]:.3f}" for t in points]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="an encoder checkpoint folder")
    parser.add_argument("--noise", action="append", metavar="NAME=SOURCE",
                        help="a noise source to run (builtin, builtin:vocab, builtin:pydoc, builtin:decoys or a noise file), "
                             "repeatable (default: training=builtin:vocab)")
    parser.add_argument("--segments", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--reference", type=int, default=8, help="the segment whose memory is the reference")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", help="write every number to this file")
    args = parser.parse_args(argv)
    try:
        if not 1 <= args.reference < args.segments <= 1_000_000 or not 1 <= args.samples <= 4096:
            raise RMTError("give 1 <= --reference < --segments <= 1,000,000 and 1 <= --samples <= 4,096")
        if not -1.0 <= args.threshold <= 1.0:
            raise RMTError(f"--threshold {args.threshold} is not a cosine; give a number from -1 to 1")
        noises = {}
        for spec in args.noise or ["training=builtin:vocab"]:
            name, sep, source = spec.partition("=")
            if not sep or not name or not source:
                raise RMTError(f"--noise {spec!r} is not NAME=SOURCE; give e.g. --noise training=builtin:vocab")
            noises[name] = source
        if args.threads:
            torch.set_num_threads(args.threads)
        from rmt_core.checkpoint import load_checkpoint, portable_path

        model = load_checkpoint(args.checkpoint, device="cpu")
        if getattr(model.config, "architecture", "encoder") != "encoder":
            raise RMTError(f"{args.checkpoint} is a decoder; this script reads encoder checkpoints")
        model.eval()
        rows = {name: memory_in_noise(model, source, args.segments, args.samples, args.reference,
                                      args.threshold, args.seed) for name, source in noises.items()}
        if args.json:
            from rmt_core.files import write_json_atomic

            write_json_atomic(args.json, {"checkpoint": portable_path(args.checkpoint), "rows": rows})
    except (RMTError, OSError) as error:
        print(f"noise_switch: error: {error}", file=sys.stderr)
        return 1
    print(f"{args.checkpoint}: memory in noise alone, {args.samples} samples of {args.segments} segments; "
          f"cosine with the memory after segment {args.reference} (median); a switch: cosine < {args.threshold}")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
