"""python -m rmt_core.model_card: writes cards of checkpoint folders, and names a bad folder in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rmt_core.model_card import main, model_card

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "memorize"


def test_writes_the_card_of_each_folder(tmp_path, capsys):
    folder = tmp_path / "memorize"
    folder.mkdir()
    for name in ("config.json", "training_log.jsonl", "eval.json"):
        shutil.copy(SHIPPED / name, folder / name)
    assert main([str(folder)]) == 0
    assert (folder / "README.md").read_text() == model_card(folder)
    assert str(folder / "README.md") in capsys.readouterr().out


def test_bad_folders_get_one_line_and_no_traceback(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert "holds no config.json; give a checkpoint folder" in err and "Traceback" not in err
    (tmp_path / "config.json").write_text("{")
    assert main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write its card" in err and not (tmp_path / "README.md").exists()
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "checkpoint folder" in capsys.readouterr().out
