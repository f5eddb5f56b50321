"""Whether reason's question reads the memory slot that holds the fact it needs, and what that slot holds.

    .venv/bin/python scripts/reason_slot_read.py checkpoints/reason --samples 2000 \
        --babi-dir ../shared/data/babi/en-10k --noise-file ../shared/data/quality/questions.dev.txt

Samples of 4 segments (`--segments`) in which exactly one qa4 fact answers the question by itself and lies before
the question's segment, so that only memory brings it there. The fact's slot is the memory slot whose head of the
last layer paid its direction word the most attention as it was written (as `rmt train --question-read` takes it).
Split by whether the asked place is the reference of both facts ("hard": only the directions tell the two facts
apart; the answer is then the answering fact's subject), it prints:
- how often the two facts went to one slot;
- the most attention a head of the last layer pays, from the question's [CLS], to the answering fact's slot and
  to the other fact's slot, when they differ, and how often the answering one gets more;
- a linear probe (fitted on half the samples, scored on the rest) of the answering fact's subject from that slot
  as the question's segment reads it, after each of its layers, and from [CLS] after the last layer;
- how often the model answers.
--json writes the numbers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the probes and sample options of reason_memory_probe.py
from reason_memory_probe import add_sample_options, fit_score, run_study  # noqa: E402
from rmt_core import babi, recurrence
from rmt_core.errors import RMTError
from rmt_core.evaluate import eval_sample_seed
from rmt_core.inputs import SegmentBatch
from rmt_core.tasks import TaskBuilder

BATCH = 100
MAX_SEGMENTS = 64


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="an encoder reason checkpoint")
    parser.add_argument("--segments", type=int, default=4)
    parser.add_argument("--samples", type=int, default=2000, help="samples drawn; those with a carried answer kept")
    add_sample_options(parser)
    parser.add_argument("--json", help="write the numbers here too")
    args = parser.parse_args(argv)
    try:
        if not 2 <= args.segments <= MAX_SEGMENTS or args.samples < 20:
            raise RMTError(f"--segments must be 2 to {MAX_SEGMENTS} (memory must carry a fact) and --samples at "
                           "least 20")
        run_study(args, study, print_report)
    except RMTError as error:
        print(f"reason_slot_read: error: {error}", file=sys.stderr)
        return 1
    return 0


def study(model, builder: TaskBuilder, n: int, samples: int, seed: int) -> dict:
    layout, size = model.layout, model.config.segment_size
    last, rows, states = None, [], []
    for start in range(0, samples, BATCH):
        chunk = [builder.sample(n, eval_sample_seed(seed, n, i)) for i in range(start, min(samples, start + BATCH))]
        batch = SegmentBatch.from_ids(np.array([s.input_ids for s in chunk], dtype=np.int64), size)
        names = ["seg.*.blocks.*.attn.pattern", f"seg.{n - 1}.mem_in", f"seg.{n - 1}.blocks.*.out",
                 f"seg.{n - 1}.logits"]
        out = recurrence.run_with_cache(model, batch, names=names)
        if last is None:
            last = max(int(k.split(".")[3]) for k in out.cache if ".blocks." in k)
        answers = out.cache[f"seg.{n - 1}.logits"].argmax(-1)
        for i, sample in enumerate(chunk):
            answering = [f for f in sample.facts if babi.solve_relations([f.text], sample.question)]
            if len(answering) != 1 or any(f.segment >= n - 1 for f in sample.facts):
                continue
            slots = [fact_slot(model, out.cache, i, fact, sample, last) for fact in sample.facts]
            k = sample.facts.index(answering[0])
            cls = out.cache[f"seg.{n - 1}.blocks.{last}.attn.pattern"][i][:, layout.answer_position,
                                                                          layout.read_positions]  # (H, m)
            question = babi.parse_relation_question(sample.question)
            place = question[2] if question[0] == "of" else question[1]
            rows.append({"index": start + i, "hard": all(babi.parse_relation(f.text)[2] == place for f in sample.facts),
                         "same": slots[0] == slots[1], "right": bool(answers[i] == sample.answer),
                         "on": float(cls[:, slots[k]].max()), "off": float(cls[:, slots[1 - k]].max()),
                         "subject": babi.parse_relation(answering[0].text)[0]})
            j = slots[k]
            states.append([out.cache[f"seg.{n - 1}.mem_in"][i, j].float().numpy()]
                          + [out.cache[f"seg.{n - 1}.blocks.{l}.out"][i, layout.read_positions.start + j].float()
                             .numpy() for l in range(last + 1)]
                          + [out.cache[f"seg.{n - 1}.blocks.{last}.out"][i, layout.answer_position].float().numpy()])
    if len(rows) < 100:
        raise RMTError(f"only {len(rows)} samples carry the one answering fact in memory; give more --samples")
    states = np.stack([np.stack(s) for s in states])  # (K, places, d)
    places = ["slot as read"] + [f"slot after layer {l}" for l in range(last + 1)] + ["[CLS] after the last layer"]
    subjects, hard, half = np.array([r["subject"] for r in rows]), np.array([r["hard"] for r in rows]), len(rows) // 2
    probes = []
    for p, name in enumerate(places):
        x = states[:, p]
        x = (x - x[:half].mean(0)) / (x[:half].std(0) + 1e-6)
        probe = fit_score("linear", x, subjects, half, keep=True)
        hits = probe.pop("hits")
        probes.append({"from": name, **probe, "hard": float(hits[hard[half:]].mean()),
                       "other": float(hits[~hard[half:]].mean())})
    groups = {}
    for label, keep in (("hard", hard), ("other", ~hard)):
        group = [r for r, k in zip(rows, keep) if k]
        apart = [r for r in group if not r["same"]]
        groups[label] = {"samples": len(group), "same_slot": sum(r["same"] for r in group),
                         "right": sum(r["right"] for r in group),
                         "cls_on_answering": float(np.mean([r["on"] for r in apart])) if apart else None,
                         "cls_on_other": float(np.mean([r["off"] for r in apart])) if apart else None,
                         "answering_higher": float(np.mean([r["on"] > r["off"] for r in apart])) if apart else None}
    return {"segments": n, "samples_drawn": samples, "seed": seed, "kept": len(rows), "fit": half,
            "groups": groups, "probes": probes, "hard_indexes": [r["index"] for r in rows if r["hard"]],
            "other_indexes": [r["index"] for r in rows if not r["hard"]]}


def fact_slot(model, cache, i: int, fact, sample, last: int) -> int:
    """The slot whose head of the last layer read the fact's direction word most as its segment was written."""
    word = model.tokenizer.convert_tokens_to_ids(fact.direction)
    position = fact.start + sample.input_ids[fact.start:fact.end].index(word) - fact.segment * model.config.segment_size
    pattern = cache[f"seg.{fact.segment}.blocks.{last}.attn.pattern"][i:i + 1]
    return int(model.strongest_slot(pattern)[0, position])


