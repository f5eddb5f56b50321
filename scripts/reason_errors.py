"""Where a reason checkpoint fails: accuracy on qa4 questions that need the directions, and on the rest.

    .venv/bin/python scripts/reason_errors.py checkpoints/reason --segments 1,4 --samples 1000 \
        --babi-dir ../shared/data/babi/en-10k --noise-file ../shared/data/quality/questions.dev.txt

A question "needs the directions" when both facts mention the asked place, so place names alone leave two
candidate answers (`rmt_core.babi.needs_direction`); a model that only matches places scores 50% on those.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from rmt_core import babi
from rmt_core.checkpoint import load_checkpoint
from rmt_core.errors import RMTError
from rmt_core.evaluate import eval_sample_seed, predict_batch
from rmt_core.tasks import TaskBuilder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--segments", default="1,4")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--babi-dir")
    parser.add_argument("--noise-file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        model = load_checkpoint(args.checkpoint, device="cpu")
        builder = TaskBuilder("reason", model.tokenizer, model.config.segment_size, babi_dir=args.babi_dir,
                              noise_file=args.noise_file, split="test")
        print("| segments | questions that need the directions | the other questions |")
        print("| --- | --- | --- |")
        for n in (int(x) for x in args.segments.split(",")):
            samples = [builder.sample(n, eval_sample_seed(0, n, i)) for i in range(args.samples)]
            right = np.zeros(len(samples), dtype=bool)
            for start in range(0, len(samples), 250):
                chunk = samples[start:start + 250]
                ids = np.array([s.input_ids for s in chunk], dtype=np.int64)
                with torch.no_grad():
                    pred = predict_batch(model, ids, n, model.config.segment_size).argmax(-1).numpy()
                right[start:start + len(chunk)] = pred == np.array([s.answer for s in chunk])
            hard = np.array([babi.needs_direction([f.text for f in s.facts], s.question) for s in samples])
            print(f"| {n} | {100 * right[hard].mean():.1f}% (n={hard.sum()}) | "
                  f"{100 * right[~hard].mean():.1f}% (n={(~hard).sum()}) |")
    except RMTError as error:
        print(f"reason_errors: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
