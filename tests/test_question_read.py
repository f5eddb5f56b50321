"""rmt train --question-read: the question's [CLS] is asked to read the memory slot that took the answering fact."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_tiny_rmt, tiny_reason_config
from rmt_core import babi, recurrence
from rmt_core.inputs import SegmentBatch
from rmt_core.tasks import TaskBuilder
from rmt_core.train import Data, Stage, TrainError, answer_tokens, train


def test_the_mark_falls_on_the_answering_facts_direction_word_when_memory_carries_it(tokenizer):
    samples = TaskBuilder("reason", tokenizer, 32).samples(4, 64, seed=2)
    marks = answer_tokens(samples, 4, 32, tokenizer)
    assert marks.shape == (64, 4, 32) and not marks[:, -1].any() and marks.sum((1, 2)).max() == 1
    ids = torch.tensor([s.input_ids for s in samples]).view(64, 4, 32)
    marked = 0
    for i, sample in enumerate(samples):
        answering = [f for f in sample.facts if babi.solve_relations([f.text], sample.question)]
        carried = len(answering) == 1 and answering[0].segment < 3
        assert bool(marks[i].any()) == carried
        if carried:
            t, j = marks[i].nonzero()[0].tolist()
            fact = answering[0]
            assert t == fact.segment and fact.start <= t * 32 + j < fact.end
            assert tokenizer.convert_ids_to_tokens(int(ids[i, t, j])) == fact.direction
            marked += 1
    assert 0 < marked < 64  # some samples keep the answering fact beside the question


def test_the_term_is_minus_log_of_the_cls_read_of_the_slot_that_took_the_word(tokenizer):
    model = make_tiny_rmt(tokenizer, segment_size=32, num_mem_tokens=3)
    samples = TaskBuilder("reason", tokenizer, 32).samples(3, 16, seed=5)
    ids = torch.tensor([s.input_ids for s in samples])
    labels = torch.tensor([s.answer for s in samples])
    answer = answer_tokens(samples, 3, 32, tokenizer)
    assert answer.any()
    out = model(ids, labels=labels, answer=answer, answer_weight=3.0)
    plain = model(ids, labels=labels)
    # by hand: the slot whose head reads the marked word most, then [CLS]'s strongest head on it in the last segment
    cache = recurrence.run_with_cache(model, SegmentBatch.from_ids(ids, 32), names=["seg.*.blocks.1.attn.pattern"])
    start, write, read = model.layout.token_start, model.layout.write_positions, model.layout.read_positions
    expected = []
    for b, t, j in answer.nonzero().tolist():
        slot = int(cache.cache[f"seg.{t}.blocks.1.attn.pattern"][b][:, write, start + j].max(0).values.argmax())
        last = cache.cache["seg.2.blocks.1.attn.pattern"][b]  # (H, T, T)
        expected.append(-torch.log(last[:, model.layout.answer_position, read][:, slot].max() + 1e-6))
    assert torch.allclose(out.answer_loss, torch.stack(expected).mean(), atol=1e-5)
    assert torch.allclose(out.loss, plain.loss + 3.0 * out.answer_loss, atol=1e-5)
    out.answer_loss.backward()
    query = model.backbone.encoder.layer[-1].attention.self.query.weight
    assert query.grad is not None and query.grad.abs().sum() > 0
    # No marked sample: the term is zero. Marks in the question's segment or two a sample: refused.
    assert float(model(ids, labels=labels, answer=torch.zeros_like(answer), answer_weight=3.0).answer_loss) == 0.0
    bad = answer.clone()
    bad[0, -1, 0] = True
    with pytest.raises(ValueError, match="before the last segment"):
        model(ids, answer=bad)
    with pytest.raises(ValueError, match="answer has shape"):
        model(ids, answer=answer[:, :2])


def test_training_logs_the_term_and_refuses_other_tasks(tmp_path, tokenizer):
    config = tiny_reason_config(tmp_path / "run", max_steps=4, eval_every=2, log_every=1, question_read=1.0,
                                stages=[Stage(4, 32, min_segments=3)])
    stage = config.stages[0]
    batches = [Data(config, tokenizer).batch(stage, 0, step) for step in range(3)]
    assert all(b[6] is not None and b[5] is None for b in batches)
    out = train(config, progress=False)
    steps = [e for e in map(json.loads, (out / "training_log.jsonl").read_text().splitlines())
             if e["event"] == "step"]
    assert steps and all("question_read" in e for e in steps) and any(e["question_read"] > 0 for e in steps)
    with pytest.raises(TrainError, match="--question-read is for the encoder's reason"):
        train(tiny_reason_config(tmp_path / "detect", task="detect", question_read=1.0), progress=False)
