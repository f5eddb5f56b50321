"""Why memory fails at length: how the memory of encoder checkpoints drifts in noise after the fact, and where
the answer is lost. Writes drift.json (every number) and PNG figures into --out; prints a markdown section for
docs/findings.md, every number read back from drift.json.

    .venv/bin/python scripts/drift_findings.py --samples 200 --max-distance 512 \
        --trace memorize=runs/memorize-31936 --trace-segments 4096 \
        --babi-dir ../shared/data/babi/en-10k --noise-file ../shared/data/quality/questions.dev.txt \
        --out docs/figures/drift

For each checkpoint (default: checkpoints/memorize, detect, reason):

1. Samples. `rmt eval`'s held-out sample seeds (`eval_sample_seed`, test split of --babi-dir), kept when every
   fact lands in the first F segments (F = --max-fact-segment, default trained_segments - 1; memorize: 0), with
   N = F + D + 2 segments (D = --max-distance), so every sample reads D noise segments after its last fact
   before its question segment. Distance d after the fact means: the memory written by segment f + d, where f
   is the sample's last fact segment (d = 0: the memory written right after the fact, the reference).
2. One pass of the recurrence (rmt_core.recurrence.run) over segments 0..N-2 (the question segment left out):
   per sample and distance d = 0..D, cosine and L2 distance from the reference, the memory's norm, each slot's
   norm and cosine with its reference slot, and the change a segment makes. Memory states are kept at the
   log-spaced distances 0, 1, 2, 4, ..., D.
3. At those distances: the answer probe (probes.linear.probe_grid: all slots and each slot, with its control
   task), fit on one half of the samples and scored on the other, then the halves swapped, so every sample is
   scored once by a probe that did not see it; accuracy with a Wilson 95% interval (rmt_core.stats). Also the
   probe fit at d = 0 read at every d (does the answer stay where it was written?), the spread of the samples'
   memories and the separation of the answer classes, and the model's own answer with the question put right
   there: the sample's question segment run from the memory at distance d.
4. One long trace (`--trace NAME=DIR`, else recorded by rmt_core.replay with --trace-segments segments and a
   seed whose facts land in the first F segments): rmt_core.trace_stats per segment (cosine with the memory
   after the fact, norm, change, the head's answer probability), plus L2 distance, slot norms and the model's
   answer with the question at (every k-th) distance, to show where that sample's answer is lost.
5. The model's own accuracy by length, read from the checkpoint's eval.json (not rerun).

Reruns reuse the finished checkpoints in drift.json (same settings and weights); --report only prints the
markdown from an existing drift.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rmt_core.checkpoint import portable_command, portable_path
from rmt_core.errors import RMTError

FORMAT = "rmt-lens-drift"
VERSION = 3  # raise when a measure changes: drift.json's finished checkpoints are then computed again
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINTS = ("memorize", "detect", "reason")
GRID_PER_OCTAVE = 4  # trace values kept at this many log-spaced distances per doubling
SWITCH_COSINE = 0.5  # a memory with a lower cosine with the memory right after the fact has "switched"


class DriftError(RMTError):
    """Bad arguments or inputs of the drift findings."""


def log(message: str) -> None:
    print(f"[drift {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----- distances and samples ----------------------------------------------------------------------------------
def log_distances(max_distance: int) -> list[int]:
    """0, 1, 2, 4, ... up to max_distance (included even when it is not a power of two)."""
    if max_distance < 0:
        raise DriftError(f"--max-distance must be 0 or more, got {max_distance}")
    out, d = [0], 1
    while d <= max_distance:
        out.append(d)
        d *= 2
    if out[-1] != max_distance:
        out.append(max_distance)
    return out


def grid_distances(max_distance: int, per_octave: int = GRID_PER_OCTAVE) -> list[int]:
    """Log-spaced distances 0..max_distance, about per_octave a doubling, with every power of two."""
    points = {0, max_distance} | set(log_distances(max_distance))
    if max_distance > 0:
        count = per_octave * max(1, int(math.log2(max_distance))) + 1
        points |= {int(round(x)) for x in np.geomspace(1, max_distance, count)}
    return sorted(p for p in points if 0 <= p <= max_distance)


def predicted_fact_segments(builder, task: str, n_segments: int, seed: int) -> list[int]:
    """The segments a sample's facts will land in, drawn as TaskBuilder.sample draws them (verified later)."""
    if task == "memorize":
        return [0]
    rng = random.Random(seed)
    item = builder._item(rng)
    return [rng.randrange(n_segments) for _ in item.facts]


def pick_samples(builder, task: str, n_segments: int, count: int, max_fact_segment: int, seed: int = 0,
                 max_tries: int = 50_000_000) -> list:
    """`count` of rmt eval's held-out samples of n_segments whose facts all land in segments 0..max_fact_segment."""
    from rmt_core.evaluate import eval_sample_seed

    seeds, index = [], 0
    while len(seeds) < count:
        if index >= max_tries:
            raise DriftError(f"only {len(seeds)} of {max_tries:,} sample seeds put the facts in the first "
                             f"{max_fact_segment + 1} segments; give a larger --max-fact-segment or fewer --samples")
        s = eval_sample_seed(seed, n_segments, index)
        if max(predicted_fact_segments(builder, task, n_segments, s)) <= max_fact_segment:
            seeds.append(s)
        index += 1
    samples = [builder.sample(n_segments, s) for s in seeds]
    for sample in samples:
        if max(f.segment for f in sample.facts) > max_fact_segment:
            raise DriftError("the task builder placed a fact later than its seed predicted; "
                             "drift_findings.predicted_fact_segments no longer follows TaskBuilder.sample")
    return samples


