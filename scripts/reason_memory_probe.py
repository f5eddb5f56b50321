"""What a reason checkpoint's memory holds of the two facts when it reaches the question's segment.

    .venv/bin/python scripts/reason_memory_probe.py checkpoints/reason --segments 4,16 --samples 8000 \
        --babi-dir ../shared/data/babi/en-10k --noise-file ../shared/data/quality/questions.dev.txt

For samples whose two qa4 facts both lie before the question's segment, the memory (all slots, flattened) is
taken at two points: just after the segment that holds the second fact ("written"), and where the question's
segment reads it ("read"; the same state when the second fact sits in the segment before the question).
Probes (--probe linear: multinomial logistic regression; mlp: one hidden layer), fitted on half the samples and
scored on the other half, name each fact's parts: its subject place, its direction and its reference place
("The <subject> is <direction> of the <reference>."), for the fact written first and the one written second.
Then, order-free, one probe per question "What is d of the p?" (24, the table of rmt_core.recall) names its
answer, scored on the four questions a sample's facts answer. A probe near its chance level says the memory
does not hold that part in a readable form; a probe near 100% says it does, and then a failing answer is lost
in the reading, not in the writing.
Printed: one Markdown table (probe accuracy, chance = the most frequent class) and the model's own accuracy on
the same samples, split by the fact that answers the question. --json writes the same numbers.

    .venv/bin/python scripts/reason_memory_probe.py --figure probe.png A.json B.json    # draw saved --json files

draws one figure from saved reports (one per checkpoint): the probes' accuracy on the memory read by the
question's segment, part by part and for the table of answers, each chance level marked.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from rmt_core import babi, recall, recurrence
from rmt_core.checkpoint import load_checkpoint
from rmt_core.errors import RMTError
from rmt_core.evaluate import eval_sample_seed
from rmt_core.files import write_json_atomic
from rmt_core.inputs import SegmentBatch
from rmt_core.tasks import TaskBuilder

PARTS = ("subject", "direction", "reference", "relation")
BATCH = 250
WHEN = {"written": "after the second fact's segment", "read": "read by the question's segment"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="+", help="a reason checkpoint (with --figure: the --json reports)")
    parser.add_argument("--segments", default="4")
    parser.add_argument("--samples", type=int, default=8000, help="samples drawn per length (those with both "
                                                                   "facts behind the question are probed)")
    add_sample_options(parser)
    parser.add_argument("--probe", choices=("linear", "mlp"), default="linear",
                        help="linear: logistic regression; mlp: one hidden layer of 256 (a nonlinear read-out)")
    parser.add_argument("--json", help="write the numbers here too")
    parser.add_argument("--figure", help="draw the reports named in place of the checkpoint into this PNG/SVG/HTML")
    args = parser.parse_args(argv)
    try:
        if args.figure:
            return draw(args.checkpoint, args.figure)
        if len(args.checkpoint) > 1:
            raise RMTError("give one checkpoint (several names are for --figure's reports)")
        args.checkpoint = args.checkpoint[0]
        model = load_checkpoint(args.checkpoint, device="cpu")
        if model.config.task != "reason":
            raise RMTError(f"{args.checkpoint} is a {model.config.task} checkpoint; this script probes reason's")
        builder = TaskBuilder("reason", model.tokenizer, model.config.segment_size, babi_dir=args.babi_dir,
                              noise_file=args.noise_file, split="test")
        report = {"checkpoint": Path(args.checkpoint).name, "samples_drawn": args.samples, "seed": args.seed,
                  "probe": args.probe, "lengths": []}
        print("| segments | probed (fit / score) | fact | memory | subject | direction | reference | relation "
              "| model, asked this fact |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for n in (int(x) for x in args.segments.split(",")):
            if n < 2:
                raise RMTError("--segments must be 2 or more: at 1 segment no fact lies before the question")
            report["lengths"].append(probe_length(model, builder, n, args.samples, args.seed, args.probe))
        if args.json:
            write_json_atomic(args.json, report, allow_nan=True)
    except RMTError as error:
        print(f"reason_memory_probe: error: {error}", file=sys.stderr)
        return 1
    return 0


def draw(reports: list[str], path: str) -> int:
    """One bar per checkpoint for each part of each fact and for the table of answers, probed on the memory the
    question's segment reads; the chance level of each marked."""
    import plotly.graph_objects as go

    fig = go.Figure()
    chance = {}
    for name in reports:
        try:
            report = json.loads(Path(name).read_text(encoding="utf-8"))
            row = report["lengths"][-1]
            scores = {f"{p}, {f['fact']} fact": f["read"][p] for p in PARTS for f in row["facts"]}
            scores["table of answers"] = row["table"]["read"]
            values = {k: (100 * v["accuracy"], 100 * v["chance"]) for k, v in scores.items()}
        except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
            raise RMTError(f"cannot read {name} as a --json report of this script ({error})") from None
        fig.add_bar(name=report["checkpoint"], x=list(values), y=[v[0] for v in values.values()])
        for key, (_, level) in values.items():
            chance[key] = max(chance.get(key, 0.0), level)
    fig.add_scatter(name="chance (most frequent class)", x=list(chance), y=list(chance.values()), mode="markers",
                    marker={"symbol": "line-ew-open", "size": 24, "color": "black", "line": {"width": 2}})
    fig.update_layout(barmode="group", template="plotly_white", width=1100, height=460,
                      title=f"What memory holds of two carried facts: {report.get('probe', 'linear')} probes at the "
                            f"question ({row['segments']} segments, both facts behind it)",
                      yaxis={"title": "probe accuracy, held out (%)", "range": [0, 100]},
                      legend={"orientation": "h", "y": -0.25})
    return save_figure(fig, path)


