"""How much of a text's tokens each built-in noise source has ever shown a model.

    .venv/bin/python scripts/noise_coverage.py ../shared/data/quality/questions.dev.txt [--source FILE ...]

For each built-in source (builtin, builtin:pydoc, builtin:vocab), and each noise file given by --source, prints
its sentence count, its distinct token types, and the share of the text's token occurrences whose token type
occurs anywhere in the source. A token type never seen in training keeps its random initial embedding in a model
trained from scratch.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from rmt_core.errors import RMTError
from rmt_core.noise import BUILTIN_NAMES, NoiseSource
from rmt_core.tasks import default_tokenizer


def coverage(seen: set[int], counts: Counter) -> float:
    """Share of the occurrences in `counts` (token id -> count) whose token id is in `seen`."""
    return sum(c for i, c in counts.items() if i in seen) / max(sum(counts.values()), 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text", help="a noise text file, one passage a line (such as QuALITY question text)")
    parser.add_argument("--source", action="append", default=[], metavar="FILE",
                        help="a noise file to measure beside the built-in sources (repeatable)")
    args = parser.parse_args(argv)
    tokenizer = default_tokenizer()
    try:
        target = NoiseSource.load(args.text, tokenizer)
    except RMTError as error:
        print(f"noise_coverage: error: {error}", file=sys.stderr)
        return 1
    counts = Counter(i for ids in target.token_ids for i in ids)
    print(f"{args.text}: {len(target)} sentences, {sum(counts.values())} tokens, {len(counts)} token types")
    print("| source | sentences | token types | share of the text's tokens seen |")
    print("| --- | --- | --- | --- |")
    for name in [*BUILTIN_NAMES, *args.source]:
        try:
            source = NoiseSource.load(name, tokenizer)
        except RMTError as error:
            print(f"noise_coverage: error: {error}", file=sys.stderr)
            return 1
        seen = {i for ids in source.token_ids for i in ids}
        print(f"| {name} | {len(source)} | {len(seen)} | {100 * coverage(seen, counts):.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
