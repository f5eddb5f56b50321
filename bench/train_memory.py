"""Training memory: the peak resident memory of `rmt train` steps, with and without --accumulate, and with the
segments before the --bptt-depth cut run as before (kept), lean (the default) or lean with --recompute.

Each variant runs in a process of its own (so each peak is its own): a small reason RMT of the shipped reason's
shape (4 layers, hidden 128, 10 memory tokens, 64-token segments), built-in facts and noise, --segments segments
a sample, --batch-size samples a step, the noise-stillness term at --stillness (default 30), --bptt-depth 64
unless told, --steps steps. Memory is detached once, at the cut. "kept": every segment before the cut keeps its
graph until the backward pass, so activations grow with the input's length whatever --bptt-depth says (how
training ran before lean truncation). "lean": segments before the cut that no loss term reaches run without a
graph; those the stillness term reaches (noise segments) keep theirs. "recompute": those recompute their
activations in the backward pass instead (`rmt train --recompute`). All three give the same gradients.
`--architecture decoder`: qa1 on a GPT-2-style backbone of the same size, whose loss reaches every segment (so
"lean" is "kept", and "recompute" recomputes every segment). It prints each variant's peak resident memory
over the process's memory before `train` starts (torch and the project imported), the seconds of the whole run
(model build, one validation sample, the steps), and both as ratios to the first variant of the same run. The
loss of the first step is printed too: the parts give the whole batch's update, so it agrees to rounding (and
up to how the stillness marks fall between the parts).

    python bench/train_memory.py                       # 128 segments, batch 8, --accumulate 1, 2, 4
    python bench/train_memory.py --segments 256 --parts 1,2
    python bench/train_memory.py --segments 1024 --batch-size 1 --parts 1 --steps 1 --graphs kept,lean,recompute
    python bench/train_memory.py --architecture decoder --segments 256 --bptt-depth 0 --parts 1 --steps 1 \\
        --graphs kept,recompute
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def rss_mib() -> float:
    """This process's resident memory now, from /proc (MiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one(parts: int, segments: int, batch: int, steps: int, stillness: float = 30.0, bptt: int | None = 64,
        graphs: str = "lean", architecture: str = "encoder") -> dict:
    """Train `steps` steps in this process; its peak and starting memory, the run's seconds and first loss."""
    import torch

    from rmt_core import recurrence
    from rmt_core.train import Stage, TrainConfig, train

    if graphs == "kept":  # every segment before the cut keeps its graph, as before lean truncation
        lean = recurrence.run
        recurrence.run = lambda *a, graph_before=None, recompute=False, **k: lean(*a, **k)

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        shape = dict(task="reason", noise_stillness=stillness) if architecture == "encoder" else dict(
            task="qa1", architecture="decoder", backbone="small")
        cfg = TrainConfig(**shape, out=f"{folder}/run", stages=[Stage(segments, 64)], hidden_size=128,
                          num_layers=4, num_heads=4, num_mem_tokens=10, batch_size=batch, accumulate=parts,
                          bptt_depth=bptt, max_steps=steps, eval_every=10**6,
                          val_samples=1, warmup_steps=0, log_every=1, target_accuracy=1.01, plateau=10**6, threads=1,
                          seed=0, recompute=graphs == "recompute")
        before = rss_mib()
        started = time.perf_counter()
        run = train(cfg, progress=False)
        seconds = time.perf_counter() - started
        steps_log = [json.loads(line) for line in (run / "training_log.jsonl").read_text().splitlines()]
        losses = [e["loss"] for e in steps_log if e.get("event") == "step"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"parts": parts, "graphs": graphs, "peak_mib": peak, "before_mib": before, "training_mib": peak - before,
            "run_seconds": seconds, "first_loss": losses[0]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", type=int, default=128, help="segments a sample (default 128)")
    parser.add_argument("--batch-size", type=int, default=8, help="samples a step (default 8)")
    parser.add_argument("--steps", type=int, default=2, help="training steps a variant (default 2)")
    parser.add_argument("--parts", default="1,2,4", help="--accumulate values, comma-separated (default 1,2,4)")
    parser.add_argument("--stillness", type=float, default=30.0, help="--noise-stillness (default 30; 0: off)")
    parser.add_argument("--bptt-depth", type=int, default=64, help="--bptt-depth (default 64; 0: none)")
    parser.add_argument("--architecture", choices=("encoder", "decoder"), default="encoder",
                        help="encoder: reason (default); decoder: qa1 on a GPT-2-style backbone of the same size, "
                             "its loss on the answer tokens (no stillness term)")
    parser.add_argument("--graphs", default="lean",
                        help="kept, lean, recompute (comma-separated): how segments before the cut run (default "
                             "lean)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one variant, print its JSON
    parser.add_argument("--json", help="write the measurements here")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.segments, args.batch_size, args.steps, args.stillness,
                             args.bptt_depth or None, args.graphs, args.architecture)))
        return 0
    what = (f"reason, small backbone, noise stillness {args.stillness:g}" if args.architecture == "encoder" else
            "qa1 decoder, small GPT-2-style backbone")
    print(f"{what}: {args.segments} segments x {args.batch_size} samples a step, --bptt-depth "
          f"{args.bptt_depth or 'none'}, {args.steps} steps a variant, 1 thread, one process each")
    results = []
    graphs = args.graphs.split(",")
    if not set(graphs) <= {"lean", "kept", "recompute"}:
        parser.error(f"--graphs takes kept, lean and recompute, not {args.graphs!r}")
    for parts, kind in [(int(p), g) for p in args.parts.split(",") for g in graphs]:
        command = [sys.executable, __file__, "--one", str(parts), "--segments", str(args.segments),
                   "--batch-size", str(args.batch_size), "--steps", str(args.steps),
                   "--stillness", str(args.stillness), "--bptt-depth", str(args.bptt_depth), "--graphs", kind,
                   "--architecture", args.architecture]
        done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            print(f"--accumulate {parts}, {kind}: failed ({last})")
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if not results:
        return 1
    base = results[0]
    print(f"  {'--accumulate':>12} {'graphs':>9} {'training MiB':>12} {'of first':>8} {'run s':>9} {'of first':>8} "
          f"{'first loss':>11}")
    for r in results:
        print(f"  {r['parts']:>12} {r['graphs']:>9} {r['training_mib']:>12.0f} "
              f"{r['training_mib'] / base['training_mib']:>8.2f} {r['run_seconds']:>9.1f} "
              f"{r['run_seconds'] / base['run_seconds']:>8.2f} {r['first_loss']:>11.5f}")
    if args.json:
        summary = {"architecture": args.architecture, "segments": args.segments, "batch_size": args.batch_size,
                   "steps": args.steps, "stillness": args.stillness, "bptt_depth": args.bptt_depth, "results": results}
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
