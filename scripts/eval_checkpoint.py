"""Evaluate a checkpoint into its eval.json and refresh its model card (what `rmt eval --json` does, plus the card).

    python scripts/eval_checkpoint.py CHECKPOINT --segments 1,2,4,... --samples 1000 \
        --babi-dir DIR --noise-file FILE [--max-batch-tokens N]
"""

import argparse
import shlex
import sys
from pathlib import Path

from rmt_core.checkpoint import load_checkpoint
from rmt_core.evaluate import MAX_BATCH_TOKENS, evaluate
from rmt_core.files import write_json_atomic
from rmt_core.model_card import write_model_card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--segments", default="1,2,4,8,16,32,64,128,256,512,1024,2048,4096")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--babi-dir", default=None)
    parser.add_argument("--noise-file", default=None)
    parser.add_argument("--max-batch-tokens", type=int, default=MAX_BATCH_TOKENS)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    model = load_checkpoint(args.checkpoint, device=args.device)
    result = evaluate(
        model, None, [int(n) for n in args.segments.split(",")], args.samples, batch_size=args.batch_size,
        babi_dir=args.babi_dir, noise_file=args.noise_file, split="test", progress=False,
        max_batch_tokens=args.max_batch_tokens,
    )
    result["command"] = "python scripts/eval_checkpoint.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    write_json_atomic(Path(args.checkpoint) / "eval.json", result)
    write_model_card(args.checkpoint)
    rows = ", ".join(f"{r['segments']}: {100 * r['accuracy']:.1f}%" for r in result["results"])
    print(f"{args.checkpoint}: {rows}")


if __name__ == "__main__":
    main()
