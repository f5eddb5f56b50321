"""Where a reason checkpoint fails: accuracy on qa4 questions that need the directions, and on the rest.

    .venv/bin/python scripts/reason_errors.py checkpoints/reason --segments 1,4 --samples 1000 \
        --babi-dir ../shared/data/babi/en-10k --noise-file ../shared/data/quality/questions.dev.txt

A question "needs the directions" when both facts mention the asked place, so place names alone leave two
candidate answers (`rmt_core.babi.needs_direction`); a model that only matches places scores 50% on those.
A second table splits by where the asked place sits in the facts (`rmt_core.babi.relation_kind`) and by the
question's form: when the place is the reference of both facts, only the direction words tell the two
candidates apart, and "What is D of the P?" wants the fact with direction D while "What is the P D of?"
wants the opposite one.
A third table splits by how many of the two facts lie before the question's segment, so that memory alone
carries them to the question (0: both beside it; 2: both only in memory, written in one segment or in two).
A fourth table takes the samples with both facts behind and splits them by where the asked place sits: when it
is the reference of both, the question's segment must tell two carried facts apart by their directions alone.
A fifth splits those samples by the question's form as well, for a model trained on one form
(`rmt train --question-form`).
With `--wrong-answers` (the model runs), a sixth says which place each wrong answer names, by where the asked
place sits (`rmt_core.babi.wrong_answer_kind`): another place a fact relates to the asked one, the far end of the
chain the two facts make, the asked place itself, or a place no fact names.

With `--eval-json FILE` (written by `rmt eval --json` for the same checkpoint and data, seed 0), the answers are
read from its `wrong_indexes` instead of run again: the samples are the same, rebuilt from their seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from rmt_core import babi
from rmt_core.checkpoint import load_checkpoint
from rmt_core.error_split import check_splittable
from rmt_core.errors import RMTError, TaskError
from rmt_core.evaluate import eval_sample_seed, predict_batch
from rmt_core.tasks import PLACES, TaskBuilder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--segments", default="1,4")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--babi-dir")
    parser.add_argument("--noise-file")
    parser.add_argument("--eval-json", help="answers from this `rmt eval --json` file (seed 0) instead of the model")
    parser.add_argument("--wrong-answers", action="store_true",
                        help="add a table of which place the wrong answers name (runs the model)")
    args = parser.parse_args(argv)
    if args.wrong_answers and args.eval_json:
        print("reason_errors: error: --wrong-answers needs the model's answers, which an eval file does not "
              "hold; drop --eval-json", file=sys.stderr)
        return 1
    torch.set_num_threads(1)
    try:
        model = load_checkpoint(args.checkpoint, device="cpu")
        builder = TaskBuilder("reason", model.tokenizer, model.config.segment_size, babi_dir=args.babi_dir,
                              noise_file=args.noise_file, split="test")
        recorded = read_eval(args.eval_json, model.config.segment_size) if args.eval_json else None
        print("| segments | questions that need the directions | the other questions |")
        print("| --- | --- | --- |")
        kinds = {}  # segments -> (kind, form) -> [right, total]
        carried = {}  # segments -> facts before the question's segment -> [right, total]
        both = {}  # segments -> where the asked place sits, for samples with both facts behind -> [right, total]
        both_form = {}  # segments -> (where the asked place sits, question form), both facts behind -> [right, total]
        wrong = {}  # segments -> (where the asked place sits, which place the wrong answer names) -> count
        for n in (int(x) for x in args.segments.split(",")):
            samples = [builder.sample(n, eval_sample_seed(0, n, i)) for i in range(args.samples)]
            if recorded is None:
                predicted = run_model(model, samples, n)
                right = predicted == np.array([s.answer for s in samples])
                for sample, guess, ok in zip(samples, predicted, right):
                    if not ok:
                        facts = [f.text for f in sample.facts]
                        key = (babi.relation_kind(facts, sample.question),
                               babi.wrong_answer_kind(facts, sample.question, PLACES[guess]))
                        wrong.setdefault(n, {}).setdefault(key, 0)
                        wrong[n][key] += 1
            elif recorded.get(n, (0, None))[0] < len(samples):
                raise RMTError(f"{args.eval_json} has fewer than {len(samples)} samples at {n} segments; "
                               "pass --samples and --segments that it holds")
            else:
                right = np.ones(len(samples), dtype=bool)
                right[[i for i in recorded[n][1] if i < len(samples)]] = False
            hard = np.array([babi.needs_direction([f.text for f in s.facts], s.question) for s in samples])
            print(f"| {n} | {100 * right[hard].mean():.1f}% (n={hard.sum()}) | "
                  f"{100 * right[~hard].mean():.1f}% (n={(~hard).sum()}) |")
            split = kinds.setdefault(n, {})
            for sample, ok in zip(samples, right):
                kind = babi.relation_kind([f.text for f in sample.facts], sample.question)
                form = babi.parse_relation_question(sample.question)[0]
                split.setdefault((kind, form), [0, 0])
                split[(kind, form)][0] += int(ok)
                split[(kind, form)][1] += 1
                behind = [f.segment for f in sample.facts if f.segment < n - 1]
                key = str(len(behind)) + ("" if len(behind) < 2 else " (one segment)" if len(set(behind)) == 1
                                          else " (two segments)")
                two = len(behind) == 2
                for count, key in ((carried, key), (both, kind if two else None),
                                   (both_form, (kind, form) if two else None)):
                    if key is not None:
                        cell = count.setdefault(n, {}).setdefault(key, [0, 0])
                        cell[0] += int(ok)
                        cell[1] += 1
        keys = sorted({key for split in kinds.values() for key in split})
        print()
        print("| where the asked place sits | question form | " + " | ".join(f"{n} seg" for n in kinds) + " |")
        print("| --- | --- |" + " --- |" * len(kinds))
        for kind, form in keys:
            cells = [f"{100 * r / t:.1f}% (n={t})" if t else "-" for r, t in
                     (kinds[n].get((kind, form), [0, 0]) for n in kinds)]
            print(f"| {babi.RELATION_KINDS[kind]} | {babi.QUESTION_FORMS[form]} | " + " | ".join(cells) + " |")
        print()
        print("| facts before the question's segment | " + " | ".join(f"{n} seg" for n in carried) + " |")
        print("| --- |" + " --- |" * len(carried))
        for k in ("0", "1", "2 (one segment)", "2 (two segments)"):
            cells = [f"{100 * r / t:.1f}% (n={t})" if t else "-"
                     for r, t in (carried[n].get(k, [0, 0]) for n in carried)]
            print(f"| {k} | " + " | ".join(cells) + " |")
        print()
        print("| both facts behind: where the asked place sits | " + " | ".join(f"{n} seg" for n in kinds) + " |")
        print("| --- |" + " --- |" * len(kinds))
        for kind in sorted({kind for split in both.values() for kind in split}):
            cells = [f"{100 * r / t:.1f}% (n={t})" if t else "-" for r, t in
                     (both.get(n, {}).get(kind, [0, 0]) for n in kinds)]
            print(f"| {babi.RELATION_KINDS[kind]} | " + " | ".join(cells) + " |")
        print()
        print("| both facts behind: where the asked place sits | question form | "
              + " | ".join(f"{n} seg" for n in kinds) + " |")
        print("| --- | --- |" + " --- |" * len(kinds))
        for kind, form in sorted({key for split in both_form.values() for key in split}):
            cells = [f"{100 * r / t:.1f}% (n={t})" if t else "-" for r, t in
                     (both_form.get(n, {}).get((kind, form), [0, 0]) for n in kinds)]
            print(f"| {babi.RELATION_KINDS[kind]} | {babi.QUESTION_FORMS[form]} | " + " | ".join(cells) + " |")
        if args.wrong_answers:
            print()
            print("| where the asked place sits | the wrong answer names | "
                  + " | ".join(f"{n} seg" for n in kinds) + " |")
            print("| --- | --- |" + " --- |" * len(kinds))
            for kind, named in sorted({key for split in wrong.values() for key in split}):
                cells = []
                for n in kinds:
                    total = sum(c for (k, _), c in wrong.get(n, {}).items() if k == kind)
                    count = wrong.get(n, {}).get((kind, named), 0)
                    cells.append(f"{count} of {total} wrong" if total else "-")
                print(f"| {babi.RELATION_KINDS[kind]} | {babi.WRONG_ANSWER_KINDS[named]} | " + " | ".join(cells)
                      + " |")
    except RMTError as error:
        print(f"reason_errors: error: {error}", file=sys.stderr)
        return 1
    return 0


def run_model(model, samples, n: int) -> np.ndarray:
    """The model's answer (an index into PLACES) to each sample of n segments (batches of 250)."""
    answers = np.zeros(len(samples), dtype=np.int64)
    for start in range(0, len(samples), 250):
        chunk = samples[start:start + 250]
        ids = np.array([s.input_ids for s in chunk], dtype=np.int64)
        with torch.no_grad():
            pred = predict_batch(model, ids, n, model.config.segment_size).argmax(-1).numpy()
        answers[start:start + len(chunk)] = pred
    return answers


def read_eval(path: str, segment_size: int) -> dict[int, tuple[int, list[int]]]:
    """segments -> (samples, wrong sample indexes) of an `rmt eval --json` file of reason, seed 0, and the
    checkpoint's segment size (the file's shape checked by `rmt_core.error_split.check_splittable`)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        check_splittable(data)
        if data["task"] != "reason":
            raise TaskError(f"it is an eval of {data['task']}, not reason")
        if data["segment_size"] != segment_size:
            raise TaskError(f"its segments hold {data['segment_size']} tokens, this checkpoint's {segment_size}")
        if data["seed"] != 0:
            raise RMTError(f"{path} was evaluated with seed {data['seed']}; this script rebuilds seed 0's samples")
        return {int(r["segments"]): (int(r["samples"]), [int(i) for i in r["wrong_indexes"]])
                for r in data["results"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, TaskError) as error:
        raise RMTError(f"cannot read {path} as an `rmt eval --json` file with wrong_indexes ({error}); "
                       "evaluate again with rmt eval --json") from None


if __name__ == "__main__":
    sys.exit(main())
