"""Property tests (hypothesis) of the readers of untrusted input: the numbers of the command line, a checkpoint's
config.json, a trace's manifest.json and its .npy headers. Whatever they hold, reading ends in a result or in
our one error type for that reader (usage error, CheckpointError, TraceError), never in another exception, and
never after building something of the size a bad number asks for."""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import make_tiny_rmt
from rmt_core.errors import CheckpointError, RMTError, TraceError

SEGMENT = 24
# RMT_HYPOTHESIS_EXAMPLES=1000 searches longer (the suite keeps to a few seconds a property).
EXAMPLES = settings(max_examples=int(os.environ.get("RMT_HYPOTHESIS_EXAMPLES", 40)), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

# JSON values a damaged or hand-edited file may hold where a number, a name or a list belongs.
json_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-2**70, max_value=2**70),
    st.sampled_from([0, 1, -1, 2**21, 2**31, 10**12, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["", "12", "nan", "../../x", "float16", "object"]),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                 st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                           max_leaves=6)


# ----- command-line numbers -------------------------------------------------------------------------------------
number_texts = st.one_of(
    st.integers(min_value=-10**20, max_value=10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e12", "1_000", "0x10", "", " ", "1,2", "1.5", "-0", "+3", "١٢"]),
    st.text(max_size=8),
)

# (command and the arguments it needs, flag, what every accepted value must satisfy)
NUMERIC_FLAGS = [
    (["eval"], "--samples", lambda v: 1 <= v <= 1_000_000),
    (["eval"], "--batch-size", lambda v: 1 <= v <= 65536),
    (["eval"], "--seed", lambda v: 0 <= v < 2**63),
    (["eval"], "--segments", lambda v: v and all(1 <= n <= 2**24 for n in v)),
    (["replay", "--out", "x"], "--segments", lambda v: 1 <= v <= 2**24),
    (["replay", "--out", "x"], "--attention-budget-mib", lambda v: 0 <= v <= 2**30 and math.isfinite(v)),
    (["probe", "--out", "x"], "--samples", lambda v: 4 <= v <= 1_000_000),
    (["probe", "--out", "x"], "--intervention-samples", lambda v: 2 <= v),
    (["train", "--out", "x"], "--lr", lambda v: 0 < v <= 10 and math.isfinite(v)),
    (["train", "--out", "x"], "--dropout", lambda v: 0 <= v < 1),
    (["train", "--out", "x"], "--mem", lambda v: 1 <= v <= 4096),
    (["train", "--out", "x"], "--layers", lambda v: 1 <= v <= 64),
    (["train", "--out", "x"], "--threads", lambda v: 1 <= v <= 4096),
    (["train", "--out", "x"], "--segment-size", lambda v: 4 <= v),
    (["train", "--out", "x"], "--val-samples", lambda v: 1 <= v <= 1_000_000),
    (["train", "--out", "x"], "--time-budget-s", lambda v: 0 < v and math.isfinite(v)),
    (["export"], "--scale", lambda v: 0 < v <= 16),
    (["export"], "--width", lambda v: 1 <= v <= 16384),
    (["export"], "--window", lambda v: 1 <= v),
    (["sample", "--task", "memorize"], "--segments", lambda v: 1 <= v <= 2**24),
    (["flops"], "--tokens", lambda v: v and all(1 <= n <= 10**15 for n in v)),
    (["app"], "--port", lambda v: 1 <= v <= 65535),
]


@pytest.fixture(scope="module")
def parser():
    from rmt_cli.main import build_parser

    return build_parser()


@pytest.mark.parametrize("command, flag, allowed", NUMERIC_FLAGS, ids=[f"{c[0]} {f}" for c, f, _ in NUMERIC_FLAGS])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=number_texts)
def test_a_number_flag_takes_only_what_can_work_and_refuses_the_rest_in_one_line(parser, capsys, command, flag,
                                                                                 allowed, text):
    try:
        args = parser.parse_args([*command, f"{flag}={text}"])
    except SystemExit as exit_:
        err = capsys.readouterr().err
        assert exit_.code == 1 and err.count("\n") == 1 and f"argument {flag}" in err, err
        return
    value = getattr(args, flag.lstrip("-").replace("-", "_"))
    assert allowed(value), (text, value)


