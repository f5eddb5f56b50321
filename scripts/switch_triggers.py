"""What in the noise switches an encoder checkpoint's memory? Runs pure-noise inputs (as `noise_switch.py` does),
finds each sample's switch (the first segment after --reference whose memory has a cosine below --threshold with
the reference memory), takes the segment that moved memory most in the few segments up to it (the trigger), and
compares the words of triggers with those of all segments: bAbI's rooms, movement verbs, both.

    .venv/bin/python scripts/switch_triggers.py --checkpoint checkpoints/detect --segments 1024 --samples 32 \
        --noise ../shared/data/quality/questions.dev.txt --json docs/figures/noise_switch/triggers.detect.json

Prints a markdown table, then each trigger's text (the segment, decoded). A memory change is the relative
squared change |out - in|^2 / |in|^2 of the segment (`rmt_core.model.memory_change`).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import torch

from rmt_core.errors import RMTError

LOOKBACK = 3  # the trigger is the largest change among the switch segment and the LOOKBACK before it
MOVES = re.compile(r"\b(went|go|goes|going|gone|moved|move|moves|travel\w*|journey\w*|return\w*|ran|run|walk\w*|"
                   r"came|come|comes|rode|ride|drove|drive|fled|hurried|rushed)\b", re.IGNORECASE)


def kinds(text: str) -> dict[str, bool]:
    from rmt_core.babi import PLACES

    room = re.search(r"\b(" + "|".join(PLACES) + r")s?\b", text, re.IGNORECASE) is not None
    move = MOVES.search(text) is not None
    return {"room": room, "move": move, "room and move": room and move, "neither": not room and not move}


def triggers(model, noise: str, segments: int, samples: int, reference: int, threshold: float, seed: int) -> dict:
    from rmt_core.inputs import SegmentBatch
    from rmt_core.model import memory_moves
    from rmt_core.noise import NoiseSource, pure_noise

    S = model.config.segment_size
    source = NoiseSource.load(noise, model.tokenizer)
    ids = np.array(pure_noise(source, segments * S, samples, seed), dtype=np.int32)
    change, cosine, _ = memory_moves(model, SegmentBatch.from_ids(ids, S), reference - 1)
    change, cosine = change.numpy(), cosine.numpy()

    def text(b: int, t: int) -> str:
        return model.tokenizer.decode(ids[b, t * S:(t + 1) * S].tolist())

    found = []
    for b in range(samples):
        below = np.nonzero(cosine[reference:, b] < threshold)[0]
        if not len(below):
            continue
        t = int(below[0]) + reference
        lo = max(reference, t - LOOKBACK)
        trigger = lo + int(np.argmax(change[lo:t + 1, b]))
        found.append({"sample": b, "switch": t + 1, "trigger": trigger + 1, "change": float(change[trigger, b]),
                      "median_change": float(np.median(change[reference:t, b])) if t > reference else None,
                      "text": text(b, trigger), **kinds(text(b, trigger))})
    # The base rate: every segment after the reference of every sample, up to its switch when it has one.
    base = {k: 0 for k in kinds("")}
    count = 0
    ends = {f["sample"]: f["switch"] - 1 for f in found}
    for b in range(samples):
        for t in range(reference, ends.get(b, segments)):
            for k, v in kinds(text(b, t)).items():
                base[k] += v
            count += 1
    return {"noise": noise, "segments": segments, "samples": samples, "reference": reference, "change": change,
            "cosine": cosine,
            "threshold": threshold, "switched": len(found), "triggers": found,
            "trigger_share": {k: (sum(f[k] for f in found) / len(found) if found else None) for k in base},
            "base_share": {k: v / max(count, 1) for k, v in base.items()}, "base_segments": count}


def figure(result: dict, path: str, shown: int = 4) -> None:
    """Memory change a segment (log scale) and cosine with the reference for the first `shown` switched samples,
    each trigger marked; PNG through the project's figure export (or HTML for a .html path)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from rmt_core.files import write_atomic
    from rmt_core.viz.export import figure_bytes

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06)
    x = np.arange(1, result["segments"] + 1)
    for k, found in enumerate(result["triggers"][:shown]):
        b = found["sample"]
        colour = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")[k % 6]
        fig.add_trace(go.Scatter(x=x, y=np.maximum(result["change"][:, b], 1e-6), mode="lines",
                                 line=dict(color=colour, width=1), name=f"sample {b}: trigger at {found['trigger']}"),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=[found["trigger"]], y=[found["change"]], mode="markers", showlegend=False,
                                 marker=dict(color=colour, size=9, symbol="circle-open")), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=result["cosine"][:, b], mode="lines", showlegend=False,
                                 line=dict(color=colour, width=1)), row=2, col=1)
    fig.add_hline(y=result["threshold"], line=dict(color="grey", dash="dot", width=1), row=2, col=1)
    fig.update_yaxes(type="log", title_text="memory change a segment", row=1, col=1)
    fig.update_yaxes(title_text=f"cosine with segment {result['reference']}", row=2, col=1)
    fig.update_xaxes(title_text="segment of pure noise", row=2, col=1)
    fig.update_layout(width=900, height=560, template="plotly_white", legend=dict(font=dict(size=10)),
                      title=dict(text=f"{result.get('checkpoint', '')}: {result['switched']} of {result['samples']} "
                                      f"samples switch in {Path(result['noise']).name}", font=dict(size=13)))
    fmt = "html" if str(path).endswith(".html") else "png"
    write_atomic(path, figure_bytes(fig, fmt))


