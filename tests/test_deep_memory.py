"""rmt train --deep-memory: the pool's states are the recurrence's memory after its noise, and training uses them."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_tiny_rmt
from rmt_core import recurrence
from rmt_core.deep_memory import DeepMemoryPool, FarFactPool
from rmt_core.errors import TrainError
from rmt_core.inputs import SegmentBatch
from rmt_core.noise import NoiseSource
from rmt_core.train import Stage, TrainConfig, train


@pytest.fixture
def model(tokenizer):
    return make_tiny_rmt(tokenizer, segment_size=16, num_mem_tokens=3, hidden=16, layers=1, heads=2, seed=4)


def test_pool_states_are_the_memory_after_their_noise(model, tokenizer):
    noise = NoiseSource.load("builtin", tokenizer)
    pool = DeepMemoryPool(model, noise, size=5, max_depth=640, seed=1)  # advances of 10 segments
    assert pool.advance_segments == 10 and torch.equal(pool.memory, model.initial_memory(5))
    pool.target = [10**6] * 5  # no stream restarts in this test
    before = pool.memory.clone()
    pool.advance(model)
    with torch.no_grad():
        expected = recurrence.run(model, SegmentBatch.from_ids(pool.last_ids, 16), memory=before).memory
    assert pool.last_ids.shape == (5, 10 * 16)
    torch.testing.assert_close(pool.memory, expected, atol=1e-6, rtol=0)
    assert pool.depth == [10] * 5 and not torch.equal(pool.memory, before)
    # a stream that reaches its depth restarts from the initial memory with a new depth
    pool.target = [20, 10**6, 10**6, 10**6, 10**6]
    pool.advance(model)
    assert pool.depth == [0, 20, 20, 20, 20] and 1 <= pool.target[0] <= 640
    assert torch.equal(pool.memory[0], model.initial_memory(1)[0]) and not torch.equal(pool.memory[1], before[1])


def test_fill_spreads_depths_and_batches_mix_pool_and_initial_memory(model, tokenizer):
    pool = DeepMemoryPool(model, NoiseSource.load("builtin", tokenizer), size=8, max_depth=64, seed=2)
    pool.fill(model)
    assert all(0 <= d < t for d, t in zip(pool.depth, pool.target)) and len(set(pool.depth)) > 1
    memory = pool.batch_memory(model, 6, 0.5, step=7)
    assert memory.shape == (6, 3, 16)
    assert all(any(torch.equal(memory[i], pool.memory[j]) for j in range(8)) for i in range(3))
    assert all(torch.equal(memory[i], model.initial_memory(1)[0]) for i in range(3, 6))
    assert torch.equal(memory, pool.batch_memory(model, 6, 0.5, step=7))  # the step decides the draw
    assert torch.equal(pool.batch_memory(model, 6, 0.0, step=7), model.initial_memory(6))


def test_training_with_deep_memory_logs_its_pool_and_resumes_with_a_refilled_pool(tmp_path):
    cfg = dict(task="detect", stages=[Stage(2, 16)], hidden_size=16, num_layers=1, num_heads=2, max_positions=64,
               num_mem_tokens=3, batch_size=4, lr=1e-3, warmup_steps=2, max_steps=12, eval_every=6,
               val_samples=8, target_accuracy=1.01, plateau=100, log_every=1, save_dtype="float32", threads=1,
               seed=3, deep_memory=0.5, deep_segments=64)
    whole = train(TrainConfig(out=str(tmp_path / "whole"), **cfg), progress=False)
    plain = train(TrainConfig(out=str(tmp_path / "plain"), **dict(cfg, deep_memory=0.0)), progress=False)

    def entries(folder, event):
        return [e for e in map(json.loads, (folder / "training_log.jsonl").read_text().splitlines())
                if e["event"] == event]

    pools = entries(whole, "deep_memory")
    assert len(pools) == 1 and pools[0]["streams"] == 4 and pools[0]["max_depth"] == 64
    assert not entries(plain, "deep_memory")
    losses = [e["loss"] for e in entries(whole, "step")]
    assert losses != [e["loss"] for e in entries(plain, "step")]  # the pool's memory changed what was trained
    cut = TrainConfig(out=str(tmp_path / "cut"), **cfg)
    with pytest.raises(KeyboardInterrupt):
        train(cut, stop_after=8, progress=False)  # after the resume point at step 6
    train(cut, resume=True, progress=False)
    resumed = [e["loss"] for e in entries(tmp_path / "cut", "step")]
    # The pool is not saved: a resumed run refills it with the resumed weights, so its losses are close to the
    # uninterrupted run's, not equal (the steps before the resume point are the same).
    assert resumed[:6] == losses[:6] and len(resumed) == len(losses)
    assert resumed[6:] != losses[6:] and max(abs(a - b) for a, b in zip(resumed, losses)) < 1e-2


def test_deep_memory_is_refused_for_a_decoder(tmp_path):
    from rmt_cli.main import main

    assert main(["train", "--architecture", "decoder", "--task", "qa1", "--deep-memory", "0.5",
                 "--out", str(tmp_path / "d")]) != 0
    with pytest.raises(TrainError, match="encoder"):
        DeepMemoryPool(type("M", (), {"config": type("C", (), {"architecture": "decoder"})()})(), None, 1, 1)


# ----- --far-facts: memory that holds a sample's facts after long noise --------------------------------------

@pytest.fixture
def builder(tokenizer):
    from rmt_core.tasks import TaskBuilder

    return TaskBuilder("detect", tokenizer, 16)


def test_far_fact_streams_start_from_the_memory_their_facts_write(model, builder):
    pool = FarFactPool(model, builder, size=4, max_depth=64, seed=5)
    assert all(all(f.segment == 0 for f in s.facts) and s.n_segments == 2 for s in pool.samples)
    firsts = torch.tensor([s.input_ids[:16] for s in pool.samples])
    with torch.no_grad():
        written = recurrence.run(model, SegmentBatch.from_ids(firsts, 16)).memory
    torch.testing.assert_close(pool.memory, written, atol=1e-6, rtol=0)
    assert pool.depth == [0] * 4 and not torch.equal(pool.memory, model.initial_memory(4))
    # noise then moves every stream on; a stream past its depth takes a new sample and writes its facts again
    pool.target = [1, 10**6, 10**6, 10**6]
    kept = pool.samples[1]
    pool.advance(model)
    assert pool.depth == [0, 1, 1, 1] and pool.samples[1] is kept and pool.samples[0] is not None
    with torch.no_grad():
        again = recurrence.run(model, SegmentBatch.from_ids(torch.tensor([pool.samples[0].input_ids[:16]]), 16)).memory
    torch.testing.assert_close(pool.memory[:1], again, atol=1e-6, rtol=0)


def test_far_rows_ask_a_streams_question_after_fresh_noise(model, builder):
    pool = FarFactPool(model, builder, size=3, max_depth=64, seed=6)
    pool.fill(model)
    ids, labels, holds = builder.batch(4, 6, seed=9, fact_segments=True)
    still, write = ~holds, holds.clone()
    read = torch.ones(6, 4, 16, dtype=torch.bool)
    memory, new_ids, new_labels, masks, anchor = pool.rows(model, ids, labels, (still, write, None, read, None, None,
                                                                               None), 0.5, 11)
    for row in range(3):  # round(0.5 * 6) rows from the pool
        stream = next(i for i in range(3) if torch.equal(memory[row], pool.memory[i]))
        sample = pool.samples[stream]
        assert torch.equal(anchor[row], pool.written[stream])  # held to what the facts wrote, not to the drift
        assert not torch.equal(anchor[row], memory[row])
        assert new_ids[row, -16:].tolist() == sample.input_ids[16:32] and new_labels[row] == sample.answer
        assert masks[0][row].tolist() == [True, True, True, False]  # noise all the way, the question's segment aside
        assert not masks[1][row].any() and not masks[3][row].any()  # no fact to write or to read
    assert torch.equal(new_ids[3:], ids[3:]) and torch.equal(new_labels[3:], labels[3:])
    assert torch.equal(masks[0][3:], still[3:]) and torch.equal(masks[3][3:], read[3:])
    assert torch.equal(memory[3:], model.initial_memory(3)) and torch.equal(anchor[3:], memory[3:])
    assert torch.equal(ids[:3], builder.batch(4, 6, seed=9)[0][:3])
    anchored = still & (holds.cumsum(dim=1) > 0)
    *_, with_anchor, _ = pool.rows(model, ids, labels, (still, write, None, read, None, None, anchored), 0.5, 11)
    assert with_anchor[6][:3].tolist() == [[True, True, True, False]] * 3  # the pool's memory holds the facts
    assert torch.equal(with_anchor[6][3:], anchored[3:]) and masks[6] is None
    again = pool.rows(model, ids, labels, (still, write, None, read, None, None, None), 0.5, 11)
    assert torch.equal(again[1], new_ids) and torch.equal(again[0], memory)  # the step decides the draw
    one_ids, one_labels = builder.batch(1, 2, seed=9)  # a one-segment row is the question's segment alone
    _, short, _, _, _ = pool.rows(model, one_ids, one_labels, (None,) * 7, 1.0, 3)
    assert all(short[r].tolist() in [s.input_ids[16:] for s in pool.samples] for r in range(2))
    with pytest.raises(TrainError, match="--slot-recall"):
        pool.rows(model, ids, labels, (still, write, None, read, None, object(), None), 0.5, 11)


def test_training_with_far_facts_logs_its_pool_and_changes_what_is_trained(tmp_path):
    cfg = dict(task="detect", stages=[Stage(2, 16)], hidden_size=16, num_layers=1, num_heads=2, max_positions=64,
               num_mem_tokens=3, batch_size=4, lr=1e-3, warmup_steps=2, max_steps=6, eval_every=6,
               val_samples=8, target_accuracy=1.01, plateau=100, log_every=1, save_dtype="float32", threads=1,
               seed=3, noise_stillness=1.0)
    far = train(TrainConfig(out=str(tmp_path / "far"), far_facts=0.5, far_segments=32, **cfg), progress=False)
    plain = train(TrainConfig(out=str(tmp_path / "plain"), **cfg), progress=False)
    log = [json.loads(line) for line in (far / "training_log.jsonl").read_text().splitlines()]
    pools = [e for e in log if e["event"] == "far_facts"]
    assert len(pools) == 1 and pools[0]["streams"] == 4 and pools[0]["max_depth"] == 32
    losses = [e["loss"] for e in log if e["event"] == "step"]
    plain_log = [json.loads(line) for line in (plain / "training_log.jsonl").read_text().splitlines()]
    assert losses != [e["loss"] for e in plain_log if e["event"] == "step"]
    with pytest.raises(TrainError, match="give one of them"):
        train(TrainConfig(out=str(tmp_path / "both"), far_facts=0.5, deep_memory=0.5, **cfg), progress=False)
    assert not (tmp_path / "both").exists()  # refused before the run folder is made


@pytest.mark.parametrize("flags, message", [
    (["--architecture", "decoder", "--task", "qa1", "--far-facts", "0.5"], "encoder"),
    (["--far-facts", "0.5", "--deep-memory", "0.5"], "give one of them"),
    (["--task", "reason", "--far-facts", "0.5", "--slot-recall", "1"], "--slot-recall"),
    (["--far-facts", "1.5"], "far-facts"),
])
def test_far_facts_refusals_name_the_fix(tmp_path, capsys, flags, message):
    from rmt_cli.main import main

    assert main(["train", *flags, "--out", str(tmp_path / "run")]) != 0
    assert message in capsys.readouterr().err and not (tmp_path / "run").exists()