def print_report(report: dict) -> None:
    print(f"{report['checkpoint']}: {report['kept']} of {report['samples_drawn']} samples of {report['segments']} "
          "segments carry the one answering fact in memory")
    print()
    print("| question | samples | answered | both facts in one slot | [CLS] on the answering fact's slot | "
          "on the other's | answering slot read more |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    names = {"hard": "the asked place is the reference of both facts", "other": "the others"}
    for label, g in report["groups"].items():
        if not g["samples"]:
            continue
        cells = ["-" if g[k] is None else f"{100 * g[k]:.1f}%" for k in
                 ("cls_on_answering", "cls_on_other", "answering_higher")]
        print(f"| {names[label]} | {g['samples']} | {100 * g['right'] / g['samples']:.1f}% | {g['same_slot']} | "
              + " | ".join(cells) + " |")
    print()
    print(f"The answering fact's subject, probed (linear; fitted on {report['fit']}, scored on the rest):")
    print()
    print("| from | all | hard | others | chance |")
    print("| --- | --- | --- | --- | --- |")
    for p in report["probes"]:
        print(f"| {p['from']} | {100 * p['accuracy']:.1f}% | {100 * p['hard']:.1f}% | {100 * p['other']:.1f}% | "
              f"{100 * p['chance']:.0f}% |")


if __name__ == "__main__":
    sys.exit(main())
