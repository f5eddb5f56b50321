"""Benchmark of an imported GPT-2-size decoder RMT on CPU: import time, then tokens per second and peak memory
over many 512-token segments.

    python bench/import_replay.py                          # 64 and 1,024 segments (the 1,024 run takes long on 2 cores)
    python bench/import_replay.py --segments 64,128        # shorter lengths
    python bench/import_replay.py --segments 64 --layers 2 # a smaller model, for a quick look

Model: random weights of GPT-2 (124M: 12 layers, hidden 768, 12 heads, vocabulary 50,257), saved in the
authors' layout (the bf16 state dict of RecurrentWrapper(MemoryCell(gpt2)): memory_cell.memory and
memory_cell.model.*, as `pytorch_model.bin`, the public BABILong files' layout) with 16 memory tokens, then
converted with `rmt import` (rmt_core.importers). Each length runs in a fresh subprocess: `rmt replay` of random
token ids into a trace folder with the default recording policy and a progress bar (read/write attention of
every segment while it fits the policy's 512 MiB budget, else the first and last segments; memory after every
segment), or with --plain the recurrence alone (memory to the host after every segment, no logits, no trace).
Peak memory is the highest resident memory sampled during the run (loading the model peaks higher: its
bf16 -> float32 conversion; the process's lifetime peak is printed too). Each number is one run.

Prints, for each length: tokens per second, seconds per segment and peak resident memory; and the ratios of the
longest run to the shortest (peak memory flat in the number of segments: a ratio near 1).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SEGMENT, MEMORY = 512, 16


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RssSampler:
    """The highest resident memory seen while it runs (sampled every 50 ms from /proc): the run's own peak,
    which getrusage's lifetime maximum hides when loading the model peaked higher."""

    def __init__(self):
        import threading

        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        page = os.sysconf("SC_PAGE_SIZE")
        while True:
            with open("/proc/self/statm") as handle:
                self.peak = max(self.peak, int(handle.read().split()[1]) * page / 2**20)
            if self._stop.wait(0.05):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


def gpt2_tokenizer():
    """A byte-level BPE tokenizer (GPT-2's kind, trained in memory; nothing downloaded)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["Mary went to the kitchen. Where is Mary? kitchen"] * 8, vocab_size=300,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    end = "<|endoftext|>"
    return GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, eos_token=end, bos_token=end, unk_token=end)


def make_import(work: Path, layers: int) -> tuple[Path, dict]:
    """Write the authors' layout of a random GPT-2 RMT and import it; (checkpoint folder, facts)."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config

    from rmt_core.importers import import_checkpoint

    config = GPT2Config(n_layer=layers, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)
    backbone = work / "gpt2"
    config.save_pretrained(str(backbone))
    gpt2_tokenizer().save_pretrained(str(backbone))
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(config)
    scale = lm.get_input_embeddings().weight.detach().std()
    state = {"memory_cell.memory": torch.randn(MEMORY, 768) * scale}
    state.update({f"memory_cell.model.{k}": v for k, v in lm.state_dict().items()})
    source = work / "authors"
    source.mkdir()
    torch.save({k: v.to(torch.bfloat16).contiguous() for k, v in state.items()}, source / "pytorch_model.bin")
    parameters = sum(p.numel() for p in lm.parameters())
    del lm, state
    started = time.perf_counter()
    out = import_checkpoint(source, backbone, SEGMENT, work / "imported")
    return out, {"import_s": time.perf_counter() - started, "parameters": parameters,
                 "source_mib": (source / "pytorch_model.bin").stat().st_size / 2**20}


def child(folder: str, n_segments: int, plain: bool) -> dict:
    import torch

    from rmt_core.checkpoint import load_checkpoint
    from rmt_core.inputs import ModelInput, SegmentBatch
    from rmt_core.recurrence import run
    from rmt_core.replay import replay

    torch.set_grad_enabled(False)
    model = load_checkpoint(folder, device="cpu")
    generator = torch.Generator().manual_seed(1)
    vocab = model.backbone.config.vocab_size
    blocks = [torch.randint(0, vocab, (1, SEGMENT), generator=generator) for _ in range(n_segments)]
    before = peak_rss_mib()
    sampler = RssSampler().__enter__()
    started = time.perf_counter()
    if plain:  # the recurrence alone: memory to the host after every segment, no logits, nothing written
        states = []
        with torch.inference_mode(), model.lean():
            run(model, SegmentBatch(blocks), progress=True,
                on_segment=lambda step: states.append(step.memory_out[0].to("cpu", torch.float16)))
    else:  # rmt replay: a trace folder with the default recording policy
        item = ModelInput.from_segments([b[0].tolist() for b in blocks])
        with tempfile.TemporaryDirectory(prefix="rmt-import-bench-trace-") as tmp:
            replay(model, item, out=Path(tmp) / "trace", progress=True)
    seconds = time.perf_counter() - started
    sampler.__exit__()
    return {"segments": n_segments, "tokens": n_segments * SEGMENT, "seconds": seconds,
            "tokens_per_s": n_segments * SEGMENT / seconds, "s_per_segment": seconds / n_segments,
            "peak_rss_mib": peak_rss_mib(), "rss_after_load_mib": before, "run_peak_rss_mib": sampler.peak}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", default="64,1024", help="comma-separated lengths (default 64,1024)")
    parser.add_argument("--layers", type=int, default=12, help="GPT-2 layers (default 12: the 124M model)")
    parser.add_argument("--plain", action="store_true",
                        help="run the recurrence alone (no trace, no attention recorded) instead of rmt replay")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.plain)))
        return 0
    lengths = [int(n) for n in args.segments.split(",")]
    import torch

    with tempfile.TemporaryDirectory(prefix="rmt-import-bench-") as tmp:
        folder, facts = make_import(Path(tmp), args.layers)
        print(f"model: random GPT-2, {args.layers} layers, hidden 768, {facts['parameters'] / 1e6:.0f}M parameters, "
              f"{MEMORY} memory tokens, {SEGMENT}-token segments; authors' file {facts['source_mib']:.0f} MiB (bf16); "
              f"rmt import {facts['import_s']:.1f} s; torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"{os.cpu_count()} CPUs")
        rows = []
        for n in lengths:
            command = [sys.executable, __file__, "--child", str(folder), str(n)] + (["--plain"] if args.plain else [])
            result = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
            row = json.loads(result.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{n:>6,} segments ({row['tokens']:>9,} tokens): {row['tokens_per_s']:8.1f} tokens/s, "
                  f"{row['s_per_segment']:.3f} s/segment, peak memory during the run {row['run_peak_rss_mib']:.0f} MiB "
                  f"(process lifetime peak {row['peak_rss_mib']:.0f} MiB, loading included)", flush=True)
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(f"{last['segments']} vs {first['segments']} segments: peak memory during the run "
              f"x{last['run_peak_rss_mib'] / first['run_peak_rss_mib']:.3f}, "
              f"time per segment x{last['s_per_segment'] / first['s_per_segment']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
