"""Pick, for each task, the best of several trained runs and copy its shippable files into a folder.

    python scripts/pick_checkpoints.py WORK SHIP memorize=run_a,run_b detect=run_c,run_d ...

Best: the highest accuracy at the run's own trained length in its eval.json (or, for a run stopped before the
lengths it was evaluated at, at the shortest one), then the longer trained length.
Stage checkpoints and resume state stay behind; they are not shipped.
"""

import json
import shutil
import sys
from pathlib import Path

SHIPPED = ("config.json", "model.safetensors", "training_log.jsonl", "eval.json", "README.md",
           "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def score(run: Path) -> tuple:
    config = json.loads((run / "config.json").read_text())
    trained = config["rmt"]["trained_segments"]
    results = json.loads((run / "eval.json").read_text())["results"]
    upto = [r for r in results if r["segments"] <= trained]  # a run stopped early may be evaluated only beyond
    at_trained = (max(upto, key=lambda r: r["segments"]) if upto else min(results, key=lambda r: r["segments"]))[
        "accuracy"]
    longer = [r["accuracy"] for r in results if r["segments"] > trained]
    return (round(at_trained, 2), trained, sum(longer))


def main() -> None:
    work, ship = Path(sys.argv[1]), Path(sys.argv[2])
    ship.mkdir(parents=True, exist_ok=True)
    for spec in sys.argv[3:]:
        name, runs = spec.split("=")
        candidates = [work / r for r in runs.split(",") if (work / r / "eval.json").is_file()]
        if not candidates:
            print(f"{name}: no evaluated run")
            continue
        scored = sorted(((score(r), r) for r in candidates), reverse=True)
        for s, r in scored:
            print(f"{name}: {r.name} score {s}")
        best = scored[0][1]
        target = ship / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        for file in SHIPPED:
            if (best / file).is_file():
                shutil.copy2(best / file, target / file)
        (target / "picked_from.json").write_text(json.dumps(
            {"picked": best.name, "candidates": {r.name: list(s) for s, r in scored}}, indent=1))
        print(f"{name}: picked {best.name}")


if __name__ == "__main__":
    main()
