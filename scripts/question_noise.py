"""Questions from a noise file, alone or with some of its statements, as a new noise file for `--noise-file`.

    .venv/bin/python scripts/question_noise.py runs/fortunes.train.txt --exclude runs/fortunes.val.txt \
        --out runs/fortunes.train.questions.txt
    .venv/bin/python scripts/question_noise.py runs/fortunes.train.txt --exclude runs/fortunes.val.txt \
        --share 0.3 --out runs/fortunes.train.q30.txt

Cuts the file into sentences with `--noise-file`'s own reader (`rmt_core.noise.file_sentences`: no fact-like or
repeated sentence) and keeps those that end in a question mark (closing quotes or brackets may follow). Sentences
that also occur in an `--exclude` file are dropped, so a training file shares no sentence with a validation file.
With `--share P` the file's statements are added, shuffled with `--seed` and thinned so that questions are P of
the lines; a noise source drops repeated sentences, so repeating questions could not raise their share. Writes one
sentence a line, atomically, and never over an existing file.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import sys
from pathlib import Path

from rmt_core.errors import TaskError
from rmt_core.files import write_atomic
from rmt_core.noise import file_sentences

_QUESTION = re.compile(r"\?[\"')\]]*$")


def question_noise(sentences: list[str], exclude: set[str], share: float | None, seed: int = 0) -> list[str]:
    """The questions of `sentences` not in `exclude`; with `share`, shuffled together with enough statements that
    questions make up `share` of the result (all of them when there are too few)."""
    kept = [s for s in sentences if s not in exclude]
    questions = [s for s in kept if _QUESTION.search(s)]
    if share is None:
        return questions
    statements = [s for s in kept if not _QUESTION.search(s)]
    rng = random.Random(seed)
    rng.shuffle(statements)
    mixed = questions + statements[:round(len(questions) * (1 - share) / share)]
    rng.shuffle(mixed)
    return mixed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="a noise file: one passage a line")
    parser.add_argument("--out", required=True, type=Path, help="the new noise file (must not exist)")
    parser.add_argument("--exclude", nargs="*", type=Path, default=[], help="noise files whose sentences to leave out")
    parser.add_argument("--share", type=float, default=None,
                        help="add statements so that questions are this share of the lines, such as 0.3")
    parser.add_argument("--seed", type=int, default=0, help="seed of the statements' shuffle (0)")
    args = parser.parse_args(argv)
    if args.share is not None and not (0 < args.share <= 1 and math.isfinite(args.share)):
        parser.error(f"--share {args.share} must be above 0 and at most 1, such as 0.3")
    if args.out.exists():
        parser.error(f"{args.out} exists; give another --out or remove it")
    for path in [args.file, *args.exclude]:  # before reading any of them
        if not path.is_file():
            parser.error(f"{path} is not a file; give a noise file such as runs/fortunes.train.txt")
    try:
        sentences = file_sentences(args.file)
        exclude = {s for path in args.exclude for s in file_sentences(path)}
    except TaskError as why:
        parser.error(str(why))
    lines = question_noise(sentences, exclude, args.share, args.seed)
    asked = sum(bool(_QUESTION.search(s)) for s in lines)
    if not asked:
        parser.error(f"{args.file} has no question that is not excluded; give a file with sentences ending in ?")
    try:
        write_atomic(args.out, "".join(line + "\n" for line in lines))
    except OSError as why:
        parser.error(f"cannot write {args.out} ({why.strerror}); give an --out in a writable folder")
    print(f"{len(sentences)} sentences, {asked} questions: {len(lines)} lines to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
