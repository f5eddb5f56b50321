"""scripts/drift_direction.py: the answer along a sample's own drift, along random steps of its size, and along
another sample's drift, on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import load_script, make_tiny_rmt


@pytest.fixture(scope="module")
def direction():
    return load_script("drift_direction")


@pytest.fixture(scope="module")
def model(tokenizer):  # the tiny detect model of test_drift_findings
    return make_tiny_rmt(tokenizer, segment_size=16, num_mem_tokens=3, hidden=16, layers=1, heads=2, seed=3)


def test_the_ends_of_the_path_are_the_model_s_own_answers(direction, model):
    from rmt_core.tasks import TaskBuilder

    drift = load_script("drift_findings")
    samples = drift.pick_samples(TaskBuilder("detect", model.tokenizer, 16), "detect", 2 + 5 + 2, 12, 2)
    result = direction.directions(model, samples, 5, alphas=(0.0, 1.0), sizes=(0.0, 0.5))
    measured = drift.drift_pass(model, samples, [0, 5], progress=False)
    N = samples[0].n_segments
    questions = np.array([s.input_ids[(N - 1) * 16:] for s in samples])
    labels = np.array([s.answer for s in samples])
    at = [int((drift.question_logits(model, measured["kept"][:, j], questions).argmax(1) == labels).sum())
          for j in (0, 1)]
    start, end = result["along"]
    assert start["drift"] == start["isotropic"] == start["other_sample"] == at[0]  # a = 0: m0 in every column
    assert end["drift"] == at[1]  # a = 1 along the drift: the memory 5 segments of noise later
    assert result["noise_of_size"][0]["right"] == at[0]  # noise of size 0 leaves m0
    assert result["samples"] == 12 and result["distance"] == 5 and result["drift_relative_size"]["median"] > 0


def test_end_to_end_writes_its_json_and_guards_what_it_did_not_write(direction, model, tmp_path, capsys):
    from rmt_core.checkpoint import save_checkpoint

    folder = save_checkpoint(model, tmp_path / "tiny", tokenizer=model.tokenizer)
    out = tmp_path / "out" / "direction.json"
    argv = ["--checkpoint", str(folder), "--samples", "6", "--distance", "3", "--max-fact-segment", "1",
            "--alphas", "0,1", "--sizes", "0.1", "--json", str(out)]
    assert direction.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["format"] == "rmt-lens-drift-direction" and len(result["along"]) == 2
    assert result["checkpoint"]["sha256"] and "| 0 |" in capsys.readouterr().out
    assert direction.main(argv) == 0  # its own file is replaced
    out.write_text("{}")
    assert direction.main(argv) == 1
    assert "was not written by this script" in capsys.readouterr().err
    out.write_text("not json")
    assert direction.main(argv) == 1 and "was not written by this script" in capsys.readouterr().err
    out.write_text("{}")
    assert out.read_text() == "{}"
    assert direction.main(argv[:-1] + [str(tmp_path)]) == 1 and "is a folder" in capsys.readouterr().err
    for bad in (["--alphas", "0,x"], ["--sizes", "nan"], ["--samples", "1"], ["--distance", "0"]):
        assert direction.main(argv[:-2] + bad + ["--json", str(tmp_path / "o2.json")]) == 1
    assert "error" in capsys.readouterr().err and not (tmp_path / "o2.json").exists()
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