def add_sample_options(parser: argparse.ArgumentParser) -> None:
    """Where the samples' facts and noise come from, and their seeds (shared with reason_fact_tokens.py)."""
    parser.add_argument("--babi-dir")
    parser.add_argument("--noise-file")
    parser.add_argument("--seed", type=int, default=1, help="sample seeds (default 1: not eval.json's samples)")


def run_study(args, study, print_report) -> None:
    """Load args.checkpoint (an encoder reason checkpoint, else an RMTError), run study(model, builder, segments,
    samples, seed) on held-out qa4 facts, print its report and write it to args.json if given (shared with
    reason_fact_tokens.py and reason_slot_read.py)."""
    model = load_checkpoint(args.checkpoint, device="cpu")
    if model.config.task != "reason" or getattr(model.config, "architecture", "encoder") != "encoder":
        raise RMTError(f"{args.checkpoint} is not an encoder reason checkpoint; this script reads qa4 facts")
    builder = TaskBuilder("reason", model.tokenizer, model.config.segment_size, babi_dir=args.babi_dir,
                          noise_file=args.noise_file, split="test")
    report = study(model, builder, args.segments, args.samples, args.seed)
    report["checkpoint"] = Path(args.checkpoint).name
    print_report(report)
    if args.json:
        write_json_atomic(args.json, report, allow_nan=True)


def save_figure(fig, path: str) -> int:
    """Write a figure (PNG/SVG/HTML by the suffix); an export failure becomes an RMTError."""
    from rmt_core.viz.export import ExportError, write_figure

    try:
        write_figure(fig, path)
    except ExportError as error:
        raise RMTError(str(error)) from None
    print(f"wrote {path}")
    return 0


def fit_score(kind: str, x: np.ndarray, y: np.ndarray, half: int, keep: bool = False) -> dict:
    """A probe fitted on the first `half` rows, scored on the rest: accuracy and chance (the most frequent class);
    with keep, also "hits", whether each scored row was right."""
    probe = make_probe(kind)
    probe.fit(x[:half], y[:half])
    _, counts = np.unique(y[half:], return_counts=True)
    hits = probe.predict(x[half:]) == y[half:]
    score = {"accuracy": float(hits.mean()), "chance": float(counts.max() / counts.sum())}
    return {**score, "hits": hits} if keep else score


