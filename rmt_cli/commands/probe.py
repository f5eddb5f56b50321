"""`rmt probe`: linear probes, ablation, patching and attention read-outs on a checkpoint's memory.

    rmt probe --checkpoint checkpoints/detect --task detect --segments 4 --samples 200 --out probes_out/detect
    rmt probe --checkpoint checkpoints/detect --traces traces/detect_runs --out probes_out/from_traces

Writes results.json (SPEC section 7), CSV tables and figures/ into --out. Rerunning with the same checkpoint and
settings reuses finished stages (results.json and the states.npz cache), so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import sys

from rmt_cli.commands import SEED, check_output_folder, whole
from rmt_core.errors import ProbeError

HELP = "linear probes, ablation, patching and attention read-outs on a checkpoint's memory states"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rmt_core.babilong import GENERATIVE_TASKS
    from rmt_core.tasks import MAX_SAMPLE_TOKENS, TASKS

    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped default)")
    parser.add_argument("--task", choices=TASKS + GENERATIVE_TASKS, default=None,
                        help="task (default: the checkpoint's own task)")
    parser.add_argument("--segments", type=whole(1, MAX_SAMPLE_TOKENS), default=None,
                        help="segments per sample (default: the checkpoint's trained_segments, at least 2 and at "
                             "most 64)")
    parser.add_argument("--samples", type=whole(4, 1_000_000), default=200, help="samples to probe (default 200; half fit, half score)")
    parser.add_argument("--traces", default=None,
                        help="probe the memory states recorded by rmt replay: a trace folder or a folder of them "
                             "(task, segments and samples come from the traces; --checkpoint must have recorded them)")
    parser.add_argument("--out", required=True, help="output folder for results.json, CSV tables and figures/")
    parser.add_argument("--seed", type=SEED, default=0, help="seed of the samples (those of rmt eval), split and controls")
    parser.add_argument("--intervention-samples", type=whole(2, 1_000_000), default=100,
                        help="samples used by ablation and patching (default 100)")
    parser.add_argument("--modes", default="mean,zeros,initial", help="ablation modes (default mean,zeros,initial)")
    parser.add_argument("--no-slots", action="store_true", help="probe all slots together only, not each slot")
    parser.add_argument("--no-ablation", action="store_true", help="skip ablation")
    parser.add_argument("--no-patching", action="store_true", help="skip patching")
    parser.add_argument("--no-attention", action="store_true", help="skip the attention read-outs")
    parser.add_argument("--figures", choices=("auto", "png", "html", "none"), default="auto",
                        help="figure files: auto (PNG when Chromium works, else HTML), png, html, none")
    parser.add_argument("--batch-size", type=whole(1, 65536), default=None, help="samples per segment step (default: by model size)")
    parser.add_argument("--babi-file", help="a bAbI v1.2 task file (qa1 for memorize/detect, qa4 for reason)")
    parser.add_argument("--babi-dir", help="a bAbI folder (such as en-10k/); its --split file is used")
    parser.add_argument("--split", default="test", choices=("train", "test"), help="bAbI split with --babi-dir")
    parser.add_argument("--noise-file", help="noise text, one passage a line (default: built-in sentences)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when present)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _device(name: str | None):
    from rmt_cli.commands import parse_device

    return parse_device(name, ProbeError)


def summary_lines(results: dict) -> list[str]:
    """A few readable lines: clean accuracy, best all-slot probe per target, strongest ablation and patching."""
    lines = []
    clean = results.get("clean") or {}
    settings = results.get("settings", {})
    if clean:
        lines.append(f"task {settings.get('task')}, {settings.get('segments')} segments x {settings.get('segment_size')} "
                     f"tokens, {clean.get('samples')} samples: answer accuracy {clean['accuracy']:.3f} "
                     f"[{clean['ci_low']:.3f}, {clean['ci_high']:.3f}]")
    for name in results.get("targets", {}):
        rows = [r for r in results.get("probes", []) if r["target"] == name and r["slot"] == "all"]
        if rows:
            last = max(rows, key=lambda r: r["segment"])
            lines.append(f"probe {name} (all slots, last segment {last['segment']}): accuracy {last['accuracy']:.3f} "
                         f"[{last['ci_low']:.3f}, {last['ci_high']:.3f}], majority {last['majority']:.3f}, "
                         f"selectivity {last['selectivity']:+.3f}")
    ablation = [r for r in results.get("ablation", []) if r["slot"] != "all"]
    if ablation:
        top = max(ablation, key=lambda r: r["accuracy_drop"])
        lines.append(f"largest single-slot ablation: slot {top['slot']} at segment {top['segment']} ({top['mode']}) "
                     f"drops accuracy by {top['accuracy_drop']:.3f}")
    patching = [r for r in results.get("patching", []) if r["slots"] == "all"]
    if patching:
        lines.append("patching all memory, IIA by segment: "
                     + ", ".join(f"t={r['segment']}: {r['iia']:.2f}" for r in patching))
    headline = (results.get("attention") or {}).get("headline") or {}
    if headline.get("write_enrichment") is not None:
        lines.append(f"write attention per fact token / per noise token: {headline['write_enrichment']:.2f}; "
                     f"[CLS] read mass on memory (last segment): {headline['read_cls_memory_mass']:.3f}")
    return lines


def run(args) -> int:
    from probes.run import check_probe_size, default_segments, run_probes
    from rmt_core.checkpoint import default_checkpoint, load_checkpoint, read_config

    check_output_folder(args.out, "--out", ProbeError)
    device = _device(args.device)
    folder = args.checkpoint or default_checkpoint()
    settings = read_config(folder)["rmt"]
    segments = args.segments if args.segments is not None else default_segments(settings["trained_segments"])
    if args.segments is None and segments < int(settings["trained_segments"] or 0):
        print(f"probing at {segments} segments (trained on up to {settings['trained_segments']:,}; --segments N for "
              "another length)", file=sys.stderr)
    check_probe_size(segments, args.samples, settings["segment_size"])  # before the model loads
    model = load_checkpoint(folder, device=device)
    task = args.task or model.config.task
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    results = run_probes(
        model, task, segments, args.samples, seed=args.seed, out=args.out, progress=not args.no_progress,
        babi_file=args.babi_file, noise_file=args.noise_file, babi_dir=args.babi_dir, split=args.split,
        batch_size=args.batch_size, per_slot=not args.no_slots, attention=not args.no_attention,
        ablation=not args.no_ablation, patching=not args.no_patching,
        intervention_samples=args.intervention_samples, modes=modes,
        figures=None if args.figures == "none" else args.figures, traces=args.traces,
    )
    for line in summary_lines(results):
        print(line)
    for note in results.get("notes", []):
        print(f"note: {note}")
    files = results.get("files") or {}
    print(f"wrote {args.out}/results.json, {len(files.get('tables', []))} tables, "
          f"{len(files.get('figures', {}))} figures; stage times (s): "
          + ", ".join(f"{k} {v}" for k, v in results.get("timings", {}).items() if v is not None))
    return 0
