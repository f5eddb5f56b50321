"""Benchmark of replay: recording overhead, time per segment and peak memory against input length.

    python bench/replay.py            # ratios at 64 and 1,024 segments (about a minute on 2 cores)
    python bench/replay.py --long     # also a replay of 2,043,904 tokens (4,096 segments x 499 tokens)

Model: the shipped default checkpoint (checkpoints/memorize) when it exists, else a random model like it
(4 layers, hidden 128, 64-token segments, 10 memory tokens). Every measurement runs in a fresh subprocess,
so peak resident memory (getrusage ru_maxrss) belongs to that run alone. Each number is one run.

Prints:
    recording overhead   replay with the default recording policy (trace written to disk) / plain forward
                         pass over the same input (sdpa kernel, no recording); target <= 1.5
    time per segment     at 1,024 segments / at 64 segments; target within 15% (<= 1.15)
    peak memory          at 1,024 segments / at 64 segments; target within 15% (<= 1.15)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# ----- inside a child process --------------------------------------------------------------------------------
def build_model(segment_size: int | None, long: bool):
    """(model, description). The shipped checkpoint when usable, else a random model of its shape."""
    import torch

    from rmt_core.checkpoint import default_checkpoint, load_checkpoint
    from rmt_core.model import RMTConfig, from_backbone, small_bert_config
    from rmt_core.tasks import default_tokenizer

    shipped = default_checkpoint()
    if (shipped / "config.json").is_file():
        model = load_checkpoint(shipped, device="cpu")
        if not long or model.config.segment_size >= segment_size:
            return model, f"checkpoint {shipped} (segment size {model.config.segment_size})"
        note = f" (the shipped checkpoint has {model.config.segment_size}-token segments)"
    else:
        note = " (no shipped checkpoint yet)"
    tokenizer = default_tokenizer()
    torch.manual_seed(0)
    size = segment_size or 64
    backbone = small_bert_config(len(tokenizer), hidden_size=128, num_layers=4, num_heads=4,
                                 max_positions=512 if size + 13 > 128 else 128)
    model = from_backbone(backbone, tokenizer, RMTConfig(num_mem_tokens=10, segment_size=size)).eval()
    return model, f"random model: 4 layers, hidden 128, 4 heads, {size}-token segments, 10 memory tokens{note}"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(kind: str, segments: int, segment_size: int | None, long: bool, out: str | None, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)

    from rmt_core.replay import replay
    from rmt_core.tasks import TaskBuilder

    model, description = build_model(segment_size, long)
    size = model.config.segment_size
    sample = TaskBuilder(model.config.task, model.tokenizer, size).sample(segments, seed=0)
    with torch.no_grad():  # warm-up of both kernels, so lazy initialisation is not timed
        tokens = torch.tensor([sample.segments()[0]])
        model.segment_step(model.initial_memory(1), tokens, output_attentions=True)
        model.set_attention_kernel("sdpa")
        model.segment_step(model.initial_memory(1), tokens)
    result = {"kind": kind, "segments": segments, "segment_size": size, "tokens": len(sample.input_ids),
              "model": description, "rss_before_mib": peak_rss_mib()}
    if kind == "forward":
        input_ids = torch.tensor([sample.input_ids])  # (1, N*S)
        start, cpu = time.perf_counter(), time.process_time()
        with torch.no_grad():
            model(input_ids)
        result["seconds"], result["cpu_seconds"] = time.perf_counter() - start, time.process_time() - cpu
    else:
        folder = Path(out) if out else Path(tempfile.mkdtemp(prefix="rmt-bench-"))
        try:
            start, cpu = time.perf_counter(), time.process_time()
            trace = replay(model, sample, out=folder / "trace", progress=kind == "long")
            result["seconds"], result["cpu_seconds"] = time.perf_counter() - start, time.process_time() - cpu
            result["attention_segments"] = len(trace.attention_segments)
            result["trace_mib"] = sum(f.stat().st_size for f in trace.path.rglob("*") if f.is_file()) / 2**20
            result["memory_states"] = list(trace.memory_states().shape)
        finally:
            if not out:
                shutil.rmtree(folder, ignore_errors=True)
    result["peak_rss_mib"] = peak_rss_mib()
    return result


# ----- the driver ---------------------------------------------------------------------------------------------
def measure(kind: str, segments: int, threads: int, segment_size: int | None = None, long: bool = False,
            out: str | None = None) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--segments", str(segments), "--threads", str(threads)]
    if segment_size:
        command += ["--segment-size", str(segment_size)]
    if long:
        command += ["--long"]
    if out:
        command += ["--out", out]
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=None if long else subprocess.PIPE, text=True,
                          cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"bench child {' '.join(command[2:])} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="also replay 4,096 segments x 499 tokens")
    parser.add_argument("--long-shipped", action="store_true",
                        help="replay 2,043,904 tokens with the shipped default checkpoint at its own segment size")
    parser.add_argument("--short", type=int, default=64, help="the short input, in segments (default 64)")
    parser.add_argument("--length", type=int, default=1024, help="the long input, in segments (default 1024)")
    parser.add_argument("--keep", help="with --long: keep the long trace in this folder (must not exist)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads in each measured process (default 1: steady timings on a shared machine)")
    parser.add_argument("--child", choices=("replay", "forward", "long"), help=argparse.SUPPRESS)
    parser.add_argument("--segments", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--segment-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.segments, args.segment_size, args.long, args.out, args.threads)))
        return

    print(f"bench/replay.py on {os.cpu_count()} CPU core(s), {args.threads} torch thread(s); "
          "each number from one run in a fresh process", flush=True)
    short_replay = measure("replay", args.short, args.threads)
    print(f"model: {short_replay['model']}", flush=True)
    long_replay = measure("replay", args.length, args.threads)
    short_forward = measure("forward", args.short, args.threads)
    long_forward = measure("forward", args.length, args.threads)
    rows = []
    for rep, fwd in ((short_replay, short_forward), (long_replay, long_forward)):
        rows.append(f"  {rep['segments']:>5} segments x {rep['segment_size']} tokens: replay {rep['seconds']:.2f} s "
                    f"({1000 * rep['seconds'] / rep['segments']:.2f} ms/segment, CPU {rep['cpu_seconds']:.2f} s, "
                    f"attention for {rep['attention_segments']}, trace {rep['trace_mib']:.1f} MiB, "
                    f"peak RSS {rep['peak_rss_mib']:.0f} MiB); "
                    f"forward {fwd['seconds']:.2f} s (CPU {fwd['cpu_seconds']:.2f} s)")
    print("\n".join(rows))

    def ratios(key):
        overhead = long_replay[key] / long_forward[key]
        overhead_short = short_replay[key] / short_forward[key]
        per_segment = (long_replay[key] / long_replay["segments"]) / (short_replay[key] / short_replay["segments"])
        return overhead, overhead_short, per_segment

    verdict = lambda ok: "ok" if ok else "OVER TARGET"  # noqa: E731
    overhead, overhead_short, per_segment = ratios("seconds")
    cpu_overhead, cpu_overhead_short, cpu_per_segment = ratios("cpu_seconds")
    memory = long_replay["peak_rss_mib"] / short_replay["peak_rss_mib"]
    print(f"recording overhead (replay / forward) at {args.length} segments: {overhead:.2f}x wall "
          f"(at {args.short}: {overhead_short:.2f}x); CPU time {cpu_overhead:.2f}x (at {args.short}: "
          f"{cpu_overhead_short:.2f}x)  target <= 1.5  {verdict(overhead <= 1.5)}")
    print(f"time per segment, {args.length} / {args.short} segments: {per_segment:.3f} wall; CPU time "
          f"{cpu_per_segment:.3f}  target <= 1.15  {verdict(per_segment <= 1.15)}")
    print(f"peak memory, {args.length} / {args.short} segments: {memory:.3f}  target <= 1.15  "
          f"{verdict(memory <= 1.15)}")
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        print(f"note: load average {load:.1f} on {os.cpu_count()} cores while measuring; wall-clock ratios are "
              "noisy under load, CPU-time ratios less so")

    if args.long:
        print("long replay: 4,096 segments x 499 tokens = 2,043,904 tokens, memory states for every segment ...",
              flush=True)
        result = measure("long", 4096, args.threads, segment_size=499, long=True, out=args.keep)
        print(f"model: {result['model']}")
        print(f"long replay: {result['tokens']:,} tokens in {result['seconds']:.1f} s "
              f"({1000 * result['seconds'] / result['segments']:.1f} ms/segment, CPU {result['cpu_seconds']:.1f} s), "
              f"peak RSS {result['peak_rss_mib']:.0f} MiB "
              f"(before the replay {result['rss_before_mib']:.0f} MiB), memory states {result['memory_states']}, "
              f"attention for {result['attention_segments']} segments, trace {result['trace_mib']:.0f} MiB on disk")

    if args.long_shipped:
        from rmt_core.checkpoint import default_checkpoint, read_config

        size = read_config(default_checkpoint())["rmt"]["segment_size"]
        n = -(-PAPER_TOKENS // size)
        print(f"long replay with the shipped default: {n:,} segments x {size} tokens >= {PAPER_TOKENS:,} tokens, "
              "memory states for every segment ...", flush=True)
        result = measure("long", n, args.threads, out=args.keep)
        print(f"model: {result['model']}")
        print(f"long replay: {result['tokens']:,} tokens in {result['seconds']:.1f} s "
              f"({1000 * result['seconds'] / result['segments']:.2f} ms/segment, CPU {result['cpu_seconds']:.1f} s), "
              f"peak RSS {result['peak_rss_mib']:.0f} MiB "
              f"(before the replay {result['rss_before_mib']:.0f} MiB), memory states {result['memory_states']}, "
              f"attention for {result['attention_segments']} segments, trace {result['trace_mib']:.0f} MiB on disk")


PAPER_TOKENS = 2_043_904  # the paper's longest input: 4,096 segments x 499 tokens

if __name__ == "__main__":
    main()
