"""Where an encoder checkpoint's errors fall: the wrong answers of an `rmt eval --json` file, by how many segments
separate the last fact from the question segment (or, with `--by before`, how many segments of input came before
it; `--by places-before` and `--by places-after` count the bAbI place words in the noise before the first fact and
after the last; for reason's two facts, `--by first` counts back to the first fact and `--by gap` the segments
between them).

    .venv/bin/rmt eval --checkpoint checkpoints/detect --segments 32 --samples 500 --babi-dir ../shared/data/babi/en-10k \
        --split test --noise-file ../shared/data/quality/questions.dev.txt --json runs/detect-32.json
    .venv/bin/python scripts/errors_by_distance.py runs/detect-32.json
    .venv/bin/python scripts/errors_by_distance.py checkpoints/detect/eval.json --by before \
        --figure runs/detect-before.png --json runs/detect-before.json

The split is `rmt_core.error_split`'s (the dashboard's Length page shows the same): the samples are rebuilt from
the file's seed and sources, so no model runs. `--figure` draws accuracy against either axis, one curve per
length and all lengths pooled (PNG, SVG, PDF or HTML by the file's suffix); `--json` keeps the rows. Neither
replaces an existing file. Few errors at large distances and many at small ones mean the model holds what it
wrote but fails to write a fact that comes late, after much noise; the opposite means it forgets.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rmt_core.error_split import (AXES, AXIS_LABELS, check_splittable, pooled, sample_count, split_errors,
                                  split_figure)
from rmt_core.errors import RMTError
from rmt_core.files import new_file, read_json
from rmt_core.viz.export import FIGURE_FORMATS, ExportError, write_figure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_json", help="a results file of rmt eval --json (its checkpoint's task, an encoder's)")
    parser.add_argument("--checkpoint", help="the evaluated checkpoint, for its tokenizer (default: the shipped "
                        "checkpoints' vocabulary, all-MiniLM-L6-v2's)")
    parser.add_argument("--by", choices=AXES, default="distance",
                        help="count by the last fact's distance from the question (default), by the segments "
                        "before it, by the bAbI place words in the noise before the first fact (places-before) or "
                        "after the last (places-after), or (reason's two facts) by the first fact's distance (first) "
                        "or the segments between the two (gap)")
    parser.add_argument("--figure", help="draw accuracy by range into this new file (.png, .svg, .pdf or .html)")
    parser.add_argument("--json", help="write the rows (and all lengths pooled) into this new JSON file")
    parser.add_argument("--min-samples", type=int, default=20,
                        help="the figure leaves out ranges with fewer samples (default 20)")
    args = parser.parse_args(argv)
    try:
        figure_path = new_file(args.figure, "figure", RMTError) if args.figure else None
        json_path = new_file(args.json, "JSON file", RMTError) if args.json else None
        if args.min_samples < 1:
            raise RMTError(f"--min-samples {args.min_samples}: give a whole number of at least 1")
        if figure_path is not None and figure_path.suffix.lower().lstrip(".") not in FIGURE_FORMATS:
            raise RMTError(f"figure {figure_path}: give a .png, .svg, .pdf or .html file name")
        result = read_json(args.eval_json, RMTError, "give the file rmt eval --json wrote",
                           "run rmt eval --json again")
        check_splittable(result)
        if args.checkpoint:
            from rmt_core.checkpoint import load_checkpoint

            tokenizer = load_checkpoint(args.checkpoint, device="cpu").tokenizer
        else:
            from transformers import AutoTokenizer

            from rmt_core.model import minilm_dir

            tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
        from tqdm.auto import tqdm

        # disable=None: a bar on a terminal, nothing when stderr is a file or a pipe
        with tqdm(total=sample_count(result), desc="rebuilding samples", unit="sample", disable=None) as bar:
            rows = split_errors(result, tokenizer, args.by, progress=bar.update)
        if json_path is not None:
            from rmt_core.checkpoint import portable_path
            from rmt_core.files import write_json_atomic

            # The results file's path as files that travel record it (never this machine's absolute path).
            write_json_atomic(json_path, {"eval_json": portable_path(args.eval_json), "by": args.by,
                                          "task": result["task"], "checkpoint": result.get("checkpoint"),
                                          "rows": rows, "pooled": pooled(rows, args.by)})
        if figure_path is not None:
            name = (result.get("checkpoint") or {}).get("name") or result["task"]
            drawn = split_figure(rows, args.by, f"{name}: accuracy by {AXIS_LABELS[args.by]}", args.min_samples)
            try:
                write_figure(drawn, figure_path)
            except ExportError as error:
                raise RMTError(f"{error}; or give an .html figure") from None
    except (RMTError, OSError) as error:
        print(f"errors_by_distance: error: {error}", file=sys.stderr)
        return 1
    for n, counted, evaluated in sorted({(r["segments"], r["of_samples"], r["evaluated"]) for r in rows}):
        if counted < evaluated:
            print(f"{n} segments: the file lists the wrong answers of its first {counted} of {evaluated} samples "
                  "only (files of rmt eval before wrong_indexes kept the first 20); the rows count those samples")
    print(f"| segments | {AXIS_LABELS[args.by]} | samples | wrong | accuracy (95% CI) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        low, high = r[args.by]
        span = f"{low}" if low == high else f"{low}-{high}"
        print(f"| {r['segments']} | {span} | {r['samples']} | {r['wrong']} | {100 * r['accuracy']:.1f}% "
              f"({100 * r['ci_low']:.1f}-{100 * r['ci_high']:.1f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
