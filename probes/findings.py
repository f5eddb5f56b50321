"""Scripted probe runs on the shipped checkpoints, and a Markdown summary of each run for docs/findings.md.

    python -m probes.findings                         # every checkpoint in checkpoints/, into docs/probes/<name>/
    python -m probes.findings --checkpoint checkpoints/detect --samples 200
    python -m probes.findings --babi-dir ../shared/data/babi/en-10k --noise-file questions.dev.txt  # held-out data

Each run writes what `rmt probe` writes (results.json, CSV tables, figures/) plus summary.md, the section that
docs/findings.md quotes. The numbers in summary.md come from results.json only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "docs" / "probes"


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _source(settings: dict, kind: str, default: str) -> str:
    """The facts a run used: a bAbI file, a folder with its split, or the built-in generator."""
    if settings.get(f"{kind}_file"):
        return settings[f"{kind}_file"]
    if settings.get(f"{kind}_dir"):
        return f"{settings[f'{kind}_dir']} ({settings.get('split')} split)"
    return default


def markdown_summary(results: dict, figures_prefix: str = "figures") -> str:
    """A Markdown section from a results dict: settings, clean accuracy, probe, ablation, patching, attention."""
    settings, identity = results.get("settings", {}), results.get("checkpoint", {})
    lines = [f"### {identity.get('name') or 'model'}: {settings.get('task')}, {settings.get('segments')} segments",
             "",
             f"Checkpoint sha256 `{(identity.get('sha256') or '')[:16]}`; {settings.get('samples')} samples "
             f"(seed {settings.get('seed')}), {settings.get('segment_size')}-token segments, "
             f"{settings.get('num_mem_tokens')} memory slots; probes fit on "
             f"{100 * (1 - settings.get('test_fraction', 0.5)):.0f}% "
             "of the samples and scored on the rest.",
             f"Facts: {_source(settings, 'babi', 'the built-in generator')}; "
             f"noise: {settings.get('noise_file') or 'built-in sentences'}.", ""]
    clean = results.get("clean") or {}
    if clean:
        lines += [f"Answer accuracy of the model on these samples: {_pct(clean['accuracy'])}% "
                  f"(95% CI {_pct(clean['ci_low'])}-{_pct(clean['ci_high'])}).", ""]
    probes = [r for r in results.get("probes", []) if r["slot"] == "all"]
    if probes:
        lines += ["All-slot probes (accuracy %, 95% CI, majority baseline, control task, selectivity in points):", "",
                  "| target | segment | accuracy | CI | majority | control | selectivity |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in sorted(probes, key=lambda r: (r["target"], r["segment"])):
            lines.append(f"| {r['target']} | {r['segment']} | {_pct(r['accuracy'])} | {_pct(r['ci_low'])}-"
                         f"{_pct(r['ci_high'])} | {_pct(r['majority'])} | {_pct(r['control_accuracy'])} | "
                         f"{100 * r['selectivity']:+.1f} |")
        lines.append("")
    per_slot = [r for r in results.get("probes", []) if r["slot"] != "all"]
    if per_slot:
        lines += ["Best single slot per target (last segment):", ""]
        last = max(r["segment"] for r in per_slot)
        for target in dict.fromkeys(r["target"] for r in per_slot):
            rows = [r for r in per_slot if r["target"] == target and r["segment"] == last]
            best = max(rows, key=lambda r: r["accuracy"])
            lines.append(f"- {target}: slot {best['slot']} at {_pct(best['accuracy'])}% "
                         f"(selectivity {100 * best['selectivity']:+.1f} points)")
        lines.append("")
    ablation = results.get("ablation") or []
    if ablation:
        full = [r for r in ablation if r["slot"] == "all"]
        single = [r for r in ablation if r["slot"] != "all"]
        lines += ["Ablation (accuracy drop in points, change of the right answer's logit):", ""]
        for r in sorted(full, key=lambda r: (r["segment"], r["mode"])):
            lines.append(f"- all slots, segment {r['segment']}, {r['mode']}: drop {100 * r['accuracy_drop']:+.1f}, "
                         f"logit {r['logit_change']:+.2f}")
        if single:
            top = max(single, key=lambda r: r["accuracy_drop"])
            lines.append(f"- largest single slot: slot {top['slot']}, segment {top['segment']}, {top['mode']}: "
                         f"drop {100 * top['accuracy_drop']:+.1f}")
        lines.append("")
    patching = results.get("patching") or []
    if patching:
        lines += ["Patching all memory from B into A (interchange intervention accuracy %, normalised logit effect):",
                  ""]
        for r in sorted((r for r in patching if r["slots"] == "all"), key=lambda r: r["segment"]):
            effect = "n/a" if r["logit_effect"] is None else f"{r['logit_effect']:.2f}"
            lines.append(f"- segment {r['segment']}: IIA {_pct(r['iia'])}, logit effect {effect}")
        lines.append("")
    headline = (results.get("attention") or {}).get("headline") or {}
    if headline.get("write_fact_mass") is not None or headline.get("read_cls_memory_mass") is not None:
        enrichment = headline.get("write_enrichment")
        lines += [f"Attention: in the segment where the fact lands, memory puts {_pct(headline.get('write_fact_mass'))}% "
                  f"of its attention on the fact and {_pct(headline.get('write_noise_mass'))}% on noise "
                  f"(per token, fact / noise = {'n/a' if enrichment is None else f'{enrichment:.2f}'}); in the last "
                  f"segment [CLS] puts {_pct(headline.get('read_cls_memory_mass'))}% on memory "
                  "(means over layers and heads).", ""]
    figures = (results.get("files") or {}).get("figures") or {}
    if figures:
        lines += ["Figures: " + ", ".join(f"[{name}]({figures_prefix}/{Path(path).name})"
                                          for name, path in figures.items()), ""]
    for note in results.get("notes", []):
        lines.append(f"Note: {note}")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    from probes.run import default_segments, run_probes
    from rmt_core.files import write_atomic
    from rmt_core.checkpoint import load_checkpoint, shipped_checkpoints
    from rmt_core.errors import RMTError

    parser = argparse.ArgumentParser(prog="python -m probes.findings", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", help="checkpoint folder (repeatable; default: all shipped)")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--segments", type=int, default=None,
                        help="default: each checkpoint's trained_segments, at most 64")
    parser.add_argument("--intervention-samples", type=int, default=100)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="folder; each checkpoint gets <out>/<name>/")
    parser.add_argument("--figures", choices=("auto", "png", "html"), default="auto")
    parser.add_argument("--babi-dir", help="bAbI folder (such as en-10k/); its test split gives the facts "
                        "(default: the built-in fact generator)")
    parser.add_argument("--noise-file", help="noise text, one passage a line (default: built-in sentences)")
    args = parser.parse_args(argv)
    folders = [Path(p) for p in args.checkpoint] if args.checkpoint else list(shipped_checkpoints().values())
    if not folders:
        print("no checkpoints in checkpoints/ yet; pass --checkpoint DIR", file=sys.stderr)
        return 1
    try:
        for folder in folders:
            model = load_checkpoint(folder)
            segments = args.segments or default_segments(model.config.trained_segments)
            out = Path(args.out) / folder.name
            results = run_probes(model, model.config.task, segments, args.samples, out=out,
                                 intervention_samples=args.intervention_samples, figures=args.figures,
                                 babi_dir=args.babi_dir, noise_file=args.noise_file)
            text = markdown_summary(results, figures_prefix=f"probes/{folder.name}/figures")
            write_atomic(out / "summary.md", text.encode("utf-8"))
            print(text)
    except RMTError as error:
        print(f"probes.findings: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
