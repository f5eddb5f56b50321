"""Is reason's answer lost while memory carries the facts, or before they arrive? Accuracy by where the story sits.

    .venv/bin/python scripts/fact_placement.py --checkpoint checkpoints/reason --segments 64,512,4096 \
        --placement late --samples 200 --babi-dir ../shared/data/babi/en-10k \
        --noise-file ../shared/data/quality/questions.dev.txt --json late.json
    .venv/bin/python scripts/fact_placement.py --compare late.json other-model.late.json   # story by story
    .venv/bin/python scripts/fact_placement.py --figure curve.png late.json other-model.late.json  # drawn

`rmt eval` puts each fact in a segment drawn uniformly from the whole input, so at N segments a fact is carried
about N/2 segments on average and memory has read about N/2 of noise before it. This script takes the two apart.
Each sample is a held-out story of 8 segments (both facts in its segments 0..6, the question in its segment 7:
`TaskBuilder(facts_behind=1)`) and N - 8 segments of noise (the noise segments of another sample of the same
sources), put together one of two ways:
- early: the story's segments 0..6, the noise, then the question's segment: memory carries the facts over N - 7
  segments or more;
- late: the noise, then the whole story: memory has read N - 8 segments of noise when the first fact arrives, and
  carries the facts 7 segments at most.
If `late` at N answers as the story does at 8 and `early` does not, the facts are lost while memory carries them;
if both fall alike, what costs the answer is memory's state after long noise, wherever the facts sit in it.
Each row keeps the indexes of the stories answered wrong, so `--compare` pairs two models measured on the same
stories (the answers the second fixes and breaks, with an exact McNemar p) without running either. Each row also
splits its answers by where the asked place sits in the two facts (`rmt_core.babi.relation_kind`): "both
reference" are the questions only the facts' directions settle, so a memory that keeps the places and loses the
directions answers them by a coin toss. `--figure` draws files of this script, a panel for each kind; files of one
checkpoint that measure different lengths draw one line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rmt_core.checkpoint import portable_command, portable_path  # noqa: E402
from rmt_core.errors import RMTError  # noqa: E402

FORMAT = "rmt-lens-fact-placement"
STORY = 8  # segments of the story: facts in 0..STORY-2, the question in STORY-1
PLACEMENTS = ("early", "late")


class PlacementError(RMTError):
    """A bad argument of this script."""


def story_and_noise(builder, n_segments: int, index: int, seed: int = 0):
    """(story segments, noise segments) of sample `index` at `n_segments`: a held-out story of STORY segments and
    n_segments - STORY segments that hold neither a fact nor a question, from another sample of the same sources."""
    from rmt_core.evaluate import eval_sample_seed
    from rmt_core.tasks import ROLE_NOISE

    story = builder.sample(STORY, eval_sample_seed(seed, n_segments, index))
    want = n_segments - STORY
    noise = []
    if want:
        donor = builder.sample(want + 3, eval_sample_seed(seed + 1, n_segments, index))
        size = donor.segment_size
        noise = [ids for t, ids in enumerate(donor.segments()[:-1])
                 if set(donor.roles[t * size:(t + 1) * size]) == {ROLE_NOISE}][:want]
    return story, noise


def placed_ids(story, noise: list[list[int]], placement: str) -> list[int]:
    """The token ids of one input: the story and the noise put together as `placement` says."""
    segments = story.segments()
    order = (segments[:-1] + noise + segments[-1:]) if placement == "early" else (noise + segments)
    return [token for segment in order for token in segment]


def measure(model, builder, n_segments: int, samples: int, placement: str, batch_size: int = 16,
            seed: int = 0, progress: bool = True) -> dict:
    """How many of `samples` inputs of `n_segments` with the story placed `placement` the model answers."""
    from rmt_core.evaluate import predict_batch
    from rmt_core.stats import wilson_interval

    from tqdm import tqdm

    from rmt_core import babi

    size = model.config.segment_size
    wrong: list[int] = []
    kinds: dict[str, dict[str, int]] = {}
    with torch.inference_mode(), tqdm(total=samples, desc=f"{placement} at {n_segments:,} segments", unit="sample",
                                      disable=not progress) as bar:
        for start in range(0, samples, batch_size):
            built = [story_and_noise(builder, n_segments, i, seed)
                     for i in range(start, min(samples, start + batch_size))]
            ids = np.array([placed_ids(story, noise, placement) for story, noise in built], dtype=np.int64)
            labels = torch.tensor([story.answer for story, _ in built])
            logits = predict_batch(model, ids, n_segments, size)
            missed = (logits.argmax(dim=-1).cpu() != labels).nonzero().flatten().tolist()
            wrong += [start + k for k in missed]
            for k, (story, _) in enumerate(built):
                kind = babi.relation_kind([f.text for f in story.facts], story.question) or "other"
                tally = kinds.setdefault(kind, {"samples": 0, "correct": 0})
                tally["samples"] += 1
                tally["correct"] += k not in missed
            bar.update(len(built))
    right = samples - len(wrong)
    low, high = wilson_interval(right, samples)
    return {"placement": placement, "segments": n_segments, "samples": samples, "correct": right,
            "accuracy": right / samples, "ci_low": low, "ci_high": high, "wrong_indexes": wrong,
            "by_kind": dict(sorted(kinds.items()))}


def compare(reference: dict, other: dict) -> list[dict]:
    """Per (placement, length) both files measured on the same stories: the answers `other` fixes and breaks,
    with an exact McNemar p. PlacementError when the files drew different stories or keep no answers."""
    from rmt_core.stats import mcnemar_p

    if any("wrong_indexes" not in r for r in reference["results"] + other["results"]):
        raise PlacementError("a file keeps no per-story answers (written before wrong_indexes); measure it again "
                             "with this script")
    for key in ("sources", "story_segments", "seed"):
        if reference.get(key) != other.get(key):
            raise PlacementError(f"the two files differ in {key} ({reference.get(key)!r} against "
                                 f"{other.get(key)!r}), so their stories differ; measure both the same way")
    rows = {(r["placement"], r["segments"]): r for r in reference["results"]}
    out = []
    for row in other["results"]:
        ref = rows.get((row["placement"], row["segments"]))
        if ref is None or ref["samples"] != row["samples"]:
            continue
        before, after = set(ref["wrong_indexes"]), set(row["wrong_indexes"])
        fixed, broken = len(before - after), len(after - before)
        out.append({"placement": row["placement"], "segments": row["segments"], "samples": row["samples"],
                    "correct": (ref["correct"], row["correct"]), "fixed": fixed, "broken": broken,
                    "p": mcnemar_p(fixed, broken)})
    if not out:
        raise PlacementError("the two files share no placement and length of the same sample count")
    return out


def _lengths(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise PlacementError(f"--segments takes whole numbers separated by commas, such as 64,512; got {text!r}") \
            from None
    if not values or not all(STORY <= v <= 100_000 for v in values):
        raise PlacementError(f"--segments takes lengths from {STORY} (the story's own) to 100,000, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/reason", help="a reason encoder checkpoint folder")
    parser.add_argument("--segments", default="64,512", help="input lengths in segments (default 64,512)")
    parser.add_argument("--placement", choices=PLACEMENTS + ("both",), default="both",
                        help="early: the facts first, then noise; late: noise first, then the facts (default both)")
    parser.add_argument("--samples", type=int, default=200, help="held-out samples a length (default 200)")
    parser.add_argument("--babi-dir", help="bAbI folder (its test split is used); default: built-in facts")
    parser.add_argument("--noise-file", help="noise text, one passage a line; default: built-in noise")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stories and the noise (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", help="the file the numbers go to (a new one, or one it wrote)")
    parser.add_argument("--compare", nargs=2, metavar=("REFERENCE", "OTHER"),
                        help="run no model: pair two files of this script on the same stories (fixed, broken, "
                        "McNemar p)")
    parser.add_argument("--figure", nargs="+", metavar=("OUT", "FILE"),
                        help="run no model: draw accuracy by length from files of this script into the new figure "
                        "OUT (.png, .svg, .pdf or .html), all stories and each kind of question; files of one "
                        "checkpoint at different lengths draw one line")
    args = parser.parse_args(argv)
    if sum(map(bool, (args.json, args.compare, args.figure))) != 1:
        parser.error("give --json to measure, --compare REFERENCE OTHER to pair two files, or --figure OUT FILE... "
                     "to draw files")
    if args.figure and len(args.figure) < 2:
        parser.error("--figure takes the new figure's path, then one or more files of this script")
    command = portable_command(sys.argv[1:] if argv is None else argv, "python scripts/fact_placement.py")
    try:
        return _main(args, command)
    except (RMTError, OSError) as error:
        print(f"fact_placement: error: {error}", file=sys.stderr)
        return 1


def _read(path: str) -> dict:
    from rmt_core.files import read_json

    data = read_json(path, PlacementError, "give a file this script wrote with --json", "measure it again with --json")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PlacementError(f"{path} is not a file of this script (format {FORMAT}); give files it wrote with --json")
    if not isinstance(data.get("results"), list) or not all(isinstance(r, dict) for r in data["results"]):
        raise PlacementError(f"{path} has no list of results; measure it again with --json")
    return data


def _compare(paths: list[str]) -> int:
    files = [_read(path) for path in paths]
    try:
        rows = compare(*files)
    except (KeyError, TypeError) as error:
        raise PlacementError(f"a results row is malformed ({type(error).__name__}: {error}); measure it again "
                             "with --json") from None
    print("| segments | facts | samples | right, reference | right, other | fixed | broken | McNemar p |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['segments']:,} | {row['placement']} | {row['samples']} | {row['correct'][0]} | "
              f"{row['correct'][1]} | {row['fixed']} | {row['broken']} | {row['p']:.2g} |")
    return 0


def _main(args, command: str) -> int:
    from probes.run import json_safe
    from rmt_core.checkpoint import checkpoint_identity, load_checkpoint
    from rmt_core.files import check_ours, write_json_atomic
    from rmt_core.tasks import TaskBuilder

    if args.compare:
        return _compare(args.compare)
    if args.figure:
        return _figure(args.figure[0], args.figure[1:])
    lengths = _lengths(args.segments)
    for value, flag, low, high in ((args.samples, "--samples", 1, 100_000), (args.threads, "--threads", 1, 1_024)):
        if not low <= value <= high:
            raise PlacementError(f"{flag} must be from {low} to {high:,}, got {value}")
    out = Path(args.json)
    check_ours(out, FORMAT, PlacementError, "placement.json")
    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint, device="cpu")
    if getattr(model.config, "architecture", "encoder") != "encoder" or model.config.task != "reason":
        raise PlacementError(f"{args.checkpoint} is not a reason encoder checkpoint; give one, such as "
                             "checkpoints/reason")
    builder = TaskBuilder("reason", model.tokenizer, model.config.segment_size, babi_dir=args.babi_dir,
                          noise_file=args.noise_file, split="test", facts_behind=1.0)
    placements = PLACEMENTS if args.placement == "both" else (args.placement,)
    rows = [measure(model, builder, n, args.samples, placement, seed=args.seed, progress=not args.no_progress)
            for n in lengths for placement in placements]
    result = {"format": FORMAT, "command": command, "checkpoint": checkpoint_identity(args.checkpoint),
              "sources": {"babi_dir": portable_path(args.babi_dir), "noise_file": portable_path(args.noise_file)},
              "story_segments": STORY, "seed": args.seed, "results": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, json_safe(result))
    print("| segments | facts | samples | accuracy (95% CI) |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['segments']:,} | {row['placement']} | {row['samples']} | {100 * row['accuracy']:.1f}% "
              f"({100 * row['ci_low']:.1f}-{100 * row['ci_high']:.1f}) |")
    print()
    print(kind_table(rows))
    return 0


def curves(name: str, data: dict) -> list[dict]:
    """The lines a file draws: per placement, all its stories and each kind of question it split them by, as
    {"name", "series" (the file and placement), "kind", "points": [(segments, right, samples)]} sorted by length.
    Old files without a split draw the one line."""
    out = []
    for placement in sorted({row["placement"] for row in data["results"]}):
        rows = sorted((r for r in data["results"] if r["placement"] == placement), key=lambda r: r["segments"])
        series = f"{name}, {placement}"
        out.append({"name": series, "series": series, "kind": None,
                    "points": [(r["segments"], r["correct"], r["samples"]) for r in rows]})
        for kind in sorted({kind for r in rows for kind in r.get("by_kind", {})}):
            points = [(r["segments"], r["by_kind"][kind]["correct"], r["by_kind"][kind]["samples"])
                      for r in rows if kind in r.get("by_kind", {})]
            out.append({"name": f'{series}: "{kind}"', "series": series, "kind": kind, "points": points})
    return out


def placement_figure(named: list[tuple[str, dict]]):
    """Accuracy (95% Wilson interval) against the input's length (log axis), one panel for all stories and one per
    kind of question, one colour a file and placement; the coin toss that a memory keeping the places and not the
    directions leaves on "both reference" questions is drawn on their panel."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    from rmt_core.stats import wilson_interval

    lines = [(name, curve) for name, data in named for curve in curves(name, data)]
    panels = [None] + sorted({curve["kind"] for _, curve in lines if curve["kind"] is not None})
    fig = make_subplots(rows=1, cols=len(panels), shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=["all stories"] + [f'"{kind}"' for kind in panels[1:]])
    colours: dict[str, str] = {}
    for name, curve in lines:
        series = curve["series"]
        colour = colours.setdefault(series, qualitative.D3[len(colours) % len(qualitative.D3)])
        x = [n for n, _, _ in curve["points"]]
        y = [right / samples for _, right, samples in curve["points"]]
        bounds = [wilson_interval(right, samples) for _, right, samples in curve["points"]]
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="lines+markers", name=series, legendgroup=series, showlegend=curve["kind"] is None,
            line=dict(color=colour, width=2.5),
            error_y=dict(type="data", symmetric=False, array=[hi - v for v, (_, hi) in zip(y, bounds)],
                         arrayminus=[v - lo for v, (lo, _) in zip(y, bounds)], color=colour, thickness=1),
            customdata=[[right, samples] for _, right, samples in curve["points"]],
            hovertemplate="%{x:,} segments: %{y:.1%} (%{customdata[0]} of %{customdata[1]})<extra></extra>"),
            row=1, col=panels.index(curve["kind"]) + 1)
    if "both reference" in panels:
        fig.add_hline(y=0.5, line=dict(color="grey", dash="dot"), row=1, col=panels.index("both reference") + 1,
                      annotation_text="coin toss between two places", annotation_position="bottom right")
    fig.update_xaxes(type="log", gridcolor="#e5e5e5", title_text="segments (log)")
    fig.update_yaxes(range=[0, 1.02], gridcolor="#e5e5e5")
    fig.update_yaxes(title_text="accuracy (95% Wilson CI)", row=1, col=1)
    fig.update_layout(title="reason's answer by the input's length, by where the asked place sits in the story's "
                      "facts", width=max(700, 330 * len(panels)), height=460, plot_bgcolor="white",
                      legend=dict(orientation="h", y=-0.22))
    return fig


