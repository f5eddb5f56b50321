"""Whole-run statistics of a trace (rmt_core.trace_stats): one streaming pass that agrees with the arrays read
whole, a sidecar cache outside the trace folder, and min/max envelopes that never lose a spike."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from conftest import make_tiny_rmt
from rmt_core.viz import figures
from rmt_core.replay import RecordingPolicy, replay, replay_in_memory
from rmt_core.trace import Trace
from rmt_core.trace_stats import cached_trace_stats, envelope, trace_stats

SEGMENT, N = 16, 120


@pytest.fixture(scope="module")
def recorded(tokenizer, tmp_path_factory):
    """A detect sample of 120 segments (fact somewhere inside) recorded to disk by a tiny model."""
    import torch

    from rmt_core.tasks import TaskBuilder

    model = make_tiny_rmt(tokenizer, segment_size=SEGMENT, task="detect")
    sample = TaskBuilder("detect", tokenizer, SEGMENT).sample(N, seed=5)
    out = tmp_path_factory.mktemp("stats") / "trace"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices, a shared machine
    try:
        replay(model, sample, out=out, policy=RecordingPolicy(attention_budget_mib=0), progress=False)
    finally:
        torch.set_num_threads(threads)
    return Trace.open(out), sample, model


def brute_force(trace):
    """The same statistics from the whole arrays."""
    states = np.asarray(trace.memory_states(), dtype=np.float64)
    flat = states.reshape(len(states), -1)
    fact = max(f.segment for f in trace.sample().facts)
    reference = flat[fact + 1]
    probs = figures.softmax(np.asarray(trace.segment_logits), axis=-1)[:, trace.answer]
    return {
        "change": np.linalg.norm(flat[1:] - flat[:-1], axis=1),
        "norm": np.linalg.norm(flat, axis=1),
        "similarity": flat @ reference / (np.linalg.norm(flat, axis=1) * np.linalg.norm(reference)),
        "slot_change": figures.memory_change(states),
        "answer_probability": probs,
    }, fact


@pytest.mark.parametrize("chunk_rows", [512, 7, 1])
def test_streaming_pass_matches_the_whole_arrays(recorded, chunk_rows):
    trace, sample, _ = recorded
    stats = trace_stats(trace, chunk_rows=chunk_rows)
    expected, fact = brute_force(trace)
    for name, values in expected.items():
        np.testing.assert_allclose(getattr(stats, name), values, rtol=1e-4, atol=1e-5, err_msg=name)
    assert stats.reference_state == fact + 1 and str(fact) in stats.reference
    assert stats.fact_segments == sorted({f.segment for f in sample.facts})
    assert stats.question_segments == [N - 1]
    assert stats.answer_kind == "answer" and stats.answer_class == sample.answer


def test_in_memory_and_on_disk_traces_give_the_same_statistics(recorded):
    trace, sample, model = recorded
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        kept = replay_in_memory(model, sample, RecordingPolicy(attention_budget_mib=0))
    finally:
        torch.set_num_threads(threads)
    a, b = trace_stats(trace), trace_stats(kept)
    for name in ("change", "norm", "similarity", "slot_change", "answer_probability"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_the_pass_reads_memory_in_blocks_never_whole(recorded, monkeypatch):
    import rmt_core.trace as trace_module

    trace = Trace.open(recorded[0].path)
    reads = []
    real = trace_module.read_block
    monkeypatch.setattr(trace_module, "read_block", lambda p, o, n: reads.append((os.path.basename(p), n))
                        or real(p, o, n))
    monkeypatch.setattr(trace_module.np, "load", lambda *a, **k: pytest.fail(f"whole array loaded: {a}"))
    trace_stats(trace, chunk_rows=64)
    memory = [n for name, n in reads if name == "memory.npy"]
    row = trace.num_mem_tokens * trace.manifest["model"]["hidden_size"] * 4
    assert sum(memory) == (N + 1) * row + row  # every state once, plus the reference state
    assert max(memory) <= 64 * row


def test_text_without_logits_or_facts(tokenizer, tmp_path):
    """Free text: similarity to the initial memory, the curve of the final prediction; no logits: none."""
    model = make_tiny_rmt(tokenizer, segment_size=SEGMENT)
    segments = [[2000 + i + 8 * t for i in range(SEGMENT)] for t in range(5)]
    trace = replay(model, segments=segments, out=tmp_path / "t", progress=False,
                   policy=RecordingPolicy(segment_logits=False))
    stats = trace_stats(trace)
    assert stats.reference_state == 0 and stats.reference == "initial memory"
    assert stats.answer_probability is None and stats.answer_kind == "prediction"
    assert stats.fact_segments == [] and stats.question_segments == []
    assert stats.similarity[0] == pytest.approx(1.0)


def test_sidecar_is_written_once_outside_the_trace_and_reused(recorded, tmp_path, monkeypatch):
    import rmt_core.trace_stats as module

    source = recorded[0].path
    folder = tmp_path / "trace"
    shutil.copytree(source, folder)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())
    cache = tmp_path / "cache"
    first = cached_trace_stats(Trace.open(folder), cache)
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"
    assert sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir()) == before  # the trace is untouched
    monkeypatch.setattr(module, "trace_stats", lambda *a, **k: pytest.fail("computed again"))
    again = cached_trace_stats(Trace.open(folder), cache)
    np.testing.assert_array_equal(again.change, first.change)
    assert again.fact_segments == first.fact_segments and again.reference == first.reference
    # a rewritten trace (newer files) is computed again, not read from the old sidecar
    monkeypatch.undo()
    os.utime(folder / "memory.npy", ns=(before[0][1] + 10**9, before[0][1] + 10**9))
    cached_trace_stats(Trace.open(folder), cache)
    assert len(list(cache.iterdir())) == 2


def test_a_damaged_sidecar_is_ignored(recorded, tmp_path):
    cache = tmp_path / "cache"
    first = cached_trace_stats(recorded[0], cache)
    (sidecar,) = cache.iterdir()
    sidecar.write_bytes(b"not an npz")
    again = cached_trace_stats(recorded[0], cache)
    np.testing.assert_array_equal(again.norm, first.norm)


def test_envelope_keeps_every_spike_and_where_it_is():
    rng = np.random.default_rng(0)
    values = rng.random(100_003)
    values[77_777] = 50.0  # one spike
    values[12_345] = -50.0  # and one dip
    env = envelope(values, 0, len(values), 400)
    assert len(env.first) == 400 and env.binned
    assert env.first[0] == 0 and env.last[-1] == len(values) - 1
    assert (env.first[1:] == env.last[:-1] + 1).all()  # bins tile the range
    assert env.high.max() == 50.0 and env.high_at[env.high.argmax()] == 77_777
    assert env.low.min() == -50.0 and env.low_at[env.low.argmin()] == 12_345
    for i in (0, 137, 399):
        window = values[env.first[i]:env.last[i] + 1]
        assert env.low[i] == window.min() and env.high[i] == window.max()
        assert env.mean[i] == pytest.approx(window.mean())


def test_envelope_of_a_short_range_is_the_values_themselves():
    values = np.arange(50, dtype=float) ** 2
    env = envelope(values, 10, 20, 400)
    assert not env.binned
    assert env.first.tolist() == list(range(10, 20))
    np.testing.assert_array_equal(env.mean, values[10:20])


def test_overview_figure_marks_facts_and_question_and_notes_missing_rows():
    values = np.sin(np.arange(5000) / 50.0)
    rows = [("change", envelope(values, 0, 5000, 200)), ("probability", None)]
    fig = figures.overview_figure(rows, fact_segments=[1234], question_segments=[4999], current=42,
                                  span=(0, 4999))
    assert "bins of up to 25 segments" in fig.layout.title.text
    assert [s.x0 for s in fig.layout.shapes] == [1234, 4999, 42]
    assert "not recorded in this trace" in [a.text for a in fig.layout.annotations]
    assert list(fig.layout.xaxis.range) == [-0.5, 4999.5]
