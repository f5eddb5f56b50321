"""scripts/reason_errors.py: answers read from an `rmt eval --json` file are the model's own, sample for sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script

from rmt_cli.main import main as rmt

REASON = Path(__file__).resolve().parents[1] / "checkpoints" / "reason"


@pytest.mark.skipif(not (REASON / "model.safetensors").is_file(), reason="the shipped reason checkpoint is absent")
def test_eval_json_gives_the_tables_of_running_the_model(tmp_path, capsys):
    script = load_script("reason_errors")
    out = tmp_path / "eval.json"
    assert rmt(["eval", "--checkpoint", str(REASON), "--segments", "1,2,4", "--samples", "40", "--threads", "1",
                "--no-progress", "--json", str(out)]) == 0
    capsys.readouterr()
    args = [str(REASON), "--segments", "1,2,4", "--samples", "40"]
    assert script.main(args) == 0
    ran = capsys.readouterr().out
    assert script.main(args + ["--eval-json", str(out)]) == 0
    assert capsys.readouterr().out == ran
    # The split by facts behind the question's segment covers every sample of each length.
    carried = ran.split("| facts before the question's segment |")[1].split("\n\n")[0].strip().splitlines()[2:]
    for column in range(3):
        counts = [int(row.split("|")[2 + column].split("n=")[1].rstrip(") ")) for row in carried
                  if "n=" in row.split("|")[2 + column]]
        assert sum(counts) == 40
    # The samples with both facts behind, split by where the asked place sits, are those of the rows "2 (...)".
    tables = ran.split("| both facts behind: where the asked place sits |")
    both = tables[1].split("\n\n")[0].strip().splitlines()[2:]
    # ... and split once more by the question's form, the same samples again (one more column before the counts).
    by_form = tables[2].strip().splitlines()[2:]
    twos = [row for row in carried if row.startswith("| 2 (")]

    def count(rows, column):
        return sum(int(row.split("|")[column].split("n=")[1].rstrip(") ")) for row in rows
                   if "n=" in row.split("|")[column])
    for column in range(3):
        assert count(both, 2 + column) == count(twos, 2 + column) == count(by_form, 3 + column)
    assert count(both, 4) > 0
    assert {row.split("|")[2].strip() for row in by_form} <= {"What is D of the P?", "What is the P D of?"}
    # --wrong-answers adds one table: each length's wrong answers, every one counted once, by the place it names.
    assert script.main(args + ["--wrong-answers"]) == 0
    more = capsys.readouterr().out
    assert more.startswith(ran)
    rows = more.split("| the wrong answer names |")[1].strip().splitlines()[2:]
    results = {r["segments"]: r for r in json.loads(out.read_text())["results"]}
    for column, n in enumerate((1, 2, 4)):
        cells = [(row.split("|")[1], row.split("|")[3 + column].strip()) for row in rows]
        counts = [(kind, int(c.split(" of ")[0]), int(c.split(" of ")[1].split()[0])) for kind, c in cells if c != "-"]
        for kind in {k for k, _, _ in counts}:
            assert sum(c for k, c, _ in counts if k == kind) == next(t for k, _, t in counts if k == kind)
        assert sum(c for _, c, _ in counts) == results[n]["samples"] - results[n]["correct"]
    assert script.main(args + ["--wrong-answers", "--eval-json", str(out)]) == 1
    assert "drop --eval-json" in capsys.readouterr().err
    # More samples than the file holds, another seed's file, or not an eval file: one line, exit 1.
    assert script.main(args[:3] + ["--samples", "41", "--eval-json", str(out)]) == 1
    assert "fewer than 41 samples" in capsys.readouterr().err
    data = json.loads(out.read_text())
    (tmp_path / "seed.json").write_text(json.dumps({**data, "seed": 3}))
    assert script.main(args + ["--eval-json", str(tmp_path / "seed.json")]) == 1
    assert "seed 3" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert script.main(args + ["--eval-json", str(tmp_path / "bad.json")]) == 1
    err = capsys.readouterr().err
    assert "cannot read" in err and len(err.strip().splitlines()) == 1
