"""Where an encoder checkpoint's answers are lost: an `rmt eval` results file split by where each sample's fact
was, by how many segments separate the last fact from the question ("distance") or how many segments of input
came before it ("before"); for reason's two facts also by how far back the first fact is ("first") and how many
segments lie between the two ("gap"); and by how many words of the noise name a bAbI place ("The kitchen was
dusty.", a room no fact put anyone in), before the first fact ("places-before") or after the last ("places-after").

The samples are rebuilt from the file's seed and sources (`eval_sample_seed`, `TaskBuilder`), so no model runs.
Distance 0 is a fact in the question's own segment; a fact in segment f of N is N - 1 - f segments back and has f
segments before it. Files of `rmt eval` record every wrong sample's index (`wrong_indexes`); older ones list
only the first 20 wrong seeds of a length, and for those only the samples up to the last one listed are counted,
where the list is complete. Few errors at large distances and many at small ones mean the model holds what it
wrote but fails to write a fact that comes late, after much noise; the opposite means it forgets.
"""

from __future__ import annotations

from typing import Callable

from rmt_core.babi import PLACES
from rmt_core.errors import TaskError
from rmt_core.evaluate import MAX_SAMPLES, eval_sample_seed
from rmt_core.layout import ROLE_FACT, ROLE_NOISE
from rmt_core.stats import distance_buckets, wilson_interval

AXES = ("distance", "before", "first", "gap", "places-before", "places-after")
PLACE_AXES = ("places-before", "places-after")
AXIS_LABELS = {"distance": "last fact, segments before the question",
               "before": "segments of input before the last fact",
               "first": "first fact, segments before the question",
               "gap": "segments from the first fact to the last",
               "places-before": "bAbI place words in the noise before the first fact",
               "places-after": "bAbI place words in the noise after the last fact"}
ENCODER_TASKS = ("memorize", "detect", "reason")
_NEEDED = ("task", "segment_size", "seed")


def axes_for(task: str | None) -> tuple[str, ...]:
    """The axes worth offering for `task`: one fact has no first fact apart from its last, nor a gap."""
    return AXES if task == "reason" else ("distance", "before") + PLACE_AXES


def axis_value(by: str, n_segments: int, fact_segments: list[int]) -> int:
    """Where a sample of `n_segments` whose facts lie in `fact_segments` falls on axis `by` (AXES)."""
    first, last = min(fact_segments), max(fact_segments)
    return {"distance": n_segments - 1 - last, "before": last, "first": n_segments - 1 - first,
            "gap": last - first}[by]


def place_token_ids(tokenizer) -> frozenset[int]:
    """The ids of the bAbI places and their plurals where each is one token of `tokenizer` (all twelve are in
    the uncased WordPiece vocabulary the shipped checkpoints use)."""
    ids = set()
    for word in PLACES + tuple(place + "s" for place in PLACES):
        encoded = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(encoded) == 1:
            ids.add(encoded[0])
    return frozenset(ids)


def noise_places(sample, place_ids: frozenset[int], where: str) -> int:
    """How many noise tokens of `sample` are a bAbI place word (`place_token_ids`): before its first fact token
    (`where` "places-before") or after its last ("places-after")."""
    at = [i for i, role in enumerate(sample.roles) if role == ROLE_FACT]
    span = slice(0, at[0]) if where == "places-before" else slice(at[-1] + 1, None)
    return sum(1 for token, role in zip(sample.input_ids[span], sample.roles[span])
               if role == ROLE_NOISE and token in place_ids)


def check_splittable(result: dict) -> None:
    """TaskError naming what is missing when a results file cannot be split (another task, or a file that does
    not record how its samples were drawn)."""
    if not isinstance(result, dict) or not isinstance(result.get("results"), list):
        raise TaskError("this is not a results file of rmt eval (no list of results); give the file rmt eval "
                        "--json wrote")
    if result.get("task") not in ENCODER_TASKS:
        raise TaskError(f"an eval of task {result.get('task')!r} cannot be split by fact position; this reads the "
                        f"encoder tasks {', '.join(ENCODER_TASKS)}")
    rows = result["results"]
    missing = [key for key in _NEEDED if key not in result]
    if missing or any(not isinstance(row, dict) or "correct" not in row for row in rows):
        raise TaskError("this results file does not record how its samples were drawn ("
                        + ", ".join(missing or ["correct"]) + " missing); write it again with rmt eval --json")
    for row in rows:  # a file edited by hand must not make the split run for hours
        if row.get("first_sample"):
            raise TaskError(f"the results row of {row.get('segments', '?')} segments starts at sample "
                            f"{row['first_sample']} (rmt eval --first-sample); pool it with the samples before it "
                            "first (scripts/merge_eval.py)")
        samples = row.get("samples")
        if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= MAX_SAMPLES:
            raise TaskError(f"the results row of {row.get('segments', '?')} segments has {samples!r} samples; "
                            f"rmt eval writes 1 to {MAX_SAMPLES:,}, write the file again with rmt eval --json")


