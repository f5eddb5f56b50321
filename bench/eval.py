"""Evaluation speed: sample-segments per second of `rmt eval`'s model path, against what this CPU's matmul does.

For two models, the shipped default checkpoint and a backbone of all-MiniLM-L6-v2's shape (6 layers, hidden
384, 12 heads; random weights) with the default's memory and segment size:
  * build --samples evaluation samples of --segments segments (the samples `rmt eval` uses; untimed);
  * time `rmt_core.evaluate.predict_batch` over them in batches of --batch-size (best of --repeats passes):
    sample-segments per second, and the FLOP/s that makes (forward FLOPs of one segment step from
    rmt_core.flops: embeddings as a lookup, no vocabulary logits, [CLS] + memory + segment + 2 [SEP]);
  * time a plain matmul of the feed-forward's shape (batch x positions rows, hidden x 4 hidden) in the same
    run, at the same threads and dtype: the FLOP/s this CPU gives a kernel of that size now. achieved / matmul
    says how far from the limit the whole step is (attention, layer norms, GELU and the Python are the rest).

--compare adds variants beside the default (float32, torch's threads, --batch-size), each a ratio from the
same run: 1 thread, twice the batch, bfloat16 autocast, and 1 thread with bfloat16, each with the predictions
(argmax) it changes on the same samples and its largest logit change (0: bit-identical). Variants take turns,
once a round, --repeats rounds, the best pass of each kept. The machine may be shared: the load average is
printed before and after.

    python bench/eval.py                        # both models, 8 segments, 64 samples
    python bench/eval.py --compare --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def models(checkpoint: str | None, which: list[str]):
    """(name, model) for the shipped default and a MiniLM-shaped backbone with its RMT settings."""
    from transformers import AutoConfig

    from rmt_core.checkpoint import default_checkpoint, load_checkpoint
    from rmt_core.model import RMTConfig, from_backbone
    from rmt_core.pretrained import minilm_dir

    default = load_checkpoint(checkpoint or default_checkpoint(), device="cpu")
    if "default" in which:
        yield "default", default
    if "minilm" in which:
        torch.manual_seed(0)
        backbone = AutoConfig.from_pretrained(str(minilm_dir()), local_files_only=True)
        rmt = RMTConfig(**{k: v for k, v in default.config.to_dict().items() if k in RMTConfig.__dataclass_fields__})
        yield "minilm-shape", from_backbone(backbone, default.tokenizer, rmt).eval()


def step_flops(model) -> int:
    """Forward FLOPs of one segment step of `model` (rmt_core.flops counting)."""
    from rmt_core.flops import ModelShape, rmt_flops

    b = model.backbone.config
    shape = ModelShape("bench", b.num_hidden_layers, b.hidden_size, b.num_attention_heads, b.intermediate_size,
                       vocab=b.vocab_size)
    s = model.config.segment_size
    return rmt_flops(shape, s, segment=s, mem=model.num_mem_tokens, memory="read", special=3, embeddings=False,
                     logits=False, softmax=True)


def matmul_flops_per_s(rows: int, hidden: int, inner: int, dtype=torch.float32, seconds: float = 1.0) -> float:
    """Best FLOP/s of (rows, hidden) @ (hidden, inner) over about `seconds`."""
    a = torch.randn(rows, hidden).to(dtype)
    b = torch.randn(hidden, inner).to(dtype)
    torch.mm(a, b)
    best, spent = float("inf"), 0.0
    while spent < seconds:
        started = time.perf_counter()
        torch.mm(a, b)
        took = time.perf_counter() - started
        best, spent = min(best, took), spent + took
    return 2 * rows * hidden * inner / best


def predictions(model, ids: np.ndarray, n: int, batch: int, autocast: str | None = None):
    """(seconds, final logits (B, C) as float32) of predict_batch over `ids` in batches of `batch`."""
    from rmt_core.evaluate import _autocast, predict_batch

    started = time.perf_counter()
    with _autocast(torch.device("cpu"), autocast):
        out = [predict_batch(model, ids[i:i + batch], n, model.config.segment_size).float()
               for i in range(0, len(ids), batch)]
    return time.perf_counter() - started, torch.cat(out)


def bench_model(name: str, model, args) -> dict:
    """Every variant once a round, --repeats rounds (so a change in the machine's load hits them alike); the
    best pass of each kept, with the matmul measured at that variant's threads and dtype."""
    from rmt_core.evaluate import eval_sample_seed
    from rmt_core.tasks import TaskBuilder

    n, s = args.segments, model.config.segment_size
    builder = TaskBuilder(model.config.task, model.tokenizer, s, split="test")
    ids = np.stack([np.asarray(builder.sample(n, eval_sample_seed(0, n, i)).input_ids, dtype=np.int32)
                    for i in range(args.samples)])
    flops = step_flops(model)
    b = model.backbone.config
    threads = torch.get_num_threads()
    variants = [("float32", dict(batch=args.batch_size, threads=threads, autocast=None))]
    if args.compare:
        variants += [("1 thread", dict(batch=args.batch_size, threads=1, autocast=None)),
                     (f"batch {2 * args.batch_size}", dict(batch=2 * args.batch_size, threads=threads, autocast=None)),
                     ("bfloat16 autocast", dict(batch=args.batch_size, threads=threads, autocast="bfloat16")),
                     ("1 thread, bfloat16", dict(batch=args.batch_size, threads=1, autocast="bfloat16"))]
    best = {label: float("inf") for label, _ in variants}
    matmul = {label: 0.0 for label, _ in variants}
    logits = {}
    for _ in range(args.repeats):
        for label, v in variants:
            torch.set_num_threads(v["threads"])
            dtype = torch.bfloat16 if v["autocast"] else torch.float32
            rows = v["batch"] * (s + model.num_mem_tokens + 3)
            matmul[label] = max(matmul[label], matmul_flops_per_s(rows, b.hidden_size, b.intermediate_size, dtype,
                                                                  seconds=0.3))
            predictions(model, ids[:v["batch"]], min(n, 2), v["batch"], v["autocast"])  # warm-up
            seconds, logits[label] = predictions(model, ids, n, v["batch"], v["autocast"])
            best[label] = min(best[label], seconds)
    torch.set_num_threads(threads)
    result = {"model": name, "layers": b.num_hidden_layers, "hidden": b.hidden_size, "segment_size": s,
              "segments": n, "samples": args.samples, "step_flops": flops, "variants": []}
    base_rate, base_logits = None, logits[variants[0][0]]
    for label, v in variants:
        rate = args.samples * n / best[label]
        base_rate = base_rate or rate
        result["variants"].append({
            "variant": label, **v, "seconds": best[label], "sample_segments_per_s": rate, "flops_per_s": rate * flops,
            "matmul_flops_per_s": matmul[label], "of_matmul": rate * flops / matmul[label], "speedup": rate / base_rate,
            "changed_predictions": int((logits[label].argmax(-1) != base_logits.argmax(-1)).sum()),
            "max_logit_change": float((logits[label] - base_logits).abs().max())})
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped default)")
    parser.add_argument("--models", default="default,minilm", help="which: default, minilm (comma-separated)")
    parser.add_argument("--segments", type=int, default=8, help="segments a sample (default 8)")
    parser.add_argument("--samples", type=int, default=64, help="samples (default 64)")
    parser.add_argument("--batch-size", type=int, default=64, help="samples a batch (default 64, rmt eval's)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes, the best kept (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--compare", action="store_true", help="also 1 thread, twice the batch, bf16 autocast, both")
    parser.add_argument("--json", help="write the measurements here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {load_before[0]:.1f} / {load_before[1]:.1f} / {load_before[2]:.1f}")
    results = []
    with torch.inference_mode():
        for name, model in models(args.checkpoint, args.models.split(",")):
            r = bench_model(name, model, args)
            results.append(r)
            print(f"\n{name}: {r['layers']} layers, hidden {r['hidden']}, {r['segment_size']}-token segments, "
                  f"{r['samples']} samples x {r['segments']} segments, {r['step_flops'] / 1e6:.1f} MFLOP a "
                  "sample-segment")
            print(f"  {'variant':<18} {'sample-seg/s':>12} {'GFLOP/s':>8} {'matmul GFLOP/s':>14} {'of matmul':>9} "
                  f"{'speedup':>8} {'changed':>8} {'max logit change':>16}")
            for v in r["variants"]:
                print(f"  {v['variant']:<18} {v['sample_segments_per_s']:>12.1f} {v['flops_per_s'] / 1e9:>8.2f} "
                      f"{v['matmul_flops_per_s'] / 1e9:>14.2f} {100 * v['of_matmul']:>8.1f}% {v['speedup']:>7.2f}x "
                      f"{v['changed_predictions']:>4}/{r['samples']:<3} {v['max_logit_change']:>16.2e}")
    load_after = os.getloadavg()
    print(f"\nload average after: {load_after[0]:.1f} / {load_after[1]:.1f} / {load_after[2]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"load_before": load_before, "load_after": load_after,
                                               "threads": torch.get_num_threads(), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
