"""`rmt flops`: forward-pass FLOPs of RMT against a full-attention Transformer (the paper's Figure 3)."""

from __future__ import annotations

import argparse
import json
import sys

from rmt_cli.commands import check_output_file, whole, whole_list
from rmt_core.errors import RMTError

HELP = "FLOPs of RMT against a full-attention Transformer with the OPT configurations (paper Figure 3)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rmt_core.flops import COUNTINGS, DEFAULT_TOKENS, MEMORY_LAYOUTS

    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    parser.add_argument("--out", help="also write the JSON to this file")
    parser.add_argument("--figure", help="write the figure (.html, .png, .svg or .pdf)")
    parser.add_argument("--models", default=None,
                        help="comma-separated OPT sizes (125M,350M,1.3B,2.7B,6.7B,13B,30B,66B,175B; default all)")
    parser.add_argument("--tokens", type=whole_list(1, 10**15), default=list(DEFAULT_TOKENS),
                        help="comma-separated input lengths (default 512 .. 2,048,000 and 2,097,152)")
    parser.add_argument("--segment", type=whole(1, 10**9), default=512, help="RMT segment length in tokens (default 512)")
    parser.add_argument("--mem", type=whole(0, 10**6), default=10, help="RMT memory tokens (default 10)")
    parser.add_argument("--counting", choices=sorted(COUNTINGS), default="paper",
                        help="accounting preset: paper (embedding lookup free, memory inside the 512 positions; "
                             "reproduces x29) or chinchilla (every appendix F term, memory read once)")
    parser.add_argument("--memory", choices=MEMORY_LAYOUTS, default=None,
                        help="override where memory sits: inside the segment, read (+mem), read_write (+2 mem)")
    parser.add_argument("--embeddings", action=argparse.BooleanOptionalAction, default=None,
                        help="count the input embedding as a matmul (override the preset)")
    parser.add_argument("--logits", action=argparse.BooleanOptionalAction, default=None,
                        help="count the final vocabulary logits (override the preset)")


def _table(rows: list[dict]) -> str:
    lines = [f"{'model':<10} {'tokens':>11} {'segments':>9} {'full FLOPs':>11} {'RMT FLOPs':>11} {'ratio':>8}"]
    for row in rows:
        lines.append(f"{row['model']:<10} {row['tokens']:>11,} {row['segments']:>9,} {row['full_flops']:>11.3e} "
                     f"{row['rmt_flops']:>11.3e} {'x' + format(row['ratio'], '.1f'):>8}")
    return "\n".join(lines)


def run(args) -> int:
    from rmt_core.viz import export
    from rmt_core.files import write_json_atomic
    from rmt_core.flops import flops_figure, flops_table, resolve_counting, shape_of

    if args.out:
        check_output_file(args.out, "--out", RMTError)
    if args.figure:
        check_output_file(args.figure, "--figure", RMTError)
        export.format_of(args.figure)
    try:
        models = [shape_of(m).name for m in args.models.split(",")] if args.models else None
        counting = resolve_counting(args.counting, {"memory": args.memory, "embeddings": args.embeddings,
                                             "logits": args.logits})
    except ValueError as error:
        raise RMTError(f"{error} (--models / --memory)") from None
    rows = flops_table(models, args.tokens, args.segment, args.mem, counting)
    result = {
        "rows": rows,
        "counting": counting.to_dict(),
        "segment": args.segment,
        "mem": args.mem,
        "method": "forward-pass FLOPs, Hoffmann et al. 2022 appendix F; ratio = full_flops / rmt_flops",
    }
    text = json.dumps(result, indent=1)
    if args.out:
        write_json_atomic(args.out, result)
    if args.json:
        sys.stdout.write(text + "\n")
    else:
        print(f"counting: {counting.to_dict()}; RMT segments of {args.segment} tokens, {args.mem} memory tokens")
        print(_table(rows))
    if args.figure:
        export.write_figure(flops_figure(rows), args.figure)
    return 0