def sample_count(result: dict) -> int:
    """How many samples splitting `result` rebuilds (for a progress bar)."""
    return sum(int(row["samples"]) for row in result["results"])


def split_errors(result: dict, tokenizer, by: str = "distance",
                 progress: Callable[[int], None] | None = None) -> list[dict]:
    """Per length of the results file, per range of `by` (AXES): samples, wrong answers, accuracy and its Wilson
    interval. A row names its range under the key `by`; `progress(k)` is told of every k samples rebuilt."""
    from rmt_core.tasks import TaskBuilder

    if by not in AXES:
        raise TaskError(f"unknown axis {by!r}; choose one of {', '.join(AXES)}")
    check_splittable(result)
    sources = result.get("sources") or {}
    babi_file = None if sources.get("babi") in (None, "builtin") else sources["babi"]
    noise = None if sources.get("noise") in (None, "builtin") else sources["noise"]
    builder = TaskBuilder(result["task"], tokenizer, result["segment_size"], babi_file=babi_file,
                          noise_file=noise, split=sources.get("split", "test"))
    place_ids = place_token_ids(tokenizer) if by in PLACE_AXES else frozenset()
    rows = []
    for row in result["results"]:
        try:
            rows += _split_row(result, row, builder, by, progress, place_ids)
        except (KeyError, IndexError, TypeError, ValueError) as error:
            where = row.get("segments", "?") if isinstance(row, dict) else "?"
            raise TaskError(f"the results row of {where} segments is malformed ({type(error).__name__}: {error}); "
                            "write the file again with rmt eval --json") from None
    return rows


def _split_row(result: dict, row: dict, builder, by: str, progress, place_ids: frozenset[int]) -> list[dict]:
    """The rows of one length of the results file (split_errors)."""
    rows = []
    n, listed = row["segments"], list(row.get("wrong_seeds") or [])
    wrong, total_wrong = set(listed), row["samples"] - row["correct"]
    # a place count can pass the segment count (one segment holds several): its ranges run to the input's tokens
    counts = {b: [0, 0] for b in distance_buckets(n * result["segment_size"] if by in PLACE_AXES else n)}
    seeds = [eval_sample_seed(result["seed"], n, index) for index in range(row["samples"])]
    skipped = len(seeds)
    if row.get("wrong_indexes") is not None:
        wrong = {seeds[index] for index in row["wrong_indexes"]}
    elif len(listed) < total_wrong:
        # rmt eval lists the wrong answers of the first samples only (MAX_WRONG_SEEDS, in sample order): up
        # to the last one listed, the list is complete, so count that prefix of the samples.
        seeds = seeds[:seeds.index(listed[-1]) + 1] if listed else []
    skipped -= len(seeds)
    for seed in seeds:
        sample = builder.sample(n, seed)
        value = (noise_places(sample, place_ids, by) if by in PLACE_AXES
                 else axis_value(by, n, [fact.segment for fact in sample.facts]))
        bucket = next(b for b in counts if b[0] <= value <= b[1])
        counts[bucket][0] += 1
        counts[bucket][1] += seed in wrong
        if progress:
            progress(1)
    if progress and skipped:
        progress(skipped)
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


def split_figure(rows: list[dict], by: str, title: str, min_samples: int = 20):
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
    fig.update_xaxes(type="log", title_text=AXIS_LABELS[by] + " (log scale; ranges 0, 1, 2-3, 4-7, ...)",
                     gridcolor="#e5e5e5")
    fig.update_yaxes(range=[0, 1.02], title_text="accuracy (95% Wilson CI)", gridcolor="#e5e5e5")
    fig.update_layout(title=title + f" (ranges with at least {min_samples} samples)", width=1000, height=560,
                      plot_bgcolor="white")
    return fig
