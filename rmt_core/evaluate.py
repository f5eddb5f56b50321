"""Accuracy against input length, for any number of segments (SPEC section 7; the paper's Figures 1 and 5).

`evaluate` runs fresh task samples through a model segment by segment under `torch.inference_mode()`,
keeping only the memory (B, m, d) between steps: no attention, no graph, no hidden states of earlier
segments. Token ids of a batch are held as int32 (B, N * S) and the batch shrinks for long inputs so that
at most `max_batch_tokens` ids are in memory at once: peak memory does not grow with the number of segments.

Evaluation samples never coincide with training samples: sample i at length n of seed s is built with the
seed `sample_seed(EVAL_SEED_OFFSET + s, n * 2**32 + i)` (`eval_sample_seed`), a hash input that training
batches (`TaskBuilder.batch`, whose index is below the batch size) never use. With `--babi-dir` the test
split's facts are used (split="test").

Results format (SPEC section 7), plus extra keys:
    {"results": [{"segments": n, "tokens": n * segment_size, "accuracy": a (0..1), "samples": s,
                  "correct", "ci_low", "ci_high" (Wilson 95%), "seconds", "wrong_seeds" (the first 20),
                  "wrong_indexes" (every wrong sample's index: its seed is eval_sample_seed(seed, n, index)),
                  "first_sample" (only when not 0: the samples are indexes first_sample to first_sample +
                  samples - 1),
                  "peak_memory_bytes" (CUDA allocator peak at this length; None on CPU)}, ...],
     "format", "version", "task", "checkpoint" {name, path, sha256} | None, "segment_size", "num_mem_tokens",
     "trained_segments", "sources", "source_sha256" {babi, noise: sha256 of the file, None for built-in data},
     "seed", "eval_seed_offset", "batch_size", "device", "dtype", "date", "seconds", "peak_memory_bytes", and only
     when used: "autocast" ("bfloat16"), "processes" (the world size)}

Several processes (torchrun, accelerate) each run every world-th batch and gather the counts and wrong seeds
at the end; per-length "seconds" and "peak_memory_bytes" are then the largest of any process.
"""

from __future__ import annotations

import contextlib
import math
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from rmt_core import recurrence
from rmt_core.checkpoint import model_identity
from rmt_core.errors import CheckpointError, TaskError
from rmt_core.files import file_sha256, read_json
from rmt_core.inputs import SegmentBatch
from rmt_core.stats import wilson_interval

FORMAT = "rmt-lens-eval"
FORMAT_VERSION = 1
EVAL_SEED_OFFSET = 10**9
MAX_BATCH_TOKENS = 2**25  # token ids held at once: 128 MiB as int32 (64 samples x 1,024 segments x 499 tokens)
MAX_WRONG_SEEDS = 20
AUTOCAST_DTYPES = (None, "bfloat16")  # evaluate(autocast=): opt-in lower precision
MAX_SAMPLES = 1_000_000  # samples per length: a million 1-segment samples already take hours on a CPU
MAX_FIRST_SAMPLE = 2**31  # a sample index stays below 2**32, so that no two lengths share a sample seed


def eval_sample_seed(seed: int, n_segments: int, index: int) -> int:
    """The sample seed of evaluation sample `index` at `n_segments` (rebuild it with `rmt sample --seed`)."""
    from rmt_core.tasks import sample_seed

    return sample_seed(EVAL_SEED_OFFSET + int(seed), int(n_segments) * 2**32 + int(index))


