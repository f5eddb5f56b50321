"""scripts/question_noise.py: a noise file's questions, alone or at a share, none from an excluded file."""

from __future__ import annotations

import pytest

from conftest import load_script

# A noise file needs 20 usable sentences (rmt_core.noise.MIN_SENTENCES): statements that pad each file.
PAD = " ".join(f"The {word} clock in the old town struck {n} times." for word, n in zip(
    ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", "last",
     "loud", "quiet", "slow", "brass", "stone", "tall", "small", "golden", "broken"), range(1, 21))) + "\n"
TRAIN = PAD + """\
Why does the kettle always boil over when nobody watches it? Nobody has ever answered that one.
The committee met on a Tuesday and decided nothing at all. The treasurer asked, "Who will pay for the lunch?"
A cat sat on the warm stone wall all afternoon. How long can a summer afternoon really last?
Dogs bark at the postman every single morning. Is there any end to such noise?
"""
VAL = PAD + "How long can a summer afternoon really last? The lamp was broken again.\n"


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_questions_alone_keep_quoted_ones_and_drop_excluded_sentences(tmp_path):
    qn = load_script("question_noise")
    train, val = _write(tmp_path, "train.txt", TRAIN), _write(tmp_path, "val.txt", VAL)
    out = tmp_path / "q.txt"
    assert qn.main([str(train), "--exclude", str(val), "--out", str(out)]) == 0
    assert out.read_text().splitlines() == [
        "Why does the kettle always boil over when nobody watches it?",
        'The treasurer asked, "Who will pay for the lunch?"',  # a closing quote may follow the mark
        "Is there any end to such noise?",
    ]  # the summer question is also in the validation file


def test_share_adds_statements_until_questions_are_that_share(tmp_path):
    qn = load_script("question_noise")
    sentences = [f"Statement number {i} is a plain sentence." for i in range(40)]
    sentences += [f"Is question number {i} a real question?" for i in range(10)]
    mixed = qn.question_noise(sentences, set(), share=0.25, seed=0)
    assert sum(s.endswith("?") for s in mixed) == 10 and len(mixed) == 40  # 10 questions, 30 statements
    assert mixed == qn.question_noise(sentences, set(), share=0.25, seed=0)
    assert mixed != qn.question_noise(sentences, set(), share=0.25, seed=1)
    # too few statements for the share: all of them, no repeats
    assert len(qn.question_noise(sentences, set(), share=0.1, seed=0)) == 50
    assert sorted(qn.question_noise(sentences, {sentences[-1]}, share=1.0)) == sorted(sentences[40:49])


@pytest.mark.parametrize("args, message", [
    (["--share", "0"], "--share 0.0 must be above 0"),
    (["--share", "nan"], "--share nan must be above 0"),
    (["--share", "1.5"], "--share 1.5 must be above 0"),
    (["--exclude", "missing.txt"], "missing.txt is not a file"),
])
def test_bad_flags_are_one_line_errors(tmp_path, capsys, args, message):
    qn = load_script("question_noise")
    train = _write(tmp_path, "train.txt", TRAIN)
    with pytest.raises(SystemExit):
        qn.main([str(train), "--out", str(tmp_path / "q.txt"), *args])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "q.txt").exists()


def test_never_overwrites_and_refuses_a_file_without_questions(tmp_path, capsys):
    qn = load_script("question_noise")
    train = _write(tmp_path, "train.txt", TRAIN)
    out = _write(tmp_path, "q.txt", "mine\n")
    with pytest.raises(SystemExit):
        qn.main([str(train), "--out", str(out)])
    assert "exists" in capsys.readouterr().err and out.read_text() == "mine\n"
    plain = _write(tmp_path, "plain.txt", PAD + "The lamp was broken again. Nobody came to mend it that week.\n")
    with pytest.raises(SystemExit):
        qn.main([str(plain), "--out", str(tmp_path / "none.txt")])
    assert "has no question" in capsys.readouterr().err and not (tmp_path / "none.txt").exists()
