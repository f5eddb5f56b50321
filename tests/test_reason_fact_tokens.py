"""scripts/reason_fact_tokens.py: where a fact's direction is lost between the backbone and memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


@pytest.mark.skipif(not (CHECKPOINTS / "reason" / "model.safetensors").is_file(),
                    reason="the shipped reason checkpoint is absent")
def test_each_token_names_its_own_word_and_memory_attention_covers_the_fact(tmp_path, capsys):
    script = load_script("reason_fact_tokens")
    report = tmp_path / "tokens.json"
    # 150 samples (300 facts): enough that a probe of the four directions fits the first layer's states well
    assert script.main([str(CHECKPOINTS / "reason"), "--segments", "2", "--samples", "150",
                        "--json", str(report)]) == 0
    out = capsys.readouterr().out
    data = json.loads(report.read_text())
    layers = len(data["attention"]["per_layer"])
    assert len(data["tokens"]) == 4 * layers and out.count("| the subject token |") == layers
    assert data["fit"] + data["score"] == data["facts"] >= 100
    for row in data["tokens"]:
        if row["layer"] == 0 and row["token"] in ("subject", "direction", "reference"):
            own = row[row["token"]]  # the first layer's state of a word names that word
            assert own["accuracy"] > 0.9 and own["chance"] < 0.5
    for row in data["attention"]["per_layer"]:  # a share of the memory's attention, eight tokens of it
        assert len(row) == 8 and all(0 <= v <= 1 for v in row) and 0 < sum(row) < 1
    for mean, most in zip(data["attention"]["per_layer"], data["attention"]["strongest_per_layer"]):
        assert all(m <= x + 1e-6 and x <= 1 for m, x in zip(mean, most))  # the strongest reader reads at least the mean
    assert script.main(["--figure", str(tmp_path / "tokens.html"), str(report)]) == 0
    assert "Memory's attention" in (tmp_path / "tokens.html").read_text()


def test_bad_inputs_get_one_line(tmp_path, capsys):
    script = load_script("reason_fact_tokens")
    if (CHECKPOINTS / "detect" / "model.safetensors").is_file():
        assert script.main([str(CHECKPOINTS / "detect")]) == 1
        assert "not an encoder reason checkpoint" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    assert script.main(["--figure", str(tmp_path / "f.html"), str(tmp_path / "bad.json")]) == 1
    assert "cannot read" in capsys.readouterr().err and not (tmp_path / "f.html").exists()
    assert script.main([str(CHECKPOINTS / "reason"), "--samples", "5"]) == 1
    assert "--samples at least 20" in capsys.readouterr().err
    assert script.main([str(CHECKPOINTS / "reason"), "--segments", "4096"]) == 1
    assert "--segments must be 1 to 64" in capsys.readouterr().err
