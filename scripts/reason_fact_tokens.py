"""Where reason loses a fact's direction: in the backbone's reading of the fact, or in memory's write of it.

    .venv/bin/python scripts/reason_fact_tokens.py checkpoints/reason --segments 4 --samples 2000 \
        --babi-dir ../shared/data/babi/en-10k --noise-file ../shared/data/quality/questions.dev.txt

Every qa4 fact is eight tokens, "the <subject> is <direction> of the <reference> .". For each fact of each
sample, inside the segment that holds it, this script takes:
- each layer's output at four of the fact's tokens (subject, direction, reference, the full stop), and probes
  (logistic regression, fitted on the facts of half the samples, scored on the other half) the fact's parts
  from each one. A token that names the direction of its own fact only when it is the direction token says
  the backbone does not bind the direction to the places; a place token that names it says it does, so a
  memory slot reading that one token could write the whole fact;
- the memory that segment writes (all slots, flattened), probed for the same parts: what memory took;
- how much attention memory gives each of the fact's eight tokens, per layer: the mean over heads and slots,
  and the most any one slot's head gives it, so one sees whether memory reads the direction token at all.
Printed: Markdown tables. --json writes the numbers; --figure draws them (probe accuracy of the direction by
layer and token, beside memory's; attention by token and layer).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the probes and fact parts of reason_memory_probe.py
from reason_memory_probe import add_sample_options, fit_score, parts, run_study, save_figure  # noqa: E402
from rmt_core import recurrence
from rmt_core.errors import RMTError
from rmt_core.evaluate import eval_sample_seed
from rmt_core.inputs import SegmentBatch
from rmt_core.tasks import TaskBuilder

PARTS = ("subject", "direction", "reference", "relation")
WORDS = ("the", "subject", "is", "direction", "of", "the ", "reference", ".")  # a fact's eight tokens, in order
SOURCES = {"subject": 1, "direction": 3, "reference": 6, "full stop": 7}  # the tokens whose states are probed
BATCH = 100
MAX_SEGMENTS = 64


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a reason checkpoint (with --figure: a --json report of this script)")
    parser.add_argument("--segments", type=int, default=4)
    parser.add_argument("--samples", type=int, default=2000, help="samples drawn; each gives its two facts")
    add_sample_options(parser)
    parser.add_argument("--json", help="write the numbers here too")
    parser.add_argument("--figure", help="draw the --json report named in place of the checkpoint (PNG/SVG/HTML)")
    args = parser.parse_args(argv)
    try:
        if args.figure:
            return draw(args.checkpoint, args.figure)
        if not 1 <= args.segments <= MAX_SEGMENTS or args.samples < 20:
            raise RMTError(f"--segments must be 1 to {MAX_SEGMENTS} (every segment's activations are kept) and "
                           "--samples at least 20")
        run_study(args, study, print_report)
    except RMTError as error:
        print(f"reason_fact_tokens: error: {error}", file=sys.stderr)
        return 1
    return 0


def study(model, builder: TaskBuilder, n: int, samples: int, seed: int) -> dict:
    """Token states, memory written and memory's attention for every fact that lies whole in one segment."""
    layout, size = model.layout, model.config.segment_size
    layers = None  # read from the cache's names
    states, memories, attention, strongest, targets = [], [], [], [], []
    for start in range(0, samples, BATCH):
        chunk = [builder.sample(n, eval_sample_seed(seed, n, i)) for i in range(start, min(samples, start + BATCH))]
        batch = SegmentBatch.from_ids(np.array([s.input_ids for s in chunk], dtype=np.int64), size)
        out = recurrence.run_with_cache(model, batch, names=["seg.*.blocks.*.out", "seg.*.blocks.*.attn.pattern",
                                                             "seg.*.mem_out"])
        if layers is None:
            layers = 1 + max(int(k.split(".")[3]) for k in out.cache if ".blocks." in k)
        for i, sample in enumerate(chunk):
            for fact in sample.facts:
                t, offset = fact.segment, fact.start - fact.segment * size
                if fact.end - fact.start != len(WORDS) or offset + len(WORDS) > size:
                    continue  # not the eight-token form, or cut by a segment boundary
                first = layout.token_start + offset
                states.append(np.stack([out.cache[f"seg.{t}.blocks.{l}.out"][i, [first + j for j in SOURCES.values()]]
                                        .float().numpy() for l in range(layers)]))
                memories.append(out.cache[f"seg.{t}.mem_out"][i].float().flatten().numpy())
                rows = [out.cache[f"seg.{t}.blocks.{l}.attn.pattern"][i][:, layout.write_positions,
                                                                           first:first + len(WORDS)].float()
                        for l in range(layers)]  # (heads, slots, 8) per layer
                attention.append(np.stack([r.mean((0, 1)).numpy() for r in rows]))
                strongest.append(np.stack([r.flatten(0, 1).max(0).values.numpy() for r in rows]))
                targets.append(parts(fact.text))
    if len(targets) < 100:
        raise RMTError(f"only {len(targets)} facts lie whole in one segment; give more --samples")
    states, memories, attention = np.stack(states), np.stack(memories), np.stack(attention)  # (F, L, 4, d) ...
    half = len(targets) // 2
    ys = {p: np.array([t[k] for t in targets]) for k, p in enumerate(PARTS)}

    def score(x: np.ndarray) -> dict:
        x = (x - x[:half].mean(0)) / (x[:half].std(0) + 1e-6)
        return {part: fit_score("linear", x, y, half) for part, y in ys.items()}

    tokens = [{"layer": l, "token": name, **score(states[:, l, j])}
              for l in range(layers) for j, name in enumerate(SOURCES)]
    return {"segments": n, "samples_drawn": samples, "seed": seed, "facts": len(targets), "fit": half,
            "score": len(targets) - half, "tokens": tokens, "memory": score(memories),
            "attention": {"words": list(WORDS), "per_layer": attention.mean(0).tolist(),
                          "strongest_per_layer": np.stack(strongest).mean(0).tolist(),
                          "uniform": 1.0 / layout.input_size}}


