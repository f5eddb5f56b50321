"""`rmt replay`: replay a task sample or a text file with a question through a checkpoint into a trace folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rmt_cli.commands import SEED, check_output_folder, real, whole
from rmt_core.errors import ReplayError

HELP = "replay one input segment by segment into an on-disk trace"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rmt_core.tasks import MAX_SAMPLE_TOKENS

    parser.add_argument("--checkpoint", help="checkpoint folder (default: the shipped default checkpoint)")
    source = parser.add_argument_group(
        "input: a task sample (--task, --segments, --seed) or --text-file and --question")
    source.add_argument("--task", choices=("memorize", "detect", "reason", "qa1", "qa2"),
                        help="task of the sample (default: the checkpoint's task)")
    source.add_argument("--segments", type=whole(1, MAX_SAMPLE_TOKENS), help="number of segments of the sample")
    source.add_argument("--seed", type=SEED, default=0, help="seed of the sample (default 0)")
    source.add_argument("--segment-size", type=whole(1, MAX_SAMPLE_TOKENS),
                        help="ignored: a replay always uses the checkpoint's segment size")
    source.add_argument("--babi-file", help="a bAbI task file for the facts (default: built-in generator)")
    source.add_argument("--babi-dir", help="a bAbI folder (such as en-10k/); the task's file of --split is used")
    source.add_argument("--split", choices=("train", "test"), default=None,
                        help="the bAbI split of --babi-dir, recorded in the trace (default test; the built-in "
                             "generator's samples are recorded as train)")
    source.add_argument("--noise-file", help="noise text, one passage a line (default: built-in sentences)")
    source.add_argument("--text-file", help="a UTF-8 text file to replay instead of a sample ('-' reads stdin)")
    source.add_argument("--question", help="the question that ends the last segment (with --text-file)")
    parser.add_argument("--out", required=True, help="the trace folder to write (must not exist)")
    parser.add_argument("--attention-budget-mib", type=real(0.0, 2.0**30), default=512.0,
                        help="keep read/write attention of every segment while under this many MiB (default 512); "
                             "beyond it only the first/last segments, fact segments and --attention-segments")
    parser.add_argument("--attention-segments", default="",
                        help="segments whose read/write attention is always kept, e.g. 0,100,-1")
    parser.add_argument("--full-attention", default="", help="segments whose full attention is kept too, e.g. 0,5")
    parser.add_argument("--no-segment-logits", action="store_true",
                        help="do not keep the answer head's logits at every segment")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: CUDA when present, else CPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _indexes(text: str, flag: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ReplayError(f"{flag} takes comma-separated segment numbers such as 0,5,-1, got {text!r}") from None


def _device(name: str | None):
    from rmt_cli.commands import parse_device

    return parse_device(name, ReplayError)


def run(args) -> int:
    from rmt_core.checkpoint import default_checkpoint, load_checkpoint, read_config
    from rmt_core.errors import TraceError
    from rmt_core.replay import RecordingPolicy, replay
    from rmt_core.inputs import make_input
    from rmt_core.segmenting import read_text_file
    from rmt_core.tasks import check_sample_size

    out = Path(args.out)
    if out.exists() or out.is_symlink():
        raise TraceError(f"{out} already exists; choose another --out or delete it")
    check_output_folder(out, "--out", TraceError)
    text_mode = args.text_file is not None
    if text_mode and (args.task is not None or args.segments is not None):
        raise ReplayError("give either --task/--segments/--seed or --text-file/--question, not both")
    if text_mode and args.question is None:
        raise ReplayError("--text-file needs --question, the question that ends the input")
    if not text_mode and args.question is not None:
        raise ReplayError("--question goes with --text-file; a task sample brings its own question")
    if not text_mode and args.segments is None:
        raise ReplayError("give --segments N (with --task and --seed) or --text-file F --question Q")
    policy = RecordingPolicy(
        attention_budget_mib=args.attention_budget_mib,
        attention_segments=_indexes(args.attention_segments, "--attention-segments"),
        full_attention_segments=_indexes(args.full_attention, "--full-attention"),
        segment_logits=not args.no_segment_logits,
    )
    policy.check()
    text = read_text_file(args.text_file) if text_mode else None  # bad text fails before the model loads

    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    if not text_mode:  # before the model loads: a sample that cannot be built fails at once
        check_sample_size(args.segments, read_config(checkpoint)["rmt"]["segment_size"])
    model = load_checkpoint(checkpoint, device=_device(args.device))
    size = model.config.segment_size
    if args.segment_size is not None and args.segment_size != size:
        print(f"rmt replay: note: --segment-size {args.segment_size} ignored; the checkpoint uses {size}",
              file=sys.stderr)
    text_meta = {"text_file": str(args.text_file)} if text_mode else None
    split = args.split or ("test" if args.babi_file or args.babi_dir else "train")
    item = make_input(model, task=None if text_mode else args.task, n_segments=args.segments, seed=args.seed,
                      text=text, question=args.question, babi_file=args.babi_file, babi_dir=args.babi_dir,
                      noise_file=args.noise_file, split=split, metadata=text_meta)
    folder = getattr(model, "checkpoint_dir", checkpoint)  # a Hub id's folder in the Hugging Face cache
    trace = replay(model, item, out=out, policy=policy, progress=not args.quiet, checkpoint_dir=folder)

    labels = trace.labels
    probability = trace.probabilities[trace.prediction]
    answer = "unknown (free text)" if trace.answer is None else labels[trace.answer]
    verdict = "" if trace.answer is None else ("  correct" if trace.answer == trace.prediction else "  wrong")
    print(f"replayed {trace.n_segments} segment(s), {trace.manifest['n_tokens']} tokens, on {model.device.type}")
    if trace.architecture == "decoder":  # the answer is generated; exact match as rmt eval scores it
        generated = trace.generated_answer
        verdict = "" if trace.answer is None else ("  correct" if generated == labels[trace.answer] else "  wrong")
        print(f"answer: {answer}   generated: {generated!r}{verdict}")
    else:
        print(f"answer: {answer}   prediction: {labels[trace.prediction]} (p={probability:.3f}){verdict}")
    print(f"attention kept for {len(trace.attention_segments)} of {trace.n_segments} segments; "
          f"full attention for {len(trace.full_attention_segments)}")
    print(f"trace: {trace.path}")
    return 0