def make_probe(kind: str):
    """An unfitted probe: linear, a logistic regression; mlp, one hidden layer of 256."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    if kind == "linear":
        return LogisticRegression(C=0.1, max_iter=2000)
    return MLPClassifier((256,), alpha=1e-2, early_stopping=True, max_iter=300, random_state=0)


def parts(fact: str) -> tuple[str, str, str, str]:
    """(subject, direction, reference, relation) of a qa4 fact; the relation is the direction read from the
    alphabetically first place to the other ("The hallway is east of the bathroom." and "The bathroom is west
    of the hallway." give the same: bathroom west of hallway), the fact's meaning whichever way it was written."""
    a, d, b = babi.parse_relation(fact)
    return a, d, b, d if a < b else babi.OPPOSITE[d]


def probe_length(model, builder: TaskBuilder, n: int, samples: int, seed: int, kind: str) -> dict:
    """Probe the memory before the question's segment of the samples of n segments with both facts behind it."""
    kept, memories = [], []
    for start in range(0, samples, BATCH):
        chunk = [builder.sample(n, eval_sample_seed(seed, n, i)) for i in range(start, min(samples, start + BATCH))]
        chunk = [s for s in chunk if all(f.segment < n - 1 for f in s.facts)]
        if not chunk:
            continue
        ids = np.array([s.input_ids for s in chunk], dtype=np.int64)
        batch = SegmentBatch.from_ids(ids, model.config.segment_size)
        out = recurrence.run_with_cache(model, batch, names=["seg.*.mem_out"])
        right = out.logits.argmax(-1).numpy() == np.array([s.answer for s in chunk])
        written = torch.stack([out.cache[f"seg.{max(f.segment for f in s.facts)}.mem_out"][i]
                               for i, s in enumerate(chunk)])
        read = out.cache[f"seg.{n - 2}.mem_out"]
        memories.append({"written": written.float().flatten(1).numpy(), "read": read.float().flatten(1).numpy()})
        kept += [(s, bool(ok)) for s, ok in zip(chunk, right)]
    if len(kept) < 100:
        raise RMTError(f"only {len(kept)} samples of {n} segments have both facts behind the question; "
                       "give more --samples")
    xs = {}
    for when in WHEN:
        x = np.concatenate([m[when] for m in memories])
        xs[when] = (x - x.mean(0)) / (x.std(0) + 1e-6)
    half = len(kept) // 2
    row = {"segments": n, "probed": len(kept), "fit": half, "score": len(kept) - half, "facts": []}
    for k, label in enumerate(("first", "second")):
        parsed = [parts(s.facts[k].text) for s, _ in kept]
        asked = [(s, ok) for s, ok in kept if babi.solve_relations([s.facts[k].text], s.question)
                 and not babi.solve_relations([s.facts[1 - k].text], s.question)]
        fact = {"fact": label, "model_accuracy_when_asked": float(np.mean([ok for _, ok in asked])) if asked else None,
                "asked": len(asked)}
        model_cell = f"{100 * fact['model_accuracy_when_asked']:.1f}% (n={len(asked)})" if asked else "-"
        for when, x in xs.items():
            fact[when] = {}
            for p, part in enumerate(PARTS):
                fact[when][part] = fit_score(kind, x, np.array([q[p] for q in parsed]), half)
            cells = " | ".join(f"{100 * fact[when][p]['accuracy']:.1f}% ({100 * fact[when][p]['chance']:.0f}%)"
                               for p in PARTS)
            print(f"| {n} | {half} / {len(kept) - half} | {label} | {WHEN[when]} | {cells} | {model_cell} |",
                  flush=True)
        row["facts"].append(fact)
    row["table"] = probe_table(xs, [s for s, _ in kept], n, half, kind)
    return row


def probe_table(xs: dict, samples, n: int, half: int, kind: str) -> dict:
    """Probe the table of answers (rmt_core.recall, table): one classifier per question "What is d of the p?",
    scored on the questions a fact answers (four a sample): the likeliest place, "none" aside, against the fact's."""
    table = recall.targets(samples, n, "table").numpy()
    out = {}
    for when, x in xs.items():
        hits = asked = best = 0
        for j in range(table.shape[1]):
            y = table[:, j]
            if len(np.unique(y[:half])) < 2:
                continue
            probe = make_probe(kind)
            probe.fit(x[:half], y[:half])
            answered = y[half:] != recall.NONE
            places = probe.classes_ != recall.NONE  # asked, the question has an answer: the likeliest place
            proba = probe.predict_proba(x[half:][answered])[:, places]
            hits += int((probe.classes_[places][proba.argmax(-1)] == y[half:][answered]).sum())
            asked += int(answered.sum())
            if answered.any():
                best += int(np.unique(y[half:][answered], return_counts=True)[1].max())
        out[when] = {"accuracy": hits / max(asked, 1), "chance": best / max(asked, 1), "asked": asked}
        print(f"| {n} | {half} / {len(samples) - half} | both, as answers | {WHEN[when]} | every question a fact "
              f"answers: {100 * out[when]['accuracy']:.1f}% ({100 * out[when]['chance']:.0f}%) | | | | |", flush=True)
    return out


if __name__ == "__main__":
    sys.exit(main())
