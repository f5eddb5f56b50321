"""rmt train --slot-recall: the slot that took a fact must name its subject and direction at every later segment."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from conftest import make_tiny_rmt, tiny_reason_config
from rmt_core import recurrence
from rmt_core.babi import DIRECTIONS, PLACES
from rmt_core.checkpoint import load_checkpoint
from rmt_core.inputs import SegmentBatch
from rmt_core.slot_recall import SlotHead, slot_facts
from rmt_core.tasks import TaskBuilder
from rmt_core.train import Data, Stage, TrainError, _direction_position, train


def _facts(samples, n, size, tokenizer):
    return slot_facts(samples, n, size, lambda f, s: _direction_position(f, s, tokenizer, "--slot-recall"))


def test_the_facts_are_every_carried_relation_at_its_direction_word(tokenizer):
    samples = TaskBuilder("reason", tokenizer, 32).samples(4, 32, seed=2)
    facts = _facts(samples, 4, 32, tokenizer)
    ids = torch.tensor([s.input_ids for s in samples]).view(32, 4, 32)
    expected = sum(1 for s in samples for f in s.facts if f.kind == "relation" and f.segment < 3)
    assert len(facts) == expected > 0 and (facts.t < 3).all()
    for k in range(len(facts)):
        b, t, j = int(facts.b[k]), int(facts.t[k]), int(facts.j[k])
        word = tokenizer.convert_ids_to_tokens(int(ids[b, t, j]))
        assert word == DIRECTIONS[int(facts.direction[k])]
        fact = next(f for f in samples[b].facts if f.segment == t and f.direction == word
                    and f.start <= t * 32 + j < f.end)
        assert PLACES[int(facts.subject[k])] == fact.subject
    marks = facts.marks(32, 4, 32)
    assert int(marks.sum()) == len(facts) and not marks[:, -1].any()
    # a rank's slice keeps its samples' facts, renumbered from 0
    part = facts.rank_slice(slice(8, 16))
    assert len(part) == int(((facts.b >= 8) & (facts.b < 16)).sum()) and part.b.min() >= 0 and part.b.max() < 8


def test_the_noted_slot_is_the_strongest_and_the_loss_reads_it_at_every_later_segment(tokenizer):
    torch.manual_seed(0)
    model = make_tiny_rmt(tokenizer, segment_size=32, num_mem_tokens=3)
    samples = TaskBuilder("reason", tokenizer, 32).samples(4, 8, seed=5)
    ids = torch.tensor([s.input_ids for s in samples])
    facts = _facts(samples, 4, 32, tokenizer)
    out = model(ids, note=facts.marks(8, 4, 32), keep_reads=True)
    plain = model(ids)
    assert torch.allclose(out.logits, plain.logits, atol=1e-6)  # noting changes nothing the model computes
    cache = recurrence.run_with_cache(model, SegmentBatch.from_ids(ids, 32), names=["seg.*.blocks.1.attn.pattern"])
    start, write = model.layout.token_start, model.layout.write_positions
    assert (out.noted_slots >= 0).sum() == len(facts)
    for k in range(len(facts)):
        b, t, j = int(facts.b[k]), int(facts.t[k]), int(facts.j[k])
        slot = int(cache.cache[f"seg.{t}.blocks.1.attn.pattern"][b][:, write, start + j].max(0).values.argmax())
        assert int(out.noted_slots[b, t, j]) == slot
    # the loss, by hand: for each fact, the slot's state in the memory read by each segment after the fact's
    head = SlotHead(model.hidden_size)
    loss, accuracy = head.loss(out.memory_reads, out.noted_slots, facts)
    states, subjects, directions = [], [], []
    for k in range(len(facts)):
        b, t, j = int(facts.b[k]), int(facts.t[k]), int(facts.j[k])
        for reader in range(t + 1, 4):
            states.append(out.memory_reads[b, reader - 1, out.noted_slots[b, t, j]])
            subjects.append(facts.subject[k])
            directions.append(facts.direction[k])
    subject_logits, direction_logits = head(torch.stack(states))
    expected = (F.cross_entropy(subject_logits, torch.stack(subjects))
                + F.cross_entropy(direction_logits, torch.stack(directions))) / 2
    assert torch.allclose(loss, expected, atol=1e-6) and 0 <= float(accuracy) <= 1
    loss.backward()  # the gradient reaches the model through the slots' states
    assert model.memory.grad is not None and model.memory.grad.abs().sum() > 0
    # no carried fact: a zero that still backpropagates into the head
    none = facts.select(torch.zeros(len(facts), dtype=torch.bool))
    zero, _ = head.loss(out.memory_reads.detach(), out.noted_slots, none)
    assert zero.item() == 0.0 and zero.requires_grad


def test_training_learns_the_read_out_logs_it_and_does_not_save_it(tmp_path, tokenizer):
    config = tiny_reason_config(tmp_path / "run", max_steps=24, eval_every=12, log_every=1, slot_recall=1.0,
                                stages=[Stage(4, 32, min_segments=3)])
    batches = [Data(config, tokenizer).batch(config.stages[0], 0, step) for step in range(3)]
    assert all(b[7] is not None and len(b[7]) > 0 and b[4] is None for b in batches)
    out = train(config, progress=False)
    steps = [e for e in map(json.loads, (out / "training_log.jsonl").read_text().splitlines())
             if e["event"] == "step"]
    assert steps and all("slot_recall" in e and "slot_recall_accuracy" in e for e in steps)
    first, last = (sum(e["slot_recall"] for e in part) / len(part) for part in (steps[:4], steps[-4:]))
    assert last < first  # the objective is learned (not when left out of the loss); one step's value is too noisy
    model = load_checkpoint(out)
    assert not hasattr(model, "slot_recall")
    assert not any(name.startswith("slot_recall") for name in model.state_dict())
    with pytest.raises(TrainError, match="--slot-recall is for the encoder's reason"):
        train(tiny_reason_config(tmp_path / "detect", task="detect", slot_recall=1.0), progress=False)


def test_the_optimizer_gives_each_training_only_head_the_read_out_rate(tmp_path, tokenizer):
    from rmt_core.recall import LR_SCALE, RecallHead
    from rmt_core.train import make_optimizer

    config = tiny_reason_config(tmp_path / "run", slot_recall=1.0, fact_recall=1.0)
    model = make_tiny_rmt(tokenizer)
    plain, _ = make_optimizer(model, config)
    model.slot_recall = SlotHead(model.hidden_size)
    model.fact_recall = RecallHead(model.num_mem_tokens, model.hidden_size)
    optimizer, _ = make_optimizer(model, config)
    heads = {id(p) for head in (model.slot_recall, model.fact_recall) for p in head.parameters()}
    *body, last = optimizer.param_groups
    assert {id(p) for p in last["params"]} == heads and last["initial_lr"] == config.lr * LR_SCALE
    assert [len(g["params"]) for g in body] == [len(g["params"]) for g in plain.param_groups]
    assert not heads & {id(p) for g in body for p in g["params"]}