# ----- the pass over the samples ------------------------------------------------------------------------------
def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of a and b (..., f)."""
    num = np.einsum("...i,...i->...", a, b, dtype=np.float64)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return num / np.maximum(den, 1e-12)


@torch.no_grad()
def drift_pass(model, samples, distances: list[int], batch_size: int = 100, progress: bool = True) -> dict:
    """Run segments 0..N-2 of the samples and measure the memory at every distance 0..D after each sample's last
    fact (D = max(distances)). Returns arrays: cos, l2, norm, change [K, D+1]; slot_norm, slot_cos [K, D+1, m];
    kept [K, J, m, d] (the memory at each of `distances`); fact [K] the last fact segment."""
    from rmt_core.inputs import SegmentBatch
    from rmt_core.recurrence import run

    K, N, S = len(samples), samples[0].n_segments, samples[0].segment_size
    D, m, h = max(distances), model.num_mem_tokens, model.hidden_size
    fact = np.array([max(f.segment for f in s.facts) for s in samples], dtype=np.int64)
    if int(fact.max()) + D > N - 2:
        raise DriftError(f"samples of {N} segments with facts up to segment {int(fact.max())} cannot reach distance "
                         f"{D} before the question segment; build them with {int(fact.max()) + D + 2} segments")
    where = {d: j for j, d in enumerate(distances)}
    out = {name: np.full((K, D + 1), np.nan, dtype=np.float32) for name in ("cos", "l2", "norm", "change")}
    out["slot_norm"] = np.full((K, D + 1, m), np.nan, dtype=np.float32)
    out["slot_cos"] = np.full((K, D + 1, m), np.nan, dtype=np.float32)
    out["kept"] = np.zeros((K, len(distances), m, h), dtype=np.float32)
    ids = np.array([s.input_ids for s in samples], dtype=np.int64)
    stop = int(fact.max()) + D + 1  # segments 0..stop-1 reach distance D for every sample
    for first in range(0, K, batch_size):
        rows = slice(first, min(K, first + batch_size))
        f = fact[rows]
        batch = SegmentBatch.from_ids(torch.as_tensor(ids[rows]), S)
        reference = np.zeros((len(f), m, h), dtype=np.float32)

        def segment_done(step, f=f, rows=rows, reference=reference):
            d = step.t - f  # (B,) distance of each row after its fact
            live = np.flatnonzero((d >= 0) & (d <= D))
            if not len(live):
                return
            after = step.memory_out.float().cpu().numpy()
            before = step.memory_in.float().cpu().numpy()
            fresh = live[d[live] == 0]
            reference[fresh] = after[fresh]
            k, dd = rows.start + live, d[live]
            a, r = after[live], reference[live]
            out["cos"][k, dd] = _cosine(a.reshape(len(live), -1), r.reshape(len(live), -1))
            out["l2"][k, dd] = np.linalg.norm((a - r).reshape(len(live), -1), axis=1)
            out["norm"][k, dd] = np.linalg.norm(a.reshape(len(live), -1), axis=1)
            out["change"][k, dd] = np.linalg.norm((a - before[live]).reshape(len(live), -1), axis=1)
            out["slot_norm"][k, dd] = np.linalg.norm(a, axis=2)
            out["slot_cos"][k, dd] = _cosine(a, r)
            for i, row in enumerate(live):
                j = where.get(int(dd[i]))
                if j is not None:
                    out["kept"][rows.start + row, j] = a[i]

        run(model, batch, stop=stop, on_segment=segment_done, progress=progress)
    out["fact"] = fact
    return out


@torch.no_grad()
def question_logits(model, states: np.ndarray, question_ids: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The answer head's logits [K, C] when question segments `question_ids` [K, S] (or one [S] for all) are
    read from memory states [K, m, d]: the model's answer with the question put right after those states."""
    from rmt_core.inputs import SegmentBatch
    from rmt_core.recurrence import run

    states = np.asarray(states, dtype=np.float32)
    question_ids = np.asarray(question_ids, dtype=np.int64)
    if question_ids.ndim == 1:
        question_ids = np.broadcast_to(question_ids, (len(states), len(question_ids)))
    dtype = next(model.parameters()).dtype
    out = []
    for first in range(0, len(states), batch_size):
        rows = slice(first, first + batch_size)
        ids = torch.tensor(question_ids[rows])  # a copy: the rows may be a broadcast view
        batch = SegmentBatch.from_ids(ids, question_ids.shape[1])
        memory = torch.as_tensor(states[rows], dtype=dtype, device=model.device)
        out.append(run(model, batch, memory=memory).logits.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(model.config.labels)), dtype=np.float32)


# ----- measures at the kept distances --------------------------------------------------------------------------
def _rate(correct: int, total: int) -> dict:
    from rmt_core.stats import wilson_interval

    low, high = wilson_interval(int(correct), int(total))
    return {"correct": int(correct), "total": int(total), "accuracy": correct / total if total else None,
            "ci_low": low, "ci_high": high}


def spread(states: np.ndarray, labels: np.ndarray) -> dict:
    """How far the samples' memories [K, m, d] lie apart: mean distance to their mean (and relative to the mean
    norm), and the answer classes' separation (RMS distance of class means from the overall mean / RMS distance
    of samples from their class mean)."""
    x = states.reshape(len(states), -1).astype(np.float64)
    centre = x.mean(axis=0)
    dispersion = float(np.linalg.norm(x - centre, axis=1).mean())
    norm = float(np.linalg.norm(x, axis=1).mean())
    classes = np.unique(labels)
    means = {c: x[labels == c].mean(axis=0) for c in classes}
    between = math.sqrt(float(np.mean([np.sum((means[c] - centre) ** 2) for c in classes])))
    within = math.sqrt(float(np.mean([np.sum((x[k] - means[labels[k]]) ** 2) for k in range(len(x))])))
    return {"dispersion": dispersion, "mean_norm": norm, "relative_dispersion": dispersion / max(norm, 1e-12),
            "class_separation": between / max(within, 1e-12)}


def probe_distances(kept: np.ndarray, samples, distances: list[int], seed: int = 0, max_iter: int = 200) -> dict:
    """Answer probes at each kept distance, two-fold (fit on one half, score the other, then swap).

    Returns {"all": [row per distance], "slots": [[row per slot] per distance], "fixed": [row per distance]}:
    rows of correct, total, accuracy, ci_low, ci_high (Wilson over all scored samples), control and majority
    accuracy; `fixed` is the probe fit at distance 0 read at every distance, and "fixed_predictions" [K, J] its
    predictions (each sample by the probe of the half it was not in)."""
    from threadpoolctl import threadpool_limits

    from probes.linear import fit_probe, probe_grid, split_samples
    from probes.targets import Target, build_targets

    if distances[0] != 0:
        raise DriftError("the kept distances must start at 0 (the memory right after the fact)")
    K, J, m, h = kept.shape
    answer = build_targets(samples, seed=seed, names=("answer",))["answer"]
    target = Target("answer", answer.classes, answer.labels[:, :1].repeat(J, axis=1),
                    answer.control[:, :1].repeat(J, axis=1), answer.description)
    states = np.concatenate([np.zeros((K, 1, m, h), dtype=np.float32), kept], axis=1)  # [:, j+1]: distance j
    a, b = split_samples(K, 0.5, seed)
    folds = [(a, b), (b, a)]
    tally: dict = {}
    for fit, test in folds:
        for record in probe_grid(states, {"answer": target}, fit, test, slots=True, max_iter=max_iter):
            key = (record["segment"], record["slot"])
            entry = tally.setdefault(key, {"correct": 0, "control": 0, "majority": 0, "total": 0})
            n = record["n_test"]
            entry["correct"] += int(round(record["accuracy"] * n))
            entry["control"] += int(round(record["control_accuracy"] * n))
            entry["majority"] += int(round(record["majority"] * n))
            entry["total"] += n

    def row(entry: dict, distance: int) -> dict:
        return {"distance": distance, **_rate(entry["correct"], entry["total"]),
                "control_accuracy": entry["control"] / entry["total"], "majority": entry["majority"] / entry["total"]}

    y = target.labels[:, 0]
    fixed_predictions = np.zeros((K, J), dtype=np.int64)
    with threadpool_limits(limits=1):
        for fit, test in folds:
            x_fit = kept[fit, 0].reshape(len(fit), -1)
            x_test = kept[test].reshape(len(test) * J, -1)  # every distance of the scored half
            fixed_predictions[test] = fit_probe(x_fit, y[fit], x_test, max_iter).reshape(len(test), J)
    fixed = (fixed_predictions == y[:, None]).sum(axis=0)
    return {
        "all": [row(tally[(j, "all")], d) for j, d in enumerate(distances)],
        "slots": [[row(tally[(j, s)], d) for s in range(m)] for j, d in enumerate(distances)],
        "fixed": [{"distance": d, **_rate(int(fixed[j]), K)} for j, d in enumerate(distances)],
        "fixed_predictions": fixed_predictions,
    }


