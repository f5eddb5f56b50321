"""The state of the world in a decoder RMT's memory (qa1): per-person place probes after every segment, the
overwrite test, and ablation and patching of the write memory; prints a markdown section for docs/findings.md.

    .venv/bin/python scripts/decoder_findings.py checkpoints/qa1_decoder --segments 4 --samples 1000 \
        --babi-dir ../shared/data/babi/en-10k --noise-file ../shared/data/quality/questions.dev.txt \
        --out docs/probes/qa1_decoder

Samples are `rmt eval`'s held-out ones (test split). `rmt probe` runs the per-person probes (targets where_P,
previous_P), ablation and patching of the memory each segment writes; `probes.world.overwrite_test` probes a
person's old and new place around the segment where the new place lands. Every number printed is read from
the files written under --out (results.json, overwrite.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from probes.linear import split_samples
from probes.run import run_probes
from probes.states import collect
from probes.targets import PEOPLE
from probes.world import overwrite_test
from rmt_core.babilong import make_builder
from rmt_core.checkpoint import load_checkpoint
from rmt_core.errors import RMTError
from rmt_core.evaluate import eval_sample_seed
from rmt_core.files import write_json_atomic
from rmt_core.inputs import ModelInput


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--segments", type=int, default=4)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--babi-dir")
    parser.add_argument("--noise-file")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    try:
        model = load_checkpoint(args.checkpoint, device="cpu")
        results = run_probes(model, "qa1", args.segments, args.samples, seed=args.seed, out=out, progress=False,
                             babi_dir=args.babi_dir, noise_file=args.noise_file, split="test", per_slot=False,
                             modes=("mean",), intervention_samples=min(args.samples, 200), figures=None)
        builder = make_builder("qa1", model.tokenizer, model.config.segment_size, babi_dir=args.babi_dir,
                               noise_file=args.noise_file, split="test")
        samples = [builder.sample(args.segments, eval_sample_seed(args.seed, args.segments, i))
                   for i in range(args.samples)]
        with model.answering():
            states = collect(model, [ModelInput.from_sample(s) for s in samples]).states
        fit, test = split_samples(len(samples), 0.5, args.seed)
        overwrite = overwrite_test(states, samples, fit, test, seed=args.seed)
        write_json_atomic(out / "overwrite.json", {"checkpoint": results["checkpoint"], "rows": overwrite})
    except RMTError as error:
        print(f"decoder_findings: error: {error}", file=sys.stderr)
        return 1
    print(report(json.loads((out / "results.json").read_text()), json.loads((out / "overwrite.json").read_text())))
    return 0


def report(results: dict, overwrite: dict) -> str:
    """The markdown section, from results.json and overwrite.json."""
    settings, clean = results["settings"], results["clean"]
    N = settings["segments"]
    lines = [f"Checkpoint `{results['checkpoint'].get('name')}`, {N} segments of {settings['segment_size']} tokens, "
             f"{settings['samples']} held-out samples (probes fit on half, scored on the other half). First answer "
             f"token correct on {100 * clean['accuracy']:.1f}% [{100 * clean['ci_low']:.1f}, "
             f"{100 * clean['ci_high']:.1f}].", "",
             "Where is each person after segment t (probe of the write memory, all slots; held-out accuracy, "
             "majority baseline in brackets, control tasks in results.json):", "",
             "| person | " + " | ".join(f"t={t}" for t in range(N)) + " |", "| --- |" + " --- |" * N]
    for person in PEOPLE:
        cells = []
        for t in range(N):
            row = next((r for r in results["probes"] if r["target"] == f"where_{person}" and r["segment"] == t
                        and r["slot"] == "all"), None)
            cells.append("-" if row is None else f"{100 * row['accuracy']:.0f}% ({100 * row['majority']:.0f}%)")
        lines.append(f"| {person} | " + " | ".join(cells) + " |")
    lines += ["", "Overwrite test: probe accuracy of a person's old and new place in the memory written o segments "
              "after the new place lands (o = -1: before it), mean over the four people:", "",
              "| offset | old place | new place | events |", "| --- | --- | --- | --- |"]
    rows = overwrite["rows"]
    for offset in sorted({r["offset"] for r in rows}):
        here = {t: [r for r in rows if r["offset"] == offset and r["target"] == t] for t in ("old place", "new place")}
        old, new = (np.mean([r["accuracy"] for r in here[t]]) for t in ("old place", "new place"))
        lines.append(f"| {offset} | {100 * old:.0f}% | {100 * new:.0f}% | {sum(r['events'] for r in here['old place'])} |")
    ablation = [r for r in results["ablation"] if r["slot"] == "all"]
    patching = [r for r in results["patching"] if r["slots"] == "all"]
    if ablation:
        lines += ["", "Write memory of segment t replaced by its mean (all slots): accuracy drop "
                  + ", ".join(f"t={r['segment']}: {100 * r['accuracy_drop']:+.0f} points" for r in ablation) + "."]
    if patching:
        lines += ["Write memory of segment t patched from another sample: interchange accuracy "
                  + ", ".join(f"t={r['segment']}: {100 * r['iia']:.0f}%" for r in patching) + "."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
