"""rmt train --answer-restore: a noise segment after a fact, run again on the memory it read pushed further along
its drift since the fact, should bring the question's answer back to the one read right after the fact."""

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


def _expected(model, ids, marks, scale):
    """The mean over marked (sample, segment) of KL(answer after segment t run on m + scale (m - anchor) || answer
    from the anchor), m the memory segment t read, from memories cached by a plain run (anchors as ANCHORED's)."""
    run = recurrence.run(model, ids, names=["seg.*.mem_in", "seg.*.mem_out"])
    N = marks.shape[1]
    values = []
    for b in range(marks.shape[0]):
        anchor = run.cache["seg.0.mem_in"][b:b + 1]
        question = (ids[b:b + 1, (N - 1) * 16:], None)
        for t in range(N):
            if not ANCHORED[b, t]:
                anchor = run.cache[f"seg.{t}.mem_out"][b:b + 1]
            elif marks[b, t]:
                read = run.cache[f"seg.{t}.mem_in"][b:b + 1]
                pushed = model.segment_step(read + scale * (read - anchor), ids[b:b + 1, t * 16:(t + 1) * 16], None)
                values.append(F.kl_div(_answer(model, pushed.memory_out, question), _answer(model, anchor, question),
                                       log_target=True, reduction="none").sum(-1))
    return torch.cat(values).mean()


def test_answer_restore_is_the_answer_after_a_push_along_the_drift_against_the_anchor(model, tokenizer):
    ids, labels = TaskBuilder("detect", tokenizer, 16).batch(6, 3, seed=2)
    restore = ANCHORED.clone()
    restore[1, 3] = False  # not every noise segment runs again
    with torch.no_grad():
        expected = _expected(model, ids, restore, 2.0)
        base = model(ids, labels=labels, anchored=ANCHORED)
        out = model(ids, labels=labels, anchored=ANCHORED, restore=restore, restore_weight=3.0, restore_scale=2.0)
        # unpushed, the segment's second run is its first: the term is then the hold's, read at the same marks
        unpushed = model(ids, labels=labels, anchored=ANCHORED, restore=restore, restore_scale=0.0)
        hold = model(ids, labels=labels, anchored=ANCHORED, hold=restore)
    assert out.answer_restore.item() == pytest.approx(expected.item(), rel=1e-3) and out.answer_restore > 0
    assert out.loss.item() == pytest.approx(base.loss.item() + 3.0 * out.answer_restore.item(), rel=1e-6)
    assert unpushed.answer_restore.item() == pytest.approx(hold.answer_hold.item(), rel=1e-4)
    assert out.answer_restore.item() != pytest.approx(unpushed.answer_restore.item(), rel=1e-2)
    assert base.answer_restore is None and out.answer_hold is None and out.answer_step is None
    with pytest.raises(ValueError, match="restore marks a subset of anchored"):
        model(ids, labels=labels, restore=restore)
    with pytest.raises(ValueError, match="restore has shape"):
        model(ids, labels=labels, anchored=ANCHORED, restore=restore[:, :3])


def test_answer_restore_trains_the_segment_it_reruns_and_keeps_no_graph_before_a_cut(model, tokenizer, monkeypatch):
    """Its gradient stays in the segment's second run: it reaches the weights, not the initial memory, and with a
    --bptt-depth cut the segments before it still run without a graph (lean truncation is kept)."""
    ids, labels = TaskBuilder("detect", tokenizer, 16).batch(6, 3, seed=2)
    early = ANCHORED & torch.tensor([False, True, True, False, False, False])  # segments 1-2, before the cut at 4
    with torch.no_grad():
        whole = model(ids, labels=labels, anchored=ANCHORED, restore=early)
    model.config.bptt_depth = 2
    reached = []
    run = recurrence.run
    monkeypatch.setattr(recurrence, "run", lambda *a, **k: reached.append(k["graph_before"]) or run(*a, **k))
    model.zero_grad()
    cut = model(ids, labels=labels, anchored=ANCHORED, restore=early, restore_weight=1.0)
    assert cut.answer_restore.item() == pytest.approx(whole.answer_restore.item(), rel=1e-6)
    assert reached == [0]  # no segment before the cut keeps a graph
    cut.answer_restore.backward()
    assert model.memory.grad is None or model.memory.grad.abs().sum() == 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n != "memory")


def test_training_with_answer_restore_logs_the_term_and_records_it(tmp_path):
    config = tiny_reason_config(tmp_path / "restore", stages=[Stage(4, 32)], answer_restore=10.0, restore_reads=2,
                                restore_scale=1.5, max_steps=20, eval_every=20, log_every=10)
    folder = train(config, progress=False)
    steps = [e for e in map(json.loads, (folder / "training_log.jsonl").read_text().splitlines())
             if e["event"] == "step"]
    assert len(steps) == 2 and all(e["answer_restore"] >= 0 for e in steps)
    assert all("answer_step" not in e and "answer_hold" not in e for e in steps)
    recorded = json.loads((folder / "config.json").read_text())["provenance"]["train_config"]
    assert (recorded["answer_restore"], recorded["restore_reads"], recorded["restore_scale"]) == (10.0, 2, 1.5)


def test_restore_flags_need_answer_restore(tmp_path, capsys):
    from rmt_cli.main import main

    for flag in (["--restore-reads", "8"], ["--restore-scale", "1"]):
        assert main(["train", *flag, "--out", str(tmp_path / "s")]) != 0
        assert "give --answer-restore too" in capsys.readouterr().err
    assert main(["train", "--architecture", "decoder", "--task", "qa1", "--answer-restore", "1",
                 "--out", str(tmp_path / "s")]) != 0
    assert "--answer-restore is for the encoder" in capsys.readouterr().err
    assert main(["train", "--answer-restore", "1", "--restore-scale", "nan", "--out", str(tmp_path / "s")]) != 0
    assert "--restore-scale" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
