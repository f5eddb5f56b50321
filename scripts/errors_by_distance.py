"""Where an encoder checkpoint's errors fall: the wrong answers of an `rmt eval --json` file, by how many segments
separate the last fact from the question segment (or, with `--by before`, how many segments of input came before
it).

    .venv/bin/rmt eval --checkpoint checkpoints/detect --segments 32 --samples 500 --babi-dir ../shared/data/babi/en-10k \
        --split test --noise-file ../shared/data/quality/questions.dev.txt --json runs/detect-32.json
    .venv/bin/python scripts/errors_by_distance.py runs/detect-32.json
    .venv/bin/python scripts/errors_by_distance.py checkpoints/detect/eval.json --by before \
        --figure runs/detect-before.png --json runs/detect-before.json

The samples are rebuilt from the file's seed and sources (`eval_sample_seed`, `TaskBuilder`), so no model runs.
Distance 0 is a fact in the question's own segment; a fact in segment f of N is N - 1 - f segments back, and
has f segments before it (`--by before`). `--figure` draws accuracy against either, one curve per length
(PNG, SVG, PDF or HTML by the file's suffix); `--json` keeps the rows. Neither replaces an existing file.
Files of `rmt eval` record every wrong sample's index (`wrong_indexes`); older ones list only the first 20
wrong seeds of a length, and for those the script counts only the samples up to the last one listed, where the
list is complete. Few
errors at large distances and many at small ones mean the model holds what it wrote but fails to write a fact
that comes late, after much noise; the opposite means it forgets.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rmt_core.errors import RMTError
from rmt_core.evaluate import eval_sample_seed
from rmt_core.files import read_json
from rmt_core.stats import distance_buckets as buckets, wilson_interval


AXES = ("distance", "before")  # the last fact's segments back from the question, or its segment index
AXIS_LABELS = {"distance": "last fact, segments before the question",
               "before": "segments of input before the last fact"}


def errors_by_distance(result: dict, tokenizer, by: str = "distance") -> list[dict]:
    """Per length of the eval file, per range of `by` (AXES): samples, wrong answers, accuracy and its Wilson
    interval. A row names its range under the key `by`."""
    if by not in AXES:
        raise RMTError(f"unknown axis {by!r}; choose one of {', '.join(AXES)}")
    from rmt_core.tasks import TaskBuilder

    sources = result.get("sources") or {}
    babi_file = None if sources.get("babi") in (None, "builtin") else sources["babi"]
    noise = None if sources.get("noise") in (None, "builtin") else sources["noise"]
    builder = TaskBuilder(result["task"], tokenizer, result["segment_size"], babi_file=babi_file,
                          noise_file=noise, split=sources.get("split", "test"))
    rows = []
    for row in result["results"]:
        n, listed = row["segments"], list(row.get("wrong_seeds") or [])
        wrong, total_wrong = set(listed), row["samples"] - row["correct"]
        counts = {b: [0, 0] for b in buckets(n)}
        seeds = [eval_sample_seed(result["seed"], n, index) for index in range(row["samples"])]
        if row.get("wrong_indexes") is not None:
            wrong = {seeds[index] for index in row["wrong_indexes"]}
        elif len(listed) < total_wrong:
            # rmt eval lists the wrong answers of the first samples only (MAX_WRONG_SEEDS, in sample order): up
            # to the last one listed, the list is complete, so count that prefix of the samples.
            seeds = seeds[:seeds.index(listed[-1]) + 1] if listed else []
        for seed in seeds:
            last = max(fact.segment for fact in builder.sample(n, seed).facts)
            value = n - 1 - last if by == "distance" else last
            bucket = next(b for b in counts if b[0] <= value <= b[1])
            counts[bucket][0] += 1
            counts[bucket][1] += seed in wrong
        for (low, high), (total, bad) in counts.items():
            if total:
                ci_low, ci_high = wilson_interval(total - bad, total)
                rows.append({"segments": n, by: (low, high), "samples": total, "wrong": bad,
                             "accuracy": (total - bad) / total, "ci_low": ci_low, "ci_high": ci_high,
                             "of_samples": len(seeds), "evaluated": row["samples"]})
    return rows


def pooled(rows: list[dict], by: str) -> list[dict]:
    """The rows of all lengths summed per range of `by`, with Wilson intervals (segments: "all"). Ranges start
    at the same powers of two whatever the length (a short input's last range ends early), so a range is keyed
    by its start and ends at the highest end any length gives it."""
    sums: dict[int, list[int]] = {}
    for r in rows:
        low, high = r[by]
        total = sums.setdefault(low, [high, 0, 0])
        total[0] = max(total[0], high)
        total[1] += r["samples"]
        total[2] += r["wrong"]
    out = []
    for low, (high, total, bad) in sorted(sums.items()):
        ci_low, ci_high = wilson_interval(total - bad, total)
        out.append({"segments": "all", by: (low, high), "samples": total, "wrong": bad,
                    "accuracy": (total - bad) / total, "ci_low": ci_low, "ci_high": ci_high})
    return out


def figure(rows: list[dict], by: str, title: str, min_samples: int = 20):
    """Accuracy (95% Wilson interval) against the ranges of `by`: one curve per length, coloured from short to
    long, and all lengths pooled (black); ranges with fewer than `min_samples` samples are left out."""
    import plotly.graph_objects as go
    from plotly.colors import sample_colorscale

    lengths = sorted({r["segments"] for r in rows})
    colours = sample_colorscale("Viridis", [i / max(1, len(lengths) - 1) * 0.9 for i in range(len(lengths))])
    fig = go.Figure()
    curves = [(f"{n:,} segments", [r for r in rows if r["segments"] == n], colour, 1.5)
              for n, colour in zip(lengths, colours)]
    curves.append(("all lengths pooled", pooled(rows, by), "black", 3))
    for name, curve, colour, width in curves:
        shown = [r for r in curve if r["samples"] >= min_samples]
        if not shown:
            continue
        # a range low..high is drawn at its geometric middle, the range 0..0 at 0.5 (a log axis has no 0)
        x = [0.5 if r[by][1] == 0 else (max(r[by][0], 1) * r[by][1]) ** 0.5 for r in shown]
        fig.add_trace(go.Scatter(
            x=x, y=[r["accuracy"] for r in shown], mode="lines+markers", name=name,
            line=dict(color=colour, width=width),
            error_y=dict(type="data", symmetric=False, array=[r["ci_high"] - r["accuracy"] for r in shown],
                         arrayminus=[r["accuracy"] - r["ci_low"] for r in shown], color=colour),
            customdata=[[f"{r[by][0]}-{r[by][1]}", r["samples"], r["wrong"]] for r in shown],
            hovertemplate="%{customdata[0]}: %{y:.1%} of %{customdata[1]} (%{customdata[2]} wrong)<extra></extra>"))
    fig.update_xaxes(type="log", title_text=AXIS_LABELS[by] + " (log scale; ranges 0, 1, 2-3, 4-7, ...)")
    fig.update_yaxes(range=[0, 1.02], title_text="accuracy (95% Wilson CI)")
    fig.update_layout(title=title + f" (ranges with at least {min_samples} samples)", width=1000, height=560,
                      plot_bgcolor="white")
    fig.update_xaxes(gridcolor="#e5e5e5")
    fig.update_yaxes(gridcolor="#e5e5e5")
    return fig


def _new_file(path: str, what: str) -> Path:
    """`path` for a new file: RMTError when something is there already or its folder is missing."""
    out = Path(path)
    if out.exists() or out.is_symlink():
        raise RMTError(f"{what} {out} exists; choose another path or remove it")
    if not out.parent.is_dir():
        raise RMTError(f"{what} {out}: folder {out.parent} does not exist; create it or choose another path")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_json", help="a results file of rmt eval --json (its checkpoint's task, an encoder's)")
    parser.add_argument("--checkpoint", help="the evaluated checkpoint, for its tokenizer (default: the shipped "
                        "checkpoints' vocabulary, all-MiniLM-L6-v2's)")
    parser.add_argument("--by", choices=AXES, default="distance",
                        help="count by the last fact's distance from the question (default) or by the segments "
                        "before it")
    parser.add_argument("--figure", help="draw accuracy by range into this new file (.png, .svg, .pdf or .html)")
    parser.add_argument("--json", help="write the rows (and all lengths pooled) into this new JSON file")
    parser.add_argument("--min-samples", type=int, default=20,
                        help="the figure leaves out ranges with fewer samples (default 20)")
    args = parser.parse_args(argv)
    try:
        figure_path = _new_file(args.figure, "figure") if args.figure else None
        json_path = _new_file(args.json, "JSON file") if args.json else None
        if args.min_samples < 1:
            raise RMTError(f"--min-samples {args.min_samples}: give a whole number of at least 1")
        if figure_path is not None and figure_path.suffix.lower().lstrip(".") not in ("png", "svg", "pdf", "html"):
            raise RMTError(f"figure {figure_path}: give a .png, .svg, .pdf or .html file name")
        result = read_json(args.eval_json, RMTError, "give the file rmt eval --json wrote",
                           "run rmt eval --json again")
        if result.get("task") not in ("memorize", "detect", "reason"):
            raise RMTError(f"{args.eval_json} is an eval of task {result.get('task')!r}; this script reads the "
                           "encoder tasks memorize, detect and reason")
        if args.checkpoint:
            from rmt_core.checkpoint import load_checkpoint

            tokenizer = load_checkpoint(args.checkpoint, device="cpu").tokenizer
        else:
            from transformers import AutoTokenizer

            from rmt_core.model import minilm_dir

            tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
        rows = errors_by_distance(result, tokenizer, args.by)
        if json_path is not None:
            from rmt_core.files import write_json_atomic

            write_json_atomic(json_path, {"eval_json": args.eval_json, "by": args.by, "task": result["task"],
                                          "checkpoint": result.get("checkpoint"), "rows": rows,
                                          "pooled": pooled(rows, args.by)})
        if figure_path is not None:
            from rmt_core.files import write_atomic
            from rmt_core.viz.export import ExportError, figure_bytes

            name = (result.get("checkpoint") or {}).get("name") or result["task"]
            drawn = figure(rows, args.by, f"{name}: accuracy by {AXIS_LABELS[args.by]}", args.min_samples)
            try:
                data = figure_bytes(drawn, figure_path.suffix.lower().lstrip("."))
            except ExportError as error:
                raise RMTError(f"{error}; or give an .html figure") from None
            write_atomic(figure_path, data)
    except (RMTError, OSError) as error:
        print(f"errors_by_distance: error: {error}", file=sys.stderr)
        return 1
    for n, counted, evaluated in sorted({(r["segments"], r["of_samples"], r["evaluated"]) for r in rows}):
        if counted < evaluated:
            print(f"{n} segments: the file lists the wrong answers of its first {counted} of {evaluated} samples "
                  "only (files of rmt eval before wrong_indexes kept the first 20); the rows count those samples")
    print(f"| segments | {AXIS_LABELS[args.by]} | samples | wrong | accuracy (95% CI) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        low, high = r[args.by]
        span = f"{low}" if low == high else f"{low}-{high}"
        print(f"| {r['segments']} | {span} | {r['samples']} | {r['wrong']} | {100 * r['accuracy']:.1f}% "
              f"({100 * r['ci_low']:.1f}-{100 * r['ci_high']:.1f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
