"""scripts/reason_memory_probe.py: probes of what reason's memory holds of two carried facts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


@pytest.mark.skipif(not (CHECKPOINTS / "reason" / "model.safetensors").is_file(),
                    reason="the shipped reason checkpoint is absent")
def test_probes_read_the_places_of_carried_facts_and_draw_them(tmp_path, capsys):
    script = load_script("reason_memory_probe")
    report = tmp_path / "probe.json"
    assert script.main([str(CHECKPOINTS / "reason"), "--segments", "4", "--samples", "600",
                        "--json", str(report)]) == 0
    table = capsys.readouterr().out
    assert table.count("| 4 |") == 6  # two facts and the table of answers, each at two points of the run
    row = json.loads(report.read_text())["lengths"][0]
    assert row["probed"] >= 100 and row["fit"] + row["score"] == row["probed"]
    for fact in row["facts"]:
        for when in ("written", "read"):
            subject = fact[when]["subject"]
            assert subject["accuracy"] > subject["chance"] + 0.15  # memory holds which places the facts name
        assert 0 < fact["model_accuracy_when_asked"] <= 1 and fact["asked"] > 0
    for when in ("written", "read"):  # every sample's two facts answer four questions of the table
        assert row["table"][when]["asked"] == 4 * row["score"] and 0 <= row["table"][when]["accuracy"] <= 1
    assert script.main(["--figure", str(tmp_path / "probe.html"), str(report)]) == 0
    assert "table of answers" in (tmp_path / "probe.html").read_text()


def test_bad_inputs_get_one_line(tmp_path, capsys):
    script = load_script("reason_memory_probe")
    if (CHECKPOINTS / "detect" / "model.safetensors").is_file():
        assert script.main([str(CHECKPOINTS / "detect"), "--samples", "10"]) == 1
        assert "probes reason's" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    assert script.main(["--figure", str(tmp_path / "f.html"), str(tmp_path / "bad.json")]) == 1
    assert "cannot read" in capsys.readouterr().err and not (tmp_path / "f.html").exists()
    assert script.main(["a", "b"]) == 1
    assert "give one checkpoint" in capsys.readouterr().err