def batch_plan(samples: int, n_segments: int, segment_size: int, batch_size: int,
               max_batch_tokens: int = MAX_BATCH_TOKENS) -> list[int]:
    """Sizes of the batches that evaluate `samples` samples of `n_segments`: at most `batch_size`, and at most
    `max_batch_tokens` token ids a batch (never fewer than one sample)."""
    per_sample = n_segments * segment_size
    size = max(1, min(batch_size, max_batch_tokens // per_sample))
    return [min(size, samples - start) for start in range(0, samples, size)]


def _check_lengths(segments) -> list[int]:
    try:
        values = [int(n) for n in segments]
    except (TypeError, ValueError):
        raise TaskError(f"segments must be whole numbers, got {segments!r}; give --segments 1,2,4") from None
    if not values or min(values) < 1 or any(int(n) != n for n in segments):
        raise TaskError(f"segments must be whole numbers >= 1, got {list(segments)!r}; give --segments 1,2,4")
    return list(dict.fromkeys(values))


@torch.inference_mode()
def predict_batch(model, input_ids: np.ndarray, n_segments: int, segment_size: int) -> torch.Tensor:
    """Final-segment logits (B, C) for int ids (B, n_segments * segment_size), through the one recurrence.

    Only the memory (B, m, d) lives between steps; each segment's ids go to the device as they are needed.
    """
    batch = SegmentBatch.from_ids(input_ids[:, :n_segments * segment_size], segment_size)
    return recurrence.run(model, batch).logits


def source_digests(babi_path, noise_name) -> dict:
    """sha256 of the bAbI file and of the noise file a run read (None for built-in data): what makes two runs' data
    the same where their paths differ, as a copy of the data on another machine does."""
    def digest(path) -> str | None:
        return file_sha256(path) if path is not None and Path(str(path)).is_file() else None
    return {"babi": digest(babi_path), "noise": digest(noise_name)}


def same_sources(a: dict, b: dict) -> bool:
    """Whether two results drew their samples from the same data: the same split, and for the bAbI file and the
    noise the same sha256 where both results record one (files that moved or were copied), else the same path."""
    sources_a, sources_b = a.get("sources") or {}, b.get("sources") or {}
    digests_a, digests_b = a.get("source_sha256") or {}, b.get("source_sha256") or {}
    if sources_a.get("split") != sources_b.get("split"):
        return False
    for key in ("babi", "noise"):
        if digests_a.get(key) and digests_b.get(key):
            if digests_a[key] != digests_b[key]:
                return False
        elif sources_a.get(key) != sources_b.get(key):
            return False
    return True


SAME_DRAW = ("task", "seed", "eval_seed_offset", "segment_size")  # with same_sources: the same samples


def draw_difference(a: dict, b: dict) -> str | None:
    """None when two results drew the same samples (SAME_DRAW and same_sources), else what differs, as
    "seed: 0 against 3"."""
    for key in SAME_DRAW:
        if a.get(key) != b.get(key):
            return f"{key}: {a.get(key)!r} against {b.get(key)!r}"
    if not same_sources(a, b):
        return (f"sources: {a.get('sources')!r} against {b.get('sources')!r}, or files of those names with other "
                "bytes")
    return None


def evaluate(model, task: str | None = None, segments=(1, 2, 4), samples: int = 100, *, batch_size: int = 64,
             seed: int = 0, babi_file=None, babi_dir=None, noise_file=None, split: str = "test",
             progress: bool = True, max_batch_tokens: int = MAX_BATCH_TOKENS, rank: int = 0, world: int = 1,
             autocast: str | None = None, first_sample: int = 0) -> dict:
    """Accuracy of `model` on `samples` fresh samples of `task` at each number of segments in `segments`.

    task: None uses the model's own task (config.task). Samples come from `TaskBuilder` with the model's
    tokenizer and segment size; `seed` picks a reproducible set (see `eval_sample_seed`). Returns the results
    dict described in the module docstring. A decoder RMT answers by generation: a sample counts as correct when
    the greedily generated tokens are exactly its answer tokens (the answer, then the end-of-answer token).

    rank, world: this process's share of several (torchrun / accelerate; torch.distributed initialised). The
    batches of `batch_plan` are dealt out in turn (batch b to rank b % world), each built from the same
    sample indexes as in one process, and the counts and wrong seeds are gathered at the end: every rank
    returns the results one process would give (give a smaller batch size when there are fewer batches than
    processes). autocast: "bfloat16" runs the backbone under torch.autocast in bfloat16 (opt in: it can
    change predictions); None keeps the weights' own dtype.
    first_sample: evaluate sample indexes first_sample .. first_sample + samples - 1 instead of 0 .. samples - 1,
    so that a long length can be evaluated in pieces (scripts/merge_eval.py pools pieces that follow one another
    into the row one run of them all writes).
    """
    from rmt_core.babilong import check_task, make_builder
    from rmt_core.checkpoint import portable_path
    from rmt_core.tasks import check_sample_size

    if getattr(model, "tokenizer", None) is None:
        raise CheckpointError("the model has no tokenizer attached; load it with load_checkpoint")
    task = task or model.config.task
    check_task(task, getattr(model.config, "architecture", "encoder"))
    lengths = _check_lengths(segments)
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= MAX_SAMPLES:
        raise TaskError(f"samples must be a whole number from 1 to {MAX_SAMPLES:,}, got {samples!r}; "
                        "give --samples 100")
    if (isinstance(first_sample, bool) or not isinstance(first_sample, int)
            or not 0 <= first_sample <= MAX_FIRST_SAMPLE):
        raise TaskError(f"the first sample must be a whole number from 0 to {MAX_FIRST_SAMPLE:,}, got "
                        f"{first_sample!r}; give --first-sample 100 to go on after 100 samples")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise TaskError(f"batch size must be a whole number >= 1, got {batch_size!r}; give --batch-size 64")
    _check_share(rank, world)
    if autocast not in AUTOCAST_DTYPES:
        raise TaskError(f"autocast must be one of {', '.join(map(str, AUTOCAST_DTYPES))}, got {autocast!r}; "
                        "give --dtype bfloat16 or leave it out")
    segment_size = model.config.segment_size
    for n in lengths:  # every length is checked before the first is evaluated
        check_sample_size(n, segment_size)
    builder = make_builder(task, model.tokenizer, segment_size, babi_file=babi_file, babi_dir=babi_dir,
                           noise_file=noise_file, split=split)
    decoder = getattr(model.config, "architecture", "encoder") == "decoder"
    was_training = model.training
    model.eval()
    device = model.device
    started = time.perf_counter()
    plans = {n: batch_plan(samples, n, segment_size, batch_size, max_batch_tokens) for n in lengths}
    mine = {n: [b for b in range(len(plan)) if b % world == rank] for n, plan in plans.items()}
    bar = _progress_bar(progress and rank == 0, total=sum(n * sum(plans[n][b] for b in mine[n]) for n in lengths),
                        task=task)
    shares = []  # per length: (correct, [(index, seed) wrong], seconds, peak) of this rank's batches
    try:
        with _autocast(device, autocast):
            for n in lengths:
                length_started = time.perf_counter()
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                correct, wrong = 0, []
                done = 0
                starts = first_sample + np.cumsum([0] + plans[n])
                for b in mine[n]:
                    size, first = plans[n][b], int(starts[b])
                    ids = np.empty((size, n * segment_size), dtype=np.int32)  # (B, N * S)
                    labels = np.empty(size, dtype=np.int64)
                    seeds = [eval_sample_seed(seed, n, first + j) for j in range(size)]
                    answers = np.zeros((size, n * segment_size), dtype=bool) if decoder else None
                    for j, sample_seed in enumerate(seeds):
                        sample = builder.sample(n, sample_seed)
                        ids[j] = sample.input_ids
                        labels[j] = sample.answer
                        if decoder:
                            answers[j, sample.answer_span[0]:sample.answer_span[1]] = True
                        del sample  # its Python lists are 8x the int32 row
                    if decoder:
                        hits = _generated_hits(model, ids, answers)
                    else:
                        predictions = predict_batch(model, ids, n, segment_size).argmax(dim=-1).cpu().numpy()
                        hits = predictions == labels
                    correct += int(hits.sum())
                    wrong.extend((first + j, s) for j, (s, hit) in enumerate(zip(seeds, hits)) if not hit)
                    done += size
                    if bar is not None:
                        bar.update(n * size)
                        bar.set_postfix_str(f"{n} seg: {correct}/{done}")
                shares.append((correct, wrong, time.perf_counter() - length_started, _cuda_peak(device)))
    finally:
        if bar is not None:
            bar.close()
        if was_training:
            model.train()
    if world > 1:
        shares = _gather_shares(shares, world)
    rows = []
    for n, (correct, wrong, seconds, peak) in zip(lengths, shares):
        low, high = wilson_interval(correct, samples)
        rows.append({"segments": n, "tokens": n * segment_size, "accuracy": correct / samples,
                     "samples": samples, "correct": correct, "ci_low": low, "ci_high": high,
                     "seconds": round(seconds, 3),
                     "wrong_seeds": [s for _, s in sorted(wrong)][:MAX_WRONG_SEEDS],
                     "wrong_indexes": sorted(i for i, _ in wrong),
                     **({"first_sample": first_sample} if first_sample else {}),
                     "peak_memory_bytes": peak})
    peaks = [row["peak_memory_bytes"] for row in rows if row["peak_memory_bytes"] is not None]
    return {
        "results": rows,
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "task": task,
        "architecture": "decoder" if decoder else "encoder",
        "metric": "exact match of the generated answer" if decoder else "accuracy of the answer head",
        "checkpoint": model_identity(model),
        "segment_size": segment_size,
        "num_mem_tokens": model.num_mem_tokens,
        "trained_segments": model.config.trained_segments,
        "sources": {"babi": portable_path(builder.babi_path) if builder.babi_path else "builtin",
                    "noise": portable_path(builder.noise.name),
                    "split": split},
        "source_sha256": source_digests(builder.babi_path, builder.noise.name),
        "seed": seed,
        "eval_seed_offset": EVAL_SEED_OFFSET,
        "sample_seeds": "sample_seed(eval_seed_offset + seed, segments * 2**32 + index)",
        "batch_size": batch_size,
        "device": str(device),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        **({"autocast": autocast} if autocast else {}),
        **({"processes": world} if world > 1 else {}),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 3),
        "peak_memory_bytes": max(peaks) if peaks else None,
    }


def _check_share(rank, world) -> None:
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (rank, world)) or not 0 <= rank < world:
        raise TaskError(f"rank {rank!r} of world {world!r} is not a process of the run; launch with torchrun")
    if world > 1 and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise TaskError(f"evaluating as rank {rank} of {world} processes needs torch.distributed initialised; "
                        "launch with torchrun or accelerate launch")