def join_runs(files: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """(name, data) to draw for each (path, data): files of one checkpoint (the same sha256) that measure different
    lengths join into one line under its name, as a curve run in parts (say 8 to 512 segments, then 4,096) is;
    a file that measures a length another already holds, or that names no sha256, keeps a line of its own, under
    its file's name where the checkpoint's is taken."""
    named: list[tuple[str, dict]] = []
    joined: dict[str, dict] = {}  # sha256 -> the data its files share
    for path, data in files:
        checkpoint = data.get("checkpoint") or {}
        digest, rows = checkpoint.get("sha256"), data["results"]
        if digest in joined and not ({(r["placement"], r["segments"]) for r in rows}
                                     & {(r["placement"], r["segments"]) for r in joined[digest]["results"]}):
            joined[digest]["results"].extend(rows)
            continue
        name = checkpoint.get("name") or Path(path).stem
        data = {**data, "results": list(rows)}
        named.append((name if name not in {n for n, _ in named} else Path(path).stem, data))
        if digest and digest not in joined:
            joined[digest] = data
    return named


def _figure(out: str, paths: list[str]) -> int:
    from rmt_core.files import new_file
    from rmt_core.viz.export import FIGURE_FORMATS, ExportError, write_figure

    target = new_file(out, "figure", PlacementError)
    if target.suffix.lower().lstrip(".") not in FIGURE_FORMATS:
        raise PlacementError(f"figure {target}: give a .png, .svg, .pdf or .html file name")
    files = [(path, _read(path)) for path in paths]
    try:
        fig = placement_figure(join_runs(files))
    except (AttributeError, KeyError, TypeError, ZeroDivisionError) as error:
        raise PlacementError(f"a results row is malformed ({type(error).__name__}: {error}); measure it again "
                             "with --json") from None
    try:
        write_figure(fig, target)
    except ExportError as error:
        raise PlacementError(f"{error}; or give an .html figure") from None
    print(f"wrote {target}")
    return 0


def kind_table(rows: list[dict]) -> str:
    """A markdown table of the rows' answers by where the asked place sits: right of samples, per kind."""
    kinds = sorted({kind for row in rows for kind in row["by_kind"]})
    lines = ["| segments | facts | " + " | ".join(f'"{kind}"' for kind in kinds) + " |",
             "| --- | --- | " + " | ".join("---" for _ in kinds) + " |"]
    for row in rows:
        cells = []
        for kind in kinds:
            tally = row["by_kind"].get(kind)
            cells.append("-" if tally is None else
                         f"{tally['correct']}/{tally['samples']} ({100 * tally['correct'] / tally['samples']:.0f}%)")
        lines.append(f"| {row['segments']:,} | {row['placement']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
