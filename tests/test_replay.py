"""Replay: recorded quantities agree with the model, traces are atomic, bad input ends in one-line errors."""

from __future__ import annotations

import errno
import filecmp
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_tiny_rmt
from rmt_core.errors import ReplayError, TraceError
from rmt_core.model import ROLE_FACT, ROLE_MEMORY, ROLE_NOISE, ROLE_PAD, ROLE_QUESTION, ROLE_SPECIAL
from rmt_core.replay import RecordingPolicy, replay, replay_in_memory
from rmt_core.segmenting import decode_text, read_text_file, segments_from_text
from rmt_core.trace import Trace

SEGMENT = 24  # large enough for a fact and a question, small enough to be fast


@pytest.fixture(scope="module")
def model(tokenizer):
    return make_tiny_rmt(tokenizer, segment_size=SEGMENT, num_mem_tokens=4)


@pytest.fixture(scope="module")
def sample(tokenizer):
    from rmt_core.tasks import TaskBuilder

    return TaskBuilder("detect", tokenizer, SEGMENT).sample(6, seed=3)


def everything():
    return RecordingPolicy(full_attention_segments=list(range(6)))


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def leftovers(path: Path) -> list[str]:
    """Anything named after the trace beside it: the trace itself or a partial folder."""
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name))


# ----- what is recorded agrees with the model ------------------------------------------------------------------
def test_read_and_write_slices_are_blocks_of_the_full_attention(model, sample, tmp_path):
    trace = replay(model, sample, out=tmp_path / "t", policy=everything(), progress=False)
    m = model.num_mem_tokens
    T = model.config.input_size
    for t in range(trace.n_segments):
        full = trace.full_attention(t)
        read, write = trace.read_attention(t), trace.write_attention(t)
        assert full.shape == (2, 2, T, T) and read.shape == (2, 2, T, m) and write.shape == (2, 2, m, T)
        np.testing.assert_array_equal(read, full[:, :, :, 1:m + 1])
        np.testing.assert_array_equal(write, full[:, :, 1:m + 1, :])
        # rows are probabilities over the unmasked keys; padded keys get nothing
        np.testing.assert_allclose(full.astype(np.float32).sum(-1), 1.0, atol=5e-3)
        pad = trace.roles(t) == ROLE_PAD
        assert float(np.abs(full[..., pad]).max(initial=0.0)) == 0.0


def test_full_attention_matches_a_direct_eager_segment_step(model, sample, tmp_path):
    trace = replay(model, sample, out=tmp_path / "t", policy=everything(), progress=False)
    t = 2
    memory = torch.from_numpy(trace.memory_in(t)).unsqueeze(0)
    tokens = torch.tensor([sample.segments()[t]])
    with torch.no_grad(), model.recording():
        step = model.segment_step(memory, tokens, output_attentions=True)
    expected = torch.stack([a[0] for a in step.attentions]).to(torch.float16).numpy()
    np.testing.assert_array_equal(trace.full_attention(t), expected)
    np.testing.assert_allclose(trace.memory_out(t), step.memory_out[0].numpy(), atol=1e-6)


def test_memory_in_of_each_segment_is_memory_out_of_the_one_before(model, sample, tmp_path):
    trace = replay(model, sample, out=tmp_path / "t", progress=False)
    states = trace.memory_states()
    assert states.shape == (trace.n_segments + 1, model.num_mem_tokens, model.hidden_size)
    np.testing.assert_array_equal(trace.memory_in(0), model.memory.detach().numpy())
    for t in range(trace.n_segments - 1):
        np.testing.assert_array_equal(trace.memory_in(t + 1), trace.memory_out(t))
    assert not np.array_equal(trace.memory_out(0), trace.memory_in(0))  # the segment did write


def test_final_and_segment_logits_equal_the_forward_pass(model, sample, tmp_path):
    trace = replay(model, sample, out=tmp_path / "t", progress=False)
    with torch.no_grad():
        out = model(torch.tensor([sample.input_ids]), return_segment_logits=True)
    np.testing.assert_allclose(trace.final_logits, out.logits[0].numpy(), rtol=1e-5, atol=1e-6)
    expected = torch.stack([logits[0] for logits in out.segment_logits]).numpy()
    np.testing.assert_allclose(trace.segment_logits, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trace.memory_out(-1), out.memory_out[0].numpy(), atol=1e-5)
    assert trace.prediction == int(out.logits.argmax())
    assert trace.answer == sample.answer and trace.labels == list(model.config.labels)


