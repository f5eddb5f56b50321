"""Trace folders: lazy per-segment reads, the documented format readable without our code, damaged traces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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


def watch_reads(monkeypatch):
    """Record every (file name, offset, bytes) a trace reads by rows, and fail any whole-array load."""
    import rmt_core.trace as trace_module

    reads = []
    real = trace_module.read_block

    def counting(path, offset, nbytes):
        reads.append((Path(path).name, offset, nbytes))
        return real(path, offset, nbytes)

    monkeypatch.setattr(trace_module, "read_block", counting)
    monkeypatch.setattr(trace_module.np, "load", lambda *a, **k: pytest.fail(f"whole array loaded: {a}"))
    return reads


def row_offset(path, row):
    """Byte offset and size of `row` of a .npy file, computed with numpy's own header reader."""
    with open(path, "rb") as handle:
        np.lib.format.read_magic(handle)
        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        start = handle.tell()
    size = int(np.prod(shape[1:])) * dtype.itemsize
    return start + row * size, size


def test_open_reads_only_the_manifest(recorded, monkeypatch):
    reads = watch_reads(monkeypatch)
    trace = Trace.open(recorded[0])
    assert trace.n_segments == N and trace.attention_segments == list(range(N)) and reads == []


def test_reading_segment_t_reads_only_its_own_rows(recorded, monkeypatch):
    out = recorded[0]
    reads = watch_reads(monkeypatch)
    trace = Trace.open(out)
    trace.read_attention(3)
    trace.write_attention(3)
    trace.full_attention(5)  # row 1 of full_attention.npy (segments 2 and 5 recorded)
    assert trace.full_attention(3) is None  # not recorded: nothing read
    trace.memory_in(3)
    trace.roles(3)
    expected = [
        ("read_attention.npy", *row_offset(out / "read_attention.npy", 3)),
        ("write_attention.npy", *row_offset(out / "write_attention.npy", 3)),
        ("full_attention.npy", *row_offset(out / "full_attention.npy", 1)),
        ("memory.npy", *row_offset(out / "memory.npy", 3)),
        ("roles.npy", *row_offset(out / "roles.npy", 3)),
    ]
    assert reads == expected
    file_size = (out / "read_attention.npy").stat().st_size
    assert reads[0][2] * N < file_size  # one row of eight


def test_reading_segment_t_ignores_every_other_segments_bytes(recorded, trace_copy):
    original = Trace.open(recorded[0])
    for name, keep in (("read_attention.npy", 4), ("write_attention.npy", 4), ("memory.npy", 4), ("roles.npy", 4)):
        rows = np.load(trace_copy / name, mmap_mode="r").shape[0]
        with open(trace_copy / name, "r+b") as handle:
            for row in range(rows):
                if row != keep:
                    offset, size = row_offset(trace_copy / name, row)
                    handle.seek(offset)
                    handle.write(b"\xff" * size)
    trace = Trace.open(trace_copy)
    np.testing.assert_array_equal(trace.read_attention(4), original.read_attention(4))
    np.testing.assert_array_equal(trace.write_attention(4), original.write_attention(4))
    np.testing.assert_array_equal(trace.memory_in(4), original.memory_in(4))
    np.testing.assert_array_equal(trace.roles(4), original.roles(4))
    assert np.isnan(trace.read_attention(3)).all() and np.isnan(trace.memory_in(0)).all()


def test_memory_states_are_memory_mapped(recorded):
    trace = Trace.open(recorded[0])
    states = trace.memory_states()
    assert isinstance(states, np.memmap) and states.shape == (N + 1, 4, 32)
    np.testing.assert_array_equal(states[3], trace.memory_in(3))


def test_the_documented_format_reads_with_numpy_and_json_alone(recorded):
    out, sample, model = recorded
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "rmt-lens-trace" and manifest["format_version"] == 1
    arrays = manifest["arrays"]
    memory = np.load(out / arrays["memory"]["file"], mmap_mode="r")
    assert list(memory.shape) == arrays["memory"]["shape"] and str(memory.dtype) == arrays["memory"]["dtype"]
    row = 4
    t = manifest["recorded"]["attention_segments"][row]
    read = np.load(out / arrays["read_attention"]["file"], mmap_mode="r")
    assert list(read.shape) == arrays["read_attention"]["shape"] and str(read.dtype) == "float16"
    np.testing.assert_array_equal(read[row], Trace.open(out).read_attention(t))
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
