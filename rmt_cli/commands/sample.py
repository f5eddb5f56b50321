"""`rmt sample`: one task sample, shown readably (segments, facts and question marked) or as JSON."""

from __future__ import annotations

import argparse
import json
import sys

from rmt_cli.commands import SEED, whole

HELP = "show one task sample, readable or as JSON with its metadata"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rmt_core.babilong import GENERATIVE_TASKS
    from rmt_core.tasks import DEFAULT_SEGMENT_SIZE, MAX_SAMPLE_TOKENS, TASKS

    parser.add_argument("--task", required=True, choices=TASKS + GENERATIVE_TASKS,
                        help="memorize, detect or reason; qa1 or qa2 (generative, BABILong style, for a decoder)")
    parser.add_argument("--segments", type=whole(1, MAX_SAMPLE_TOKENS), required=True,
                        help="number of segments N (1 or more)")
    parser.add_argument("--seed", type=SEED, default=0, help="random seed; the same seed gives the same sample")
    parser.add_argument("--segment-size", type=whole(1, MAX_SAMPLE_TOKENS), default=DEFAULT_SEGMENT_SIZE,
                        help=f"tokens per segment (default {DEFAULT_SEGMENT_SIZE}, as in the paper)")
    parser.add_argument("--babi-file", help="a bAbI v1.2 task file (qa1 for memorize/detect, qa4 for reason)")
    parser.add_argument("--babi-dir", help="a bAbI folder (such as en-10k/); the task's file of --split is used")
    parser.add_argument("--split", default="train", choices=("train", "test"), help="split used with --babi-dir")
    parser.add_argument("--noise-file", help="noise text, one passage a line; 'builtin' (default), 'builtin:pydoc', 'builtin:vocab', 'builtin:decoys' or "
                        "'builtin:decoys:P' (decoys drawn with probability P) for the built-in sentences; 'NOISE+decoys:P' or 'NOISE+questions:P' "
                        "mix decoys into any noise (QuALITY questions are for evaluation, not training)")
    parser.add_argument("--json", action="store_true", help="print the sample and its metadata as JSON")


def render(sample, tokenizer) -> str:
    """The sample as text: a header, then each segment with facts and the question marked."""
    from rmt_core.layout import ROLE_ANSWER
    from rmt_core.tasks import ROLE_FACT, ROLE_QUESTION

    lines = [
        f"task {sample.task} | {sample.n_segments} segment(s) x {sample.segment_size} tokens "
        f"= {len(sample.input_ids)} tokens | seed {sample.seed}",
        f"question: {sample.question}   answer: {sample.answer_name} (label {sample.answer})",
    ]
    for fact in sample.facts:
        lines.append(f"fact: {fact.text!r} at tokens [{fact.start}, {fact.end}) in segment {fact.segment}")
    sources = ", ".join(f"{key}={value}" for key, value in sample.sources.items() if value is not None)
    lines.append(f"sources: {sources}")
    size = sample.segment_size
    for t, segment in enumerate(sample.segments()):
        roles = sample.roles[t * size:(t + 1) * size]
        lines.append(f"--- segment {t} (tokens {t * size}-{(t + 1) * size - 1}) ---")
        pieces, start = [], 0
        for i in range(1, len(segment) + 1):  # runs of tokens with one role, decoded together
            if i == len(segment) or roles[i] != roles[start]:
                text = tokenizer.decode(segment[start:i])
                if roles[start] == ROLE_FACT:
                    text = f"[FACT: {text}]"
                elif roles[start] == ROLE_QUESTION:
                    text = f"[QUESTION: {text}]"
                elif roles[start] == ROLE_ANSWER:
                    text = f"[ANSWER: {text}]"
                pieces.append(text)
                start = i
        lines.append(" ".join(pieces))
    return "\n".join(lines)


def run(args) -> int:
    from rmt_core.babilong import make_builder
    from rmt_core.tasks import check_sample_size, default_tokenizer

    check_sample_size(args.segments, args.segment_size)
    tokenizer = default_tokenizer()
    builder = make_builder(args.task, tokenizer, args.segment_size, babi_file=args.babi_file,
                           babi_dir=args.babi_dir, noise_file=args.noise_file, split=args.split)
    sample = builder.sample(args.segments, args.seed)
    if args.json:
        json.dump(sample.to_json(), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(render(sample, tokenizer))
    return 0
