"""rmt train --write-attention: memory's slots are asked to read each fact's direction word as it is written."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_tiny_rmt, tiny_reason_config
from rmt_core import recurrence
from rmt_core.inputs import SegmentBatch
from rmt_core.tasks import TaskBuilder
from rmt_core.train import Data, Stage, TrainConfig, TrainError, direction_tokens, train


def tiny(out, **overrides) -> TrainConfig:
    return tiny_reason_config(out, **{"max_steps": 4, "eval_every": 2, "log_every": 1, "write_attention": 1.0,
                                      **overrides})


def test_the_marks_fall_on_each_facts_direction_word_and_leave_the_batch_as_it_was(tokenizer):
    stage = Stage(4, 32, min_segments=2)
    plain = Data(tiny("p", stages=[stage], write_attention=0.0, noise_stillness=1.0), tokenizer)
    marked = Data(tiny("m", stages=[stage], noise_stillness=1.0), tokenizer)
    for step in range(3):
        ids, labels, still, _, _, none, _, _, _ = plain.batch(stage, 0, step)
        m_ids, m_labels, m_still, _, _, read, _, _, _ = marked.batch(stage, 0, step)
        assert none is None and torch.equal(ids, m_ids) and torch.equal(labels, m_labels)
        assert torch.equal(still, m_still)
        n = ids.shape[1] // 32
        assert read.shape == (8, n, 32) and read.sum() == 16  # two facts a sample, one word each
        words = {tokenizer.convert_ids_to_tokens(int(t)) for t in ids.view(8, n, 32)[read]}
        assert words <= {"north", "south", "east", "west"}


def test_the_term_is_minus_log_of_the_strongest_slot_read_and_trains_the_attention(tokenizer):
    model = make_tiny_rmt(tokenizer, segment_size=32, num_mem_tokens=3)
    samples = TaskBuilder("reason", tokenizer, 32).samples(3, 4, seed=5)
    ids = torch.tensor([s.input_ids for s in samples])
    read = direction_tokens(samples, 3, 32, tokenizer)
    out = model(ids, labels=torch.tensor([s.answer for s in samples]), read=read, read_weight=2.0)
    plain = model(ids, labels=torch.tensor([s.answer for s in samples]))
    # by hand: the last layer's attention of every memory slot's heads to each marked token, at its segment
    cache = recurrence.run_with_cache(model, SegmentBatch.from_ids(ids, 32), names=["seg.*.blocks.1.attn.pattern"])
    start, write = model.layout.token_start, model.layout.write_positions
    expected = []
    for b, t, j in read.nonzero().tolist():
        pattern = cache.cache[f"seg.{t}.blocks.1.attn.pattern"][b]  # (H, T, T)
        expected.append(-torch.log(pattern[:, write, start + j].max() + 1e-6))
    assert torch.allclose(out.read_loss, torch.stack(expected).mean(), atol=1e-5)
    assert torch.allclose(out.loss, plain.loss + 2.0 * out.read_loss, atol=1e-5)
    out.read_loss.backward()
    query = model.backbone.encoder.layer[-1].attention.self.query.weight
    assert query.grad is not None and query.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="read has shape"):
        model(ids, read=read[:, :2])


def test_training_logs_the_term_and_refuses_other_tasks(tmp_path):
    out = train(tiny(tmp_path / "run"), progress=False)
    steps = [e for e in map(json.loads, (out / "training_log.jsonl").read_text().splitlines())
             if e["event"] == "step"]
    assert steps and all(e["write_attention"] > 0 for e in steps)
    with pytest.raises(TrainError, match="--write-attention is for the encoder's reason"):
        train(tiny(tmp_path / "detect", task="detect"), progress=False)
