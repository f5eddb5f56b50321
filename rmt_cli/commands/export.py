"""`rmt export`: a figure of a trace or of probe results as PNG, SVG, PDF or HTML, or a table as CSV.

    rmt export --trace TRACE --figure read_attention --segment 3 [--layer 0 --head 1] --out read.svg
    rmt export --trace TRACE --figure head_view --segment 3 --out head.html   (bertviz; needs full attention)
    rmt export --trace TRACE --table tokens --segment 3 --out tokens.csv
    rmt export --results PROBE_DIR --figure probe_accuracy [--target answer] --format pdf --out acc.pdf
    rmt export --list
"""

from __future__ import annotations

import argparse
import sys

from rmt_cli.commands import check_output_file, real, whole
from rmt_core.errors import RMTError

HELP = "export a figure of a trace or of probe results (png, svg, pdf, html) or a table (csv)"
BERTVIZ_FIGURES = {"head_view": "bertviz head view of a segment (HTML; needs its full attention in the trace)",
                   "model_view": "bertviz model view of a segment (HTML; needs its full attention in the trace)"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rmt_core.viz import MAX_IMAGE_SIDE  # no plotly needed to build the parser

    source = parser.add_mutually_exclusive_group()
    source.add_argument("--trace", help="a trace folder written by rmt replay")
    source.add_argument("--results", help="a probe run folder (rmt probe --out) or its results.json")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--figure", help="figure name (see --list)")
    what.add_argument("--table", help="table name, written as CSV (see --list)")
    parser.add_argument("--segment", type=int, help="segment of a per-segment figure (default: the last; "
                        "negative counts from the end)")
    parser.add_argument("--layer", type=whole(0, 4096), help="attention layer (default: mean over layers)")
    parser.add_argument("--head", type=whole(0, 4096), help="attention head (default: mean over heads)")
    parser.add_argument("--layers", help="bertviz views: layers to include, e.g. 0,5 (default: all)")
    parser.add_argument("--heads", help="bertviz views: heads to include, e.g. 0,1,2 (default: all)")
    parser.add_argument("--window", type=whole(1, 100_000), default=32, help="bertviz views: tokens shown around the fact or "
                        "question, besides [CLS], memory and [SEP] (default 32)")
    parser.add_argument("--centre", default="fact", choices=("fact", "question", "start"),
                        help="bertviz views: what the window of tokens is centred on (default fact)")
    parser.add_argument("--target", help="probe figures: the probed property (answer, person, seen; default: first)")
    parser.add_argument("--mode", help="ablation figure: mean, zeros or initial (default: first in the results)")
    parser.add_argument("--format", choices=("png", "svg", "pdf", "html", "csv"),
                        help="file format (default: from the --out suffix)")
    parser.add_argument("--width", type=whole(1, MAX_IMAGE_SIDE), help="image width in pixels (png, svg, pdf)")
    parser.add_argument("--height", type=whole(1, MAX_IMAGE_SIDE), help="image height in pixels (png, svg, pdf)")
    parser.add_argument("--scale", type=real(above=0.0, maximum=16.0), default=1.0,
                        help="PNG pixel scale (default 1; 2 for sharper)")
    parser.add_argument("--out", help="the file to write")
    parser.add_argument("--list", action="store_true", help="list the figure and table names and exit")


def _list() -> str:
    from probes import figures as probe_figures
    from rmt_core.viz import export

    lines = ["trace figures (--trace):"]
    lines += [f"  {name:<18} {about}" for name, (about, _) in export.TRACE_FIGURES.items()]
    lines += [f"  {name:<18} {about}" for name, about in BERTVIZ_FIGURES.items()]
    lines.append("trace tables (--trace --table, CSV):")
    lines += [f"  {name:<18} {about}" for name, about in export.TRACE_TABLES.items()]
    lines.append("probe figures (--results):")
    lines += [f"  {name:<18} {about}" for name, about in probe_figures.RESULTS_FIGURES.items()]
    lines.append("probe tables (--results --table, CSV): " + ", ".join(export.RESULTS_TABLES))
    return "\n".join(lines)


def _numbers(text: str | None, flag: str) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise RMTError(f"{flag} takes comma-separated numbers such as 0,2, got {text!r}") from None


def _bertviz(trace, args) -> bytes:
    from rmt_core.viz import bertviz_offline

    t = trace.segment_index(args.segment if args.segment is not None else -1)
    attention = trace.full_attention(t)
    if attention is None:
        recorded = ", ".join(map(str, trace.full_attention_segments)) or "none"
        raise RMTError(f"the trace has no full attention for segment {t} (recorded: {recorded}); replay with "
                       f"--full-attention {t}")
    tokens, roles = trace.tokens(t), trace.roles(t)
    positions = bertviz_offline.window_positions(roles, args.centre, args.window)
    layers, heads = _numbers(args.layers, "--layers"), _numbers(args.heads, "--heads")
    build = bertviz_offline.head_view_html if args.figure == "head_view" else bertviz_offline.model_view_html
    return build(attention, tokens, roles, positions, layers, heads).encode("utf-8")


def run(args) -> int:
    from rmt_core.viz import export

    if args.list:
        print(_list())
        return 0
    if not (args.trace or args.results):
        raise export.ExportError("give --trace TRACE or --results PROBE_DIR (rmt export --list shows the names)")
    if not (args.figure or args.table):
        raise export.ExportError("give --figure NAME or --table NAME (rmt export --list shows the names)")
    if not args.out:
        raise export.ExportError("give --out FILE, e.g. --out figure.png")
    check_output_file(args.out, "--out", export.ExportError)
    fmt = export.format_of(args.out, args.format)
    size = {"width": args.width, "height": args.height, "scale": args.scale}
    # The user's inputs first (a trace that does not open, a segment it does not have), then this machine's.
    trace = segment = None
    if args.trace:
        from rmt_core.trace import Trace

        trace = Trace.open(args.trace)
        if args.segment is not None:
            segment = trace.segment_index(args.segment)
    if fmt in ("png", "svg", "pdf"):  # before any work: a size Chromium cannot draw, or no Chromium at all
        export.check_image_size(args.width or export.DEFAULT_SIZE[0], args.height or export.DEFAULT_SIZE[1],
                                args.scale)
        problem = export.no_browser_reason()
        if problem:
            raise export.ExportError(f"{fmt.upper()} export needs Chromium: {problem}")

    if args.table:
        if fmt != "csv":
            raise export.ExportError(f"tables are written as CSV, not {fmt}; use an --out name ending in .csv")
        if trace is not None:
            rows = export.trace_table(trace, args.table, args.segment)
        else:
            rows = export.results_table(export.read_results(args.results), args.table)
        path = export.write_table(rows, args.out)
    elif trace is not None and args.figure in BERTVIZ_FIGURES:
        if fmt != "html":
            raise export.ExportError(f"the bertviz views are interactive HTML pages; use --format html, not {fmt}")
        path = export.write_bytes(args.out, _bertviz(trace, args))
    else:
        if trace is not None:
            fig = export.trace_figure(trace, args.figure, segment, args.layer, args.head)
        else:
            from probes.figures import results_figure

            fig = results_figure(export.read_results(args.results), args.figure, target=args.target, mode=args.mode)
        path = export.write_figure(fig, args.out, fmt, **size)
    print(f"rmt export: wrote {path}", file=sys.stderr)
    return 0
