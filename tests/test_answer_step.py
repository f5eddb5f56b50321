"""rmt train --answer-step: how far one noise segment after a fact moves the question's answer (read from the memory
the segment leaves, against the memory it read), in the loss, on every segment of the input."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from conftest import tiny_reason_config
from rmt_core import recurrence
from rmt_core.tasks import TaskBuilder
from rmt_core.train import Stage, train
from test_answer_hold import ANCHORED, _answer, model  # noqa: F401  (the louder tiny model and its marks)


def _expected(model, ids, marks):
    """The mean over marked (sample, segment) of KL(answer from the memory segment t left || from the one it read),
    from memories cached by a plain run."""
    run = recurrence.run(model, ids, names=["seg.*.mem_in", "seg.*.mem_out"])
    N = marks.shape[1]
    values = []
    for b in range(marks.shape[0]):
        one = (ids[b:b + 1, (N - 1) * 16:], None)
        for t in range(N):
            if marks[b, t]:
                before, after = run.cache[f"seg.{t}.mem_in"][b:b + 1], run.cache[f"seg.{t}.mem_out"][b:b + 1]
                values.append(F.kl_div(_answer(model, after, one), _answer(model, before, one), log_target=True,
                                       reduction="none").sum(-1))
    return torch.cat(values).mean()


def test_answer_step_is_each_marked_segment_s_own_shift_of_the_answer(model, tokenizer):
    ids, labels = TaskBuilder("detect", tokenizer, 16).batch(6, 3, seed=2)
    step = ANCHORED.clone()
    step[1, 3] = False  # not every noise segment is read
    with torch.no_grad():
        expected = _expected(model, ids, step)
        base = model(ids, labels=labels)
        out = model(ids, labels=labels, step=step, step_weight=2.0)
        hold = model(ids, labels=labels, anchored=ANCHORED, hold=step)
    assert out.answer_step.item() == pytest.approx(expected.item(), rel=1e-3) and out.answer_step > 0
    assert out.loss.item() == pytest.approx(base.loss.item() + 2.0 * out.answer_step.item(), rel=1e-6)
    assert base.answer_step is None and out.answer_hold is None
    # a step is not the way from the fact: row 0's segment 2 is read against segment 1's memory, not segment 0's
    assert hold.answer_hold.item() != pytest.approx(out.answer_step.item(), rel=1e-3)
    with pytest.raises(ValueError, match="step has shape"):
        model(ids, labels=labels, step=step[:, :3])


def test_answer_step_reads_before_a_bptt_cut_too(model, tokenizer):
    """Local to its segment, the term keeps every mark when the gradient through the question is cut short, and
    trains the segment it reads (unlike --answer-hold, whose marks before the cut are dropped)."""
    ids, labels = TaskBuilder("detect", tokenizer, 16).batch(6, 3, seed=2)
    early = torch.zeros(3, 6, dtype=torch.bool)
    early[:, 2] = True  # segment 2, before the cut at 4
    with torch.no_grad():
        whole = model(ids, labels=labels, step=early)
    model.config.bptt_depth = 2  # the gradient from the answer reaches segments 4 and 5 only
    with torch.no_grad():
        cut = model(ids, labels=labels, step=early)
    assert cut.answer_step.item() == pytest.approx(whole.answer_step.item(), rel=1e-6) and cut.answer_step > 0
    model.zero_grad()
    model(ids, labels=labels, step=early, step_weight=1.0).answer_step.backward()
    assert model.memory.grad is not None and model.memory.grad.abs().sum() > 0  # through the writes up to it


def test_training_with_answer_step_logs_the_term_and_records_it(tmp_path):
    config = tiny_reason_config(tmp_path / "step", stages=[Stage(4, 32)], answer_step=10.0, step_reads=2,
                                max_steps=20, eval_every=20, log_every=10)
    folder = train(config, progress=False)
    steps = [e for e in map(json.loads, (folder / "training_log.jsonl").read_text().splitlines())
             if e["event"] == "step"]
    assert len(steps) == 2 and all(e["answer_step"] >= 0 for e in steps)
    assert all("answer_hold" not in e for e in steps)
    config = json.loads((folder / "config.json").read_text())
    assert config["provenance"]["train_config"]["answer_step"] == 10.0
    assert config["provenance"]["train_config"]["step_reads"] == 2


def test_step_reads_needs_answer_step(tmp_path, capsys):
    from rmt_cli.main import main

    assert main(["train", "--step-reads", "8", "--out", str(tmp_path / "s")]) != 0
    assert "give --answer-step too" in capsys.readouterr().err
    assert main(["train", "--architecture", "decoder", "--task", "qa1", "--answer-step", "1",
                 "--out", str(tmp_path / "s")]) != 0
    assert "--answer-step is for the encoder" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