def table(result: dict) -> str:
    lines = ["| segments holding | share of triggers | share of all segments |", "| --- | --- | --- |"]
    n = result["switched"]
    for k, share in result["base_share"].items():
        trig = result["trigger_share"][k]
        hits = sum(f[k] for f in result["triggers"])
        cell = "-" if trig is None else f"{100 * trig:.0f}% ({hits} of {n})"
        lines.append(f"| {k} | {cell} | {100 * share:.1f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/detect", help="an encoder checkpoint folder")
    parser.add_argument("--noise", default="../shared/data/quality/questions.dev.txt",
                        help="a noise source (builtin, builtin:vocab, builtin:pydoc, builtin:decoys or a noise file)")
    parser.add_argument("--segments", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--reference", type=int, default=8, help="the segment whose memory is the reference")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", help="write every number and trigger text to this file")
    parser.add_argument("--figure", help="draw the memory change and cosine of the first switched samples (PNG)")
    args = parser.parse_args(argv)
    try:
        if not 1 <= args.reference < args.segments <= 1_000_000 or not 1 <= args.samples <= 4096:
            raise RMTError("give 1 <= --reference < --segments <= 1,000,000 and 1 <= --samples <= 4,096")
        if not -1.0 <= args.threshold <= 1.0:
            raise RMTError(f"--threshold {args.threshold} is not a cosine; give a number from -1 to 1")
        if args.threads:
            torch.set_num_threads(args.threads)
        from rmt_core.checkpoint import load_checkpoint, portable_path

        model = load_checkpoint(args.checkpoint, device="cpu")
        if getattr(model.config, "architecture", "encoder") != "encoder":
            raise RMTError(f"{args.checkpoint} is a decoder; this script reads encoder checkpoints")
        model.eval()
        result = triggers(model, args.noise, args.segments, args.samples, args.reference, args.threshold, args.seed)
        result["noise"] = portable_path(args.noise)
        result["checkpoint"] = portable_path(args.checkpoint)
        if args.figure:
            figure(result, args.figure)
        series = {k: result.pop(k) for k in ("change", "cosine")}
        if args.json:
            from rmt_core.files import write_json_atomic

            write_json_atomic(args.json, result)
        result.update(series)
    except (RMTError, OSError) as error:
        print(f"switch_triggers: error: {error}", file=sys.stderr)
        return 1
    print(f"{args.checkpoint}: {result['switched']} of {args.samples} samples switch within {args.segments} "
          f"segments of {args.noise}; a trigger is the segment that moved memory most up to the switch")
    print(table(result))
    for f in result["triggers"]:
        print(f"\nsample {f['sample']}, switch at segment {f['switch']}, trigger segment {f['trigger']} "
              f"(change {f['change']:.3f}, median before {f['median_change'] or 0:.4f}):\n  {f['text'][:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
