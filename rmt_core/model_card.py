"""The model card (README.md) of a checkpoint folder, written from its config.json, training_log.jsonl and eval.json.

Everything in the card is read from those files, so a card never states a number that no file holds.
"""

from __future__ import annotations

import json
from pathlib import Path

from rmt_core.babi import QUESTION_FORMS
from rmt_core.files import write_atomic


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _best_step(log: list[dict], stage_end: dict):
    """The step whose model a stage kept: the first evaluation with the stage's best accuracy (and loss)."""
    evals = [e for e in log if e.get("event") == "eval" and e.get("stage") == stage_end["stage"]]
    if not evals:
        return "?"
    best = max(evals, key=lambda e: (e["val_accuracy"], -e.get("val_loss", 0.0), -e["step"]))
    return best["step"]


def _lineage(init_from: dict | None) -> list[str]:
    """One line per ancestor run: the checkpoint this run started from, the one that started from, ..."""
    lines, depth = [], 0
    while init_from:
        depth += 1
        log = "training_log.init.jsonl" if depth == 1 else f"training_log.init{depth}.jsonl"
        lines.append(f"- {'training' if depth == 1 else 'that run'} started from checkpoint `{init_from['name']}` "
                     f"(weights sha256 `{init_from['sha256'][:16]}`), itself trained by "
                     f"`{init_from.get('provenance_command')}`; its training log is `{log}` where shipped")
        init_from = init_from.get("init_from")
    return lines


def _evaluation(evaluation: dict | None) -> list[str]:
    """The card's evaluation section, from eval.json."""
    lines = ["## Evaluation (`rmt eval`, written to eval.json)"]
    if evaluation:
        sources = evaluation.get("sources") or {k: evaluation.get(k) for k in ("babi", "noise", "split") if k in evaluation}
        if sources:
            lines.append(f"- data: {sources}")
        if evaluation.get("command"):
            lines.append(f"- command: `{evaluation['command']}`")
        if evaluation.get("metric"):
            lines.append(f"- metric: {evaluation['metric']}")
        lines += ["", "| evaluated segments | tokens | accuracy | 95% interval (Wilson) | samples |",
                  "| --- | --- | --- | --- | --- |"]
        for r in evaluation.get("results", []):
            ci = f"{100 * r['ci_low']:.1f}-{100 * r['ci_high']:.1f}%" if "ci_low" in r else "-"
            lines.append(f"| {r['segments']} | {r['tokens']} | {100 * r['accuracy']:.1f}% | {ci} | {r['samples']} |")
    else:
        lines.append("Not evaluated yet: run `rmt eval --checkpoint <this folder> --json <this folder>/eval.json`.")
    return lines


def _averaged_card(name: str, rmt: dict, prov: dict, evaluation: dict | None) -> str:
    """The card of a checkpoint made by scripts/average_checkpoints.py: its parents instead of a training run."""
    lines = [f"# RMT Lens checkpoint: {name}", "",
             f"A Recurrent Memory Transformer for the **{rmt['task']}** task ({rmt['num_mem_tokens']} memory tokens, "
             f"segments of {rmt['segment_size']} tokens) whose weights are the weighted mean of the weights of "
             f"{len(prov['averaged'])} checkpoints trained by `rmt train` (`scripts/average_checkpoints.py`).", "",
             "## Parents", f"- command: `{prov.get('command', '?')}`, {prov.get('date', '?')}", ""]
    for i, parent in enumerate(prov["averaged"], start=1):
        lines.append(f"- parent {i}: `{parent.get('path') or parent['name']}` as it was then (weights sha256 "
                     f"`{parent['sha256'][:16]}`), share "
                     f"{parent['share']:.3f}, trained by `{parent.get('command')}`; its training logs are "
                     f"`training_log.parent{i}*.jsonl`")
    return "\n".join(lines + [""] + _evaluation(evaluation) + [""])


