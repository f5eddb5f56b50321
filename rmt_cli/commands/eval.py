"""`rmt eval`: accuracy of a checkpoint against the number of segments (SPEC section 7).

    rmt eval --checkpoint checkpoints/memorize --segments 1,2,4,8,16,32,64,128,256,512,1024,2048,4096 \
             --samples 100 --json checkpoints/memorize/eval.json

Memory stays flat however many segments: only the memory is kept between segment steps. Launched by torchrun
or accelerate, the processes share the samples and rank 0 prints and writes the results, the same as one
process would:

    torchrun --nproc-per-node 4 -m rmt_cli eval --checkpoint checkpoints/memorize --segments 4096 --samples 100
"""

from __future__ import annotations

import argparse
import json
import sys

from rmt_cli.commands import SEED, check_output_file, parse_device, whole, whole_list
from rmt_core.errors import TaskError

GATHER_TIMEOUT_HOURS = 48  # how long a finished rank waits for the others
HELP = "accuracy of a checkpoint against the number of segments (writes the results format with --json)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rmt_core.babilong import GENERATIVE_TASKS
    from rmt_core.evaluate import MAX_BATCH_TOKENS, MAX_FIRST_SAMPLE, MAX_SAMPLES
    from rmt_core.tasks import MAX_SAMPLE_TOKENS, TASKS

    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped default)")
    parser.add_argument("--task", choices=TASKS + GENERATIVE_TASKS, default=None,
                        help="task (default: the checkpoint's own task; qa1 and qa2 are a decoder's, answered by "
                             "generation and scored by exact match)")
    parser.add_argument("--segments", type=whole_list(1, MAX_SAMPLE_TOKENS), default=[1, 2, 4],
                        help="comma-separated numbers of segments to evaluate, e.g. 1,2,4,...,4096 (default 1,2,4)")
    parser.add_argument("--samples", type=whole(1, MAX_SAMPLES), default=100,
                        help="samples per length (default 100)")
    parser.add_argument("--first-sample", type=whole(0, MAX_FIRST_SAMPLE), default=0,
                        help="start at this sample index (default 0): `--samples 300 --first-sample 100` after a "
                             "run of 100 evaluates the next 300, and scripts/merge_eval.py pools the two into the "
                             "row of 400 one run would write")
    parser.add_argument("--batch-size", type=whole(1, 65536), default=64,
                        help="samples a batch (default 64; smaller for very long inputs to bound memory)")
    parser.add_argument("--max-batch-tokens", type=whole(1, 2**31), default=MAX_BATCH_TOKENS,
                        help=f"token ids a batch holds at once, 4 bytes each in RAM (default {MAX_BATCH_TOKENS:,}: "
                             "128 samples of 4,096 64-token segments); raise it on a GPU machine so that a long "
                             "length runs as few batches as --batch-size asks")
    parser.add_argument("--seed", type=SEED, default=0, help="evaluation seed (samples never overlap training's)")
    parser.add_argument("--babi-file", help="a bAbI v1.2 task file (qa1 for memorize/detect/qa1, qa4 for reason, qa2)")
    parser.add_argument("--babi-dir", help="a bAbI folder (such as en-10k/); its test-split file is used")
    parser.add_argument("--split", default="test", choices=("train", "test"), help="bAbI split with --babi-dir")
    parser.add_argument("--noise-file", help="noise text, one passage a line (default: built-in sentences)")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON (checkpoint/eval.json for shipping)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: CUDA when present)")
    parser.add_argument("--threads", type=whole(1, 4096), default=None, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--dtype", choices=("bfloat16",), default=None,
                        help="run the backbone under bfloat16 autocast (faster on CPUs with bf16 units and on GPUs; "
                             "can change a few predictions; default: the weights' float32)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:

    from rmt_core.checkpoint import default_checkpoint, load_checkpoint, portable_command, read_config
    from rmt_core.evaluate import evaluate, results_table
    from rmt_core.files import write_json_atomic
    from rmt_core.tasks import check_sample_size

    if args.json and args.json != "-":
        check_output_file(args.json, "--json", TaskError)
    device = parse_device(args.device, TaskError)
    folder = args.checkpoint or default_checkpoint()
    segment_size = read_config(folder)["rmt"]["segment_size"]
    for n in args.segments:  # before the model loads: a length that cannot be built fails at once
        check_sample_size(n, segment_size)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from rmt_core.train import Processes

    _join_processes(device)
    procs = Processes(device)  # torchrun / accelerate: rank and world size from the environment
    try:
        model = load_checkpoint(folder, device=procs.device)
        result = evaluate(model, args.task, args.segments, args.samples, batch_size=args.batch_size,
                          seed=args.seed, babi_file=args.babi_file, babi_dir=args.babi_dir,
                          noise_file=args.noise_file, split=args.split, progress=not args.no_progress,
                          rank=procs.rank, world=procs.world, autocast=args.dtype,
                          max_batch_tokens=args.max_batch_tokens, first_sample=args.first_sample)
    finally:
        procs.close()
    if not procs.main:
        return 0
    result["command"] = portable_command(getattr(args, "_argv", sys.argv[1:]))
    print(f"{result['checkpoint']['name'] if result['checkpoint'] else folder}: task {result['task']}, "
          f"{result['segment_size']}-token segments, trained on {result['trained_segments']} segments, "
          f"{result['device']}, {result['seconds']:.1f} s")
    print(results_table(result))
    note = other_data_note(model.checkpoint_dir, result)  # the folder loaded: a Hub id's is in the cache
    if note:
        print(note)
    if args.json:
        if args.json == "-":
            json.dump(result, sys.stdout, indent=1)
            sys.stdout.write("\n")
        else:
            write_json_atomic(args.json, result)
            print(f"wrote {args.json}")
    return 0


def other_data_note(folder, result: dict) -> str | None:
    """A line saying so when the checkpoint's own eval.json was measured on other facts or noise than this run
    (a bare `rmt eval` uses the built-in generator and noise, which a checkpoint trained on bAbI files in prose
    may answer less well), so that the two sets of numbers are not taken for one another."""
    from pathlib import Path

    from rmt_core.evaluate import same_sources

    try:
        shipped = json.loads((Path(folder) / "eval.json").read_text())
        theirs = dict(shipped["sources"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ours = result.get("sources") or {}
    if shipped.get("task") != result.get("task") or same_sources(shipped, result):
        return None

    def described(sources: dict) -> str:
        babi, noise = str(sources.get("babi")), str(sources.get("noise"))
        facts = "built-in facts" if babi.startswith("builtin") else f"{sources.get('split')} facts of {babi}"
        return f"{facts} in {'built-in noise' if noise.startswith('builtin') else noise}"
    return (f"note: {Path(folder).name}/eval.json was measured on {described(theirs)}; this run used "
            f"{described(ours)}, so the two are not comparable (give the same --babi-dir or --babi-file, --split "
            "and --noise-file to compare)")


def _join_processes(device) -> None:
    """Under torchrun / accelerate, join the process group with a long timeout: a rank whose share ends first
    waits for the others at the one gather, which at thousands of segments can be longer than torch's 30 minutes."""
    import os
    from datetime import timedelta

    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
        torch.distributed.init_process_group("nccl" if cuda else "gloo",
                                             timeout=timedelta(hours=GATHER_TIMEOUT_HOURS))
