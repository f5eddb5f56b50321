"""rmt train --fact-recall: a training-only linear read-out of the memory the question reads names both facts."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from conftest import make_tiny_rmt, tiny_reason_config
from rmt_core import babi, recall
from rmt_core.checkpoint import load_checkpoint, read_weights
from rmt_core.tasks import TaskBuilder
from rmt_core.train import Stage, TrainConfig, train


def test_targets_name_the_parts_of_each_carried_fact_in_the_order_written(tokenizer):
    builder = TaskBuilder("reason", tokenizer, 32)
    samples = builder.samples(4, 64, seed=11)
    target = recall.targets(samples, 4)
    assert target.shape == (64, 2, 3)
    seen_ignored = seen_kept = False
    for row, sample in zip(target, samples):
        for k, fact in enumerate(sorted(sample.facts, key=lambda f: f.start)):
            if fact.segment == 3:  # in the question's segment: the question reads it, memory need not carry it
                assert row[k].tolist() == [recall.IGNORE] * 3
                seen_ignored = True
                continue
            subject, direction, reference = babi.parse_relation(fact.text)
            assert row[k].tolist() == [babi.PLACES.index(subject), babi.DIRECTIONS.index(direction),
                                       babi.PLACES.index(reference)]
            seen_kept = True
    assert seen_ignored and seen_kept


def test_recall_batches_hold_the_same_samples_as_plain_ones(tokenizer):
    from rmt_core.train import Data

    stage = Stage(4, 32, min_segments=2)
    plain = Data(tiny("p", stages=[stage], fact_recall=0.0, noise_stillness=1.0), tokenizer)
    recalled = Data(tiny("r", stages=[stage], noise_stillness=1.0), tokenizer)
    for step in range(3):
        ids, labels, still, write, none, _, _, _, _ = plain.batch(stage, 0, step)
        r_ids, r_labels, r_still, r_write, targets, _, _, _, _ = recalled.batch(stage, 0, step)
        assert none is None and targets.shape == (8, 2, 3) and write is None and r_write is None
        assert torch.equal(ids, r_ids) and torch.equal(labels, r_labels) and torch.equal(still, r_still)
        samples = recalled.builder(32, training=True).samples(ids.shape[1] // 32, 8, seed=_seed(step))
        assert torch.equal(targets, recall.targets(samples, ids.shape[1] // 32))


def _seed(step):
    from rmt_core.train import _batch_seed

    return _batch_seed(3, 0, step)


def test_the_table_answers_every_question_a_carried_fact_answers(tokenizer):
    builder = TaskBuilder("reason", tokenizer, 32)
    samples = builder.samples(4, 64, seed=11)
    table = recall.targets(samples, 4, "table")
    assert table.shape == (64, 24)
    for row, sample in zip(table, samples):
        texts = [f.text for f in sample.facts]
        for j, (d, p) in enumerate(recall.QUESTIONS):
            answers = babi.solve_relations(texts, f"What is {d} of the {p}?")
            if not answers:
                assert row[j] == recall.NONE
                continue
            fact = next(f for f in sample.facts if babi.solve_relations([f.text], f"What is {d} of the {p}?"))
            expected = recall.IGNORE if fact.segment == 3 else babi.PLACES.index(answers.pop())
            assert row[j] == expected
    assert (table == recall.IGNORE).any() and ((table != recall.IGNORE) & (table != recall.NONE)).sum() > 64
    head = recall.RecallHead(num_mem_tokens=3, hidden_size=8, kind="table")
    assert len(head(torch.zeros(2, 3, 8))) == 24


def test_the_loss_is_the_mean_cross_entropy_over_the_parts_asked_for():
    torch.manual_seed(0)
    head = recall.RecallHead(num_mem_tokens=3, hidden_size=8)
    memory = torch.randn(5, 3, 8, requires_grad=True)
    target = torch.tensor([[[0, 1, 2], [3, 0, 5]]] * 5)
    target[1, 0] = recall.IGNORE
    target[4] = recall.IGNORE
    loss, accuracy = head.loss(memory, target)
    logits, flat = head(memory), target.flatten(1)
    parts = [(logits[j][i], flat[i, j]) for i in range(5) for j in range(6) if flat[i, j] != recall.IGNORE]
    expected = torch.stack([F.cross_entropy(l[None], t[None]) for l, t in parts]).mean()
    assert len(parts) == 5 * 6 - 3 - 6
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert accuracy.item() == pytest.approx(sum(int(l.argmax() == t) for l, t in parts) / len(parts))
    loss.backward()
    assert memory.grad[4].abs().sum() == 0 and memory.grad[0].abs().sum() > 0  # nothing asked of sample 4
    head.zero_grad()
    none, _ = head.loss(memory, torch.full_like(target, recall.IGNORE))
    none.backward()  # nothing asked: zero, yet every parameter has a gradient (several processes average them)
    assert none.item() == 0 and all(p.grad is not None for p in head.parameters())


def test_the_model_hands_back_the_memory_its_last_segment_reads(tokenizer):
    from rmt_core import recurrence

    model = make_tiny_rmt(tokenizer, segment_size=24, num_mem_tokens=3, hidden=16, layers=1, heads=2, seed=4)
    ids, labels = TaskBuilder("reason", tokenizer, 24).batch(5, 4, seed=2)
    with torch.no_grad():
        out = model(ids, labels=labels, keep_read=True)
        before = recurrence.run(model, ids, stop=4).memory
    assert torch.equal(out.memory_read, before)
    assert model(ids, labels=labels).memory_read is None


def test_every_position_asks_for_the_facts_written_before_it(tokenizer):
    samples = TaskBuilder("reason", tokenizer, 32).samples(5, 64, seed=12)
    for kind in recall.KINDS:
        every = recall.targets(samples, 5, kind, at="every")
        assert every.shape == (64, 4, *recall.sizes_shape(kind))
        assert torch.equal(every[:, -1][every[:, -1] != recall.IGNORE],  # the last position is the question's
                           recall.targets(samples, 5, kind)[every[:, -1] != recall.IGNORE])
        for i, sample in enumerate(samples):
            for t in range(1, 5):
                written = [f for f in sample.facts if f.segment < t]
                row = every[i, t - 1]
                if not written:
                    assert (row == recall.IGNORE).all()  # nothing written yet: nothing asked
                    continue
                assert torch.equal(row, recall.read_by([sample], t, kind)[0])
                if kind == "facts":  # exactly the facts written before t are asked for
                    ordered = sorted(sample.facts, key=lambda f: f.start)
                    assert [bool((row[k] != recall.IGNORE).all()) for k in range(2)] == [
                        f.segment < t for f in ordered]
    assert recall.targets(samples[:3], 1, "table", at="every").shape == (3, 0, 24)
    with pytest.raises(ValueError, match="must be one of"):
        recall.targets(samples, 5, "table", at="middle")


def test_the_model_hands_back_the_memory_every_segment_reads(tokenizer):
    from rmt_core import recurrence

    model = make_tiny_rmt(tokenizer, segment_size=24, num_mem_tokens=3, hidden=16, layers=1, heads=2, seed=4)
    ids, labels = TaskBuilder("reason", tokenizer, 24).batch(5, 4, seed=2)
    out = model(ids, labels=labels, keep_reads=True)
    assert out.memory_reads.shape == (4, 4, 3, 16) and out.memory_reads.requires_grad
    with torch.no_grad():
        for t in range(1, 5):
            assert torch.allclose(out.memory_reads[:, t - 1], recurrence.run(model, ids, stop=t).memory, atol=1e-6)
    assert model(ids[:, :24], labels=labels, keep_reads=True).memory_reads.shape == (4, 0, 3, 16)
    head = recall.RecallHead(3, 16, "table")
    target = recall.targets(TaskBuilder("reason", tokenizer, 24).samples(5, 4, seed=2), 5, "table", at="every")
    loss, _ = head.loss(out.memory_reads, target)
    per_position = [head.loss(out.memory_reads[:, t], target[:, t]) for t in range(4)]
    asked = [int(((target[:, t] != recall.IGNORE)).sum()) for t in range(4)]
    pooled = sum(l * n for (l, _), n in zip(per_position, asked)) / sum(asked)
    assert loss.item() == pytest.approx(pooled.item(), rel=1e-5)  # one mean over every position's asked parts


def tiny(out, **overrides) -> TrainConfig:
    return tiny_reason_config(out, **{"facts_behind": 1.0, "fact_recall": 1.0, **overrides})


def test_training_logs_the_term_resumes_it_and_saves_the_plain_rmt(tmp_path):
    whole = train(tiny(tmp_path / "whole"), progress=False)
    steps = [e for e in map(json.loads, (whole / "training_log.jsonl").read_text().splitlines())
             if e["event"] == "step"]
    assert len(steps) == 4 and all(e["recall"] > 0 and 0 <= e["recall_accuracy"] <= 1 for e in steps)
    assert json.loads((whole / "config.json").read_text())["provenance"]["train_config"]["fact_recall"] == 1.0
    plain = train(tiny(tmp_path / "plain", fact_recall=0.0), progress=False)
    weights = read_weights(whole)
    assert set(weights) == set(read_weights(plain))  # the read-out is not part of the checkpoint
    assert any(not torch.equal(weights[k], read_weights(plain)[k]) for k in weights)  # but it trained the model
    load_checkpoint(whole, device="cpu")  # loads as any RMT
    table = train(tiny(tmp_path / "table", fact_recall_target="table", max_steps=4), progress=False)
    assert set(read_weights(table)) == set(weights)
    assert all(e["recall"] > 0 for e in map(json.loads, (table / "training_log.jsonl").read_text().splitlines())
               if e["event"] == "step")
    every = train(tiny(tmp_path / "every", fact_recall_target="table", fact_recall_at="every", max_steps=4),
                  progress=False)
    assert set(read_weights(every)) == set(weights)
    every_steps = [e for e in map(json.loads, (every / "training_log.jsonl").read_text().splitlines())
                   if e["event"] == "step"]
    assert all(e["recall"] > 0 for e in every_steps)
    assert [e["recall"] for e in every_steps] != [e["recall"] for e in map(
        json.loads, (table / "training_log.jsonl").read_text().splitlines()) if e["event"] == "step"]

    cut = tiny(tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        train(cut, stop_after=6, progress=False)  # after the resume point at step 4, which keeps the read-out
    train(cut, resume=True, progress=False)
    resumed = [e for e in map(json.loads, (tmp_path / "cut" / "training_log.jsonl").read_text().splitlines())
               if e["event"] == "step"]
    def logged(entries):
        return [(e["step"], e["loss"], e["recall"]) for e in entries]

    assert logged(resumed) == logged(steps)
    assert all(torch.equal(weights[k], read_weights(tmp_path / "cut")[k]) for k in weights)


def test_fact_recall_flag_is_checked(tmp_path, capsys):
    from rmt_cli.main import main
    from rmt_core.errors import TrainError

    with pytest.raises(TrainError, match="for the encoder's reason"):  # the API checks what the CLI checks
        train(tiny(tmp_path / "m", task="memorize"), progress=False)
    with pytest.raises(TrainError, match="must be one of facts, table"):
        train(tiny(tmp_path / "k", fact_recall_target="answers"), progress=False)
    assert not (tmp_path / "m").exists() and not (tmp_path / "k").exists() and not (tmp_path / "a").exists()

    for args in (["--task", "detect"], ["--architecture", "decoder", "--task", "qa1"]):
        assert main(["train", *args, "--fact-recall", "1", "--out", str(tmp_path / "d")]) != 0
        assert "--fact-recall is for the encoder's reason" in capsys.readouterr().err
    with pytest.raises(TrainError, match="must be one of question, every"):
        train(tiny(tmp_path / "a", fact_recall_at="middle"), progress=False)
    assert main(["train", "--task", "reason", "--fact-recall-target", "table", "--out", str(tmp_path / "d")]) != 0
    assert "give --fact-recall too" in capsys.readouterr().err
    assert main(["train", "--task", "reason", "--fact-recall-at", "every", "--out", str(tmp_path / "d")]) != 0
    assert "--fact-recall-at chooses where" in capsys.readouterr().err
    for bad in ("-1", "nan", "inf"):
        assert main(["train", "--task", "reason", "--fact-recall", bad, "--out", str(tmp_path / "e")]) != 0
        assert "--fact-recall" in capsys.readouterr().err
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()
