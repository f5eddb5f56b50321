"""rmt train --noise-stillness: the memory's change over segments without a fact, added to the loss."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from conftest import make_tiny_rmt
from rmt_core import recurrence
from rmt_core.model import memory_change
from rmt_core.tasks import TaskBuilder
from rmt_core.train import Stage, TrainConfig, train


@pytest.fixture
def model(tokenizer):
    return make_tiny_rmt(tokenizer, segment_size=16, num_mem_tokens=3, hidden=16, layers=1, heads=2, seed=4)


def test_fact_segments_mark_exactly_the_segments_that_hold_a_fact(tokenizer):
    builder = TaskBuilder("reason", tokenizer, 32)
    ids, labels, holds = builder.batch(9, 6, seed=5, fact_segments=True)
    plain_ids, plain_labels = builder.batch(9, 6, seed=5)
    assert torch.equal(ids, plain_ids) and torch.equal(labels, plain_labels)
    assert holds.shape == (6, 9) and holds.dtype == torch.bool
    for row, sample in zip(holds, builder.samples(9, 6, seed=5)):
        assert set(torch.nonzero(row).flatten().tolist()) == {fact.segment for fact in sample.facts}


def test_stillness_is_the_mean_relative_change_over_the_marked_segments(model, tokenizer):
    ids, labels, holds = TaskBuilder("detect", tokenizer, 16).batch(5, 4, seed=2, fact_segments=True)
    still = ~holds
    still[:, 0] = False
    changes = []
    with torch.no_grad():
        recurrence.run(model, ids, on_segment=lambda r: changes.append(memory_change(r.memory_in, r.memory_out)))
        plain = model(ids, labels=labels)
        out = model(ids, labels=labels, still=still, still_weight=2.5)
    by_segment = torch.stack(changes, dim=1)  # (B, N)
    expected = by_segment[still].mean()
    run = recurrence.run(model, ids, names=["seg.1.mem_in", "seg.1.mem_out"])
    m_in, m_out = run.cache["seg.1.mem_in"][0], run.cache["seg.1.mem_out"][0]
    manual = ((m_out - m_in).pow(2).sum() / m_in.pow(2).sum()).item()
    assert by_segment[0, 1].item() == pytest.approx(manual, rel=1e-5)
    assert out.stillness.item() == pytest.approx(expected.item(), rel=1e-5) and out.stillness > 0
    assert out.loss.item() == pytest.approx(plain.loss.item() + 2.5 * expected.item(), rel=1e-5)
    assert plain.stillness is None
    unweighted = model(ids, labels=labels, still=still)  # weight 0: the loss is the task's, the term still reported
    assert unweighted.loss.item() == pytest.approx(F.cross_entropy(plain.logits, labels).item(), rel=1e-6)
    with pytest.raises(ValueError, match="shape"):
        model(ids, labels=labels, still=still[:, :3])


def test_stillness_trains_segments_before_the_truncation_point(model, tokenizer):
    """The term is local to each segment: a segment the task loss's gradient cannot reach (--bptt-depth) still
    gets one from its own change."""
    model.config.bptt_depth = 1
    ids, labels = TaskBuilder("detect", tokenizer, 16).batch(4, 3, seed=1)
    still = torch.zeros(3, 4, dtype=torch.bool)
    still[:, 1] = True  # only segment 1, three segments before the question's
    params = [p for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    model(ids, labels=labels).loss.backward()
    task_grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    model.zero_grad()
    model(ids, labels=labels, still=still, still_weight=1.0).loss.backward()
    moved = [not torch.allclose(p.grad if p.grad is not None else torch.zeros_like(p), g) for p, g in zip(params, task_grads)]
    assert any(moved)


def test_training_with_noise_stillness_logs_the_term_and_lowers_it(tmp_path):
    cfg = dict(task="detect", stages=[Stage(4, 16)], hidden_size=16, num_layers=1, num_heads=2, max_positions=64,
               num_mem_tokens=3, batch_size=8, lr=3e-3, warmup_steps=2, max_steps=40, eval_every=20,
               val_samples=8, target_accuracy=1.01, plateau=100, log_every=10, save_dtype="float32", threads=1,
               seed=3)
    still = train(TrainConfig(out=str(tmp_path / "still"), noise_stillness=50.0, **cfg), progress=False)
    plain = train(TrainConfig(out=str(tmp_path / "plain"), **cfg), progress=False)

    def steps(folder):
        return [e for e in map(json.loads, (folder / "training_log.jsonl").read_text().splitlines())
                if e["event"] == "step"]

    logged = [e["stillness"] for e in steps(still)]
    assert len(logged) == 4 and all(v >= 0 for v in logged)
    assert logged[-1] < logged[0]  # a heavy weight drives the memory's change on noise down
    assert all("stillness" not in e for e in steps(plain))
    config = json.loads((still / "config.json").read_text())
    assert config["provenance"]["train_config"]["noise_stillness"] == 50.0


@pytest.mark.parametrize("flag", ["--noise-stillness", "--noise-anchor", "--answer-hold"])
def test_noise_stillness_flag_is_checked(tmp_path, capsys, flag):
    from rmt_cli.main import main

    assert main(["train", "--architecture", "decoder", "--task", "qa1", flag, "1",
                 "--out", str(tmp_path / "d")]) != 0
    assert f"{flag} is for the encoder" in capsys.readouterr().err
    for bad in ("-1", "nan", "inf"):
        assert main(["train", flag, bad, "--out", str(tmp_path / "e")]) != 0
        assert flag in capsys.readouterr().err
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()


def test_fact_write_is_the_mean_shortfall_of_fact_segments_below_the_margin(model, tokenizer):
    ids, labels, holds = TaskBuilder("detect", tokenizer, 16).batch(5, 4, seed=2, fact_segments=True)
    write = holds.clone()
    write[:, -1] = False
    assert write.any()
    changes = []
    with torch.no_grad():
        recurrence.run(model, ids, on_segment=lambda r: changes.append(memory_change(r.memory_in, r.memory_out)))
        plain = model(ids, labels=labels)
        by_segment = torch.stack(changes, dim=1)  # (B, N)
        margin = by_segment[write].max().item() * 0.9 + 1e-3  # some fact segments fall short of it, some may not
        out = model(ids, labels=labels, write=write, write_weight=3.0, write_margin=margin)
        far = model(ids, labels=labels, write=write, write_weight=3.0, write_margin=1e-9)
    expected = F.relu(margin - by_segment[write]).mean()
    assert out.write_shortfall.item() == pytest.approx(expected.item(), rel=1e-5) and out.write_shortfall > 0
    assert out.loss.item() == pytest.approx(plain.loss.item() + 3.0 * expected.item(), rel=1e-5)
    assert far.write_shortfall.item() == pytest.approx(0.0, abs=1e-9)  # every fact writes more than a tiny margin
    assert plain.write_shortfall is None and out.stillness is None
    with pytest.raises(ValueError, match="write has shape"):
        model(ids, labels=labels, write=write[:, :3])


def test_training_with_fact_write_logs_the_term_and_facts_write_more(tmp_path, tokenizer):
    from rmt_core.checkpoint import load_checkpoint

    cfg = dict(task="detect", stages=[Stage(4, 16)], hidden_size=16, num_layers=1, num_heads=2, max_positions=64,
               num_mem_tokens=3, batch_size=8, lr=3e-3, warmup_steps=2, max_steps=40, eval_every=20,
               val_samples=8, target_accuracy=1.01, plateau=100, log_every=10, save_dtype="float32", threads=1,
               seed=3, noise_stillness=50.0)
    still = train(TrainConfig(out=str(tmp_path / "still"), **cfg), progress=False)
    both = train(TrainConfig(out=str(tmp_path / "both"), fact_write=50.0, fact_write_margin=1.0, **cfg),
                 progress=False)
    steps = [e for e in map(json.loads, (both / "training_log.jsonl").read_text().splitlines()) if e["event"] == "step"]
    assert len(steps) == 4 and all(0 <= e["write_shortfall"] <= 1.0 and "stillness" in e for e in steps)
    assert json.loads((both / "config.json").read_text())["provenance"]["train_config"]["fact_write"] == 50.0

    ids, _, holds = TaskBuilder("detect", tokenizer, 16).batch(4, 32, seed=9, fact_segments=True)
    holds[:, -1] = False
    holds[:, 0] = False  # the first segment moves the learned initial memory by far more than any later one

    def fact_moves(folder):
        changes = []
        with torch.no_grad():
            recurrence.run(load_checkpoint(folder, device="cpu"), ids,
                           on_segment=lambda r: changes.append(memory_change(r.memory_in, r.memory_out)))
        return torch.stack(changes, dim=1)[holds].median().item()

    # stillness alone lets facts write little; the write term makes them write more
    assert fact_moves(both) > 1.5 * fact_moves(still), (fact_moves(both), fact_moves(still))


def test_fact_write_flags_are_checked(tmp_path, capsys):
    from rmt_cli.main import main

    assert main(["train", "--architecture", "decoder", "--task", "qa1", "--fact-write", "1",
                 "--out", str(tmp_path / "d")]) != 0
    assert "--fact-write is for the encoder" in capsys.readouterr().err
    for flag, bad in (("--fact-write", "-1"), ("--fact-write", "nan"), ("--fact-write-margin", "0"),
                      ("--fact-write-margin", "inf")):
        assert main(["train", flag, bad, "--out", str(tmp_path / "e")]) != 0
        assert flag in capsys.readouterr().err
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()


def test_prior_facts_mark_both_fact_segments_and_leave_validation_alone(tmp_path, capsys, tokenizer):
    from rmt_cli.main import main
    from rmt_core.train import Data, _batch_seed

    kw = dict(task="detect", stages=[Stage(12, 16)], batch_size=8, seed=3, noise_stillness=1.0, fact_write=1.0)
    data = Data(TrainConfig(out=str(tmp_path / "p"), prior_facts=1.0, **kw), tokenizer)
    stage = data.cfg.stages[0]
    ids, labels, still, write, _, _, _, _, _ = data.batch(stage, 0, 0)
    samples = data.builder(16, training=True).samples(12, 8, _batch_seed(3, 0, 0))
    assert sum(len(s.facts) == 2 for s in samples) >= 6  # all but those whose fact is in segment 0
    for i, s in enumerate(samples):
        segments = {f.segment for f in s.facts}
        # The earlier fact's segment is a fact's too: stillness spares it and the fact-write term asks it to write.
        assert [bool(still[i, t]) for t in range(1, 11)] == [t not in segments for t in range(1, 11)]
        assert [bool(write[i, t]) for t in range(11)] == [t in segments for t in range(11)]
    plain = Data(TrainConfig(out=str(tmp_path / "q"), **kw), tokenizer)
    assert torch.equal(data.validation(stage, batch_size=8)[0][0], plain.validation(stage, batch_size=8)[0][0])
    assert not torch.equal(ids, plain.batch(stage, 0, 0)[0])
    assert main(["train", "--task", "reason", "--prior-facts", "0.5", "--out", str(tmp_path / "r")]) != 0
    assert "--prior-facts is for detect" in capsys.readouterr().err
    assert main(["train", "--task", "detect", "--prior-facts", "2", "--out", str(tmp_path / "s")]) != 0
    assert "--prior-facts" in capsys.readouterr().err
    assert main(["train", "--task", "detect", "--prior-asked", "0.5", "--out", str(tmp_path / "t")]) != 0
    assert "give --prior-facts too" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()


def test_prior_decoys_are_still_noise_in_training_and_absent_from_validation(tmp_path, capsys, tokenizer):
    from rmt_cli.main import main
    from rmt_core.train import Data, _batch_seed

    kw = dict(task="detect", stages=[Stage(12, 16)], batch_size=8, seed=3, noise_stillness=1.0)
    data = Data(TrainConfig(out=str(tmp_path / "p"), prior_decoys=1.0, **kw), tokenizer)
    stage = data.cfg.stages[0]
    ids, labels, still, _, _, _, _, _, _ = data.batch(stage, 0, 0)
    samples = data.builder(16, training=True).samples(12, 8, _batch_seed(3, 0, 0))
    decoyed = [i for i, s in enumerate(samples) if "prior_decoy" in s.sources]
    assert len(decoyed) >= 6
    for i in decoyed:
        s = samples[i]
        noise_only = [t for t in range(1, 11) if t != s.facts[0].segment]
        assert all(still[i, t] for t in noise_only)  # the decoy's segment too: memory should not move there
    plain = Data(TrainConfig(out=str(tmp_path / "q"), **kw), tokenizer)
    assert torch.equal(data.validation(stage, batch_size=8)[0][0], plain.validation(stage, batch_size=8)[0][0])
    assert not torch.equal(ids, plain.batch(stage, 0, 0)[0])
    assert main(["train", "--task", "reason", "--prior-decoys", "0.5", "--out", str(tmp_path / "r")]) != 0
    assert "--prior-decoys is for detect" in capsys.readouterr().err
    for bad in ("2", "nan"):
        assert main(["train", "--task", "detect", "--prior-decoys", bad, "--out", str(tmp_path / "s")]) != 0
        assert "--prior-decoys" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()
