"""`rmt import`: open an RMT checkpoint trained elsewhere (the authors' code) as an RMT Lens checkpoint folder.

    rmt import runs/memorize/model_best.pth --backbone bert-base-cased --segment-size 499 --out checkpoints/paper
    rmt import booydar/rmt-gpt2-babilong-qa1 --backbone gpt2 --segment-size 512 --out checkpoints/gpt2-qa1

SOURCE and --backbone are a file or folder, or a Hugging Face Hub id (read through the Hugging Face cache; with
HF_HUB_OFFLINE=1 only from it). The library side is rmt_core.importers.
"""

from __future__ import annotations

import argparse

HELP = "convert an RMT checkpoint trained with the authors' code into an RMT Lens checkpoint folder"


def _labels(text: str) -> list[str]:
    labels = [part.strip() for part in text.split(",")]
    if not labels or any(not label for label in labels):
        raise argparse.ArgumentTypeError(f"expected comma-separated class names such as a,b,c, got {text!r}")
    return labels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rmt_core.babilong import GENERATIVE_TASKS
    from rmt_core.importers import FORMATS
    from rmt_core.tasks import TASKS

    parser.add_argument("source", metavar="SOURCE",
                        help="weights file (model_best.pth, pytorch_model.bin, model.safetensors, a shard index), "
                        "a folder holding one, or a Hub id")
    parser.add_argument("--backbone", required=True,
                        help="the wrapped model's config and tokenizer: a folder or a Hub id (bert-base-cased, gpt2)")
    parser.add_argument("--segment-size", type=int, required=True,
                        help="tokens per segment of the training run (499 for the paper's encoder, 512 for the "
                        "GPT-2 BABILong models)")
    parser.add_argument("--out", required=True, help="the new checkpoint folder (must not exist)")
    parser.add_argument("--format", choices=FORMATS, default=None, help="override the format read from the keys")
    parser.add_argument("--labels", type=_labels, default=None,
                        help="class names of an encoder's head, in order, comma-separated")
    parser.add_argument("--task", choices=TASKS + GENERATIVE_TASKS, default=None,
                        help="the task it was trained on (default: memorize for an encoder, qa1 for a decoder)")
    parser.add_argument("--max-segments", type=int, default=None,
                        help="the training run's max_n_segments: inputs are cut to that many segments, as its code "
                        "did (default: no cut)")
    parser.add_argument("--lora-alpha", type=float, default=None,
                        help="lora_alpha of the run's LoraConfig, for checkpoints with LoRA adapters")


def run(args) -> int:
    from rmt_core.importers import command_line, import_checkpoint

    out = import_checkpoint(args.source, args.backbone, args.segment_size, args.out, format=args.format,
                            labels=args.labels, task=args.task, max_segments=args.max_segments,
                            lora_alpha=args.lora_alpha, command=command_line())
    print(f"wrote {out}: open it with rmt replay/eval/probe --checkpoint {out}, or in rmt app")
    return 0
