"""`rmt eval` under several processes (torchrun / accelerate environment, gloo on CPU) gives one process's results."""

import json
import os
import sys

import pytest
import torch.multiprocessing as mp

from conftest import free_port, make_tiny_rmt
from rmt_core import evaluate as ev
from rmt_core.checkpoint import save_checkpoint
from rmt_core.errors import TaskError

ARGS = ["--segments", "3,1", "--samples", "9", "--batch-size", "2", "--seed", "7", "--device", "cpu", "--no-progress"]


def _worker(rank, world, port, folder, out, shares):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    import torch

    torch.set_num_threads(1)
    from rmt_cli.main import main
    from rmt_core import evaluate as evaluation

    built = []
    predict = evaluation.predict_batch

    def counting(model, ids, n, segment_size):  # which samples this rank ran, by their first token ids
        built.append((n, ids[:, :8].tolist()))
        return predict(model, ids, n, segment_size)

    evaluation.predict_batch = counting
    assert main(["eval", "--checkpoint", folder, *ARGS, "--json", out]) == 0
    with open(f"{shares}.{rank}", "w") as handle:
        json.dump(built, handle)
    # Leave without the interpreter's teardown: once in many runs a spawned worker (which imports the test's
    # modules, Streamlit's among them) aborted there ("terminate called without an active exception") after its
    # results were written, which is not what this test is about.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _comparable(result: dict) -> dict:
    skip = {"seconds", "date", "command", "processes"}
    rows = [{k: v for k, v in row.items() if k != "seconds"} for row in result["results"]]
    return {**{k: v for k, v in result.items() if k not in skip}, "results": rows}


def test_two_processes_give_the_results_of_one(tokenizer, tmp_path):
    from rmt_cli.main import main

    model = make_tiny_rmt(tokenizer, segment_size=12, seed=5)
    folder = str(save_checkpoint(model, tmp_path / "tiny", tokenizer=tokenizer))
    one = tmp_path / "one.json"
    assert main(["eval", "--checkpoint", folder, *ARGS, "--json", str(one)]) == 0
    two = tmp_path / "two.json"
    shares = tmp_path / "share"
    mp.start_processes(_worker, args=(2, free_port(), folder, str(two), str(shares)), nprocs=2, join=True,
                       start_method="spawn")
    single, double = json.loads(one.read_text()), json.loads(two.read_text())
    assert double["processes"] == 2 and "processes" not in single
    assert all(row["wrong_seeds"] for row in single["results"])  # a random model: the lists are worth comparing
    assert _comparable(double) == _comparable(single)
    # Each rank ran its own batches (0, 2, 4 and 1, 3 of 9 samples in twos), and between them every sample once.
    ran = [json.loads((tmp_path / f"share.{rank}").read_text()) for rank in (0, 1)]
    assert [[len(rows) for _, rows in r] for r in ran] == [[2, 2, 1] * 2, [2, 2] * 2]
    for n in (3, 1):
        rows = [row for r in ran for length, batch in r if length == n for row in batch]
        assert len(rows) == 9 and len({tuple(row) for row in rows}) == 9


def test_a_share_without_torch_distributed_is_refused(tokenizer):
    model = make_tiny_rmt(tokenizer, segment_size=12)
    with pytest.raises(TaskError, match="torchrun"):
        ev.evaluate(model, "memorize", [1], 4, rank=1, world=2, progress=False)
    with pytest.raises(TaskError, match="rank"):
        ev.evaluate(model, "memorize", [1], 4, rank=2, world=2, progress=False)
    with pytest.raises(TaskError, match="bfloat16"):
        ev.evaluate(model, "memorize", [1], 4, autocast="float8", progress=False)