def _quantiles(values: np.ndarray) -> dict:
    """Median and quartiles over samples (axis 0) of values [K, ...], as lists."""
    q25, q50, q75 = np.nanpercentile(values.astype(np.float64), [25, 50, 75], axis=0)
    return {"q25": q25.tolist(), "median": q50.tolist(), "q75": q75.tolist()}


def _first_switch(cos: np.ndarray, max_distance: int) -> dict:
    """How many samples first fall below SWITCH_COSINE in each window of distances (0, 1, 2-3, 4-7, ...)."""
    below = cos < SWITCH_COSINE
    first = np.where(below.any(axis=1), below.argmax(axis=1), -1)
    windows = [(0, 0)] + [(2 ** k, min(max_distance, 2 ** (k + 1) - 1))
                          for k in range(int(math.log2(max_distance)) + 1 if max_distance else 0)]
    return {"windows": [{"from": lo, "to": hi, "count": int(((first >= lo) & (first <= hi)).sum())}
                        for lo, hi in windows],
            "never": int((first < 0).sum())}


def first_distance(rows: list[dict], test) -> int | None:
    """The first row's distance for which test(row) holds (None when none does)."""
    return next((r["distance"] for r in rows if test(r)), None)


def sample_findings(model, samples, distances: list[int], batch_size: int, seed: int, progress: bool) -> dict:
    """Everything measured on the samples (see the module docstring, steps 2 and 3)."""
    K, N, S = len(samples), samples[0].n_segments, samples[0].segment_size
    measured = drift_pass(model, samples, distances, batch_size=batch_size, progress=progress)
    kept = measured["kept"]
    labels = np.array([s.answer for s in samples], dtype=np.int64)
    log(f"  probes at {len(distances)} distances on {K} samples")
    probes = probe_distances(kept, samples, distances, seed=seed)
    questions = np.array([s.input_ids[(N - 1) * S:] for s in samples], dtype=np.int64)
    asked, switched = [], []
    for j, d in enumerate(distances):
        predicted = question_logits(model, kept[:, j], questions).argmax(axis=1)
        fixed = probes["fixed_predictions"][:, j]
        right = predicted == labels
        asked.append({"distance": d, **_rate(int(right.sum()), K),
                      "same_as_probe_from_0": int((predicted == fixed).sum()),  # the model and the d=0 probe agree
                      "both_right": int((right & (fixed == labels)).sum())})
        away = measured["cos"][:, d] < SWITCH_COSINE
        switched.append({"distance": d, "switched": int(away.sum()), "switched_right": int((away & right).sum()),
                         "held": int((~away).sum()), "held_right": int((~away & right).sum())})
    spreads = [{"distance": d, **spread(kept[:, j], labels)} for j, d in enumerate(distances)]
    majority = float(np.bincount(labels).max() / K)
    facts = measured["fact"]
    grid = sorted(set(grid_distances(max(distances))) | set(distances))  # the per-distance measures kept
    return {
        "samples": K, "n_segments": N, "seeds": [s.seed for s in samples],
        "fact_segments": {str(f): int((facts == f).sum()) for f in sorted(set(facts.tolist()))},
        "answer_majority": majority,
        "by_distance": {"distance": grid,
                        **{name: _quantiles(measured[name][:, grid]) for name in ("cos", "l2", "norm", "change")},
                        "slot_norm": _quantiles(measured["slot_norm"][:, grid]),
                        "slot_cos": _quantiles(measured["slot_cos"][:, grid])},
        "kept_distances": distances,
        "probe": probes["all"], "probe_slots": probes["slots"], "fixed_probe": probes["fixed"],
        "question": asked, "spread": spreads,
        "switch": {"cosine": SWITCH_COSINE, "by_distance": switched,
                   "first_switch": _first_switch(measured["cos"], max(distances))},
        "summary": {
            "probe_below_half": first_distance(probes["all"], lambda r: r["accuracy"] < 0.5),
            "question_below_half": first_distance(asked, lambda r: r["accuracy"] < 0.5),
            "fixed_probe_below_half": first_distance(probes["fixed"], lambda r: r["accuracy"] < 0.5),
            "probe_at_chance": first_distance(probes["all"], lambda r: r["ci_low"] <= r["majority"]),
            "question_at_chance": first_distance(asked, lambda r: r["ci_low"] <= majority),
        },
    }


# ----- the long trace ---------------------------------------------------------------------------------------------
def question_segment(trace) -> np.ndarray:
    """The input tokens of the trace's last segment (noise and the question), special tokens left out."""
    from rmt_core.layout import INPUT_ROLES

    t = trace.n_segments - 1
    return np.asarray(trace.token_ids(t))[np.isin(trace.roles(t), INPUT_ROLES)]


