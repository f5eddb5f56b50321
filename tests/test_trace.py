"""Trace folders: lazy per-segment reads, the documented format readable without our code, damaged traces."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import make_tiny_rmt
from rmt_core.errors import TraceError
from rmt_core.replay import RecordingPolicy, replay
from rmt_core.trace import Trace

SEGMENT = 24
N = 8


@pytest.fixture(scope="module")
def recorded(tokenizer, tmp_path_factory):
    """A trace of a detect sample with attention for every segment and full attention for two."""
    from rmt_core.tasks import TaskBuilder

    model = make_tiny_rmt(tokenizer, segment_size=SEGMENT)
    sample = TaskBuilder("detect", tokenizer, SEGMENT).sample(N, seed=7)
    out = tmp_path_factory.mktemp("traces") / "trace"
    replay(model, sample, out=out, policy=RecordingPolicy(full_attention_segments=[2, 5]), progress=False)
    return out, sample, model


@pytest.fixture
def trace_copy(recorded, tmp_path):
    """A fresh copy of the recorded trace that a test may damage."""
    out = tmp_path / "trace"
    shutil.copytree(recorded[0], out)
    return out


def test_open_reads_only_the_manifest(recorded, monkeypatch):
    import rmt_core.trace as trace_module

    loads = []
    monkeypatch.setattr(trace_module.np, "load", lambda *a, **k: loads.append(a) or pytest.fail("np.load called"))
    trace = Trace.open(recorded[0])
    assert trace.n_segments == N and trace.attention_segments == list(range(N)) and loads == []


def test_reading_segment_t_opens_only_its_own_files(recorded, monkeypatch):
    import rmt_core.trace as trace_module

    opened = []
    real_load = np.load

    def counting_load(file, *args, **kwargs):
        opened.append(str(file).split("/trace/")[-1])
        return real_load(file, *args, **kwargs)

    monkeypatch.setattr(trace_module.np, "load", counting_load)
    trace = Trace.open(recorded[0])
    trace.read_attention(3)
    trace.write_attention(3)
    trace.full_attention(5)
    assert trace.full_attention(3) is None  # not recorded: no file opened
    assert opened == ["attention/read_000003.npy", "attention/write_000003.npy", "attention/full_000005.npy"]
    trace.memory_in(3)
    trace.memory_out(4)
    trace.roles(3)
    assert opened[3:] == ["memory.npy", "roles.npy"]  # one memory-mapped file each, opened once


def test_reading_segment_t_works_with_every_other_segments_files_deleted(recorded, trace_copy):
    original = Trace.open(recorded[0])
    for file in (trace_copy / "attention").iterdir():
        if not file.name.endswith("_000004.npy"):
            file.unlink()
    trace = Trace.open(trace_copy)
    np.testing.assert_array_equal(trace.read_attention(4), original.read_attention(4))
    np.testing.assert_array_equal(trace.write_attention(4), original.write_attention(4))
    with pytest.raises(TraceError, match="missing attention/read_000003.npy"):
        trace.read_attention(3)


def test_memory_is_memory_mapped_and_reads_touch_only_the_asked_rows(recorded, trace_copy):
    trace = Trace.open(trace_copy)
    states = trace.memory_states()
    assert isinstance(states, np.memmap) and states.shape[0] == N + 1
    # Overwrite the bytes of every row but segment 3's in/out on disk; reading segment 3 is unaffected.
    header = int(states.offset)
    row = states[0].nbytes
    expected_in, expected_out = trace.memory_in(3), trace.memory_out(3)
    del states, trace
    with open(trace_copy / "memory.npy", "r+b") as handle:
        for t in list(range(0, 3)) + list(range(5, N + 1)):
            handle.seek(header + t * row)
            handle.write(b"\xff" * row)
    trace = Trace.open(trace_copy)
    np.testing.assert_array_equal(trace.memory_in(3), expected_in)
    np.testing.assert_array_equal(trace.memory_out(3), expected_out)
    assert np.isnan(trace.memory_in(0)).all()


def test_the_documented_format_reads_with_numpy_and_json_alone(recorded):
    out, sample, model = recorded
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "rmt-lens-trace" and manifest["format_version"] == 1
    arrays = manifest["arrays"]
    memory = np.load(out / arrays["memory"]["file"], mmap_mode="r")
    assert list(memory.shape) == arrays["memory"]["shape"] and str(memory.dtype) == arrays["memory"]["dtype"]
    t = manifest["recorded"]["attention_segments"][4]
    read = np.load(out / arrays["read_attention"]["file"].format(segment=t))
    assert list(read.shape) == arrays["read_attention"]["shape"] and str(read.dtype) == "float16"
    ids = np.load(out / "token_ids.npy")[t]
    vocab = json.loads((out / "tokens.json").read_text())
    m = manifest["model"]["num_mem_tokens"]
    words = [vocab[str(i)] for i in ids[m + 1:]]
    assert words[0] == "[SEP]" and words[1:1 + SEGMENT] == model.tokenizer.convert_ids_to_tokens(sample.segments()[t])
    assert manifest["metadata"]["facts"][0]["segment"] == sample.facts[0].segment
    np.testing.assert_array_equal(np.load(out / "final_logits.npy"), np.float32(manifest["final_logits"]))


def test_reading_api_shapes_and_values(recorded):
    out, sample, model = recorded
    trace = Trace.open(out)
    T, m, d = model.config.input_size, model.num_mem_tokens, model.hidden_size
    assert trace.read_attention(-1).shape == (2, 2, T, m) and trace.write_attention(0).shape == (2, 2, m, T)
    assert trace.full_attention(2).shape == (2, 2, T, T) and trace.has_full_attention(5)
    assert trace.memory_in(0).shape == (m, d) and trace.segment_logits.shape == (N, 6)
    assert trace.final_logits.shape == (6,) and abs(trace.probabilities.sum() - 1) < 1e-9
    np.testing.assert_array_equal(trace.segment_logits[-1], trace.final_logits)
    assert trace.answer == sample.answer and trace.metadata["question"] == sample.question
    assert trace.sample() == sample
    assert trace.has_attention(-1) and trace.segment_length(0) == SEGMENT
    for bad in (N, -N - 1):
        with pytest.raises(TraceError, match=f"out of range: this trace has {N} segments"):
            trace.read_attention(bad)
    with pytest.raises(TraceError, match="must be an integer"):
        trace.tokens(1.5)


def test_trace_without_segment_logits_reads_none(recorded, tmp_path):
    out, sample, model = recorded
    trace = replay(model, sample, out=tmp_path / "t", policy=RecordingPolicy(segment_logits=False), progress=False)
    assert trace.segment_logits is None and not (tmp_path / "t" / "segment_logits.npy").exists()
    assert trace.final_logits.shape == (6,)


def test_damaged_or_missing_traces_are_one_line_trace_errors(trace_copy, tmp_path):
    with pytest.raises(TraceError, match="does not exist"):
        Trace.open(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(TraceError, match="is a file"):
        Trace.open(tmp_path / "file")
    partial = tmp_path / "t.partial-123"
    partial.mkdir()
    with pytest.raises(TraceError, match="unfinished replay"):
        Trace.open(partial)
    manifest = trace_copy / "manifest.json"
    good = manifest.read_text()
    manifest.write_text(good.replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(TraceError, match="format_version 99"):
        Trace.open(trace_copy)
    manifest.write_text(good[:100])
    with pytest.raises(TraceError, match="not valid JSON") as caught:
        Trace.open(trace_copy)
    assert "\n" not in str(caught.value)
    manifest.write_text(good)
    (trace_copy / "memory.npy").write_bytes(b"not an npy file")
    with pytest.raises(TraceError, match="not a readable .npy file"):
        Trace.open(trace_copy).memory_in(0)
    (trace_copy / "tokens.json").unlink()
    with pytest.raises(TraceError, match="missing tokens.json"):
        Trace.open(trace_copy).tokens(0)
