"""What a whole trace did, segment by segment, in a few numbers a segment: the dashboard's overview of a run.

`trace_stats(trace)` reads memory.npy, roles.npy and segment_logits.npy once each, a block of rows at a time
(`TraceView.row_chunks`), so its memory does not grow with the trace: for N segments it keeps O(N * m) floats
(tens of MB at most for a million segments) and one block of memory states. For segment t (0..N-1) and
memory state s (0 = the initial memory, t + 1 = the memory segment t wrote):

    change[t]              ||M[t+1] - M[t]||          how much segment t changed memory (all slots together)
    norm[s]                ||M[s]||                   the memory's norm
    similarity[s]          cos(M[s], M[ref])          how similar memory stays to the reference state: the
                                                      memory written right after the (last) fact segment, or
                                                      the initial memory when the input has no fact
    slot_change[t, k]      ||M[t+1]_k - M[t]_k|| / ||M[t]_k||   relative change of slot k (figures.memory_change)
    answer_probability[t]  softmax(segment_logits[t])[a]   the head's probability of the answer a after segment
                                                      t (a = the true answer, or the final prediction for free
                                                      text); None when the trace has no segment logits
    fact_segments, question_segments: segments holding fact / question tokens (from roles.npy)

`cached_trace_stats(trace, cache_dir)` keeps the result as a small .npz sidecar in a cache folder (never in
the trace folder), named by the trace's path and its files' sizes and times, written atomically.
`envelope(values, start, stop, bins)` cuts a range of segments into bins with each bin's min, max and mean,
so that a plot of tens of thousands of segments never loses a single spike.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rmt_core.files import make_plain

STATS_VERSION = 1  # raise when the meaning of a field changes: old sidecars are then ignored
CHUNK_ROWS = 512  # memory states read at once (512 x 10 x 128 float32: 2.5 MiB; the pass holds about 3 blocks)
_STAMPED_FILES = ("manifest.json", "memory.npy", "roles.npy", "segment_logits.npy")
_ARRAYS = ("change", "norm", "similarity", "slot_change", "answer_probability")


@dataclass
class TraceStats:
    n_segments: int
    change: np.ndarray  # [N] float32
    norm: np.ndarray  # [N+1] float32
    similarity: np.ndarray  # [N+1] float32
    slot_change: np.ndarray  # [N, m] float32
    answer_probability: np.ndarray | None  # [N] float32
    reference_state: int  # the memory state `similarity` compares with
    reference: str  # that state in words
    answer_class: int | None  # the class of answer_probability
    answer_kind: str  # "answer" (the true answer) or "prediction" (the final prediction: free text)
    fact_segments: list[int]
    question_segments: list[int]

    def to_json(self) -> dict:
        return {"n_segments": self.n_segments, "reference_state": self.reference_state, "reference": self.reference,
                "answer_class": self.answer_class, "answer_kind": self.answer_kind,
                "fact_segments": self.fact_segments, "question_segments": self.question_segments}


def _role_code(trace, name: str, default: int) -> int:
    names = (trace.manifest.get("layout") or {}).get("role_names") or []
    return names.index(name) if name in names else default


def _segments_with_roles(trace) -> tuple[list[int], list[int]]:
    """(segments holding a fact token, segments holding a question token), from roles.npy in blocks."""
    fact, question = _role_code(trace, "fact", 1), _role_code(trace, "question", 2)
    facts, questions = [], []
    for start, block in trace.row_chunks("roles", 16384):
        facts.extend((start + np.flatnonzero((block == fact).any(axis=1))).tolist())
        questions.extend((start + np.flatnonzero((block == question).any(axis=1))).tolist())
    return facts, questions


def _reference(trace, fact_segments: list[int]) -> tuple[int, str]:
    """The memory state similarity is measured against, and its name."""
    meta_facts = sorted({int(f["segment"]) for f in (trace.metadata.get("facts") or [])
                         if isinstance(f, dict) and f.get("segment") is not None})
    facts = meta_facts or fact_segments
    if facts:
        f = max(facts)
        return f + 1, f"memory after fact segment {f}"
    return 0, "initial memory"


def _answer_probability(trace) -> tuple[np.ndarray | None, int | None, str]:
    answer = trace.answer
    kind = "answer" if answer is not None and int(answer) >= 0 else "prediction"
    target = int(answer) if kind == "answer" else int(trace.prediction)
    if trace.manifest["arrays"].get("segment_logits") is None:
        return None, target, kind
    out = np.empty(trace.n_segments, dtype=np.float32)
    for start, block in trace.row_chunks("segment_logits", 65536):
        logits = block.astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        out[start:start + len(block)] = e[:, target] / e.sum(axis=1)
    return out, target, kind


def _changes(before: np.ndarray, after: np.ndarray, change: np.ndarray, slot_change: np.ndarray, row: int) -> None:
    """Fill change / slot_change of the segments row.. that turned states `before` [k, m, d] into `after`."""
    delta = after - before
    slot_delta = np.sqrt(np.einsum("ijk,ijk->ij", delta, delta, dtype=np.float64))
    slot_before = np.sqrt(np.einsum("ijk,ijk->ij", before, before, dtype=np.float64))
    change[row:row + len(delta)] = np.sqrt((slot_delta ** 2).sum(axis=1))
    slot_change[row:row + len(delta)] = slot_delta / np.maximum(slot_before, 1e-12)


def trace_stats(trace, chunk_rows: int = CHUNK_ROWS) -> TraceStats:
    """The per-segment statistics of a trace (a `Trace` or `InMemoryTrace`), in one pass over its memory."""
    n = trace.n_segments
    facts, questions = _segments_with_roles(trace)
    ref_state, ref_name = _reference(trace, facts)
    reference = np.asarray(trace.memory_in(ref_state) if ref_state < n else trace.memory_out(n - 1),
                           dtype=np.float64).reshape(-1)
    ref_norm = max(float(np.linalg.norm(reference)), 1e-12)

    m = trace.num_mem_tokens
    norm = np.empty(n + 1, dtype=np.float32)
    similarity = np.empty(n + 1, dtype=np.float32)
    change = np.empty(n, dtype=np.float32)
    slot_change = np.empty((n, m), dtype=np.float32)
    previous = None  # the last state of the previous block
    for start, block in trace.row_chunks("memory", chunk_rows):  # states start .. start+len-1
        states = np.asarray(block, dtype=np.float32)  # no copy for a float32 trace
        flat = states.reshape(len(states), -1)
        norms = np.sqrt(np.einsum("ij,ij->i", flat, flat, dtype=np.float64))
        norm[start:start + len(states)] = norms
        similarity[start:start + len(states)] = (flat @ reference.astype(np.float32)) / np.maximum(norms * ref_norm,
                                                                                                    1e-12)
        if previous is not None:  # the segment between the two blocks
            _changes(previous[None], states[:1], change, slot_change, start - 1)
        if len(states) > 1:
            _changes(states[:-1], states[1:], change, slot_change, start)
        previous = states[-1].copy()
    probability, target, kind = _answer_probability(trace)
    return TraceStats(n, change, norm, similarity, slot_change, probability, ref_state, ref_name, target, kind,
                      facts, questions)


# ----- the sidecar cache -----------------------------------------------------------------------------------------
def cache_root() -> Path:
    """RMT Lens's cache folder: $RMT_CACHE_DIR, else $XDG_CACHE_HOME/rmt-lens (~/.cache/rmt-lens)."""
    root = os.environ.get("RMT_CACHE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rmt-lens"


def default_cache_dir() -> Path:
    """Where the statistics sidecars go: cache_root()/trace-stats."""
    return cache_root() / "trace-stats"


def trace_stamp(path: str | Path) -> tuple:
    """The trace folder's resolved path with the sizes and times of the files the statistics read: a key that
    changes when the trace is rewritten."""
    path = Path(path).resolve()
    stamp = [str(path)]
    for name in _STAMPED_FILES:
        try:
            info = (path / name).stat()
            stamp.append((name, info.st_size, info.st_mtime_ns))
        except OSError:
            stamp.append((name, None, None))
    return tuple(stamp)


def _sidecar(cache_dir: Path, stamp: tuple) -> Path:
    digest = hashlib.sha256(json.dumps([STATS_VERSION, *stamp]).encode()).hexdigest()[:32]
    return Path(cache_dir) / f"{digest}.npz"


def _load(file: Path, n_segments: int) -> TraceStats | None:
    try:
        with np.load(file, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {name: data[name] for name in _ARRAYS if name in data.files}
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None
    if meta.get("n_segments") != n_segments or not {"change", "norm", "similarity", "slot_change"} <= set(arrays):
        return None
    return TraceStats(answer_probability=arrays.get("answer_probability"),
                      **{k: arrays[k] for k in ("change", "norm", "similarity", "slot_change")}, **meta)


def _store(file: Path, stats: TraceStats) -> None:
    """Write the sidecar atomically (a temp name in the same folder, then a rename); a cache that cannot be
    written is skipped silently: the statistics are simply computed again next time."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=file.stem, suffix=".tmp", dir=file.parent)
    except OSError:
        return
    try:
        arrays = {name: getattr(stats, name) for name in _ARRAYS if getattr(stats, name) is not None}
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, meta=np.array(json.dumps(stats.to_json())), **arrays)
        make_plain(temp)
        os.replace(temp, file)
    except OSError:
        try:
            os.unlink(temp)
        except OSError:
            pass


def cached_trace_stats(trace, cache_dir: str | Path | None = None) -> TraceStats:
    """`trace_stats(trace)`, read from / written to a sidecar in `cache_dir` (default `default_cache_dir()`)
    for a trace folder; computed directly for an in-memory trace."""
    path = getattr(trace, "path", None)
    if path is None:
        return trace_stats(trace)
    file = _sidecar(Path(cache_dir) if cache_dir else default_cache_dir(), trace_stamp(path))
    found = _load(file, trace.n_segments) if file.is_file() else None
    if found is not None:
        return found
    stats = trace_stats(trace)
    _store(file, stats)
    return stats


# ----- envelopes: a range of segments in bins -----------------------------------------------------------------
@dataclass
class Envelope:
    """Bins of consecutive segments: bin i covers segments first[i]..last[i]; low/high/mean of the values in
    it, and the segment where the low and the high value sit (low_at, high_at)."""

    first: np.ndarray
    last: np.ndarray
    low: np.ndarray
    high: np.ndarray
    mean: np.ndarray
    low_at: np.ndarray
    high_at: np.ndarray

    @property
    def binned(self) -> bool:
        return bool(len(self.first)) and bool((self.last > self.first).any())


def bin_edges(start: int, stop: int, bins: int) -> np.ndarray:
    """First segment of each bin cutting start..stop-1 into at most `bins` near-equal bins."""
    n = stop - start
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    if n <= bins:
        return np.arange(start, stop, dtype=np.int64)
    return start + np.unique((np.arange(bins, dtype=np.int64) * n) // bins)


def envelope(values: np.ndarray, start: int = 0, stop: int | None = None, bins: int = 800) -> Envelope:
    """Segments start..stop-1 of `values` [N] in at most `bins` bins (one segment a bin when few enough)."""
    values = np.asarray(values)
    stop = len(values) if stop is None else min(int(stop), len(values))
    start = max(0, int(start))
    edges = bin_edges(start, stop, max(1, int(bins)))
    if not len(edges):
        empty = np.zeros(0)
        return Envelope(empty.astype(np.int64), empty.astype(np.int64), empty, empty, empty,
                        empty.astype(np.int64), empty.astype(np.int64))
    window = np.asarray(values[start:stop], dtype=np.float64)
    local = edges - start
    counts = np.diff(np.append(local, len(window)))
    low = np.minimum.reduceat(window, local)
    high = np.maximum.reduceat(window, local)
    mean = np.add.reduceat(window, local) / counts
    which = np.repeat(np.arange(len(edges)), counts)  # the bin of every segment
    low_at = _first_where(window == low[which], which, len(edges)) + start
    high_at = _first_where(window == high[which], which, len(edges)) + start
    return Envelope(edges, edges + counts - 1, low, high, mean, low_at, high_at)


def _first_where(hit: np.ndarray, which: np.ndarray, bins: int) -> np.ndarray:
    """For each bin, the index of its first True in `hit` (NaN bins: the bin's first index)."""
    out = np.full(bins, -1, dtype=np.int64)
    index = np.flatnonzero(hit)[::-1]  # reversed: the assignment below keeps the first
    out[which[index]] = index
    starts = np.concatenate([[0], np.cumsum(np.bincount(which, minlength=bins))[:-1]])
    return np.where(out < 0, starts, out)
