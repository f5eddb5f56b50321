"""rmt train --noise-anchor: the memory's distance on noise from what the last fact's segment wrote, in the loss."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_tiny_rmt, tiny_reason_config
from rmt_core import recurrence
from rmt_core.model import memory_change
from rmt_core.tasks import TaskBuilder
from rmt_core.train import Stage, TrainConfig, _batch_seed, train


@pytest.fixture
def model(tokenizer):
    return make_tiny_rmt(tokenizer, segment_size=16, num_mem_tokens=3, hidden=16, layers=1, heads=2, seed=4)


def test_anchor_drift_is_the_distance_from_the_last_segment_not_marked(model, tokenizer):
    ids, labels = TaskBuilder("detect", tokenizer, 16).batch(6, 3, seed=2)
    anchored = torch.tensor([[False, True, True, False, True, False],  # anchors: seg 0's memory, then seg 3's
                             [False, False, True, True, True, False],  # seg 1's for segments 2-4
                             [False, False, False, False, False, False]])  # nothing marked: no term from this row
    with torch.no_grad():
        run = recurrence.run(model, ids, names=["seg.*.mem_out"])
        outs = [run.cache[f"seg.{t}.mem_out"] for t in range(6)]
        expected = []
        for b in range(3):
            anchor = outs[0][b:b + 1]
            for t in range(1, 6):
                if anchored[b, t]:
                    expected.append(memory_change(anchor, outs[t][b:b + 1]))
                else:
                    anchor = outs[t][b:b + 1]
        expected = torch.cat(expected).mean()
        stepwise = model(ids, labels=labels, still=anchored, still_weight=1.0)
        out = model(ids, labels=labels, still=anchored, still_weight=1.0, anchored=anchored, anchor_weight=4.0)
        unweighted = model(ids, labels=labels, anchored=anchored)
    assert out.anchor_drift.item() == pytest.approx(expected.item(), rel=1e-5) and out.anchor_drift > 0
    assert out.loss.item() == pytest.approx(stepwise.loss.item() + 4.0 * expected.item(), rel=1e-5)
    # two marked segments in a row: the second is weighed from the anchor, not from the first
    assert out.anchor_drift.item() != pytest.approx(stepwise.stillness.item(), rel=1e-3)
    assert stepwise.anchor_drift is None
    assert unweighted.anchor_drift.item() == pytest.approx(expected.item(), rel=1e-5)  # reported at weight 0
    assert unweighted.loss.item() == pytest.approx(model(ids, labels=labels).loss.item(), rel=1e-6)
    with pytest.raises(ValueError, match="anchored has shape"):
        model(ids, labels=labels, anchored=anchored[:, :3])


def test_training_batches_anchor_the_noise_after_a_sample_s_first_fact(tokenizer):
    from rmt_core.train import Data

    stage = Stage(6, 32)
    base = dict(task="reason", stages=[stage], out="unused", num_mem_tokens=3, batch_size=8)
    anchored_data = Data(TrainConfig(noise_anchor=1.0, **base), tokenizer)
    *_, none = Data(TrainConfig(noise_stillness=1.0, **base), tokenizer).batch(stage, 0, 0)
    assert none is None
    ids, labels, still, *_, anchored = anchored_data.batch(stage, 0, 0)
    assert still is not None and anchored.shape == still.shape == (8, 6)
    builder = anchored_data.builder(32, training=True)
    _, _, holds = builder.batch(6, 8, seed=_batch_seed(0, 0, 0), fact_segments=True)
    for b in range(8):
        first = int(holds[b].nonzero()[0])
        assert anchored[b].tolist() == [bool(still[b, t]) and t > first for t in range(6)]
    assert anchored.any() and (still & ~anchored).any()  # noise before a first fact is not anchored


def test_the_anchor_term_reaches_segments_that_follow_a_truncation_point(model, tokenizer):
    """Like stillness, the term is local to the segments it marks: it trains them where the task's gradient
    (--bptt-depth) does not reach."""
    model.config.bptt_depth = 1
    ids, labels = TaskBuilder("detect", tokenizer, 16).batch(4, 3, seed=1)
    still = torch.zeros(3, 4, dtype=torch.bool)
    still[:, 1:3] = True
    params = [p for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    model(ids, labels=labels, anchored=still).loss.backward()
    base = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    model.zero_grad()
    model(ids, labels=labels, anchored=still, anchor_weight=1.0).loss.backward()
    assert any(not torch.allclose(p.grad if p.grad is not None else torch.zeros_like(p), g)
               for p, g in zip(params, base))


def test_training_with_noise_anchor_logs_the_term_and_records_it(tmp_path):
    config = tiny_reason_config(tmp_path / "anchor", stages=[Stage(4, 32)], noise_anchor=50.0, max_steps=40,
                                eval_every=20, log_every=10)
    folder = train(config, progress=False)
    steps = [e for e in map(json.loads, (folder / "training_log.jsonl").read_text().splitlines())
             if e["event"] == "step"]
    logged = [e["anchor_drift"] for e in steps]
    assert len(logged) == 4 and all(v >= 0 for v in logged)
    assert logged[-1] < logged[0]  # a heavy weight keeps memory near the last write
    assert all("stillness" in e for e in steps)  # the per-segment term is reported beside it (weight 0)
    config = json.loads((folder / "config.json").read_text())
    assert config["provenance"]["train_config"]["noise_anchor"] == 50.0