# ----- config.json --------------------------------------------------------------------------------------------
CONFIG_KEYS = [("rmt", k) for k in ("num_mem_tokens", "segment_size", "trained_segments", "labels", "task",
                                     "bptt_depth", "loss_on", "classifier_dropout")]
CONFIG_KEYS += [("backbone", k) for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                          "max_position_embeddings", "intermediate_size", "type_vocab_size",
                                          "layer_norm_eps", "model_type")]
CONFIG_KEYS += [(None, "dtype"), (None, "format_version"), (None, "rmt"), (None, "backbone")]


@pytest.fixture(scope="module")
def saved(tokenizer, tmp_path_factory):
    from rmt_core.checkpoint import save_checkpoint

    return save_checkpoint(make_tiny_rmt(tokenizer, segment_size=SEGMENT, hidden=32, layers=1), 
                           tmp_path_factory.mktemp("ck") / "tiny")


@EXAMPLES
@given(changes=st.lists(st.tuples(st.sampled_from(CONFIG_KEYS), json_values), min_size=1, max_size=3))
def test_any_config_json_loads_or_is_a_checkpoint_error(saved, tmp_path_factory, changes):
    from rmt_core.checkpoint import load_checkpoint

    folder = tmp_path_factory.mktemp("config") / "ck"
    shutil.copytree(saved, folder)
    config = json.loads((folder / "config.json").read_text())
    for (section, key), value in changes:
        if section is None:
            config[key] = value
        elif isinstance(config.get(section), dict):
            config[section][key] = value
    (folder / "config.json").write_text(json.dumps(config))  # NaN and Infinity as Python's json writes them
    try:
        model = load_checkpoint(folder, device="cpu")
    except CheckpointError as error:
        assert "\n" not in str(error) and str(error)
        return
    # Loaded: then it is the model the weights describe, with settings that can run.
    assert model.num_mem_tokens >= 1 and model.config.segment_size >= 1 and model.config.trained_segments >= 0
    assert sum(p.numel() for p in model.parameters()) < 10**7


def test_a_config_field_of_the_wrong_type_is_a_checkpoint_error(saved, tmp_path):
    """Found by the test above: transformers' strict config raises its own error class for 0 where a float goes."""
    from rmt_core.checkpoint import load_checkpoint

    folder = tmp_path / "ck"
    shutil.copytree(saved, folder)
    config = json.loads((folder / "config.json").read_text())
    config["backbone"]["layer_norm_eps"] = 0
    (folder / "config.json").write_text(json.dumps(config))
    try:
        load_checkpoint(folder, device="cpu")  # an older transformers takes the int as it is
    except CheckpointError as error:
        assert "has unusable settings" in str(error) and "\n" not in str(error)


# ----- trace manifests and .npy headers -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recorded(saved, tmp_path_factory):
    from rmt_core.checkpoint import load_checkpoint
    from rmt_core.replay import RecordingPolicy, replay
    from rmt_core.tasks import TaskBuilder

    model = load_checkpoint(saved, device="cpu")
    sample = TaskBuilder("detect", model.tokenizer, SEGMENT).sample(3, seed=4)
    out = tmp_path_factory.mktemp("trace") / "trace"
    replay(model, sample, out=out, policy=RecordingPolicy(full_attention_segments=[1]), progress=False)
    return out


def read_everything(folder: Path) -> None:
    """Open a trace and read what the figures, tables and the dashboard read."""
    from rmt_core.viz import export
    from rmt_core.trace import Trace

    trace = Trace.open(folder)
    for t in range(min(trace.n_segments, 4)):
        trace.tokens(t), trace.roles(t), trace.memory_in(t), trace.memory_out(t)
        trace.read_attention(t), trace.write_attention(t), trace.full_attention(t)
    trace.segment_logits, trace.prediction, trace.probabilities, trace.labels, trace.answer, trace.sample()
    for name in ("answer", "segment_answer", "memory_norms", "tokens", "read_attention"):
        export.trace_figure(trace, name)
    for name in export.TRACE_TABLES:
        export.trace_table(trace, name)