def _gather_shares(shares: list, world: int) -> list:
    """Every rank's per-length (correct, wrong, seconds, peak), summed over ranks (seconds, peak: the largest)."""
    everyone = [None] * world
    torch.distributed.all_gather_object(everyone, shares)
    merged = []
    for per_length in zip(*everyone):
        peaks = [p for *_, p in per_length if p is not None]
        merged.append((sum(c for c, *_ in per_length), [w for _, wrong, *_ in per_length for w in wrong],
                       max(s for _, _, s, _ in per_length), max(peaks) if peaks else None))
    return merged


def _autocast(device: torch.device, dtype: str | None):
    """torch.autocast in `dtype` on the model's device, or nothing (None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, dtype))


@torch.inference_mode()
def _generated_hits(model, ids: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """(B,) bool: a decoder's greedy answers against the answer tokens (answers: (B, L) True at them)."""
    from rmt_core.decoder import exact_matches

    device = model.device
    return exact_matches(model, torch.as_tensor(ids, dtype=torch.long, device=device),
                         torch.as_tensor(answers, device=device)).cpu().numpy()


def _cuda_peak(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def _progress_bar(progress: bool, total: int, task: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    # disable=None: shown on a terminal, silent when stderr is a file or pipe.
    return tqdm(total=total, desc=f"eval {task}", unit="seg", unit_scale=True, disable=None, dynamic_ncols=True)


# ----- results files ---------------------------------------------------------------------------------------
def read_results(path: str | Path) -> dict:
    """An eval.json (or any results file) checked for the SPEC format; TaskError on a bad file."""
    path = Path(path)
    data = read_json(path, TaskError, f"write it with rmt eval --json {path}", "run rmt eval again")
    rows = data.get("results") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(
            isinstance(r, dict) and {"segments", "accuracy"} <= set(r) for r in rows):
        raise TaskError(f"{path} has no results list of {{segments, accuracy, ...}}; run rmt eval again")
    return data


def results_table(result: dict) -> str:
    """The results as a text table: segments, tokens, accuracy with its 95% interval, samples, seconds."""
    lines = [f"{'segments':>8} {'tokens':>10} {'accuracy':>9} {'95% CI':>15} {'samples':>8} {'seconds':>8}"]
    for row in result["results"]:
        ci = f"{100 * row.get('ci_low', 0):.1f}-{100 * row.get('ci_high', 1):.1f}" if "ci_low" in row else ""
        lines.append(f"{row['segments']:>8,} {row['tokens']:>10,} {100 * row['accuracy']:>8.1f}% {ci:>15} "
                     f"{row['samples']:>8} {row.get('seconds', float('nan')):>8.1f}")
    return "\n".join(lines)


# ----- trained length against evaluated length (Figure 5) --------------------------------------------------
def find_stage_checkpoints(root: str | Path) -> dict[int, Path]:
    """Curriculum stage checkpoints under a training folder (`stages/*/config.json`), or the folders given,
    keyed by their `rmt.trained_segments`; a later stage with the same length replaces an earlier one."""
    from rmt_core.checkpoint import read_config

    root = Path(root)
    candidates = sorted(p.parent for p in root.glob("stages/*/config.json"))
    if not candidates:
        candidates = sorted(p.parent for p in root.glob("*/config.json"))
    if not candidates and (root / "config.json").is_file():
        candidates = [root]
    found: dict[int, Path] = {}
    for folder in candidates:
        try:
            found[int(read_config(folder)["rmt"]["trained_segments"])] = folder
        except (CheckpointError, TypeError, ValueError):
            continue
    if not found:
        raise CheckpointError(f"no stage checkpoints under {root}; give a training output folder (with stages/)")
    return dict(sorted(found.items()))


def length_matrix(stage_checkpoints: dict[int, str | Path], task: str | None = None, segments=tuple(range(1, 9)),
                  samples: int = 100, *, device=None, progress: bool = True, **evaluate_kwargs) -> dict:
    """Accuracy of each curriculum stage (trained length) at each evaluated length: the paper's Figure 5.

    Returns {"task", "trained": [..], "evaluated": [..], "accuracy": [[0..1]] (rows trained, columns
    evaluated), "unit": "fraction", "runs": {trained: evaluate() result}}.
    """
    from rmt_core.checkpoint import load_checkpoint

    evaluated = _check_lengths(segments)
    trained, accuracy, runs = [], [], {}
    for length, folder in sorted(stage_checkpoints.items()):
        model = load_checkpoint(folder, device=device)
        result = evaluate(model, task, evaluated, samples, progress=progress, **evaluate_kwargs)
        task = task or result["task"]
        del model
        by = {row["segments"]: row["accuracy"] for row in result["results"]}
        trained.append(int(length))
        accuracy.append([by[n] for n in evaluated])
        runs[int(length)] = result
    return {"task": task, "trained": trained, "evaluated": evaluated, "accuracy": accuracy, "unit": "fraction",
            "runs": runs}


# ----- figures (pure: results in, plotly figure out) -------------------------------------------------------
def _rows(result) -> list[dict]:
    rows = result.get("results", []) if isinstance(result, dict) else list(result)
    return sorted(rows, key=lambda r: r["segments"])


def length_figure(eval_results: dict, paper: bool = True, trained: int | None = None):
    """Accuracy (%) against evaluated segments (log2 x-axis) for each named results dict, with its 95%
    interval, and the paper's curve dashed beside ours for each task shown.

    eval_results: name -> an `evaluate` result (or its "results" list). paper: draw the paper's curve of
    the checkpoint trained on `trained` segments (default 7, the paper's headline models).
    """
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    from rmt_core import paper as published

    figure = go.Figure()
    tasks, longest = [], 1
    palette = qualitative.Plotly
    for i, (name, result) in enumerate(eval_results.items()):
        rows = _rows(result)
        if not rows:
            continue
        color = palette[i % len(palette)]
        x = [r["segments"] for r in rows]
        y = [100 * r["accuracy"] for r in rows]
        longest = max(longest, max(x))
        has_ci = all("ci_low" in r for r in rows)
        error = dict(type="data", symmetric=False, array=[100 * r["ci_high"] - v for r, v in zip(rows, y)],
                     arrayminus=[v - 100 * r["ci_low"] for r, v in zip(rows, y)], thickness=1) if has_ci else None
        figure.add_trace(go.Scatter(
            x=x, y=y, name=name, mode="lines+markers", line=dict(color=color), error_y=error,
            customdata=[[r.get("tokens"), r.get("samples")] for r in rows],
            hovertemplate="%{x} segments (%{customdata[0]:,} tokens): %{y:.1f}% of %{customdata[1]}<extra>"
                          + name + "</extra>"))
        task = result.get("task") if isinstance(result, dict) else None
        if task and task not in tasks:
            tasks.append(task)
    if paper:
        length = trained or published.HEADLINE_TRAINED_SEGMENTS
        for task in tasks or list(published.HEADLINE):
            x, y = published.curve(task, length)
            if x:
                longest = max(longest, max(x))
                figure.add_trace(go.Scatter(x=x, y=y, name=f"paper: {task}, trained on {length}",
                                            mode="lines+markers", line=dict(dash="dash", color="grey"),
                                            marker=dict(symbol="circle-open")))
    ticks = [2**k for k in range(0, max(1, math.ceil(math.log2(max(longest, 2)))) + 1)]
    figure.update_xaxes(type="log", tickvals=ticks, ticktext=[f"{t:,}" for t in ticks],
                        title_text="evaluated segments")
    figure.update_yaxes(range=[0, 101], title_text="accuracy (%)")
    figure.update_layout(title="Accuracy against input length", template="plotly_white")
    return figure


def length_matrix_figure(matrix: dict, title: str | None = None):
    """Heatmap of accuracy (%) by trained length (rows) and evaluated length (columns), as the paper's
    Figure 5. matrix: a `length_matrix` result or `rmt_core.paper.matrix(task)`."""
    import plotly.graph_objects as go

    scale = 100.0 if matrix.get("unit", "fraction") == "fraction" else 1.0
    z = [[None if v is None else scale * v for v in row] for row in matrix["accuracy"]]
    text = [["" if v is None else f"{v:.0f}" for v in row] for row in z]
    figure = go.Figure(go.Heatmap(
        z=z, x=[str(n) for n in matrix["evaluated"]], y=[str(n) for n in matrix["trained"]], text=text,
        texttemplate="%{text}", zmin=0, zmax=100, colorscale="Viridis", colorbar=dict(title="accuracy %"),
        hovertemplate="trained on %{y}, evaluated on %{x} segments: %{z:.1f}%<extra></extra>"))
    figure.update_xaxes(type="category", title_text="evaluated segments")
    figure.update_yaxes(type="category", title_text="trained segments")
    figure.update_layout(title=title or f"Trained against evaluated length ({matrix.get('task', '')})",
                         template="plotly_white")
    return figure
