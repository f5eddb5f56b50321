"""Turn prose files into noise files for `--noise-file`: one passage a line, split into train and validation.

    .venv/bin/python scripts/prose_noise.py --out runs/fortunes /usr/share/games/fortunes/{fortunes,people,...}

Reads plain text where blank lines or lines of a single `%` separate passages (the `fortune` program's format:
Debian's `fortunes` package puts such files in /usr/share/games/fortunes). Attribution lines ("-- Author") and
passages that look like verse, code or drawings are dropped; each kept passage becomes one line. A passage goes to
the validation file when a hash of its text falls in `--val-share`, so the split does not depend on file order.
Writes OUT.train.txt and OUT.val.txt, each atomically, and never over an existing file. The prose stays where the
user keeps it: nothing is copied into the project.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

from rmt_core.files import write_atomic

_SEPARATOR = re.compile(r"^\s*%?\s*$")  # a blank line or a lone %
_ATTRIBUTION = re.compile(r"^\s*(--|—|~~)")  # "-- Mark Twain", indented or not
_NOT_PROSE = re.compile(r"[|_\\/<>{}\[\]#=*^@~`]")  # drawings, code, markup
MIN_WORDS = 6


def passages(text: str) -> list[str]:
    """The prose passages of `text`, each joined into one line with whitespace normalised."""
    text = re.sub(r".\x08", "", text)  # overstruck characters (bold or underline on old terminals)
    found, lines = [], []
    for line in text.splitlines() + [""]:
        if _SEPARATOR.match(line):
            if lines:
                found.append(lines)
            lines = []
        elif not _ATTRIBUTION.match(line):
            lines.append(line)
    kept = []
    for block in found:
        passage = " ".join(" ".join(block).split())
        # Prose: enough words, mostly letters, sentences that end, nothing that looks like a drawing or code,
        # and lines long enough not to be verse or a list.
        letters = sum(c.isalpha() or c == " " for c in passage)
        mean_line = sum(len(line.strip()) for line in block) / len(block)
        if (len(passage.split()) >= MIN_WORDS and letters >= 0.85 * len(passage) and not _NOT_PROSE.search(passage)
                and passage[-1] in ".!?\"'" and (len(block) == 1 or mean_line >= 40)):
            kept.append(passage)
    return kept


def in_validation(passage: str, share: float) -> bool:
    """Whether `passage` belongs to the validation split: a stable hash of its text below `share`."""
    digest = hashlib.sha256(passage.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64 < share


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="prose files (passages separated by blank lines or %%)")
    parser.add_argument("--out", required=True, type=Path, help="writes OUT.train.txt and OUT.val.txt")
    parser.add_argument("--val-share", type=float, default=0.1, help="share of passages for validation (0.1)")
    args = parser.parse_args(argv)
    if not 0 <= args.val_share < 1:  # NaN fails too
        parser.error(f"--val-share {args.val_share} must be at least 0 and below 1, such as 0.1")
    targets = [Path(f"{args.out}.train.txt"), Path(f"{args.out}.val.txt")]
    for target in targets:
        if target.exists():
            parser.error(f"{target} exists; give another --out or remove it")
    kept, seen = [], set()
    for file in args.files:
        if not file.is_file():
            parser.error(f"{file} is not a file; give prose files such as /usr/share/games/fortunes/fortunes")
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as why:
            parser.error(f"{file} is not readable UTF-8 text ({why}); give plain text files")
        for passage in passages(text):
            if passage not in seen:
                seen.add(passage)
                kept.append(passage)
    if not kept:
        parser.error("no prose passages found; give text with passages separated by blank lines or %")
    train, val = [], []
    for passage in kept:
        (val if in_validation(passage, args.val_share) else train).append(passage)
    for target, lines in zip(targets, (train, val)):
        try:
            write_atomic(target, "".join(line + "\n" for line in lines))
        except OSError as why:
            if target != targets[0]:  # this run wrote the train file: no train file without its validation
                targets[0].unlink(missing_ok=True)
            parser.error(f"cannot write {target} ({why.strerror}); give an --out in a writable folder")
    words = sum(len(p.split()) for p in kept)
    print(f"{len(kept)} passages, {words} words: {len(train)} to {targets[0]}, {len(val)} to {targets[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
