"""rmt train --answer-hold: how far the question's answer, read from memory on noise after a fact, moves from the
answer read from the memory that fact's segment left, in the loss."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from conftest import make_tiny_rmt, tiny_reason_config
from rmt_core import recurrence
from rmt_core.tasks import TaskBuilder
from rmt_core.train import Stage, hold_columns, train


@pytest.fixture
def model(tokenizer):
    model = make_tiny_rmt(tokenizer, segment_size=16, num_mem_tokens=3, hidden=16, layers=1, heads=2, seed=4)
    with torch.no_grad():  # a tiny model at its initial scale barely hears memory in its answer; louder weights
        for name, p in model.named_parameters():  # make the shifts large enough to compare beyond rounding
            if "LayerNorm" not in name and "embeddings" not in name and name != "memory":
                p.mul_(30)
    return model.eval()  # no dropout: the reads below are compared exactly


ANCHORED = torch.tensor([[False, True, True, False, True, False],  # anchors: seg 0's memory, then seg 3's
                         [False, False, True, True, True, False],  # seg 1's for segments 2-4
                         [False, False, False, False, False, False]])


def _answer(model, memory, question):
    return F.log_softmax(model.segment_step(memory, *question).logits.float(), dim=-1)


def test_answer_hold_is_the_question_s_answer_shift_from_the_anchor(model, tokenizer):
    ids, labels = TaskBuilder("detect", tokenizer, 16).batch(6, 3, seed=2)
    hold = ANCHORED.clone()
    hold[0, 1] = False  # not every anchored segment is read
    with torch.no_grad():
        run = recurrence.run(model, ids, names=["seg.*.mem_out"])
        outs = [run.cache[f"seg.{t}.mem_out"] for t in range(6)]
        question = (ids[:, 5 * 16:], None)
        expected = []
        for b in range(3):
            anchor = outs[0][b:b + 1]
            one = (question[0][b:b + 1], None)
            for t in range(1, 6):
                if not ANCHORED[b, t]:
                    anchor = outs[t][b:b + 1]
                elif hold[b, t]:
                    kl = F.kl_div(_answer(model, outs[t][b:b + 1], one), _answer(model, anchor, one),
                                  log_target=True, reduction="none").sum(-1)
                    expected.append(kl)
        expected = torch.cat(expected).mean()
        base = model(ids, labels=labels, anchored=ANCHORED)
        out = model(ids, labels=labels, anchored=ANCHORED, hold=hold, hold_weight=3.0)
    assert out.answer_hold.item() == pytest.approx(expected.item(), rel=1e-3) and out.answer_hold > 0
    assert out.loss.item() == pytest.approx(base.loss.item() + 3.0 * out.answer_hold.item(), rel=1e-6)
    assert base.answer_hold is None
    with pytest.raises(ValueError, match="subset of anchored"):
        model(ids, labels=labels, anchored=ANCHORED & False, hold=hold)
    with pytest.raises(ValueError, match="subset of anchored"):
        model(ids, labels=labels, hold=hold)
    with pytest.raises(ValueError, match="hold has shape"):
        model(ids, labels=labels, anchored=ANCHORED, hold=hold[:, :3])


def test_anchor_start_holds_a_sample_to_memory_from_before_its_input(model, tokenizer):
    """A --far-facts row starts after its fact: its anchor is the memory that fact wrote (anchor_start), until
    its first unmarked segment; a sample given none is anchored as before."""
    ids, labels = TaskBuilder("detect", tokenizer, 16).batch(6, 3, seed=2)
    start = torch.randn(3, *model.initial_memory(1).shape[1:]) * model.initial_memory(1).norm()
    anchored = ANCHORED.clone()
    anchored[0, 0] = anchored[2, :5] = True  # rows 0 and 2 start on noise after their fact; row 1 writes one first
    hold = anchored
    with torch.no_grad():
        run = recurrence.run(model, ids, names=["seg.*.mem_out"])
        outs = [run.cache[f"seg.{t}.mem_out"] for t in range(6)]
        expected = []
        for b in range(3):
            anchor, one = start[b:b + 1], (ids[b:b + 1, 5 * 16:], None)
            for t in range(6):
                if not anchored[b, t]:
                    anchor = outs[t][b:b + 1]
                elif hold[b, t]:
                    expected.append(F.kl_div(_answer(model, outs[t][b:b + 1], one), _answer(model, anchor, one),
                                             log_target=True, reduction="none").sum(-1))
        out = model(ids, labels=labels, anchored=anchored, hold=hold, anchor_start=start)
        plain = model(ids, labels=labels, anchored=anchored, hold=hold)
        same = model(ids, labels=labels, anchored=anchored, hold=hold, anchor_start=model.initial_memory(3))
    assert out.answer_hold.item() == pytest.approx(torch.cat(expected).mean().item(), rel=1e-3)
    assert out.answer_hold.item() != pytest.approx(plain.answer_hold.item(), rel=1e-3)
    assert same.answer_hold.item() == pytest.approx(plain.answer_hold.item(), rel=1e-6)  # the default anchor
    with pytest.raises(ValueError, match="anchor_start has 2 rows"):
        model(ids, labels=labels, anchored=anchored, hold=hold, anchor_start=start[:2])


def test_answer_hold_reads_only_where_the_gradient_reaches(model, tokenizer):
    """Marks before a --bptt-depth cut add nothing: the memory there is detached, so the term could not train it."""
    ids, labels = TaskBuilder("detect", tokenizer, 16).batch(6, 3, seed=2)
    with torch.no_grad():
        whole = model(ids, labels=labels, anchored=ANCHORED, hold=ANCHORED)
        model.config.bptt_depth = 2  # the gradient reaches segments 4 and 5
        cut = model(ids, labels=labels, anchored=ANCHORED, hold=ANCHORED)
        late = ANCHORED.clone()
        late[:, :4] = False
        only_late = model(ids, labels=labels, anchored=ANCHORED, hold=late)
    assert cut.answer_hold.item() == pytest.approx(only_late.answer_hold.item(), rel=1e-6)
    assert cut.answer_hold.item() != pytest.approx(whole.answer_hold.item(), rel=1e-3)


def test_the_answer_hold_term_trains_the_segments_before_the_read(model, tokenizer):
    ids, labels = TaskBuilder("detect", tokenizer, 16).batch(4, 3, seed=1)
    anchored = torch.zeros(3, 4, dtype=torch.bool)
    anchored[:, 1:3] = True
    model.train()
    model.dropout.p = 0.0
    model.zero_grad()
    model(ids, labels=labels, anchored=anchored, hold=anchored, hold_weight=1.0).answer_hold.backward()
    assert model.memory.grad is not None and model.memory.grad.abs().sum() > 0  # through the segments read
    assert model.classifier.weight.grad.abs().sum() > 0


def test_hold_columns_spread_over_the_segments_the_gradient_reaches():
    anchored = torch.zeros(2, 20, dtype=torch.bool)
    anchored[0, 3:19] = True  # segments 3..18
    picks = hold_columns(anchored, 4, None).nonzero().flatten().tolist()
    assert len(picks) == 4 and picks[-1] == 18 and picks[0] >= 3
    assert max(b - a for a, b in zip(picks, picks[1:])) <= 4 + 1  # spread, not bunched at one end
    assert hold_columns(anchored, 4, 6).nonzero().flatten().tolist() == [15, 16, 17, 18]  # only the last 6 (14..19)
    assert hold_columns(anchored, 100, None).nonzero().flatten().tolist() == list(range(3, 19))  # no more than there are
    assert not hold_columns(anchored & False, 4, None).any()


def test_training_with_answer_hold_logs_the_term_and_records_it(tmp_path):
    config = tiny_reason_config(tmp_path / "hold", stages=[Stage(4, 32)], answer_hold=1.0, hold_reads=2,
                                max_steps=20, eval_every=20, log_every=10)
    folder = train(config, progress=False)
    steps = [e for e in map(json.loads, (folder / "training_log.jsonl").read_text().splitlines())
             if e["event"] == "step"]
    assert len(steps) == 2 and all(e["answer_hold"] >= 0 for e in steps)
    assert all("anchor_drift" in e for e in steps)  # the distance is reported beside it (weight 0)
    config = json.loads((folder / "config.json").read_text())
    assert config["provenance"]["train_config"]["answer_hold"] == 1.0
    assert config["provenance"]["train_config"]["hold_reads"] == 2


def test_hold_reads_needs_answer_hold(tmp_path, capsys):
    from rmt_cli.main import main

    assert main(["train", "--hold-reads", "8", "--out", str(tmp_path / "h")]) != 0  # the default, said aloud
    assert "give --answer-hold too" in capsys.readouterr().err
    assert main(["train", "--answer-hold", "1", "--hold-reads", "0", "--out", str(tmp_path / "h")]) != 0
    assert "--hold-reads" in capsys.readouterr().err
    assert not (tmp_path / "h").exists()
