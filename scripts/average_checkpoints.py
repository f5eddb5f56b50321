"""Average the weights of checkpoints of one model (a run and its fine-tunes, or runs of one recipe on other
seeds) into a new checkpoint folder: each weight is the weighted mean of the parents' weights.

    python scripts/average_checkpoints.py --out DIR CHECKPOINT[:WEIGHT] CHECKPOINT[:WEIGHT] ...

Weights default to equal shares and are scaled to sum to 1. The parents must share config.json's model settings
and the tokenizer (how each was trained may differ: the mean keeps the first parent's bptt depth and the longest
parent's trained length); the mean is taken in float64 and stored in the first parent's dtype. The new folder records
the parents (name, weights sha256, share, the command that made each) in config.json's provenance and in
training_log.jsonl (one "average" event), keeps each parent's training logs beside it as
training_log.parentN[.initK].jsonl, and gets a model card. It is written to a temporary name and renamed; an
existing --out is never replaced.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from rmt_core.checkpoint import (checkpoint_identity, load_checkpoint, plain_state, portable_command,
                                 portable_path, read_config, resolve_checkpoint, save_checkpoint)
from rmt_core.errors import RMTError
from rmt_core.model_card import write_model_card

# config.json entries that may differ between parents: where and how each was made, not what the model is.
_HISTORY = ("provenance", "_name_or_path", "transformers_version")
# RMT settings that say how a model was trained, not what it computes: the mean keeps the first parent's, and the
# longest curriculum stage of any parent as its trained_segments.
_TRAINING = ("trained_segments", "bptt_depth", "loss_on", "classifier_dropout")


def _parent(spec: str) -> tuple[Path, float]:
    path, _, share = spec.rpartition(":") if ":" in spec and not Path(spec).exists() else (spec, "", "")
    try:
        weight = float(share) if share else 1.0
    except ValueError:
        raise RMTError(f"{spec!r}: the share after ':' must be a number, as in checkpoints/detect:0.5")
    if not math.isfinite(weight) or weight <= 0:
        raise RMTError(f"{spec!r}: the share must be a positive finite number")
    return resolve_checkpoint(path), weight


def _model_settings(config: dict) -> dict:
    """config.json without the entries that record history or training rather than the model."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in _HISTORY}
        return value
    settings = strip(config)
    if isinstance(settings.get("rmt"), dict):
        settings["rmt"] = {k: v for k, v in settings["rmt"].items() if k not in _TRAINING}
    return settings


def _same_model(paths: list[Path], configs: list[dict]) -> None:
    first = _model_settings(configs[0])
    for path, config in zip(paths[1:], configs[1:]):
        other = _model_settings(config)
        if other != first:
            a, b = first.get("rmt", {}), other.get("rmt", {})
            keys = sorted(k for k in {*a, *b} if a.get(k) != b.get(k))
            where = f"rmt.{keys[0]}" if keys else "the backbone settings"
            raise RMTError(f"{path} is not the same model as {paths[0]} ({where} differs); average only checkpoints "
                           "of one architecture and task")
        for name in ("tokenizer.json", "vocab.txt"):
            a, b = paths[0] / name, path / name
            if a.is_file() and b.is_file() and a.read_bytes() != b.read_bytes():
                raise RMTError(f"{b} differs from {a}; the parents must share one tokenizer")


def _parent_logs(path: Path, index: int) -> dict[str, str]:
    """The parent's training logs under names that say whose they are: training_log.jsonl ->
    training_log.parentN.jsonl, training_log.init3.jsonl -> training_log.parentN.init3.jsonl, and so on."""
    logs = {}
    for file in sorted(path.glob("training_log*.jsonl")):
        rest = file.name.removeprefix("training_log")
        logs[f"training_log.parent{index}{rest}"] = file.read_text()
    return logs


def average(parents: list[tuple[Path, float]], out: Path, argv: list[str] | None = None) -> Path:
    if len(parents) < 2:
        raise RMTError("give at least two checkpoints to average")
    if out.exists():
        raise RMTError(f"{out} exists; give --out a new folder (nothing is overwritten)")
    paths = [p for p, _ in parents]
    configs = [read_config(p) for p in paths]
    _same_model(paths, configs)
    total = sum(w for _, w in parents)
    shares = [w / total for _, w in parents]
    models = [load_checkpoint(p, device="cpu") for p in paths]
    states = [plain_state(m) for m in models]
    stored = configs[0].get("dtype")
    mean = {}
    for name, tensor in states[0].items():
        if tensor.is_floating_point():
            value = sum(share * state[name].to(torch.float64) for share, state in zip(shares, states))
            mean[name] = value.to(tensor.dtype)
        else:  # integer buffers (position ids) are the same in every parent
            mean[name] = tensor
    model = models[0]
    model.load_state_dict(mean, strict=False)
    stages = [m.config.trained_segments for m in models if getattr(m.config, "trained_segments", None) is not None]
    if stages:
        model.config.trained_segments = max(stages)
    origin = [{**checkpoint_identity(path), "share": round(share, 6),
               "command": config.get("provenance", {}).get("command")}
              for path, share, config in zip(paths, shares, configs)]
    command = portable_command(argv if argv is not None else sys.argv[1:], "python scripts/average_checkpoints.py")
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    provenance = {"command": command, "date": date, "task": configs[0].get("provenance", {}).get("task"),
                  "averaged": origin}
    event = {"event": "average", "date": date, "command": command, "parents": origin,
             "logs": [f"training_log.parent{i}*.jsonl" for i in range(1, len(paths) + 1)]}
    logs = {"training_log.jsonl": json.dumps(event) + "\n"}
    for i, path in enumerate(paths, start=1):
        logs.update(_parent_logs(path, i))
    save_checkpoint(model, out, provenance=provenance, dtype=stored if isinstance(stored, str) else None,
                    extra_files=logs)
    write_model_card(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT[:WEIGHT]")
    parser.add_argument("--out", required=True, type=Path, help="the new checkpoint folder (must not exist)")
    args = parser.parse_args(argv)
    try:
        out = average([_parent(s) for s in args.checkpoints], args.out, argv)
    except RMTError as error:
        print(f"average_checkpoints: {error}", file=sys.stderr)
        return 1
    print(f"wrote {portable_path(out)}: " + ", ".join(
        f"{e['name']} x {e['share']:.3f}" for e in json.loads((out / "config.json").read_text())["provenance"]["averaged"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
