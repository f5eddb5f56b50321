"""`rmt eval`: accuracy of a checkpoint against the number of segments (SPEC section 7).

    rmt eval --checkpoint checkpoints/memorize --segments 1,2,4,8,16,32,64,128,256,512,1024,2048,4096 \
             --samples 100 --json checkpoints/memorize/eval.json

Memory stays flat however many segments: only the memory is kept between segment steps.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from rmt_cli.commands import parse_device
from rmt_core.errors import TaskError

HELP = "accuracy of a checkpoint against the number of segments (writes the results format with --json)"


def _segments(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers such as 1,2,4, got {text!r}") \
            from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"every number of segments must be 1 or more, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rmt_core.babilong import GENERATIVE_TASKS
    from rmt_core.tasks import TASKS

    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped default)")
    parser.add_argument("--task", choices=TASKS + GENERATIVE_TASKS, default=None,
                        help="task (default: the checkpoint's own task; qa1 and qa2 are a decoder's, answered by "
                             "generation and scored by exact match)")
    parser.add_argument("--segments", type=_segments, default=[1, 2, 4],
                        help="comma-separated numbers of segments to evaluate, e.g. 1,2,4,...,4096 (default 1,2,4)")
    parser.add_argument("--samples", type=int, default=100, help="samples per length (default 100)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="samples a batch (default 64; smaller for very long inputs to bound memory)")
    parser.add_argument("--seed", type=int, default=0, help="evaluation seed (samples never overlap training's)")
    parser.add_argument("--babi-file", help="a bAbI v1.2 task file (qa1 for memorize/detect/qa1, qa4 for reason, qa2)")
    parser.add_argument("--babi-dir", help="a bAbI folder (such as en-10k/); its test-split file is used")
    parser.add_argument("--split", default="test", choices=("train", "test"), help="bAbI split with --babi-dir")
    parser.add_argument("--noise-file", help="noise text, one passage a line (default: built-in sentences)")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON (checkpoint/eval.json for shipping)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: CUDA when present)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:

    from rmt_core.checkpoint import default_checkpoint, load_checkpoint
    from rmt_core.evaluate import evaluate, results_table
    from rmt_core.files import write_json_atomic

    if args.samples < 1:
        raise TaskError(f"--samples must be 1 or more, got {args.samples}")
    if args.batch_size < 1:
        raise TaskError(f"--batch-size must be 1 or more, got {args.batch_size}")
    device = parse_device(args.device, TaskError)
    folder = args.checkpoint or default_checkpoint()
    model = load_checkpoint(folder, device=device)
    result = evaluate(model, args.task, args.segments, args.samples, batch_size=args.batch_size, seed=args.seed,
                      babi_file=args.babi_file, babi_dir=args.babi_dir, noise_file=args.noise_file,
                      split=args.split, progress=not args.no_progress)
    result["command"] = "rmt " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"{result['checkpoint']['name'] if result['checkpoint'] else folder}: task {result['task']}, "
          f"{result['segment_size']}-token segments, trained on {result['trained_segments']} segments, "
          f"{result['device']}, {result['seconds']:.1f} s")
    print(results_table(result))
    if args.json:
        if args.json == "-":
            json.dump(result, sys.stdout, indent=1)
            sys.stdout.write("\n")
        else:
            write_json_atomic(args.json, result)
            print(f"wrote {args.json}")
    return 0
