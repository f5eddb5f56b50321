"""scripts/prose_noise.py: prose passages become noise lines, the split is stable, nothing is overwritten."""

from __future__ import annotations

import pytest

from conftest import load_script

FORTUNES = """\
The wise man does not hurry, for the road he walks was there before him and will be there after him.
\t\t-- An old proverb
%
A committee is a group of people who individually can do nothing,
but as a group decide that nothing can be done.
%
   /\\_/\\
  ( o.o )
%
def main(): return 0
%
Roses are red,
violets are blue,
%
Too short.
%
B\x08Bold words were once printed twice on paper, and the reader never noticed the difference at all.
"""


def test_passages_keep_prose_and_drop_attributions_drawings_code_and_verse():
    pn = load_script("prose_noise")
    found = pn.passages(FORTUNES)
    assert found == [
        "The wise man does not hurry, for the road he walks was there before him and will be there after him.",
        "A committee is a group of people who individually can do nothing, but as a group decide that nothing "
        "can be done.",
        "Bold words were once printed twice on paper, and the reader never noticed the difference at all.",
    ]
    # blank lines separate passages as % does
    assert pn.passages(FORTUNES.replace("%\n", "\n")) == found


def test_split_is_stable_and_files_are_written_once(tmp_path, capsys):
    pn = load_script("prose_noise")
    source = tmp_path / "prose"
    lines = [f"Passage number {i} tells a short story about a walk along the river at dawn." for i in range(200)]
    source.write_text("\n%\n".join(lines) + "\n")
    out = tmp_path / "noise"
    assert pn.main([str(source), "--out", str(out), "--val-share", "0.2"]) == 0
    train = (tmp_path / "noise.train.txt").read_text().splitlines()
    val = (tmp_path / "noise.val.txt").read_text().splitlines()
    assert sorted(train + val) == sorted(lines) and not set(train) & set(val)
    assert 20 <= len(val) <= 60  # about a fifth
    assert all(pn.in_validation(p, 0.2) for p in val)
    before = (tmp_path / "noise.train.txt").read_bytes()
    with pytest.raises(SystemExit):
        pn.main([str(source), "--out", str(out)])
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "noise.train.txt").read_bytes() == before


@pytest.mark.parametrize("args, message", [
    (["--val-share", "nan"], "--val-share"),
    (["--val-share", "1"], "--val-share"),
])
def test_bad_flags_are_one_line_errors(tmp_path, capsys, args, message):
    pn = load_script("prose_noise")
    source = tmp_path / "prose"
    source.write_text(FORTUNES)
    with pytest.raises(SystemExit):
        pn.main([str(source), "--out", str(tmp_path / "n"), *args])
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("n.*"))


def test_a_folder_or_a_text_without_prose_is_refused(tmp_path, capsys):
    pn = load_script("prose_noise")
    with pytest.raises(SystemExit):
        pn.main([str(tmp_path), "--out", str(tmp_path / "n")])
    assert "is not a file" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.write_text("%\n%\n")
    with pytest.raises(SystemExit):
        pn.main([str(empty), "--out", str(tmp_path / "n")])
    assert "no prose passages" in capsys.readouterr().err
    assert not list(tmp_path.glob("n.*"))


def test_noise_coverage_measures_a_prose_file_beside_the_builtins(tmp_path, capsys):
    pn, nc = load_script("prose_noise"), load_script("noise_coverage")
    source = tmp_path / "prose"
    source.write_text("\n%\n".join(f"The traveller number {i} walked along the quiet river at dawn and sang."
                                   for i in range(300)) + "\n")
    assert pn.main([str(source), "--out", str(tmp_path / "noise"), "--val-share", "0"]) == 0
    seen_text, mixed_text = tmp_path / "seen", tmp_path / "mixed"
    lines = [f"The traveller number {i} walked along the quiet river at dawn and sang." for i in range(30)]
    seen_text.write_text("\n".join(lines) + "\n")
    mixed_text.write_text("\n".join(lines + [f"Zebras graze near volcanoes {i} times." for i in range(30)]) + "\n")
    shares = []
    for text in (seen_text, mixed_text):
        assert nc.main([str(text), "--source", str(tmp_path / "noise.train.txt")]) == 0
        row = capsys.readouterr().out.splitlines()[-1].split(" | ")
        assert row[0].endswith("noise.train.txt")
        shares.append(float(row[-1].rstrip(" |%")))
    assert shares[0] == 100.0 and 50 < shares[1] < 100  # every token of the first text is in the prose
    assert nc.main([str(seen_text), "--source", str(tmp_path / "missing.txt")]) == 1
    assert "missing.txt" in capsys.readouterr().err



def test_an_unwritable_out_is_a_one_line_error(tmp_path, capsys):
    pn = load_script("prose_noise")
    source = tmp_path / "prose"
    source.write_text(FORTUNES)
    blocker = tmp_path / "a-file"  # a file where --out needs a folder: fails for root too, unlike chmod
    blocker.write_text("")
    with pytest.raises(SystemExit):
        pn.main([str(source), "--out", str(blocker / "n")])
    assert "cannot write" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "prose"]