def test_replay_without_attention_uses_sdpa_and_gives_the_same_logits(model, sample, tmp_path):
    policy = RecordingPolicy(attention_budget_mib=0, edge_segments=0, fact_segments=False)
    trace = replay(model, sample, out=tmp_path / "t", policy=policy, progress=False)
    assert trace.attention_segments == [] and trace.read_attention(0) is None
    with torch.no_grad():
        expected = model(torch.tensor([sample.input_ids])).logits[0].numpy()
    np.testing.assert_allclose(trace.final_logits, expected, rtol=1e-5, atol=1e-6)
    assert model.attention_kernel == "sdpa"  # restored after the replay


def test_text_replay_with_a_short_last_segment_equals_the_masked_forward_pass(model, tokenizer, tmp_path):
    text = "Mary went to the garden. " + "The weather was calm and the river was slow that day. " * 4
    segmented = segments_from_text(tokenizer, text, "Where is Mary?", SEGMENT)
    assert len(segmented.segments[-1]) < SEGMENT
    trace = replay(model, segments=segmented, out=tmp_path / "t", progress=False, metadata={"kind": "text"})
    n = len(segmented.segments)
    ids = torch.zeros(1, n * SEGMENT, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for t, seg in enumerate(segmented.segments):
        ids[0, t * SEGMENT:t * SEGMENT + len(seg)] = torch.tensor(seg)
        mask[0, t * SEGMENT:t * SEGMENT + len(seg)] = 1
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits[0].numpy()
    np.testing.assert_allclose(trace.final_logits, expected, rtol=1e-5, atol=1e-6)
    assert trace.answer is None and trace.metadata["kind"] == "text"
    assert trace.segment_length(-1) == len(segmented.segments[-1])


def test_tokens_and_roles_follow_the_segment_layout(model, sample, tmp_path):
    trace = replay(model, sample, out=tmp_path / "t", progress=False)
    m = model.num_mem_tokens
    fact = sample.facts[0]
    t = fact.segment
    roles, tokens, ids = trace.roles(t), trace.tokens(t), trace.token_ids(t)
    assert len(tokens) == len(roles) == len(ids) == model.config.input_size
    assert tokens[0] == "[CLS]" and tokens[1:m + 1] == [f"[mem{i}]" for i in range(m)] and tokens[m + 1] == "[SEP]"
    assert list(roles[:m + 2]) == [ROLE_SPECIAL] + [ROLE_MEMORY] * m + [ROLE_SPECIAL]
    assert (ids[1:m + 1] == -1).all()
    assert list(ids[m + 2:m + 2 + SEGMENT]) == sample.segments()[t]
    start = fact.start - t * SEGMENT
    assert (roles[m + 2 + start:m + 2 + start + fact.end - fact.start] == ROLE_FACT).all()
    assert tokens[m + 2 + SEGMENT] == "[SEP]" and roles[m + 2 + SEGMENT] == ROLE_SPECIAL
    last = trace.roles(-1)
    assert (last == ROLE_QUESTION).sum() == sample.question_span[1] - sample.question_span[0]
    assert tokens[m + 2:m + 2 + SEGMENT] == tokenizer_tokens(model, sample.segments()[t])


def tokenizer_tokens(model, ids):
    return model.tokenizer.convert_ids_to_tokens(ids)


def test_in_memory_replay_equals_the_on_disk_one(model, sample, tmp_path):
    disk = replay(model, sample, out=tmp_path / "t", policy=everything(), progress=False)
    memory = replay_in_memory(model, sample, everything())
    assert memory.manifest == disk.manifest
    np.testing.assert_array_equal(memory.memory_states(), disk.memory_states())
    np.testing.assert_array_equal(memory.segment_logits, disk.segment_logits)
    for t in range(disk.n_segments):
        assert memory.tokens(t) == disk.tokens(t)
        np.testing.assert_array_equal(memory.read_attention(t), disk.read_attention(t))
        np.testing.assert_array_equal(memory.write_attention(t), disk.write_attention(t))
        np.testing.assert_array_equal(memory.full_attention(t), disk.full_attention(t))
    saved = memory.save(tmp_path / "saved")
    for name in ("memory.npy", "token_ids.npy", "roles.npy", "segment_logits.npy", "final_logits.npy",
                 "manifest.json", "tokens.json", "read_attention.npy", "write_attention.npy", "full_attention.npy"):
        assert filecmp.cmp(saved.path / name, disk.path / name, shallow=False), name


def test_same_seed_gives_a_bit_identical_trace_on_cpu(tokenizer, tmp_path):
    from rmt_core.tasks import TaskBuilder

    paths = []
    for run in range(2):
        model = make_tiny_rmt(tokenizer, segment_size=SEGMENT, seed=5)
        sample = TaskBuilder("reason", tokenizer, SEGMENT).sample(4, seed=11)
        policy = RecordingPolicy(full_attention_segments=[1])
        paths.append(replay(model, sample, out=tmp_path / f"run{run}", policy=policy, progress=False).path)
    files = tree(paths[0])
    assert files == tree(paths[1]) and "full_attention.npy" in files
    for name in files:
        if (paths[0] / name).is_file():
            assert (paths[0] / name).read_bytes() == (paths[1] / name).read_bytes(), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_replay_on_cuda_agrees_with_the_forward_pass_and_with_cpu(model, sample, tokenizer, tmp_path):
    gpu = make_tiny_rmt(tokenizer, segment_size=SEGMENT, num_mem_tokens=4).cuda()
    on_gpu = replay(gpu, sample, out=tmp_path / "gpu", policy=everything(), progress=False)
    on_cpu = replay(model, sample, out=tmp_path / "cpu", policy=everything(), progress=False)
    assert on_gpu.manifest["replayed_on"]["device"] == "cuda"
    with torch.no_grad():
        expected = gpu(torch.tensor([sample.input_ids], device="cuda")).logits[0].cpu().numpy()
    np.testing.assert_allclose(on_gpu.final_logits, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(on_gpu.memory_states(), on_cpu.memory_states(), atol=1e-3)
    np.testing.assert_allclose(on_gpu.full_attention(2).astype(np.float32),
                               on_cpu.full_attention(2).astype(np.float32), atol=2e-3)


# ----- the recording policy --------------------------------------------------------------------------------------
def test_policy_keeps_everything_under_the_budget_and_chosen_segments_beyond_it():
    policy = RecordingPolicy(attention_budget_mib=1, attention_segments=[50, -10], edge_segments=2)
    mib = 2**20
    assert policy.plan(100, mib // 100) == (list(range(100)), [])
    attention, full = policy.plan(1000, mib // 10, fact_segments=[500])
    chosen = {0, 1, 998, 999, 50, 990, 500}
    assert chosen <= set(attention)
    prefix = sorted(set(attention) - chosen)
    assert prefix == list(range(2, 2 + len(prefix))) and len(attention) * (mib // 10) <= mib + len(chosen) * mib
    assert len(attention) == 10  # the budget holds 10 segments: 7 chosen + 3 from the start
    sampled, _ = RecordingPolicy(attention_budget_mib=0, edge_segments=0, sample_every=100).plan(1000, 1)
    assert sampled == list(range(0, 1000, 100))
    _, full = RecordingPolicy(full_attention_segments=[0, -1]).plan(10, 10**12)
    assert full == [0, 9]


@pytest.mark.parametrize("kwargs, words", [
    ({"attention_segments": [10]}, "out of range"),
    ({"full_attention_segments": [-11]}, "out of range"),
    ({"attention_budget_mib": -1}, "budget"),
    ({"attention_dtype": "int8"}, "attention dtype"),
    ({"sample_every": -2}, "sample_every"),
])
def test_bad_policy_is_a_replay_error_before_any_file(model, sample, tmp_path, kwargs, words):
    with pytest.raises(ReplayError, match=words):
        replay(model, sample, out=tmp_path / "t", policy=RecordingPolicy(**kwargs), progress=False)
    assert leftovers(tmp_path / "t") == []


def test_long_input_keeps_memory_for_every_segment_and_attention_within_budget(model, tokenizer, tmp_path):
    from rmt_core.tasks import TaskBuilder

    sample = TaskBuilder("detect", tokenizer, SEGMENT).sample(40, seed=1)
    T, m = model.config.input_size, model.num_mem_tokens
    per_segment = 2 * 2 * 2 * T * m * 2  # read + write, L=2, H=2, float16
    policy = RecordingPolicy(attention_budget_mib=10 * per_segment / 2**20, edge_segments=1)
    trace = replay(model, sample, out=tmp_path / "t", policy=policy, progress=False)
    assert trace.memory_states().shape[0] == 41
    fact = sample.facts[0].segment
    assert {0, 39, fact} <= set(trace.attention_segments) and len(trace.attention_segments) == 10
    stored = sum((trace.path / f"{kind}_attention.npy").stat().st_size for kind in ("read", "write", "full"))
    assert stored <= 10 * per_segment + 3 * 256  # the rows plus their .npy headers
    assert trace.read_attention(fact).shape == (2, 2, T, m) and trace.read_attention(20 if fact != 20 else 21) is None


# ----- atomic traces -----------------------------------------------------------------------------------------------
class Boom(Exception):
    pass


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_replay_killed_part_way_leaves_nothing_under_the_final_name(model, sample, tmp_path, monkeypatch, error):
    original = type(model).segment_step
    seen = []

    def failing(self, *args, **kwargs):
        seen.append(1)
        if len(seen) == 4:  # segment k = 3
            raise error("injected")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "segment_step", failing)
    with pytest.raises(error):
        replay(model, sample, out=tmp_path / "t", progress=False)
    assert len(seen) == 4
    assert leftovers(tmp_path / "t") == []
    assert model.attention_kernel == "sdpa" and not model.training


def test_partial_folder_is_written_beside_the_final_path_while_replaying(model, sample, tmp_path, monkeypatch):
    import rmt_core.trace as trace_module

    seen = []
    original = trace_module.create_array

    def spy(path, shape, dtype):
        seen.append(Path(path))
        return original(path, shape, dtype)

    monkeypatch.setattr(trace_module, "create_array", spy)
    replay(model, sample, out=tmp_path / "t", progress=False)
    assert {p.parent for p in seen} == {tmp_path / f"t.partial-{os.getpid()}"}
    assert leftovers(tmp_path / "t") == ["t"]


@pytest.mark.parametrize("where, after", [("create_array", 4), ("write_block", 40)])
def test_full_disk_is_a_one_line_trace_error_and_earlier_traces_stay(model, sample, tmp_path, monkeypatch, where,
                                                                     after):
    import rmt_core.trace as trace_module

    earlier = replay(model, sample, out=tmp_path / "earlier", progress=False)
    before = {name: (earlier.path / name).read_bytes() for name in tree(earlier.path)}
    calls = []
    original = getattr(trace_module, where)

    def full_disk(*args):
        calls.append(1)
        if len(calls) > after:  # the disk fills up part-way: a file preallocated, or a row written
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(*args)

    monkeypatch.setattr(trace_module, where, full_disk)
    with pytest.raises(TraceError) as caught:
        replay(model, sample, out=tmp_path / "t", policy=everything(), progress=False)
    assert len(calls) == after + 1
    message = str(caught.value)
    assert "\n" not in message and "No space left on device" in message and "free disk space" in message
    assert leftovers(tmp_path / "t") == []
    monkeypatch.undo()
    assert {name: (earlier.path / name).read_bytes() for name in tree(earlier.path)} == before
    np.testing.assert_array_equal(Trace.open(earlier.path).memory_states(), earlier.memory_states())


def test_existing_trace_is_refused_and_left_intact(model, sample, tmp_path):
    first = replay(model, sample, out=tmp_path / "t", progress=False)
    memory = first.memory_states().copy()
    with pytest.raises(TraceError, match="already exists; choose another --out or delete it"):
        replay(model, sample, out=tmp_path / "t", progress=False)
    (tmp_path / "plain-file").write_text("x")
    with pytest.raises(TraceError, match="already exists"):
        replay(model, sample, out=tmp_path / "plain-file", progress=False)
    np.testing.assert_array_equal(Trace.open(tmp_path / "t").memory_states(), memory)
    assert (tmp_path / "plain-file").read_text() == "x"


def test_stale_partial_of_a_dead_process_is_removed(model, sample, tmp_path):
    pid = 2**22 + 12345  # above the default pid_max: never a live process
    stale = tmp_path / f"t.partial-{pid}"
    (stale / "attention").mkdir(parents=True)
    replay(model, sample, out=tmp_path / "t", progress=False)
    assert leftovers(tmp_path / "t") == ["t"]


# ----- bad input -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, question, words", [
    ("", "Where is Mary?", "text is empty"),
    ("   \n\t ", "Where is Mary?", "text is empty"),
    ("Mary", "Where is Mary now, please?", "shorter than the question"),
    ("Mary went home. " * 10, "where " * 30, "more than a segment holds"),
    ("Mary went home.", "", "question is empty"),
    ("[CLS] [SEP]", "Where is Mary?", "no tokens besides special ones"),
    (b"Mary \xff\xfe went", "Where is Mary?", "not valid UTF-8"),
    ("Mary \udcff went", "Where is Mary?", "not valid UTF-8"),
])
def test_bad_text_input_is_a_one_line_replay_error(tokenizer, text, question, words):
    with pytest.raises(ReplayError, match=words) as caught:
        segments_from_text(tokenizer, text, question, SEGMENT)
    assert "\n" not in str(caught.value)


def test_non_utf8_text_file_is_a_replay_error(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9 au lait")
    with pytest.raises(ReplayError, match=r"not valid UTF-8 \(byte 3: 0xe9\)"):
        read_text_file(bad)
    with pytest.raises(ReplayError, match="does not exist"):
        read_text_file(tmp_path / "missing.txt")
    assert decode_text("plain") == "plain"


def test_segmenting_strips_special_tokens_and_keeps_the_question_whole(tokenizer):
    question = "Where is Mary?"
    q = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    text = "[CLS] Mary went to the garden. [SEP] " + "The sun rose over the quiet hills again. " * 6
    segments, roles = segments_from_text(tokenizer, text, question, SEGMENT)
    flat = [i for s in segments for i in s]
    assert not set(flat) & set(tokenizer.all_special_ids)
    assert all(len(s) == SEGMENT for s in segments[:-1]) and 0 < len(segments[-1]) <= SEGMENT
    assert roles[-1][-q:] == [ROLE_QUESTION] * q and all(r == ROLE_NOISE for rs in roles[:-1] for r in rs)
    assert [len(r) for r in roles] == [len(s) for s in segments]
    # a text that fills its last piece: the question gets a segment of its own, never split
    n_text = len(flat) - q
    exact = tokenizer.decode(flat[:SEGMENT * (n_text // SEGMENT)])
    segments, roles = segments_from_text(tokenizer, exact, question, SEGMENT)
    assert roles[-1] == [ROLE_QUESTION] * q and len(segments[-1]) == q


def test_bad_segments_are_replay_errors(model, sample, tmp_path):
    cases = [
        ([], "no segments"),
        ([[1] * (SEGMENT + 1)], "more than the checkpoint's segment size"),
        ([[]], "segment 0 is empty"),
        ([[10**7]], "outside the model's vocabulary"),
    ]
    for segments, words in cases:
        with pytest.raises(ReplayError, match=words):
            replay(model, segments=segments, out=tmp_path / "t", progress=False)
    with pytest.raises(ReplayError, match="2 roles"):
        replay_in_memory(model, [[5, 6, 7]], roles=[[0, 0]])
    from rmt_core.tasks import TaskBuilder

    other = TaskBuilder("memorize", model.tokenizer, SEGMENT + 8).sample(2, seed=0)
    with pytest.raises(ReplayError, match=f"segment_size={SEGMENT}"):
        replay(model, other, out=tmp_path / "t", progress=False)
    assert leftovers(tmp_path / "t") == []


# ----- the command line -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tokenizer, tmp_path_factory):
    from rmt_core.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("ck") / "tiny"
    save_checkpoint(make_tiny_rmt(tokenizer, segment_size=SEGMENT), path)
    return path


def test_cli_replays_a_task_sample(checkpoint, tmp_path, capsys):
    from rmt_core.checkpoint import checkpoint_identity
    from rmt_cli.main import main

    code = main(["replay", "--checkpoint", str(checkpoint), "--task", "detect", "--segments", "5", "--seed", "2",
                 "--out", str(tmp_path / "t"), "--full-attention", "0,-1", "--quiet", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0 and "prediction:" in out and str(tmp_path / "t") in out
    trace = Trace.open(tmp_path / "t")
    assert trace.n_segments == 5 and trace.full_attention_segments == [0, 4]
    assert trace.manifest["checkpoint"] == checkpoint_identity(checkpoint)
    assert trace.metadata["task"] == "detect" and trace.metadata["seed"] == 2
    assert trace.sample().input_ids == [i for s in (trace.token_ids(t)[6:6 + SEGMENT] for t in range(5)) for i in s]


def test_cli_replays_a_text_file(checkpoint, tmp_path, capsys):
    from rmt_cli.main import main

    text = tmp_path / "story.txt"
    text.write_text("Daniel went back to the hallway. " + "Rain fell on the old roof all night. " * 8)
    code = main(["replay", "--checkpoint", str(checkpoint), "--text-file", str(text), "--question", "Where is Daniel?",
                 "--segment-size", "99", "--out", str(tmp_path / "t"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0 and "unknown (free text)" in captured.out and "ignored" in captured.err
    trace = Trace.open(tmp_path / "t")
    assert trace.metadata["question"] == "Where is Daniel?" and trace.answer is None


@pytest.mark.parametrize("args, words", [
    (["--text-file", "{bad}", "--question", "Where is Mary?"], "not valid UTF-8"),
    (["--text-file", "{empty}", "--question", "Where is Mary?"], "text is empty"),
    (["--text-file", "{short}", "--question", "Where is Mary now, please?"], "shorter than the question"),
    (["--text-file", "{short}", "--question", "where " * 40], "more than a segment holds"),
    (["--text-file", "{short}"], "needs --question"),
    (["--task", "memorize"], "give --segments"),
    (["--segments", "2", "--full-attention", "x"], "comma-separated"),
    (["--segments", "2", "--full-attention", "7"], "out of range"),
    (["--segments", "2", "--out", "{existing}"], "already exists"),
])
def test_cli_bad_input_is_one_line_and_exit_1(checkpoint, tmp_path, capsys, args, words):
    from rmt_cli.main import main

    files = {"bad": b"\xff\xfe\x00", "empty": b"", "short": b"Mary went home."}
    for name, content in files.items():
        (tmp_path / f"{name}.txt").write_bytes(content)
    existing = replay(make_tiny_rmt(checkpoint_tokenizer(checkpoint), segment_size=SEGMENT), segments=[[1000, 1001]],
                      out=tmp_path / "existing", progress=False)
    paths = {name: str(tmp_path / f"{name}.txt") for name in files} | {"existing": str(existing.path)}
    args = [a.format(**paths) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "t")]
    code = main(["replay", "--checkpoint", str(checkpoint), "--quiet", *args])
    err = capsys.readouterr().err.strip()
    assert code == 1 and words in err and "\n" not in err and err.startswith("rmt replay: error:")
    assert leftovers(tmp_path / "t") == []
    Trace.open(existing.path)


def checkpoint_tokenizer(checkpoint):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(checkpoint), local_files_only=True)


def test_rmt_replay_takes_a_babi_folder_and_records_its_split(shared_data, tmp_path, capsys):
    import json

    from rmt_cli.main import main

    from pathlib import Path

    checkpoint = str(Path(__file__).resolve().parents[1] / "checkpoints" / "memorize")
    babi_dir = shared_data / "babi" / "en-10k"
    for split, extra in (("test", []), ("train", ["--split", "train"])):
        out = tmp_path / split
        assert main(["replay", "--checkpoint", checkpoint, "--segments", "2", "--babi-dir",
                     str(babi_dir), "--out", str(out), "--quiet", *extra]) == 0
        sources = json.loads((out / "manifest.json").read_text())["metadata"]["sources"]
        assert sources["split"] == split and sources["babi"].endswith(f"qa1_single-supporting-fact_{split}.txt")
    assert main(["replay", "--checkpoint", checkpoint, "--segments", "2", "--babi-dir", str(babi_dir),
                 "--babi-file", str(babi_dir / "qa1_single-supporting-fact_test.txt"), "--out",
                 str(tmp_path / "both")]) == 1
    assert "not both" in capsys.readouterr().err and not (tmp_path / "both").exists()