def trace_findings(trace, model, max_questions: int = 8192, chunk_rows: int = 2048) -> dict:
    """Per-distance drift of one trace after its last fact (trace_stats plus L2, slot norms and the model's
    answer with the question at every k-th distance), at log-spaced distances and per doubling of distance."""
    from rmt_core.trace_stats import trace_stats

    stats = trace_stats(trace)
    n, ref = trace.n_segments, stats.reference_state
    if ref >= n:
        raise DriftError(f"{trace.path}: the fact is in the last segment; replay a sample whose facts come earlier")
    D = n - 1 - ref  # the state read by the question segment (index n - 1) is at distance D
    reference = np.asarray(trace.memory_rows(ref, ref + 1)[0], dtype=np.float64)
    initial = np.asarray(trace.memory_rows(0, 1)[0], dtype=np.float64).reshape(-1)
    m = trace.num_mem_tokens
    l2 = np.empty(D + 1)
    cos_initial = np.empty(D + 1)
    slot_norm = np.empty((D + 1, m))
    slot_cos = np.empty((D + 1, m))
    for start, block in trace.row_chunks("memory", chunk_rows):
        lo, hi = max(start, ref), min(start + len(block), n)
        if lo >= hi:
            continue
        states = np.asarray(block[lo - start:hi - start], dtype=np.float64)
        flat = states.reshape(len(states), -1)
        l2[lo - ref:hi - ref] = np.linalg.norm(flat - reference.reshape(-1), axis=1)
        cos_initial[lo - ref:hi - ref] = _cosine(flat, initial[None])
        slot_norm[lo - ref:hi - ref] = np.linalg.norm(states, axis=2)
        slot_cos[lo - ref:hi - ref] = _cosine(states, reference[None])
    cos = stats.similarity[ref:n].astype(np.float64)
    norm = stats.norm[ref:n].astype(np.float64)
    change = stats.change[ref - 1:n - 1].astype(np.float64)  # the segment that wrote each state
    head = stats.answer_probability[ref - 1:n - 1].astype(np.float64) if stats.answer_probability is not None else None

    stride = max(1, math.ceil((D + 1) / max_questions))
    question = question_segment(trace)
    asked, logits = [], []
    for a in range(0, D + 1, stride * 1024):  # memory states read a block at a time, every stride-th kept
        b = min(D + 1, a + stride * 1024)
        asked.extend(range(a, b, stride))
        logits.append(question_logits(model, trace.memory_rows(ref + a, ref + b)[::stride], question))
    if asked[-1] != D:  # the state the trace's own question segment read
        asked.append(D)
        logits.append(question_logits(model, trace.memory_rows(ref + D, ref + D + 1), question))
    logits = np.concatenate(logits)
    answer = int(trace.answer)
    correct = logits.argmax(axis=1) == answer
    others = np.delete(logits, answer, axis=1).max(axis=1)
    margin = logits[:, answer] - others
    reproduced = bool(np.allclose(logits[-1], trace.final_logits, atol=1e-3))

    grid = grid_distances(D)
    asked_at = {d: i for i, d in enumerate(asked)}
    points = []
    for d in grid:
        point = {"distance": d, "cos": cos[d], "l2": l2[d], "norm": norm[d], "change": change[d],
                 "cos_initial": cos_initial[d], "slot_norm": slot_norm[d].tolist(), "slot_cos": slot_cos[d].tolist(),
                 "head_probability": None if head is None else head[d]}
        i = asked_at.get(d)
        if i is not None:
            point.update(question_correct=bool(correct[i]), question_margin=float(margin[i]))
        points.append(point)
    asked_arr = np.array(asked)
    windows = []
    for lo in [0] + [2 ** k for k in range(int(math.log2(D)) + 1 if D else 0)]:
        hi = min(D, 2 * lo - 1) if lo else 0  # windows 0, 1, 2-3, 4-7, ...
        here = slice(lo, hi + 1)
        q = (asked_arr >= lo) & (asked_arr <= hi)
        windows.append({"from": lo, "to": hi, "cos_mean": cos[here].mean(), "l2_mean": l2[here].mean(),
                        "norm_mean": norm[here].mean(), "change_mean": change[here].mean(),
                        "slot_norm_mean": slot_norm[here].mean(axis=0).tolist(),
                        "questions": int(q.sum()), "question_correct": float(correct[q].mean()) if q.any() else None,
                        "margin_mean": float(margin[q].mean()) if q.any() else None})
    wrong = asked_arr[~correct]
    right = asked_arr[correct]
    late = slice(max(0, D - max(1, D // 2)), D + 1)  # the last half of the distances: where memory has settled
    late_states = trace.memory_rows(ref + late.start, ref + late.stop).reshape(late.stop - late.start, -1)
    late_mean = late_states.astype(np.float64).mean(axis=0)
    meta = trace.metadata
    return {
        "path": portable_path(trace.path), "n_segments": n, "n_tokens": trace.manifest.get("n_tokens"),
        "checkpoint": _portable_identity(trace.manifest.get("checkpoint")), "sources": meta.get("sources"),
        "seed": meta.get("seed"),
        "fact_segments": sorted({int(f["segment"]) for f in meta.get("facts") or []}),
        "question": meta.get("question"), "answer": trace.labels[answer],
        "final_prediction": trace.labels[int(trace.prediction)], "reference": stats.reference,
        "max_distance": D, "question_stride": stride, "questions_asked": len(asked),
        "final_logits_reproduced": reproduced,
        "grid": points, "windows": windows,
        "lost": {"first_wrong": int(wrong[0]) if len(wrong) else None,
                 "last_right": int(right[-1]) if len(right) else None,
                 "correct_fraction": float(correct.mean()),
                 "right_at_end": bool(correct[-1])},
        "settled": {"from": late.start, "to": D,
                    "spread": float(np.linalg.norm(late_states - late_mean, axis=1).mean()),
                    "reference_to_mean": float(np.linalg.norm(reference.reshape(-1) - late_mean)),
                    "initial_to_mean": float(np.linalg.norm(initial - late_mean)),
                    "initial_norm": float(np.linalg.norm(initial)),
                    "mean_norm": float(np.linalg.norm(late_mean)),
                    "change_mean": float(change[late].mean())},
    }


def record_trace(model, builder, task: str, segments: int, max_fact_segment: int, out: Path, seed: int) -> Path:
    """Replay one held-out sample of `segments` whose facts land in the first segments into trace folder `out`."""
    from rmt_core.replay import RecordingPolicy, replay

    sample = pick_samples(builder, task, segments, 1, max_fact_segment, seed=seed)[0]
    log(f"  recording {segments} segments of seed {sample.seed} (facts in {[f.segment for f in sample.facts]}) "
        f"into {out}")
    policy = RecordingPolicy(attention_budget_mib=0.0, edge_segments=2, fact_segments=True)
    replay(model, sample, out=out, policy=policy, progress=True, checkpoint_dir=getattr(model, "checkpoint_dir", None))
    return out


# ----- eval.json --------------------------------------------------------------------------------------------------
def _portable_identity(identity: dict | None) -> dict | None:
    """A trace's checkpoint identity with its path as `portable_path` writes it (older traces kept absolute ones)."""
    return None if identity is None else {**identity, "path": portable_path(identity.get("path"))}


def eval_rows(checkpoint: Path) -> dict | None:
    """The model's own accuracy by length, from the checkpoint's eval.json (None when it has none)."""
    path = Path(checkpoint) / "eval.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return {"file": portable_path(path), "sources": data.get("sources"),
            "rows": [{k: r.get(k) for k in ("segments", "accuracy", "samples", "correct", "ci_low", "ci_high")}
                     for r in data.get("results", [])]}


# ----- one checkpoint ---------------------------------------------------------------------------------------------
def checkpoint_findings(name: str, folder: Path, args, trace_dir: Path | None) -> dict:
    from rmt_core.babilong import make_builder
    from rmt_core.checkpoint import load_checkpoint, model_identity
    from rmt_core.trace import Trace

    model = load_checkpoint(folder, device="cpu")
    if getattr(model.config, "architecture", "encoder") != "encoder":
        raise DriftError(f"{folder} is a decoder checkpoint; these findings are for the encoder checkpoints")
    task = model.config.task
    trained = int(model.config.trained_segments or 1)
    F = 0 if task == "memorize" else (args.max_fact_segment if args.max_fact_segment is not None else trained - 1)
    distances = log_distances(args.max_distance)
    N = F + args.max_distance + 2
    builder = make_builder(task, model.tokenizer, model.config.segment_size, babi_dir=args.babi_dir,
                           noise_file=args.noise_file, split="test")
    log(f"{name}: picking {args.samples} samples of {N} segments with facts in segments 0..{F}")
    samples = pick_samples(builder, task, N, args.samples, F, seed=args.seed)
    started = time.time()
    found = sample_findings(model, samples, distances, args.batch_size, args.seed, progress=not args.quiet)
    sample_seconds = time.time() - started

    if trace_dir is None:
        trace_dir = Path(args.traces_dir) / f"{name}-{args.trace_segments}"
        if not (trace_dir / "manifest.json").is_file():
            record_trace(model, builder, task, args.trace_segments, F, trace_dir, args.seed)
    trace = Trace.open(trace_dir)
    identity = model_identity(model)
    if (trace.manifest.get("checkpoint") or {}).get("sha256") != identity.get("sha256"):
        raise DriftError(f"{trace_dir} was recorded with other weights than {folder}; give the trace of this "
                         "checkpoint (its manifest.json names it) or let the script record one")
    log(f"  trace {trace_dir}: {trace.n_segments} segments")
    started = time.time()
    traced = trace_findings(trace, model, max_questions=args.trace_questions)
    return {"name": name, "task": task, "checkpoint": identity, "trained_segments": trained,
            "max_fact_segment": F, "samples": found, "trace": traced, "eval": eval_rows(folder),
            "seconds": {"samples": round(sample_seconds, 1), "trace": round(time.time() - started, 1)}}


def _settings_key(name: str, folder: Path, args, trace: str | None) -> str:
    from rmt_core.checkpoint import checkpoint_identity

    parts = [FORMAT, VERSION, name, checkpoint_identity(folder).get("sha256"), args.samples, args.max_distance,
             args.max_fact_segment, args.seed, args.babi_dir, args.noise_file, args.trace_segments,
             args.trace_questions, trace]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


# ----- figures ----------------------------------------------------------------------------------------------------
def _log_axis(fig, max_distance: int, row=None, col=None) -> None:
    ticks = log_distances(max_distance)
    fig.update_xaxes(type="log", tickvals=[d + 1 for d in ticks], ticktext=[str(d) for d in ticks],
                     title_text="segments of noise after the fact (d)", row=row, col=col)


def figures(results: dict) -> dict:
    """name -> plotly figure, from drift.json's content."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from probes.figures import COLOURS, rgba

    out = {}
    for name, c in results["checkpoints"].items():
        s, t = c["samples"], c["trace"]
        x = [d + 1 for d in s["by_distance"]["distance"]]
        tx = [p["distance"] + 1 for p in t["grid"]]
        fig = make_subplots(rows=1, cols=2, subplot_titles=("cosine with the memory right after the fact",
                                                            "L2 distance from it"))
        for col, key in ((1, "cos"), (2, "l2")):
            q = s["by_distance"][key]
            fig.add_trace(go.Scatter(x=x + x[::-1], y=q["q75"] + q["q25"][::-1], fill="toself", mode="lines",
                                     line=dict(width=0), fillcolor=rgba(COLOURS[0], 0.2), hoverinfo="skip",
                                     showlegend=False), row=1, col=col)
            fig.add_trace(go.Scatter(x=x, y=q["median"], mode="lines", line=dict(color=COLOURS[0]),
                                     name=f"{s['samples']} samples: median, quartiles", showlegend=col == 1),
                          row=1, col=col)
            fig.add_trace(go.Scatter(x=tx, y=[p[key] for p in t["grid"]], mode="lines+markers",
                                     line=dict(color=COLOURS[1]), marker=dict(size=4),
                                     name=f"one trace, {t['n_segments']:,} segments", showlegend=col == 1),
                          row=1, col=col)
            _log_axis(fig, t["max_distance"], 1, col)
        fig.update_layout(title=f"{name}: memory drift after the fact", width=1100, height=450)
        out[f"{name}_distance"] = fig

        fig = make_subplots(rows=1, cols=2, subplot_titles=("norm of each slot (one trace)",
                                                            "cosine of each slot with itself after the fact"))
        m = len(t["grid"][0]["slot_norm"])
        palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                   "#bcbd22", "#17becf"]
        for k in range(m):
            colour = palette[k % len(palette)]
            fig.add_trace(go.Scatter(x=tx, y=[p["slot_norm"][k] for p in t["grid"]], mode="lines",
                                     line=dict(color=colour), name=f"slot {k}"), row=1, col=1)
            fig.add_trace(go.Scatter(x=tx, y=[p["slot_cos"][k] for p in t["grid"]], mode="lines",
                                     line=dict(color=colour), name=f"slot {k}", showlegend=False), row=1, col=2)
        _log_axis(fig, t["max_distance"], 1, 1)
        _log_axis(fig, t["max_distance"], 1, 2)
        fig.update_layout(title=f"{name}: memory slots after the fact ({t['n_segments']:,}-segment trace)",
                          width=1100, height=450)
        out[f"{name}_slots"] = fig

        fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4],
                            subplot_titles=(f"answer by distance ({s['samples']} samples)",
                                            "the trace: answer logit margin, question at d"))
        _answer_curves(fig, c, 1, 1, go)
        fig.add_hline(y=s["answer_majority"], line=dict(color="grey", dash="dash"), row=1, col=1)
        asked = [p for p in t["grid"] if "question_margin" in p]
        fig.add_trace(go.Scatter(x=[p["distance"] + 1 for p in asked], y=[p["question_margin"] for p in asked],
                                 mode="lines+markers", line=dict(color=COLOURS[1]), marker=dict(size=4),
                                 name="trace: true answer's logit minus best other"), row=1, col=2)
        fig.add_hline(y=0, line=dict(color="grey", dash="dot"), row=1, col=2)
        _log_axis(fig, s["kept_distances"][-1], 1, 1)
        _log_axis(fig, t["max_distance"], 1, 2)
        fig.update_yaxes(range=[0, 1.02], title_text="accuracy", row=1, col=1)
        fig.update_layout(title=f"{name}: where the answer is lost", width=1200, height=480)
        out[f"{name}_answer"] = fig

    fig = go.Figure()
    for i, (name, c) in enumerate(results["checkpoints"].items()):
        colour = COLOURS[i % len(COLOURS)]
        for key, dash, what in (("probe", "solid", "answer probe"), ("question", "dot", "model, question at d")):
            rows = c["samples"][key]
            fig.add_trace(go.Scatter(x=[r["distance"] + 1 for r in rows], y=[r["accuracy"] for r in rows],
                                     error_y=dict(type="data", symmetric=False,
                                                  array=[r["ci_high"] - r["accuracy"] for r in rows],
                                                  arrayminus=[r["accuracy"] - r["ci_low"] for r in rows]),
                                     mode="lines+markers", line=dict(color=colour, dash=dash),
                                     name=f"{name}: {what}"))
    first = next(iter(results["checkpoints"].values()))
    _log_axis(fig, first["samples"]["kept_distances"][-1])
    fig.update_yaxes(range=[0, 1.02], title_text="accuracy (95% Wilson CI)")
    fig.update_layout(title="Answer probe and the model's answer by distance after the fact", width=1100, height=500)
    out["answer_by_distance"] = fig
    return out


def before_after_figures(before: dict, after: dict, change: str = "further training") -> dict:
    """name -> plotly figure for each checkpoint name in both drift.json contents: the cosine with the memory
    right after the fact (median and quartiles) and the model's answer with the question at d, before and after."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from probes.figures import COLOURS, rgba

    out = {}
    for name in [n for n in after["checkpoints"] if n in before["checkpoints"]]:
        fig = make_subplots(rows=1, cols=2, subplot_titles=("cosine with the memory right after the fact "
                                                            "(median, quartiles)", "model's answer, question at d"))
        runs = (("before", before["checkpoints"][name], COLOURS[1]), ("after", after["checkpoints"][name], COLOURS[0]))
        for label, c, colour in runs:
            s = c["samples"]
            tag = f"{label}: {c['trained_segments']} trained segments, sha256 {c['checkpoint']['sha256'][:8]}"
            x = [d + 1 for d in s["by_distance"]["distance"]]
            q = s["by_distance"]["cos"]
            fig.add_trace(go.Scatter(x=x + x[::-1], y=q["q75"] + q["q25"][::-1], fill="toself", mode="lines",
                                     line=dict(width=0), fillcolor=rgba(colour, 0.2), hoverinfo="skip",
                                     showlegend=False), row=1, col=1)
            fig.add_trace(go.Scatter(x=x, y=q["median"], mode="lines", line=dict(color=colour), name=tag),
                          row=1, col=1)
            rows = s["question"]
            fig.add_trace(go.Scatter(x=[r["distance"] + 1 for r in rows], y=[r["accuracy"] for r in rows],
                                     error_y=dict(type="data", symmetric=False,
                                                  array=[r["ci_high"] - r["accuracy"] for r in rows],
                                                  arrayminus=[r["accuracy"] - r["ci_low"] for r in rows]),
                                     mode="lines+markers", line=dict(color=colour), showlegend=False), row=1, col=2)
        limit = max(c["samples"]["kept_distances"][-1] for _, c, _ in runs)
        _log_axis(fig, limit, 1, 1)
        _log_axis(fig, limit, 1, 2)
        fig.update_yaxes(range=[-1.02, 1.02], row=1, col=1)
        fig.update_yaxes(range=[0, 1.02], title_text="accuracy (95% Wilson CI)", row=1, col=2)
        fig.update_layout(title=f"{name}: memory after the fact, before and after {change}",
                          width=1200, height=480, legend=dict(orientation="h", y=-0.2))
        out[f"{name}_before_after"] = fig
    return out


def _answer_curves(fig, c: dict, row: int, col: int, go) -> None:
    from probes.figures import COLOURS, rgba

    s = c["samples"]
    for key, colour, label in (("probe", COLOURS[0], "answer probe, fit at d (all slots)"),
                               ("fixed_probe", COLOURS[2], "answer probe fit at d = 0, read at d"),
                               ("question", COLOURS[1], "model's answer, question right after d")):
        rows = s[key]
        x = [r["distance"] + 1 for r in rows]
        fig.add_trace(go.Scatter(x=x + x[::-1], y=[r["ci_high"] for r in rows] + [r["ci_low"] for r in rows][::-1],
                                 fill="toself", mode="lines", line=dict(width=0), fillcolor=rgba(colour, 0.15),
                                 hoverinfo="skip", showlegend=False), row=row, col=col)
        fig.add_trace(go.Scatter(x=x, y=[r["accuracy"] for r in rows], mode="lines+markers", line=dict(color=colour),
                                 name=label), row=row, col=col)
    evals = (c.get("eval") or {}).get("rows") or []
    limit = s["kept_distances"][-1]
    shown = [r for r in evals if 0 <= r["segments"] - 2 <= limit]
    if shown:
        label = ("eval.json at N segments (d = N - 2)" if c["task"] == "memorize"
                 else "eval.json at N segments (facts anywhere: d ≤ N - 2), plotted at N - 2")
        fig.add_trace(go.Scatter(x=[r["segments"] - 1 for r in shown], y=[r["accuracy"] for r in shown],
                                 error_y=dict(type="data", symmetric=False,
                                              array=[r["ci_high"] - r["accuracy"] for r in shown],
                                              arrayminus=[r["accuracy"] - r["ci_low"] for r in shown]),
                                 mode="markers", marker=dict(color="black", symbol="diamond", size=7), name=label),
                      row=row, col=col)


def write_figures(results: dict, out: Path, fmt: str, drawn: dict | None = None) -> list[str]:
    from rmt_core.files import write_atomic
    from rmt_core.viz.export import ExportError, figure_bytes

    written = []
    for name, fig in (figures(results) if drawn is None else drawn).items():
        try:
            data = figure_bytes(fig, fmt)
        except ExportError as error:
            raise DriftError(f"{error}; or use --figures html") from None
        path = out / f"{name}.{fmt}"
        write_atomic(path, data)
        written.append(path.name)
    return written


# ----- the markdown section ---------------------------------------------------------------------------------------
def _pct(r: dict) -> str:
    return f"{100 * r['accuracy']:.1f} [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]"


def report(results: dict, figure_dir: str = "figures/drift") -> str:
    """The markdown section, every number read from drift.json's content."""
    lines = []
    for name, c in results["checkpoints"].items():
        measured = c["checkpoint"]  # the folder measured, which need not be checkpoints/NAME
        lines += [f"### {name}: memory after the fact (`{measured['path']}`, sha256 `{measured['sha256'][:16]}`, "
                  f"trained on {c['trained_segments']} segments)", ""]
        lines += _sample_lines(c) + [""] + _trace_lines(c["trace"])
        ev = c.get("eval")
        if ev:
            lines.append("eval.json (the model's accuracy at N segments, not rerun): " + ", ".join(
                f"{r['segments']}: {100 * r['accuracy']:.1f}% (n={r['samples']})" for r in ev["rows"]) + ".")
        lines += ["", "Figures: " + ", ".join(f"[{n}]({figure_dir}/{name}_{n}.png)"
                                               for n in ("distance", "slots", "answer")), ""]
    return "\n".join(lines)


def _sample_lines(c: dict) -> list[str]:
    """The markdown of the 200-sample measures of one checkpoint."""
    s, by = c["samples"], c["samples"]["by_distance"]
    K, N = s["samples"], s["n_segments"]
    lines = [f"Samples: {K} held-out samples of {N} segments (facts in segments 0..{c['max_fact_segment']}: "
             + ", ".join(f"{n} in segment {f}" for f, n in s["fact_segments"].items())
             + f"), answer majority {100 * s['answer_majority']:.1f}%. Probes: two-fold, so each accuracy "
             f"scores all {K} samples once; 95% Wilson intervals.", "",
             "| d | cos (median) | L2 (median) | norm | probe at d | control | probe from d=0 "
             "| model, question at d | model = probe from d=0 | spread / norm | class separation |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for j, d in enumerate(s["kept_distances"]):
        p, fx, q, sp = s["probe"][j], s["fixed_probe"][j], s["question"][j], s["spread"][j]
        i = by["distance"].index(d)
        cells = [str(d), f"{by['cos']['median'][i]:.3f}", f"{by['l2']['median'][i]:.2f}",
                 f"{by['norm']['median'][i]:.2f}", _pct(p), f"{100 * p['control_accuracy']:.1f}", _pct(fx), _pct(q),
                 f"{q['same_as_probe_from_0']} of {q['total']}", f"{sp['relative_dispersion']:.3f}",
                 f"{sp['class_separation']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    summary = s["summary"]
    lines += ["", "First distance where accuracy falls below 50%: probe "
              f"{_d(summary['probe_below_half'])}, probe from d=0 {_d(summary['fixed_probe_below_half'])}, "
              f"model {_d(summary['question_below_half'])}; where its interval reaches the majority baseline: "
              f"probe {_d(summary['probe_at_chance'])}, model {_d(summary['question_at_chance'])}.", ""]
    sw = s["switch"]
    counts = ", ".join(f"d={r['distance']}: {r['switched']} switched ({r['switched_right']} right), "
                       f"{r['held']} held ({r['held_right']} right)" for r in sw["by_distance"] if r["distance"])
    first = ", ".join(f"d {w['from']}-{w['to']}: {w['count']}" for w in sw["first_switch"]["windows"] if w["count"])
    lines += [f"Memory that has switched (cosine with the memory right after the fact below {sw['cosine']}), and "
              f"the model's answer (question at d) on switched and on held memory: {counts}. First switch: {first}; "
              f"never (to d={s['kept_distances'][-1]}): {sw['first_switch']['never']}.", ""]
    last = len(by["distance"]) - 1
    D = by["distance"][last]
    norms = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(by["slot_norm"]["median"][0], by["slot_norm"]["median"][last]))
    lines.append(f"Each slot at d=0 and d={D} (medians): norm {norms}; cosine with itself after the fact at d={D}: "
                 + ", ".join(f"{x:.2f}" for x in by["slot_cos"]["median"][last]) + ".")
    one = by["distance"].index(1) if 1 in by["distance"] else 0
    lines += [f"At d={D} the cosine with the memory after the fact has quartiles {by['cos']['q25'][last]:.3f}, "
              f"{by['cos']['median'][last]:.3f}, {by['cos']['q75'][last]:.3f}; a segment changes memory by "
              f"{by['change']['median'][one]:.3f} (median) at d=1 and {by['change']['median'][last]:.3f} at d={D}.", ""]
    best = [max(range(len(slots)), key=lambda k: slots[k]["accuracy"]) for slots in s["probe_slots"]]
    lines.append("Best single slot by distance: " + ", ".join(
        f"d={d}: slot {k} {100 * s['probe_slots'][j][k]['accuracy']:.0f}%"
        for j, (d, k) in enumerate(zip(s["kept_distances"], best))) + ".")
    return lines


def _trace_lines(t: dict) -> list[str]:
    """The markdown of one checkpoint's long trace."""
    lines = [f"Trace: `{t['path']}`, {t['n_segments']:,} segments ({t['n_tokens']:,} tokens), seed "
             f"{t['seed']}, facts in segment(s) {t['fact_segments']}, sources {_sources(t['sources'])}; "
             f"\"{t['question']}\" answer {t['answer']}, final prediction {t['final_prediction']}. Question "
             f"put after every {t['question_stride']} distance(s) ({t['questions_asked']:,} in all; the last "
             f"reproduces the trace's final logits: {t['final_logits_reproduced']}).", "",
             "| d | cos | L2 | norm | change a segment | model's answer right (share) | mean margin |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for w in t["windows"]:
        share = "-" if w["question_correct"] is None else f"{100 * w['question_correct']:.0f}% of {w['questions']}"
        margin = "-" if w["margin_mean"] is None else f"{w['margin_mean']:+.2f}"
        lines.append(f"| {w['from']}-{w['to']} | {w['cos_mean']:.3f} | {w['l2_mean']:.2f} | {w['norm_mean']:.2f} | "
                     f"{w['change_mean']:.3f} | {share} | {margin} |")
    end = t["grid"][-1]
    lines += ["", f"At the trace's last distance (d={end['distance']}) each slot's cosine with itself after the "
              "fact: " + ", ".join(f"{x:.2f}" for x in end["slot_cos"])
              + f"; the whole memory's cosine with the initial memory: {end['cos_initial']:.3f}."]
    lost, settled = t["lost"], t["settled"]
    lines += ["", f"The trace's answer: first wrong at d={_d(lost['first_wrong'])}, last right at "
              f"d={_d(lost['last_right'])}, right at {100 * lost['correct_fraction']:.1f}% of the distances asked, "
              f"right at the end: {lost['right_at_end']}. Settled memory (d={settled['from']}..{settled['to']}): "
              f"spread around its mean {settled['spread']:.2f}, mean norm {settled['mean_norm']:.2f}, distance "
              f"of that mean from the memory after the fact {settled['reference_to_mean']:.2f} and from the "
              f"initial memory {settled['initial_to_mean']:.2f}; a segment changes it by "
              f"{settled['change_mean']:.3f} on average.", ""]
    return lines


def _d(value) -> str:
    return "never" if value is None else str(value)


def _sources(sources) -> str:
    if not sources:
        return "unknown"
    return f"facts {sources.get('babi')}, noise {sources.get('noise')}, split {sources.get('split')}"


# ----- main -------------------------------------------------------------------------------------------------------
def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for value in values or ():
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise DriftError(f"{flag} takes NAME=PATH, such as memorize=checkpoints/memorize; got {value!r}")
        out[name] = path
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=DIR",
                        help="a checkpoint to study (repeatable; default: checkpoints/memorize, detect, reason)")
    parser.add_argument("--trace", action="append", default=[], metavar="NAME=DIR",
                        help="an existing trace of rmt replay for checkpoint NAME (else one is recorded)")
    parser.add_argument("--trace-segments", type=int, default=4096, help="segments of recorded traces (default 4096)")
    parser.add_argument("--traces-dir", default="runs/drift_traces", help="where recorded traces go")
    parser.add_argument("--trace-questions", type=int, default=8192,
                        help="at most this many distances of a trace get the question (every k-th; default 8192)")
    parser.add_argument("--samples", type=int, default=200, help="samples per checkpoint (default 200)")
    parser.add_argument("--max-distance", type=int, default=512, help="largest distance probed (default 512)")
    parser.add_argument("--max-fact-segment", type=int, default=None,
                        help="facts land in segments 0..F (default: trained_segments - 1; memorize: 0)")
    parser.add_argument("--babi-dir", help="bAbI folder (its test split is used); default: built-in facts")
    parser.add_argument("--noise-file", help="noise text, one passage a line; default: built-in noise")
    parser.add_argument("--seed", type=int, default=0, help="seed of rmt eval's samples, the split and the controls")
    parser.add_argument("--batch-size", type=int, default=100, help="samples per segment step (default 100)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--figures", choices=("png", "html", "none"), default="png")
    parser.add_argument("--out", default="docs/figures/drift", help="folder for drift.json and the figures")
    parser.add_argument("--report", action="store_true", help="only print the markdown from --out/drift.json")
    parser.add_argument("--before", help="the --out folder of an earlier run (such as docs/figures/drift): draw each "
                        "checkpoint found in both before and after (NAME_before_after in --out)")
    parser.add_argument("--change", default="further training",
                        help="what made the after checkpoint of the before one, for --before's title (default: "
                             "further training)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    command = portable_command(sys.argv[1:] if argv is None else argv, "python scripts/drift_findings.py")
    try:
        return _main(args, command)
    except (RMTError, OSError) as error:
        print(f"drift_findings: error: {error}", file=sys.stderr)
        return 1


def _drift_json(folder: Path) -> Path:
    path = folder / "drift.json"
    if not path.is_file():
        raise DriftError(f"{path} does not exist; give --before the --out folder of an earlier run")
    return path


def _main(args, command: str) -> int:
    from probes.run import json_safe
    from rmt_core.files import write_json_atomic

    out = Path(args.out)
    path = out / "drift.json"
    if args.report:
        if not path.is_file():
            raise DriftError(f"{path} does not exist; run without --report first")
        results = json.loads(path.read_text(encoding="utf-8"))
        if args.before and args.figures != "none":
            before = json.loads(_drift_json(Path(args.before)).read_text(encoding="utf-8"))
            written = write_figures(results, out, args.figures, before_after_figures(before, results, args.change))
            log(f"wrote {', '.join(written) or 'no figures (no checkpoint name in both)'} into {out}")
        print(report(results, figure_dir=f"figures/{out.name}"))
        return 0
    for value, flag, low in ((args.samples, "--samples", 8), (args.max_distance, "--max-distance", 1),
                             (args.trace_segments, "--trace-segments", 2), (args.batch_size, "--batch-size", 1),
                             (args.threads, "--threads", 1), (args.trace_questions, "--trace-questions", 1)):
        if value < low:
            raise DriftError(f"{flag} must be at least {low}, got {value}")
    if args.max_fact_segment is not None and args.max_fact_segment < 0:
        raise DriftError(f"--max-fact-segment must be 0 or more, got {args.max_fact_segment}")
    torch.set_num_threads(args.threads)
    checkpoints = (_pairs(args.checkpoint, "--checkpoint")
                   or {n: str(ROOT / "checkpoints" / n) for n in DEFAULT_CHECKPOINTS})
    traces = _pairs(args.trace, "--trace")
    unknown = sorted(set(traces) - set(checkpoints))
    if unknown:
        raise DriftError(f"--trace names {unknown[0]!r}, which is not one of the checkpoints "
                         f"({', '.join(checkpoints)})")
    for name, folder in checkpoints.items():
        if not (Path(folder) / "config.json").is_file():
            raise DriftError(f"{folder} is not a checkpoint folder (no config.json); check --checkpoint {name}=...")
    previous = {}
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise DriftError(f"{path} exists but is not a drift.json; choose another --out") from None
        if previous.get("format") != FORMAT:
            raise DriftError(f"{path} was not written by drift_findings; choose another --out")
    results = {"format": FORMAT, "command": command,
               "settings": {"samples": args.samples, "max_distance": args.max_distance,
                            "max_fact_segment": args.max_fact_segment, "babi_dir": portable_path(args.babi_dir),
                            "noise_file": portable_path(args.noise_file), "split": "test", "seed": args.seed,
                            "trace_segments": args.trace_segments, "trace_questions": args.trace_questions,
                            "threads": args.threads,
                            "probe": "standardised features, multinomial logistic regression (lbfgs, L2 C=1), "
                                     "two-fold", "ci": "95% Wilson score interval"},
               "checkpoints": {}}
    for name, folder in checkpoints.items():
        key = _settings_key(name, Path(folder), args, traces.get(name))
        old = (previous.get("checkpoints") or {}).get(name)
        if old and old.get("key") == key:
            log(f"{name}: reusing the finished results in {path}")
            results["checkpoints"][name] = old
            continue
        started = time.time()
        trace_dir = Path(traces[name]) if name in traces else None
        found = checkpoint_findings(name, Path(folder), args, trace_dir)
        found["key"] = key
        results["checkpoints"][name] = json_safe(found)
        write_json_atomic(path, results)  # after each checkpoint: an interrupted run keeps what it finished
        log(f"{name}: done in {time.time() - started:.0f} s; wrote {path}")
    if args.figures != "none":
        written = write_figures(results, out, args.figures)
        log(f"wrote {len(written)} figures into {out}")
    write_json_atomic(path, results)
    print(report(json.loads(path.read_text(encoding="utf-8")), figure_dir=f"figures/{Path(args.out).name}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
