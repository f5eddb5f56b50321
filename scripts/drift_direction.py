"""Is the answer lost to how far noise moves memory, or to where it moves it? Writes its numbers to --json and
prints them as markdown tables.

    .venv/bin/python scripts/drift_direction.py --checkpoint checkpoints/reason --samples 200 --distance 64 \
        --babi-dir ../shared/data/babi/en-10k --noise-file ../shared/data/quality/questions.dev.txt \
        --json docs/experiments/reason-form-carried/direction.reasonCFD.json

Samples are scripts/drift_findings.py's (rmt eval's held-out seeds whose facts all land in segments 0..F), of
F + D + 2 segments. For each: m0, the memory right after its last fact, and mD, the memory D segments of noise
later (the drift, mD - m0). The sample's own question segment is then read from memories built from them:
- along the drift: m0 + a (mD - m0), for each a in --alphas (a = 1 is mD; a = 0 is m0);
- isotropic: m0 plus Gaussian noise of the drift's own size (per sample), times a;
- another sample's drift: m0 plus the drift of the next sample in the list (a shift by one), times a;
- noise of a set size: m0 plus Gaussian noise whose size on each memory slot is s times that slot's norm, for
  each s in --sizes (how far a random step must go before it costs the answer).
If the answer falls along the drift much faster than along random steps of the same size, what costs it is the
direction noise carries memory in, not the distance.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from drift_findings import DriftError, drift_pass, pick_samples, question_logits  # noqa: E402
from rmt_core.checkpoint import portable_command, portable_path  # noqa: E402
from rmt_core.errors import RMTError  # noqa: E402

FORMAT = "rmt-lens-drift-direction"
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
SIZES = (0.05, 0.1, 0.2, 0.3, 0.45, 0.6)


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise DriftError(f"{flag} takes numbers separated by commas, such as 0,0.5,1; got {text!r}") from None
    if not values or not all(np.isfinite(v) and 0 <= v <= 100 for v in values):
        raise DriftError(f"{flag} takes numbers from 0 to 100, got {text!r}")
    return values


def directions(model, samples, distance: int, alphas=ALPHAS, sizes=SIZES, seed: int = 0) -> dict:
    """The model's accuracy with the question read from memories along, and beside, each sample's drift."""
    measured = drift_pass(model, samples, [0, distance], progress=False)
    m0, md = measured["kept"][:, 0], measured["kept"][:, 1]  # (K, m, d)
    K, N, S = len(samples), samples[0].n_segments, samples[0].segment_size
    questions = np.array([s.input_ids[(N - 1) * S:] for s in samples], dtype=np.int64)
    labels = np.array([s.answer for s in samples], dtype=np.int64)
    rng = np.random.default_rng(seed)
    drift = md - m0
    size = np.linalg.norm(drift.reshape(K, -1), axis=1)  # (K,) each sample's drift
    unit = rng.standard_normal(drift.shape).astype(np.float32)
    isotropic = unit / np.linalg.norm(unit.reshape(K, -1), axis=1)[:, None, None] * size[:, None, None]
    other = np.roll(drift, 1, axis=0)

    def right(states) -> int:
        return int((question_logits(model, states, questions).argmax(axis=1) == labels).sum())

    rows = [{"alpha": a, "drift": right(m0 + a * drift), "isotropic": right(m0 + a * isotropic),
             "other_sample": right(m0 + a * other)} for a in alphas]
    slot_norm = np.linalg.norm(m0, axis=2, keepdims=True)  # (K, m, 1)
    noise = rng.standard_normal(m0.shape).astype(np.float32) / np.sqrt(m0.shape[2])
    sized = [{"size": s, "right": right(m0 + s * slot_norm * noise)} for s in sizes]
    relative = size / np.linalg.norm(m0.reshape(K, -1), axis=1)
    return {"samples": K, "distance": distance, "n_segments": N,
            "drift_relative_size": {"median": float(np.median(relative)), "q25": float(np.quantile(relative, 0.25)),
                                    "q75": float(np.quantile(relative, 0.75))},
            "along": rows, "noise_of_size": sized}


def report(result: dict) -> str:
    K, d = result["samples"], result["distance"]
    r = result["drift_relative_size"]
    lines = [f"{K} held-out samples, the question read from memories built from m0 (right after the last fact) "
             f"and m{d} ({d} segments of noise later); the drift m{d} - m0 is {r['median']:.2f} of m0's size "
             f"(median; quartiles {r['q25']:.2f}-{r['q75']:.2f}).", "",
             f"| a | m0 + a (m{d} - m0) | m0 + a x isotropic step of the drift's size | m0 + a x another sample's drift |",
             "| --- | --- | --- | --- |"]

    def pct(n: int) -> str:
        return f"{100 * n / K:.1f}%"

    for row in result["along"]:
        lines.append(f"| {row['alpha']:g} | {pct(row['drift'])} | {pct(row['isotropic'])} | "
                     f"{pct(row['other_sample'])} |")
    lines += ["", "| Gaussian noise, size on each slot (of the slot's norm) | " +
              " | ".join(f"{s['size']:g}" for s in result["noise_of_size"]) + " |",
              "| --- | " + " | ".join("---" for _ in result["noise_of_size"]) + " |",
              "| the model's answer | " + " | ".join(pct(s["right"]) for s in result["noise_of_size"]) + " |"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/reason", help="an encoder checkpoint folder")
    parser.add_argument("--samples", type=int, default=200, help="held-out samples (default 200)")
    parser.add_argument("--distance", type=int, default=64, help="segments of noise after the facts (default 64)")
    parser.add_argument("--max-fact-segment", type=int, default=3, help="facts land in segments 0..F (default 3)")
    parser.add_argument("--alphas", default=",".join(f"{a:g}" for a in ALPHAS), help="steps along the drift")
    parser.add_argument("--sizes", default=",".join(f"{s:g}" for s in SIZES), help="sizes of Gaussian noise")
    parser.add_argument("--babi-dir", help="bAbI folder (its test split is used); default: built-in facts")
    parser.add_argument("--noise-file", help="noise text, one passage a line; default: built-in noise")
    parser.add_argument("--seed", type=int, default=0, help="seed of rmt eval's samples and of the noise")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", required=True, help="the file the numbers go to (a new one, or one it wrote)")
    args = parser.parse_args(argv)
    command = portable_command(sys.argv[1:] if argv is None else argv, "python scripts/drift_direction.py")
    try:
        return _main(args, command)
    except (RMTError, OSError) as error:
        print(f"drift_direction: error: {error}", file=sys.stderr)
        return 1


def _main(args, command: str) -> int:
    from probes.run import json_safe
    from rmt_core.babilong import make_builder
    from rmt_core.checkpoint import checkpoint_identity, load_checkpoint
    from rmt_core.files import check_ours, write_json_atomic

    for value, flag, low, high in ((args.samples, "--samples", 2, 100_000), (args.distance, "--distance", 1, 100_000),
                                   (args.max_fact_segment, "--max-fact-segment", 0, 1_000),
                                   (args.threads, "--threads", 1, 1_024)):
        if not low <= value <= high:
            raise DriftError(f"{flag} must be from {low} to {high:,}, got {value}")
    alphas, sizes = _floats(args.alphas, "--alphas"), _floats(args.sizes, "--sizes")
    out = Path(args.json)
    check_ours(out, FORMAT, DriftError, "direction.json")
    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint)
    if getattr(model.config, "architecture", "encoder") != "encoder":
        raise DriftError(f"{args.checkpoint} is a decoder RMT; this measure reads an encoder's answer head")
    builder = make_builder(model.config.task, model.tokenizer, model.config.segment_size, babi_dir=args.babi_dir,
                           noise_file=args.noise_file, split="test")
    samples = pick_samples(builder, model.config.task, args.max_fact_segment + args.distance + 2, args.samples,
                           args.max_fact_segment, seed=args.seed)
    result = {"format": FORMAT, "command": command,
              "checkpoint": checkpoint_identity(args.checkpoint),
              "sources": {"babi_dir": portable_path(args.babi_dir), "noise_file": portable_path(args.noise_file)},
              **directions(model, samples, args.distance, alphas, sizes, seed=args.seed)}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, json_safe(result))
    print(report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
