"""scripts/reason_slot_read.py: which slot the question reads, and what that slot holds of the answering fact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script

from rmt_core import babi
from rmt_core.checkpoint import load_checkpoint
from rmt_core.evaluate import eval_sample_seed, predict_batch
from rmt_core.tasks import TaskBuilder

ROOT = Path(__file__).resolve().parents[1]
REASON, DETECT = ROOT / "checkpoints" / "reason", ROOT / "checkpoints" / "detect"


@pytest.mark.skipif(not (REASON / "model.safetensors").is_file(), reason="the shipped reason checkpoint is absent")
def test_the_kept_samples_and_their_answers_are_the_models(tmp_path, capsys):
    script = load_script("reason_slot_read")
    out = tmp_path / "slots.json"
    assert script.main([str(REASON), "--samples", "300", "--json", str(out)]) == 0
    assert "[CLS] on the answering fact's slot" in capsys.readouterr().out
    report = json.loads(out.read_text())
    model = load_checkpoint(str(REASON), device="cpu")
    builder = TaskBuilder("reason", model.tokenizer, model.config.segment_size, split="test")
    samples = [builder.sample(4, eval_sample_seed(1, 4, i)) for i in range(300)]
    kept = report["hard_indexes"] + report["other_indexes"]
    assert len(kept) == report["kept"] == sum(g["samples"] for g in report["groups"].values()) >= 100
    for i, sample in enumerate(samples):  # kept: both facts behind, exactly one of them answers by itself
        carried = all(f.segment < 3 for f in sample.facts)
        answering = sum(bool(babi.solve_relations([f.text], sample.question)) for f in sample.facts)
        assert (i in kept) == (carried and answering == 1)
    for label in ("hard", "other"):
        chosen = [samples[i] for i in report[f"{label}_indexes"]]
        ids = np.array([s.input_ids for s in chosen], dtype=np.int64)
        with torch.no_grad():
            answers = predict_batch(model, ids, 4, model.config.segment_size).argmax(-1).numpy()
        group = report["groups"][label]
        assert group["right"] == int((answers == np.array([s.answer for s in chosen])).sum())
        assert 0 <= group["same_slot"] <= group["samples"]
    assert [p["target"] for p in report["probes"]] == ["subject"] * 8 + ["direction"] * 8
    places = [p["from"] for p in report["probes"] if p["target"] == "direction"]
    assert places[:3] == ["slot after its fact's segment", "slot after the other fact's later segment",
                          "slot as read"]
    assert report["probes"][1]["hard_second"] is None and report["probes"][1]["hard_same"] is None
    assert len(places) == 3 + 4 + 1  # a 4-layer backbone
    orders = {"first": 0, "second": 0, "same": 0}  # the scored hard samples, by when the answering fact was written
    for i in sorted(kept)[report["fit"]:]:
        if i in report["hard_indexes"]:
            facts = samples[i].facts
            a, b = sorted(facts, key=lambda f: not babi.solve_relations([f.text], samples[i].question))
            orders["same" if a.segment == b.segment else "first" if a.segment < b.segment else "second"] += 1
    assert report["hard_scored_by_order"] == orders
    assert sum(report["hard_answered_by_order"].values()) <= report["groups"]["hard"]["right"]
    for o, n in orders.items():  # a right answer is never the other fact's subject: they differ in a hard sample
        assert report["hard_answered_by_order"][o] + report["hard_said_other_by_order"][o] <= n
    assert report["probes"][0]["scored"] > 0  # one age only: fitted on every kept sample of the first half
    # an age with fewer than MIN_FIT rows to fit on is left out, and a place with none is None, not a number
    for p in report["probes"]:
        assert (p["accuracy"] is None) == (p["scored"] == 0) == (p["chance"] is None)
        assert p["accuracy"] is None or (0 <= p["accuracy"] <= 1 and 0 < p["chance"] < 1)


def test_bad_input_is_one_line(capsys):
    script = load_script("reason_slot_read")
    assert script.main([str(REASON), "--segments", "1"]) == 1
    assert "--segments must be 2 to 64" in capsys.readouterr().err
    if (DETECT / "model.safetensors").is_file():
        assert script.main([str(DETECT), "--samples", "20"]) == 1
        err = capsys.readouterr().err
        assert "not an encoder reason checkpoint" in err and len(err.strip().splitlines()) == 1
    assert script.main([str(REASON), "--samples", "30"]) == 1
    assert "give more --samples" in capsys.readouterr().err
