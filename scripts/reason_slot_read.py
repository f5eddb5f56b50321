"""Whether reason's question reads the memory slot that holds the fact it needs, and what that slot holds.

    .venv/bin/python scripts/reason_slot_read.py checkpoints/reason --samples 6000 \
        --babi-dir ../shared/data/babi/en-10k --noise-file ../shared/data/quality/questions.dev.txt

Samples of 4 segments (`--segments`) in which exactly one qa4 fact answers the question by itself and lies before
the question's segment, so that only memory brings it there. The fact's slot is the memory slot whose head of the
last layer paid its direction word the most attention as it was written (as `rmt train --question-read` takes it).
Split by whether the asked place is the reference of both facts ("hard": only the directions tell the two facts
apart; the answer is then the answering fact's subject), it prints:
- how often the two facts went to one slot;
- the most attention a head of the last layer pays, from the question's [CLS], to the answering fact's slot and
  to the other fact's slot, when they differ, and how often the answering one gets more;
- linear probes (fitted on half the samples, scored on the rest) of the answering fact's subject and of its
  direction from that slot: as its fact's segment leaves it; where the other fact comes in a later segment, as
  that segment leaves it (fitted and scored on those samples alone); as the question's segment reads it and after
  each of that segment's layers; and from [CLS] after the last layer. One probe is fitted per age of the state
  (segments since the answering fact's write). The hard samples are split by whether the answering fact was
  written first, second, or in the same segment as the other;
- how often the model answers, and how often it answers the other fact's subject.
--json writes the numbers.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the probes and sample options of reason_memory_probe.py
from reason_memory_probe import add_sample_options, fit_score, run_study  # noqa: E402
from rmt_core import babi, recurrence
from rmt_core.errors import RMTError
from rmt_core.evaluate import eval_sample_seed
from rmt_core.inputs import SegmentBatch
from rmt_core.tasks import PLACES, TaskBuilder

BATCH = 100
MAX_SEGMENTS = 64
ORDERS = ("first", "second", "same")  # the answering fact's segment against the other fact's
LATER = "slot after the other fact's later segment"
MIN_FIT = 50  # the fewest rows of one age a probe is fitted on
TARGETS = ("subject", "direction")  # of the answering fact, probed


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
        names = ["seg.*.blocks.*.attn.pattern", "seg.*.mem_out", f"seg.{n - 1}.mem_in", f"seg.{n - 1}.blocks.*.out",
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
            written, other = sample.facts[k].segment, sample.facts[1 - k].segment
            subject, direction, _ = babi.parse_relation(answering[0].text)
            cls = out.cache[f"seg.{n - 1}.blocks.{last}.attn.pattern"][i][:, layout.answer_position,
                                                                          layout.read_positions]  # (H, m)
            question = babi.parse_relation_question(sample.question)
            place = question[2] if question[0] == "of" else question[1]
            rows.append({"index": start + i, "hard": all(babi.parse_relation(f.text)[2] == place for f in sample.facts),
                         "same": slots[0] == slots[1], "right": bool(answers[i] == sample.answer),
                         "on": float(cls[:, slots[k]].max()), "off": float(cls[:, slots[1 - k]].max()),
                         "subject": subject, "direction": direction,
                         "said_other": bool(answers[i] == PLACES.index(babi.parse_relation(
                             sample.facts[1 - k].text)[0])),
                         "order": "same" if written == other else "first" if written < other else "second",
                         # segments since the write, of each state below: the write's, the later fact's, and
                         # the question segment's (as read, after each layer, [CLS])
                         "ages": (0, max(written, other) - written) + (n - 1 - written,) * (last + 3)})
            j = slots[k]
            states.append([out.cache[f"seg.{written}.mem_out"][i, j].float().numpy(),
                           out.cache[f"seg.{max(written, other)}.mem_out"][i, j].float().numpy(),  # LATER
                           out.cache[f"seg.{n - 1}.mem_in"][i, j].float().numpy()]
                          + [out.cache[f"seg.{n - 1}.blocks.{l}.out"][i, layout.read_positions.start + j].float()
                             .numpy() for l in range(last + 1)]
                          + [out.cache[f"seg.{n - 1}.blocks.{last}.out"][i, layout.answer_position].float().numpy()])
    if len(rows) < 100:
        raise RMTError(f"only {len(rows)} samples carry the one answering fact in memory; give more --samples")
    states = np.stack([np.stack(s) for s in states])  # (K, places, d)
    places = (["slot after its fact's segment", LATER, "slot as read"]
              + [f"slot after layer {l}" for l in range(last + 1)] + ["[CLS] after the last layer"])
    hard, half = np.array([r["hard"] for r in rows]), len(rows) // 2
    order, ages = np.array([r["order"] for r in rows]), np.array([r["ages"] for r in rows])
    probes = []
    for target, (p, name) in itertools.product(TARGETS, enumerate(places)):
        labels = np.array([r[target] for r in rows])
        # the later fact's segment exists only where the answering fact came first: fit and score on those alone
        rows_here = order == "first" if name == LATER else np.ones(len(rows), bool)
        hits = probe_by_age(states[:, p], labels, ages[:, p], rows_here, half)
        scored = ~np.isnan(hits)
        _, counts = np.unique(labels[half:][scored], return_counts=True)

        def rate(keep: np.ndarray) -> float | None:
            return float(hits[keep & scored].mean()) if (keep & scored).any() else None

        probes.append({"target": target, "from": name, "accuracy": rate(scored),
                       "chance": float(counts.max() / counts.sum()) if scored.any() else None,
                       "scored": int(scored.sum()), "hard": rate(hard[half:]), "other": rate(~hard[half:]),
                       **{f"hard_{o}": rate(hard[half:] & (order[half:] == o)) for o in ORDERS}})
    scored_hard = [r for r in rows[half:] if r["hard"]]
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
            "groups": groups, "probes": probes,
            "hard_scored_by_order": {o: sum(r["order"] == o for r in scored_hard) for o in ORDERS},
            "hard_answered_by_order": {o: sum(r["right"] for r in scored_hard if r["order"] == o) for o in ORDERS},
            "hard_said_other_by_order": {o: sum(r["said_other"] for r in scored_hard if r["order"] == o)
                                         for o in ORDERS}, "hard_indexes": [r["index"] for r in rows if r["hard"]],
            "other_indexes": [r["index"] for r in rows if not r["hard"]]}


def probe_by_age(x: np.ndarray, y: np.ndarray, age: np.ndarray, rows: np.ndarray, half: int) -> np.ndarray:
    """Whether a linear probe gets each of the rows after `half` right (1.0 or 0.0; NaN where not scored), one probe
    per age of the state (segments since the answering fact was written), fitted on that age's rows before `half`:
    a slot's code drifts with its age, so one probe over all ages would measure the drift as much as the content."""
    hits = np.full(len(x) - half, np.nan)
    for a in np.unique(age[rows]):
        here = rows & (age == a)
        fit = int(here[:half].sum())
        if fit < MIN_FIT or not here[half:].any() or len(np.unique(y[:half][here[:half]])) < 2:
            continue
        z = x[here]
        z = (z - z[:fit].mean(0)) / (z[:fit].std(0) + 1e-6)
        probe = fit_score("linear", z, y[here], fit, keep=True)
        hits[here[half:]] = probe["hits"]
    return hits


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
    counts = report["hard_scored_by_order"]
    for target in TARGETS:
        print(f"The answering fact's {target}, probed (linear, one probe per age of the state; fitted on the first "
              f"{report['fit']} samples, scored on the rest):")
        print()
        print(f"| from | all | hard | hard, answering fact first ({counts['first']}) | second ({counts['second']}) | "
              f"same segment ({counts['same']}) | others | chance |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for p in (p for p in report["probes"] if p["target"] == target):
            cells = [p[k] for k in ("accuracy", "hard", *(f"hard_{o}" for o in ORDERS), "other")]
            chance = "-" if p["chance"] is None else f"{100 * p['chance']:.0f}%"
            print(f"| {p['from']} | " + " | ".join("-" if c is None else f"{100 * c:.1f}%" for c in cells)
                  + f" | {chance} |")
        if target == "subject":
            for key, name in (("hard_answered_by_order", "the model's answer"),
                              ("hard_said_other_by_order", "the model answers the other fact's subject")):
                print(f"| {name} | | | " + " | ".join(
                    f"{100 * report[key][o] / counts[o]:.1f}%" if counts[o] else "-" for o in ORDERS) + " | | |")
        print()


if __name__ == "__main__":
    sys.exit(main())
