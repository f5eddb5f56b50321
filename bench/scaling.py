"""Measured cost of RMT against full attention as the input grows, beside the FLOPs estimate.

For each input length T (512, 1024, 2048, ... tokens), in fresh subprocesses:
  * RMT replay: ceil(T / segment_size) segment steps of the RMT architecture (no attention recorded, only the
    memory kept between steps), batch 1;
  * full attention: one forward pass of a randomly initialised copy of the same backbone architecture with
    max_position_embeddings = T + 2, over [CLS] + T tokens + [SEP], batch 1.
Each run reports wall time (after a warm-up; the best of up to 5 passes while they take under 2 s in all)
and peak memory: on CUDA the allocator's peak, on CPU the
process's peak resident set during the pass (VmHWM, reset just before it) minus the resident set before it.
The sweep stops after the first length where full attention takes longer than --max-seconds, fails (out of
memory) or would not fit in memory.

The architecture is the default checkpoint's (or --checkpoint's); without one, a 4-layer BERT of hidden 128
with 499-token segments and 10 memory tokens. The FLOPs ratio is `full_flops / rmt_flops` for that
architecture with rmt_core.flops (embeddings as a lookup and no vocabulary logits, as in the encoder).

    python bench/scaling.py                      # CPU or CUDA, whatever is here
    python bench/scaling.py --device cuda --tokens 512,2048,8192,32768 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# ----- architecture ------------------------------------------------------------------------------------------
def architecture(checkpoint: str | None) -> dict:
    """{"backbone": BERT config dict, "rmt": RMTConfig dict, "source": where it came from}."""
    from rmt_core.checkpoint import default_checkpoint, read_config
    from rmt_core.model import RMTConfig, small_bert_config
    from rmt_core.tasks import default_tokenizer

    folder = Path(checkpoint) if checkpoint else default_checkpoint()
    if (folder / "config.json").is_file():
        config = read_config(folder)
        return {"backbone": config["backbone"], "rmt": config["rmt"], "source": str(folder)}
    if checkpoint:
        raise SystemExit(f"scaling.py: {folder / 'config.json'} is missing; give a checkpoint folder")
    backbone = small_bert_config(len(default_tokenizer()), hidden_size=128, num_layers=4, num_heads=4)
    rmt = RMTConfig(segment_size=499, num_mem_tokens=10).to_dict()
    return {"backbone": backbone.to_dict(), "rmt": rmt, "source": "default architecture (no checkpoint found)"}


def flops_ratio(arch: dict, tokens: int) -> tuple[int, int]:
    """(full-attention FLOPs, RMT FLOPs) of this architecture over `tokens` (rmt_core.flops counting)."""
    from rmt_core.flops import ModelShape, full_flops, rmt_flops

    b, r = arch["backbone"], arch["rmt"]
    shape = ModelShape("bench", b["num_hidden_layers"], b["hidden_size"], b["num_attention_heads"],
                       b["intermediate_size"], vocab=b["vocab_size"])
    choices = dict(embeddings=False, logits=False, softmax=True)
    full = full_flops(shape, tokens, special=2, **choices)
    rmt = rmt_flops(shape, tokens, segment=r["segment_size"], mem=r["num_mem_tokens"], memory="read", special=3,
                    **choices)
    return full, rmt


# ----- one measurement (run in a fresh subprocess) -----------------------------------------------------------
def _rss_kib() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _reset_peak_rss() -> bool:
    try:  # Linux: writing 5 resets the peak resident set (VmHWM) to the current one
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_rss_kib() -> int:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def worker(kind: str, tokens: int, arch: dict, device_name: str, threads: int, repeats: int = 5) -> dict:
    import torch
    from transformers import AutoConfig, AutoModel

    from rmt_core.model import RMT, RMTConfig

    torch.manual_seed(0)
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    config = dict(arch["backbone"])
    rmt_config = RMTConfig.from_dict(arch["rmt"])
    S = rmt_config.segment_size
    if kind == "full":
        config["max_position_embeddings"] = max(tokens + 2, config.get("max_position_embeddings", 512))
    backbone = AutoModel.from_config(AutoConfig.for_model(**config), add_pooling_layer=True,
                                     attn_implementation="sdpa")
    vocab = config["vocab_size"]
    ids = torch.randint(1000, min(vocab, 20000), (1, tokens), generator=torch.Generator().manual_seed(1))
    if kind == "rmt":
        model = RMT(backbone, rmt_config, cls_id=101, sep_id=102, pad_id=0).to(device).eval()
        from rmt_core.inputs import ModelInput, SegmentBatch
        from rmt_core.recurrence import run as recurrence

        flat = ids[0].tolist()
        item = ModelInput.from_segments([flat[i:i + S] for i in range(0, tokens, S)])  # ragged last segment
        batch = SegmentBatch.from_inputs([item], pad_id=0)
        last = SegmentBatch.from_inputs([ModelInput.from_segments([item.segments[-1]])], pad_id=0)

        def run():  # the one recurrence: only the memory (1, m, d) lives between segments
            return recurrence(model, batch).logits

        def warm():  # a full segment and the partly filled last one take different attention-mask paths
            recurrence(model, batch, stop=1)
            recurrence(model, last)
    else:
        model = backbone.to(device).eval()
        full = torch.cat([torch.tensor([[101]]), ids, torch.tensor([[102]])], dim=1).to(device)  # (1, T + 2)

        def run():
            return model(input_ids=full).pooler_output

        def warm():
            model(input_ids=full[:, :512])

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        warm()
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        else:
            before = _rss_kib() * 1024
            exact = _reset_peak_rss()
        timings = []
        while True:  # the first pass gives the peak memory; short passes are repeated, the best time counts
            start = time.perf_counter()
            run()
            sync()
            timings.append(time.perf_counter() - start)
            if len(timings) >= repeats or sum(timings) > 2.0:
                break
        seconds = min(timings)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device)
            memory_kind = "cuda max_memory_allocated"
        else:
            peak = _peak_rss_kib() * 1024
            memory_kind = "peak RSS (VmHWM reset before the pass)" if exact else "peak RSS (ru_maxrss)"
    return {"kind": kind, "tokens": tokens, "seconds": seconds, "peak_bytes": max(0, peak - before),
            "all_seconds": timings, "peak_total_bytes": peak, "memory": memory_kind, "device": str(device),
            "segments": math.ceil(tokens / S) if kind == "rmt" else 1}


def measure(kind: str, tokens: int, arch: dict, args) -> dict:
    """Run `worker` in a fresh subprocess; {"error": ...} when it fails or runs out of time or memory."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--worker-tokens", str(tokens),
               "--worker-arch", json.dumps(arch), "--device", args.device, "--threads", str(args.threads)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"kind": kind, "tokens": tokens, "error": f"timed out after {args.timeout} s"}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        if done.returncode < 0 or "out of memory" in done.stderr.lower() or "can't allocate" in done.stderr:
            tail = f"out of memory ({tail[:160]})"
        return {"kind": kind, "tokens": tokens, "error": tail[:300]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def full_attention_fits(tokens: int, arch: dict, device: str) -> bool:
    """A rough guard: the activations of one full pass (a few (T, ffn) tensors, plus the (H, T, T) scores if
    the kernel materialises them on CPU) must fit in the memory that is free."""
    b = arch["backbone"]
    need = 4 * 6 * (tokens + 2) * max(b["intermediate_size"], b["hidden_size"])
    if device == "cpu":
        with open("/proc/meminfo") as handle:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in handle}
        return need < 0.6 * info.get("MemAvailable", 0)
    import torch

    free, _ = torch.cuda.mem_get_info()
    return need < 0.8 * free


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="checkpoint whose architecture to use (default: the default one)")
    parser.add_argument("--tokens", default=None,
                        help="comma-separated lengths (default 512, 1024, 2048, ... until full attention stops)")
    parser.add_argument("--max-tokens", type=int, default=4_194_304, help="longest input of the default sweep")
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="stop after full attention takes longer than this (default 60)")
    parser.add_argument("--timeout", type=float, default=600.0, help="kill a measurement after this many seconds")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per run (default: torch's choice)")
    parser.add_argument("--json", help="write the measurements and ratios to this file")
    parser.add_argument("--worker", choices=("rmt", "full"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-tokens", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-arch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"

    if args.worker:
        print(json.dumps(worker(args.worker, args.worker_tokens, json.loads(args.worker_arch), args.device,
                                args.threads)))
        return 0

    arch = architecture(args.checkpoint)
    b, r = arch["backbone"], arch["rmt"]
    print(f"architecture: {b['num_hidden_layers']} layers, hidden {b['hidden_size']}, {b['num_attention_heads']} "
          f"heads, ffn {b['intermediate_size']}; RMT segments of {r['segment_size']} tokens, "
          f"{r['num_mem_tokens']} memory tokens ({arch['source']}); device {args.device}", flush=True)
    if args.tokens:
        lengths = [int(t) for t in args.tokens.split(",") if t.strip()]
    else:
        lengths, t = [], 512
        while t <= args.max_tokens:
            lengths.append(t)
            t *= 2
    header = (f"{'tokens':>9} {'segs':>5} {'RMT s':>8} {'full s':>8} {'time x':>7} {'RMT MiB':>8} "
              f"{'full MiB':>9} {'mem x':>7} {'FLOPs x':>8}")
    print(header, flush=True)
    rows = []
    for tokens in lengths:
        full_fl, rmt_fl = flops_ratio(arch, tokens)
        rmt = measure("rmt", tokens, arch, args)
        if full_attention_fits(tokens, arch, args.device):
            full = measure("full", tokens, arch, args)
        else:
            full = {"kind": "full", "tokens": tokens, "error": "would not fit in free memory (estimate)"}
        row = {"tokens": tokens, "rmt": rmt, "full": full, "full_flops": full_fl, "rmt_flops": rmt_fl,
               "flops_ratio": full_fl / rmt_fl}
        ok = "error" not in rmt and "error" not in full
        if ok:
            row["time_ratio"] = full["seconds"] / rmt["seconds"]
            # CPU: RMT's extra resident memory is often below what RSS resolves; floor it at 1 MiB.
            row["memory_ratio"] = full["peak_bytes"] / max(rmt["peak_bytes"], 2**20)
        rows.append(row)
        mib = 2**20
        if ok:
            print(f"{tokens:>9,} {rmt['segments']:>5} {rmt['seconds']:>8.3f} {full['seconds']:>8.3f} "
                  f"{row['time_ratio']:>7.2f} {rmt['peak_bytes'] / mib:>8.1f} {full['peak_bytes'] / mib:>9.1f} "
                  f"{row['memory_ratio']:>7.2f} {row['flops_ratio']:>8.2f}", flush=True)
        else:
            print(f"{tokens:>9,}  RMT: {rmt.get('error') or format(rmt['seconds'], '.3f') + ' s'}; "
                  f"full: {full.get('error') or format(full['seconds'], '.3f') + ' s'}; "
                  f"FLOPs x{row['flops_ratio']:.2f}", flush=True)
        if not ok or full["seconds"] > args.max_seconds:
            break
    if args.json:
        from rmt_core.files import write_json_atomic

        write_json_atomic(args.json, {"architecture": arch, "device": args.device, "rows": rows,
                                      "command": " ".join([Path(sys.executable).name] + sys.argv)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
