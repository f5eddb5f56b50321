"""How far shortcuts get on BABILong-style qa1: the accuracy a model reaches without binding people to places.

    .venv/bin/python scripts/qa1_shortcuts.py --segments 1 --segment-size 64 --samples 1000 \
        --babi-dir ../shared/data/babi/en-10k --split train --noise-file builtin:vocab

A decoder trained from scratch that plateaus at one of these numbers has learned the shortcut, not the task:
    last place        the place of the story's last fact (whoever it is about)
    asked, first      the asked person's first place (binding without recency)
    chance            one of the six places
The samples are the task's own (`rmt_core.babilong.StoryTaskBuilder`, seeds 0..samples-1).
"""

from __future__ import annotations

import argparse
import sys

from rmt_core import babi
from rmt_core.babilong import StoryTaskBuilder
from rmt_core.errors import RMTError
from rmt_core.pretrained import minilm_dir
from rmt_core.stats import wilson_interval


def shortcut_accuracies(builder: StoryTaskBuilder, n_segments: int, samples: int) -> dict[str, tuple[int, int]]:
    """{shortcut: (right, samples)} over seeds 0..samples-1."""
    right = {"last place": 0, "asked, first": 0}
    for seed in range(samples):
        sample = builder.sample(n_segments, seed)
        asked = sample.question.removeprefix("Where is ").rstrip("?")
        places = [f.place for f in sample.facts if f.person == asked]
        right["last place"] += sample.facts[-1].place == sample.answer_name
        right["asked, first"] += bool(places) and places[0] == sample.answer_name
    return {name: (count, samples) for name, count in right.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=1)
    parser.add_argument("--segment-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--babi-dir", default=None)
    parser.add_argument("--split", choices=("train", "test"), default="train")
    parser.add_argument("--noise-file", default="builtin:vocab")
    args = parser.parse_args(argv)
    if args.samples < 1 or args.segments < 1:
        print("qa1_shortcuts: --samples and --segments must be 1 or more", file=sys.stderr)
        return 1
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
        builder = StoryTaskBuilder("qa1", tokenizer, args.segment_size, babi_dir=args.babi_dir,
                                   noise_file=args.noise_file, split=args.split)
        results = shortcut_accuracies(builder, args.segments, args.samples)
    except RMTError as error:
        print(f"qa1_shortcuts: {error}", file=sys.stderr)
        return 1
    print(f"qa1, {args.segments} x {args.segment_size} tokens, {args.samples} samples "
          f"({builder.babi_path or 'built-in stories'}, noise {args.noise_file})")
    for name, (count, n) in results.items():
        low, high = wilson_interval(count, n)
        print(f"  {name:<13} {100 * count / n:5.1f}%  (95% CI {100 * low:.1f}-{100 * high:.1f})")
    print(f"  {'chance':<13} {100 / len(babi.PLACES):5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
