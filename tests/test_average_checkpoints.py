"""scripts/average_checkpoints.py: the weighted mean of checkpoints' weights, as a checkpoint that names its parents."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import load_script, make_tiny_rmt, save_tiny_decoder

from rmt_core.checkpoint import checkpoint_identity, load_checkpoint, read_weights, save_checkpoint

script = load_script("average_checkpoints")


@pytest.fixture
def parents(tmp_path, tokenizer):
    a = save_checkpoint(make_tiny_rmt(tokenizer, seed=0), tmp_path / "a", dtype="float32",
                        provenance={"command": "rmt train --seed 0", "task": "memorize"},
                        extra_files={"training_log.jsonl": '{"event": "start"}\n',
                                     "training_log.init.jsonl": '{"event": "start", "run": "before"}\n'})
    b = save_checkpoint(make_tiny_rmt(tokenizer, seed=1), tmp_path / "b", dtype="float32",
                        provenance={"command": "rmt train --seed 1", "task": "memorize"})
    return a, b


def test_weights_are_the_weighted_mean_and_the_folder_names_its_parents(tmp_path, parents, capsys):
    a, b = parents
    out = tmp_path / "mean"
    assert script.main(["--out", str(out), f"{a}:3", f"{b}:1"]) == 0
    wa, wb, mean = read_weights(a), read_weights(b), read_weights(out)
    assert set(mean) == set(wa)
    for name, tensor in wa.items():
        if tensor.is_floating_point():
            torch.testing.assert_close(mean[name], 0.75 * tensor + 0.25 * wb[name], rtol=0, atol=1e-6)
    assert any(not torch.equal(mean[k], t) for k, t in wa.items() if t.is_floating_point())
    model = load_checkpoint(out, device="cpu")  # a checkpoint like any other
    assert model.config.num_mem_tokens == 4
    config = json.loads((out / "config.json").read_text())
    parents_ = config["provenance"]["averaged"]
    assert [(p["sha256"], p["share"], p["command"]) for p in parents_] == [
        (checkpoint_identity(a)["sha256"], 0.75, "rmt train --seed 0"),
        (checkpoint_identity(b)["sha256"], 0.25, "rmt train --seed 1")]
    # Each parent's logs stay beside the mean under names that say whose they are.
    assert (out / "training_log.parent1.jsonl").read_text() == (a / "training_log.jsonl").read_text()
    assert (out / "training_log.parent1.init.jsonl").read_text() == (a / "training_log.init.jsonl").read_text()
    event = json.loads((out / "training_log.jsonl").read_text())
    assert event["event"] == "average" and len(event["parents"]) == 2
    card = (out / "README.md").read_text()
    assert "weighted mean" in card and "share 0.750" in card and checkpoint_identity(b)["sha256"][:16] in card
    assert "x 0.750" in capsys.readouterr().out


def test_one_model_twice_gives_that_model(tmp_path, parents):
    a, _ = parents
    out = tmp_path / "same"
    assert script.main(["--out", str(out), str(a), str(a)]) == 0
    assert all(torch.equal(t, read_weights(out)[k]) for k, t in read_weights(a).items())


def test_parents_trained_differently_average_and_keep_the_longest_stage(tmp_path, tokenizer):
    short, long = make_tiny_rmt(tokenizer, seed=0), make_tiny_rmt(tokenizer, seed=1)
    short.config.trained_segments, short.config.bptt_depth = 64, 64
    long.config.trained_segments, long.config.bptt_depth, long.config.loss_on = 256, 256, "all"
    a = save_checkpoint(short, tmp_path / "short", dtype="float32")
    b = save_checkpoint(long, tmp_path / "long", dtype="float32")
    out = tmp_path / "mean"
    assert script.main(["--out", str(out), str(a), str(b)]) == 0
    rmt = json.loads((out / "config.json").read_text())["rmt"]
    assert (rmt["trained_segments"], rmt["bptt_depth"], rmt["loss_on"]) == (256, 64, "last")


def test_refuses_an_existing_out_other_models_and_bad_shares(tmp_path, parents, tokenizer, capsys):
    a, b = parents
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep")
    assert script.main(["--out", str(tmp_path / "taken"), str(a), str(b)]) == 1
    assert "exists" in capsys.readouterr().err and (tmp_path / "taken" / "mine.txt").read_text() == "keep"
    other = save_checkpoint(make_tiny_rmt(tokenizer, num_mem_tokens=6), tmp_path / "six", dtype="float32")
    assert script.main(["--out", str(tmp_path / "x"), str(a), str(other)]) == 1
    assert "rmt.num_mem_tokens differs" in capsys.readouterr().err
    decoder = save_tiny_decoder(tokenizer, tmp_path / "dec")
    assert script.main(["--out", str(tmp_path / "x"), str(a), str(decoder)]) == 1
    assert "is not the same model" in capsys.readouterr().err
    for share in ("nan", "-1", "0", "half"):
        assert script.main(["--out", str(tmp_path / "x"), f"{a}:{share}", str(b)]) == 1
        assert "share" in capsys.readouterr().err
    assert script.main(["--out", str(tmp_path / "x"), str(a)]) == 1
    assert "at least two" in capsys.readouterr().err
    assert script.main(["--out", str(tmp_path / "x"), str(a), str(tmp_path / "missing")]) == 1
    assert not (tmp_path / "x").exists()
