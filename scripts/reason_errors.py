"""Where a reason checkpoint fails: accuracy on qa4 questions that need the directions, and on the rest.

    .venv/bin/python scripts/reason_errors.py checkpoints/reason --segments 1,4 --samples 1000 \
        --babi-dir ../shared/data/babi/en-10k --noise-file ../shared/data/quality/questions.dev.txt

A question "needs the directions" when both facts mention the asked place, so place names alone leave two
candidate answers (`rmt_core.babi.needs_direction`); a model that only matches places scores 50% on those.
A second table splits by where the asked place sits in the facts (`rmt_core.babi.relation_kind`) and by the
question's form: when the place is the reference of both facts, only the direction words tell the two
candidates apart, and "What is D of the P?" wants the fact with direction D while "What is the P D of?"
wants the opposite one.
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
        kinds = {}  # segments -> (kind, form) -> [right, total]
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
            split = kinds.setdefault(n, {})
            for sample, ok in zip(samples, right):
                key = (babi.relation_kind([f.text for f in sample.facts], sample.question),
                       babi.parse_relation_question(sample.question)[0])
                split.setdefault(key, [0, 0])
                split[key][0] += int(ok)
                split[key][1] += 1
        keys = sorted({key for split in kinds.values() for key in split})
        print()
        print("| where the asked place sits | question form | " + " | ".join(f"{n} seg" for n in kinds) + " |")
        print("| --- | --- |" + " --- |" * len(kinds))
        for kind, form in keys:
            cells = [f"{100 * r / t:.1f}% (n={t})" if t else "-" for r, t in
                     (kinds[n].get((kind, form), [0, 0]) for n in kinds)]
            print(f"| {babi.RELATION_KINDS[kind]} | {babi.QUESTION_FORMS[form]} | " + " | ".join(cells) + " |")
    except RMTError as error:
        print(f"reason_errors: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