MANIFEST_KEYS = [("n_segments",), ("answer",), ("model", "num_mem_tokens"), ("model", "labels"),
                 ("recorded", "attention_segments"), ("recorded", "full_attention_segments"), ("recorded",),
                 ("arrays",), ("metadata",), ("metadata", "facts")]
MANIFEST_KEYS += [("arrays", name, field) for name in ("token_ids", "roles", "memory", "final_logits",
                                                        "read_attention", "segment_logits")
                  for field in ("file", "shape", "dtype")]


def test_the_recorded_trace_reads_whole(recorded):
    read_everything(recorded)  # the property below starts from a trace that reads without error


@EXAMPLES
@given(changes=st.lists(st.tuples(st.sampled_from(MANIFEST_KEYS), json_values), min_size=1, max_size=3))
def test_any_manifest_reads_or_is_a_trace_error(recorded, tmp_path_factory, changes):
    folder = tmp_path_factory.mktemp("manifest") / "trace"
    shutil.copytree(recorded, folder)
    (folder.parent / "outside.npy").write_bytes((folder / "memory.npy").read_bytes())
    manifest = json.loads((folder / "manifest.json").read_text())
    for path, value in changes:
        parent = manifest
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            parent[path[-1]] = value
    (folder / "manifest.json").write_text(json.dumps(manifest))
    try:
        read_everything(folder)
    except RMTError as error:  # TraceError, or ExportError for a figure the trace cannot give
        assert "\n" not in str(error) and str(error)


ARRAYS = {"token_ids": "int32", "roles": "int8", "memory": "float32", "final_logits": "float32",
          "read_attention": "float16"}
descriptors = st.one_of(st.sampled_from(["<i4", "|i1", "<f4", "<f2", ">f4", "<f8", "|O", "|V8", "<U3", "|b1", "<c8",
                                         "<i8", "|S2"]),
                        st.just([("a", "<i4"), ("b", "<f4")]))
shapes = st.lists(st.integers(min_value=-3, max_value=2**40), min_size=0, max_size=5).map(tuple)


def npy_bytes(descr, fortran: bool, shape: tuple, body: bytes) -> bytes:
    """A .npy file with this header, written by hand (numpy's writer refuses some of these headers)."""
    header = repr({"descr": descr, "fortran_order": fortran, "shape": shape}).encode("latin1")
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + body


@EXAMPLES
@given(name=st.sampled_from(sorted(ARRAYS)), descr=descriptors, fortran=st.booleans(), shape=shapes,
       body=st.binary(max_size=64), keep_body=st.booleans(), cut=st.integers(min_value=0, max_value=200))
def test_any_npy_header_reads_or_is_a_trace_error(recorded, tmp_path_factory, name, descr, fortran, shape, body,
                                                  keep_body, cut):
    folder = tmp_path_factory.mktemp("npy") / "trace"
    shutil.copytree(recorded, folder)
    file = folder / f"{name}.npy"
    original = file.read_bytes()
    with open(file, "rb") as handle:
        np.lib.format.read_magic(handle)
        np.lib.format.read_array_header_1_0(handle)
        data = original[handle.tell():]
    damaged = npy_bytes(descr, fortran, shape, data if keep_body else body)
    file.write_bytes(damaged if cut > len(damaged) else damaged[:len(damaged) - cut] if cut % 2 else damaged)
    try:
        read_everything(folder)
    except RMTError as error:
        assert "\n" not in str(error) and str(error)


def test_the_npy_writer_of_the_property_matches_numpys(tmp_path):
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    buffer = io.BytesIO()
    np.save(buffer, array)
    ours = npy_bytes("<f4", False, (2, 3), array.tobytes())
    assert np.array_equal(np.load(io.BytesIO(ours)), array)
    assert len(ours) % 64 == len(buffer.getvalue()) % 64
