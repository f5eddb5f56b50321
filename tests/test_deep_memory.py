"""rmt train --deep-memory: the pool's states are the recurrence's memory after its noise, and training uses them."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_tiny_rmt
from rmt_core import recurrence
from rmt_core.deep_memory import DeepMemoryPool
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