def print_report(report: dict) -> None:
    print(f"{report['checkpoint']}: {report['facts']} facts of {report['segments']}-segment samples "
          f"(probes fitted on {report['fit']}, scored on {report['score']}; chance = the most frequent class)\n")
    print("| read from | layer | " + " | ".join(PARTS) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in PARTS) + " |")
    for row in report["tokens"]:
        cells = " | ".join(f"{100 * row[p]['accuracy']:.1f}% ({100 * row[p]['chance']:.0f}%)" for p in PARTS)
        print(f"| the {row['token']} token | {row['layer']} | {cells} |")
    cells = " | ".join(f"{100 * report['memory'][p]['accuracy']:.1f}%" for p in PARTS)
    print(f"| the memory this segment writes | | {cells} |\n")
    attention = report["attention"]
    print(f"Memory's attention to each token of the fact (mean over heads and slots; a uniform share is "
          f"{100 * attention['uniform']:.2f}%):\n")
    print("| layer | " + " | ".join(w.strip() for w in attention["words"]) + " |")
    print("| --- | " + " | ".join("---" for _ in attention["words"]) + " |")
    for l, row in enumerate(attention["per_layer"]):
        print(f"| {l} | " + " | ".join(f"{100 * v:.2f}%" for v in row) + " |")
    print("\nThe attention of the slot and head that reads each token most (a mean over facts of that maximum):\n")
    print("| layer | " + " | ".join(w.strip() for w in attention["words"]) + " |")
    print("| --- | " + " | ".join("---" for _ in attention["words"]) + " |")
    for l, row in enumerate(attention["strongest_per_layer"]):
        print(f"| {l} | " + " | ".join(f"{100 * v:.1f}%" for v in row) + " |")


def draw(report_path: str, path: str) -> int:
    """Left: the direction probe by layer, one line per token, memory's as a level; right: memory's attention."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    try:
        report = json.loads(Path(report_path).read_text(encoding="utf-8"))
        rows, memory, attention = report["tokens"], report["memory"], report["attention"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RMTError(f"cannot read {report_path} as a --json report of this script ({error})") from None
    fig = make_subplots(1, 2, subplot_titles=("The fact's direction, probed from one token's state",
                                              "Memory's attention to the fact's tokens"))
    for token in SOURCES:
        mine = [r for r in rows if r["token"] == token]
        fig.add_scatter(x=[r["layer"] for r in mine], y=[100 * r["direction"]["accuracy"] for r in mine],
                        mode="lines+markers", name=f"the {token} token", row=1, col=1)
    layers = sorted({r["layer"] for r in rows})
    fig.add_scatter(x=layers, y=[100 * memory["direction"]["accuracy"]] * len(layers), mode="lines",
                    line={"dash": "dash", "color": "black"}, name="the memory the segment writes", row=1, col=1)
    fig.add_scatter(x=layers, y=[100 * rows[0]["direction"]["chance"]] * len(layers), mode="lines",
                    line={"dash": "dot", "color": "grey"}, name="chance", row=1, col=1)
    words = [w.strip() for w in attention["words"]]
    for l, row in enumerate(attention["per_layer"]):
        fig.add_bar(x=[f"{k + 1}. {w}" for k, w in enumerate(words)], y=[100 * v for v in row],
                    name=f"layer {l}", row=1, col=2)
    fig.add_hline(y=100 * attention["uniform"], line_dash="dot", line_color="grey", row=1, col=2)
    fig.update_layout(template="plotly_white", width=1200, height=460, barmode="group",
                      title=f"{report.get('checkpoint', '')}: {report['facts']} facts, {report['segments']} segments",
                      legend={"orientation": "h", "y": -0.2})
    fig.update_xaxes(title_text="layer", dtick=1, row=1, col=1)
    fig.update_yaxes(title_text="probe accuracy, held out (%)", range=[0, 100], row=1, col=1)
    fig.update_yaxes(title_text="attention (%)", row=1, col=2)
    return save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