def model_card(folder: str | Path) -> str:
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    rmt, prov, backbone = config["rmt"], config.get("provenance", {}), config["backbone"]
    log = _read_jsonl(folder / "training_log.jsonl")
    stages = [e for e in log if e.get("event") == "stage_end"]
    evaluation = json.loads((folder / "eval.json").read_text()) if (folder / "eval.json").is_file() else None
    decoder = rmt.get("architecture", "encoder") == "decoder"
    if prov.get("averaged"):
        return _averaged_card(folder.name, rmt, prov, evaluation)
    # A stage folder of a run that was stopped before its end records less provenance than a finished run's
    # checkpoint; the run's start event in the training log holds the rest.
    start = next((e for e in log if e.get("event") == "start"), {})
    train_config = prov.get("train_config") or start.get("config") or {}
    prov = {"train_config": train_config, "device": start.get("device"), "date": start.get("date"),
            "curriculum": train_config.get("stages"), "steps": prov.get("step"),
            "data": {"babi": train_config.get("babi_dir") or train_config.get("babi_file") or "built-in generator",
                     "noise": train_config.get("noise_file") or "built-in noise"}, **prov}
    source = prov.get("train_config", {}).get("backbone", "?")
    kind = ("A decoder Recurrent Memory Transformer (read memory at the front of every segment, write memory at its "
            "end; the answer generated)" if decoder else "A Recurrent Memory Transformer")
    minilm_vocabulary = source in ("small", "minilm", "gpt2-small", "llama-small")
    lines = [
        f"# RMT Lens checkpoint: {folder.name}",
        "",
        f"{kind} trained by `rmt train` on the **{rmt['task']}** task "
        f"({rmt['num_mem_tokens']} memory tokens, segments of {rmt['segment_size']} tokens, "
        f"curriculum up to {rmt['trained_segments']} segments).",
        "",
        "## Backbone",
        f"- {backbone.get('model_type', '?')}: {backbone.get('num_hidden_layers', backbone.get('n_layer'))} layers, "
        f"hidden {backbone.get('hidden_size', backbone.get('n_embd'))}, "
        f"{backbone.get('num_attention_heads', backbone.get('n_head'))} heads, vocabulary {backbone.get('vocab_size')} "
        + ("(uncased WordPiece of all-MiniLM-L6-v2)" if minilm_vocabulary else "(the backbone's own tokenizer)"),
        f"- source: {source} "
        + ("('small' / 'gpt2-small' = GPT-2 and 'llama-small' = Llama, initialised from scratch; 'minilm' = the "
             "pretrained all-MiniLM-L6-v2 weights as a causal LM, BERT in decoder mode)" if decoder else
           "('small' = initialised from scratch, 'minilm' = the pretrained all-MiniLM-L6-v2 weights)"),
        f"- weights stored as {config.get('dtype')}",
        *_lineage(prov.get("init_from")),
        "",
        "## Training",
        f"- command: `{prov.get('command', '?')}`",
        *(f"- resumed at stage {e.get('stage', 0) + 1}, step {e.get('step')}: `{(e.get('config') or {}).get('command', '?')}`"
          for e in log if e.get("event") == "resume"),
        f"- facts: {prov.get('data', {}).get('babi', '?')}; noise: {prov.get('data', {}).get('noise', '?')}",
        f"- curriculum (segments x segment size): {prov.get('curriculum', '?')}",
        f"- hardware: {prov.get('device', '?')}; wall time {prov.get('wall_s', '?')} s; "
        f"{prov.get('steps', '?')} optimizer steps; {'started' if 'wall_s' not in prov else 'finished'} "
        f"{prov.get('date', '?')}",
        "",
        "| stage | segments x size | steps | best validation accuracy | kept model from step |",
        "| --- | --- | --- | --- | --- |",
    ]
    keep_last = prov.get("train_config", {}).get("keep") == "last"
    names = str(prov.get("curriculum") or "").split(",")  # "1-64x64": a random-length stage's own name
    for e in stages:
        name = names[e["stage"]] if e["stage"] < len(names) and names[e["stage"]] else \
            f"{e['segments']}x{e['segment_size']}"
        kept = e["kept_step"] if e.get("kept_step") is not None else _best_step(log, e)
        if keep_last and "kept_accuracy" in e:
            kept = f"{kept} (validation {e['kept_accuracy']:.3f})"
        lines.append(f"| {e['stage'] + 1} | {name} | {e['step']} | "
                     f"{e['best_val_accuracy']:.3f} | {kept} |")
    ended = {e["stage"] for e in stages}
    stopped = [e for e in log if e.get("event") == "eval" and e["stage"] not in ended]
    if stopped:  # the run was stopped inside this stage; this folder holds the stage's best model up to then
        last = stopped[-1]
        step = prov.get("step", _best_step(log, last))
        name = prov.get("stage") or f"{last['segments']}x{last['segment_size']}"
        lines.append(f"| {last['stage'] + 1} | {name} | {last['step']} (stopped) | "
                     f"{max(e['val_accuracy'] for e in stopped):.3f} | {step} |")
        lines += ["", f"The run was stopped during stage {last['stage'] + 1}, after its evaluation at step "
                  f"{last['step']} ({last.get('elapsed_s', '?')} s in); this checkpoint is that stage's best model "
                  f"up to then, saved at step {step}."]
    multiples = [int(k) for k in prov.get("train_config", {}).get("val_multiples") or [1]]
    pooled = (f" Each stage validates at {' and '.join(f'{k}x' for k in multiples)} its number of segments, pooled."
              if multiples != [1] else "")
    form = prov.get("train_config", {}).get("question_form")
    if form:
        pooled += (f" This run trains and validates on '{form}' questions only "
                   f"({QUESTION_FORMS[form]}), a curriculum step.")
    if prov.get("train_config", {}).get("length_draw") == "log" and any("-" in name for name in names):
        pooled += (" A random-length stage draws each batch's number of segments log-uniformly (`--length-draw "
                   "log`: each doubling of the length as often as the next).")
    lines += ["", "Validation samples use the training sources with seeds disjoint from the training batches."
              f"{pooled} " + ("A stage keeps the weights of its last evaluation (`--keep last`), whatever their "
                                 "validation accuracy." if keep_last else
                                 "A stage keeps its best model; step 0 means the model it started from was already "
                                 "the best on that stage's validation set."), ""]
    stage_evals = [e for e in log if e.get("event") == "stage_eval"]
    if stage_evals:
        lengths = [r["segments"] for r in stage_evals[0]["results"]]
        lines += ["Accuracy of each stage's best model on held-out data at several lengths "
                  f"({stage_evals[0]['results'][0]['samples']} samples each; the paper's Figure 5):", "",
                  "| trained on | " + " | ".join(f"{n} seg" for n in lengths) + " |",
                  "| --- |" + " --- |" * len(lengths)]
        for e in stage_evals:
            cells = " | ".join(f"{100 * r['accuracy']:.0f}%" for r in e["results"])
            lines.append(f"| {e['segments']}x{e['segment_size']} | {cells} |")
        lines.append("")
    lines += _evaluation(evaluation)
    lines.append("")
    return "\n".join(lines)


def write_model_card(folder: str | Path) -> Path:
    folder = Path(folder)
    return write_atomic(folder / "README.md", model_card(folder))


def main(argv: list[str] | None = None) -> int:
    """python -m rmt_core.model_card FOLDER...: write or refresh each checkpoint folder's README.md."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m rmt_core.model_card",
                                     description="write the model card (README.md) of checkpoint folders from their "
                                                 "config.json, training logs and eval.json")
    parser.add_argument("folders", nargs="+", metavar="FOLDER", help="a checkpoint folder")
    args = parser.parse_args(argv)
    for folder in map(Path, args.folders):
        if not (folder / "config.json").is_file():
            print(f"model_card: error: {folder} holds no config.json; give a checkpoint folder", file=sys.stderr)
            return 1
        try:
            print(write_model_card(folder))
        except (OSError, ValueError, KeyError) as error:
            print(f"model_card: error: {folder}: cannot write its card ({type(error).__name__}: {error}); "
                  "check its config.json and training_log.jsonl", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
