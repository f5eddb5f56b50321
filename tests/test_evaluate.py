"""Evaluation against length: same predictions as the forward pass, flat memory, the results format, Figure 5."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_tiny_rmt
from rmt_core import evaluate as ev
from rmt_core.checkpoint import load_checkpoint, save_checkpoint
from rmt_core.errors import TaskError
from rmt_core.tasks import TaskBuilder, sample_seed

SEGMENT = 20


@pytest.fixture(scope="module")
def model(tokenizer):
    return make_tiny_rmt(tokenizer, segment_size=SEGMENT, seed=3)


def forward_predictions(model, task, n, seeds):
    builder = TaskBuilder(task, model.tokenizer, model.config.segment_size, split="test")
    samples = [builder.sample(n, s) for s in seeds]
    ids = torch.tensor([s.input_ids for s in samples])
    with torch.no_grad():
        logits = model(ids).logits  # the model's own recurrence over (B, N * S)
    return logits, logits.argmax(-1).numpy(), np.array([s.answer for s in samples]), ids


def test_three_segments_give_the_forward_pass_predictions(model):
    seeds = [ev.eval_sample_seed(5, 3, i) for i in range(11)]
    logits, predicted, answers, ids = forward_predictions(model, "memorize", 3, seeds)
    stepped = ev.predict_batch(model, ids.numpy().astype(np.int32), 3, SEGMENT)
    torch.testing.assert_close(stepped, logits, atol=1e-5, rtol=0)

    result = ev.evaluate(model, "memorize", [3], 11, batch_size=4, seed=5, progress=False)
    row = result["results"][0]
    assert row["correct"] == int((predicted == answers).sum())
    assert row["wrong_seeds"] == [s for s, p, a in zip(seeds, predicted, answers) if p != a]
    assert row["wrong_indexes"] == [i for i, (p, a) in enumerate(zip(predicted, answers)) if p != a]


def test_rmt_eval_command_matches_the_forward_pass(model, tmp_path, capsys):
    from rmt_cli.main import main

    folder = save_checkpoint(model, tmp_path / "tiny", tokenizer=model.tokenizer)
    out = folder / "eval.json"
    code = main(["eval", "--checkpoint", str(folder), "--segments", "3,1", "--samples", "9", "--batch-size", "4",
                 "--seed", "2", "--device", "cpu", "--json", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "segments" in printed and "wrote" in printed
    data = json.loads(out.read_text())
    assert [r["segments"] for r in data["results"]] == [3, 1]
    assert data["checkpoint"]["name"] == "tiny" and len(data["checkpoint"]["sha256"]) == 64
    loaded = load_checkpoint(folder, device="cpu")
    for row in data["results"]:
        assert set(row) >= {"segments", "tokens", "accuracy", "samples"}
        assert row["tokens"] == row["segments"] * SEGMENT and row["samples"] == 9
        seeds = [ev.eval_sample_seed(2, row["segments"], i) for i in range(9)]
        _, predicted, answers, _ = forward_predictions(loaded, "memorize", row["segments"], seeds)
        assert row["accuracy"] == pytest.approx((predicted == answers).mean())
        assert row["ci_low"] <= row["accuracy"] <= row["ci_high"]
    assert not list(folder.glob(".eval.json*"))  # the atomic write left no temporary file


def test_rmt_eval_says_when_the_checkpoints_eval_json_used_other_data(model, tmp_path, capsys, shared_data):
    from rmt_cli.main import main

    folder = save_checkpoint(model, tmp_path / "tiny", tokenizer=model.tokenizer)
    args = ["eval", "--checkpoint", str(folder), "--segments", "1", "--samples", "4", "--device", "cpu",
            "--no-progress"]
    assert main([*args, "--json", str(folder / "eval.json")]) == 0  # the built-in facts and noise
    assert "note:" not in capsys.readouterr().out
    assert main(args) == 0  # the same data again: nothing to say
    assert "note:" not in capsys.readouterr().out
    noise = tmp_path / "noise.txt"
    noise.write_text("".join(f"Passage {i} of plain noise text tells of a quiet harbour town.\n" for i in range(40)))
    assert main([*args, "--babi-dir", str(shared_data / "babi" / "en-10k"), "--noise-file", str(noise)]) == 0
    note = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and "tiny/eval.json was measured on built-in facts in built-in noise" in note[0]
    assert "qa1_single-supporting-fact_test.txt" in note[0] and "noise.txt" in note[0]
    # The same files copied to another folder (as a GPU machine's copy of the data) are the same data: no note.
    assert main([*args, "--babi-dir", str(shared_data / "babi" / "en-10k"), "--noise-file", str(noise),
                 "--json", str(folder / "eval.json")]) == 0
    capsys.readouterr()
    copy = tmp_path / "copy"
    (copy / "en-10k").mkdir(parents=True)
    for name in ("qa1_single-supporting-fact_test.txt", "qa1_single-supporting-fact_train.txt"):
        (copy / "en-10k" / name).write_bytes((shared_data / "babi" / "en-10k" / name).read_bytes())
    (copy / "noise.txt").write_bytes(noise.read_bytes())
    assert main([*args, "--babi-dir", str(copy / "en-10k"), "--noise-file", str(copy / "noise.txt")]) == 0
    assert "note:" not in capsys.readouterr().out
    (copy / "noise.txt").write_text("".join(f"Passage {i} tells of a lighthouse keeper and his grey cat.\n"
                                            for i in range(40)))  # other bytes at the same name: other data
    assert main([*args, "--babi-dir", str(copy / "en-10k"), "--noise-file", str(copy / "noise.txt")]) == 0
    assert "note:" in capsys.readouterr().out


def test_batching_does_not_change_results(model):
    small = ev.evaluate(model, "detect", [2, 5], 7, batch_size=2, seed=1, progress=False)
    large = ev.evaluate(model, "detect", [2, 5], 7, batch_size=64, seed=1, progress=False,
                        max_batch_tokens=3 * 5 * SEGMENT)
    for a, b in zip(small["results"], large["results"]):
        assert (a["correct"], a["wrong_seeds"]) == (b["correct"], b["wrong_seeds"])


def test_batches_shrink_for_long_inputs():
    assert ev.batch_plan(100, 1, 499, 64) == [64, 36]
    plan = ev.batch_plan(100, 4096, 499, 64, max_batch_tokens=2**25)
    assert sum(plan) == 100 and max(plan) == 2**25 // (4096 * 499) == 16
    assert ev.batch_plan(3, 10**6, 499, 64) == [1, 1, 1]


def test_evaluation_seeds_are_disjoint_from_training_and_reproducible(model):
    evals = {ev.eval_sample_seed(0, n, i) for n in (1, 2, 4) for i in range(50)}
    assert len(evals) == 150
    training = {sample_seed(batch, i) for batch in range(200) for i in range(64)}
    assert not evals & training
    assert ev.eval_sample_seed(0, 2, 3) != ev.eval_sample_seed(1, 2, 3)
    a = ev.evaluate(model, "memorize", [2], 6, seed=4, progress=False)
    b = ev.evaluate(model, "memorize", [2], 6, seed=4, progress=False)
    assert a["results"][0]["wrong_seeds"] == b["results"][0]["wrong_seeds"]
    assert a["sources"]["split"] == "test" and a["eval_seed_offset"] == 10**9
    json.dumps(a)  # plain JSON types throughout


def test_bad_input_raises_task_errors(model, tmp_path):
    with pytest.raises(TaskError, match="segments"):
        ev.evaluate(model, "memorize", [0, 2], 4, progress=False)
    with pytest.raises(TaskError, match="samples"):
        ev.evaluate(model, "memorize", [2], 0, progress=False)
    with pytest.raises(TaskError, match="unknown task"):
        ev.evaluate(model, "recall", [2], 2, progress=False)
    with pytest.raises(TaskError, match="rmt eval"):
        ev.read_results(tmp_path / "missing.json")


def test_rmt_eval_bad_checkpoint_is_one_line(tmp_path, capsys):
    from rmt_cli.main import main

    assert main(["eval", "--checkpoint", str(tmp_path / "nope"), "--segments", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("rmt eval: error:") and "\n" not in err


def test_wilson_interval():
    low, high = ev.wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    assert ev.wilson_interval(0, 10)[0] == 0.0 and ev.wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_length_matrix_over_stage_checkpoints(tokenizer, tmp_path):
    for index, trained in enumerate((1, 2)):
        stage = make_tiny_rmt(tokenizer, segment_size=SEGMENT, seed=index, trained_segments=trained)
        folder = tmp_path / "run" / "stages" / f"{index + 1:02d}-{trained}x{SEGMENT}"
        save_checkpoint(stage, folder, tokenizer=tokenizer)
    stages = ev.find_stage_checkpoints(tmp_path / "run")
    assert list(stages) == [1, 2]
    matrix = ev.length_matrix(stages, "memorize", [1, 3], 4, device="cpu", progress=False)
    assert matrix["trained"] == [1, 2] and matrix["evaluated"] == [1, 3]
    assert len(matrix["accuracy"]) == 2 and all(len(row) == 2 for row in matrix["accuracy"])
    assert matrix["runs"][2]["trained_segments"] == 2
    figure = ev.length_matrix_figure(matrix)
    assert figure.data[0].type == "heatmap" and max(max(r) for r in figure.data[0].z) <= 100


def test_length_figure_draws_ours_beside_the_papers():
    from rmt_core import paper

    ours = {"results": [{"segments": n, "tokens": 16 * n, "accuracy": 0.9, "samples": 10, "ci_low": 0.6,
                         "ci_high": 0.98} for n in (1, 4, 4096)], "task": "detect"}
    figure = ev.length_figure({"detect-tiny": ours})
    names = [trace.name for trace in figure.data]
    assert names[0] == "detect-tiny" and "paper" in names[1]
    paper_trace = figure.data[1]
    assert paper_trace.line.dash == "dash" and 4096 in paper_trace.x
    assert paper_trace.y[list(paper_trace.x).index(32)] == paper.HEADLINE["detect"][0]
    assert figure.layout.xaxis.type == "log" and list(figure.data[0].y) == [90.0] * 3
    assert len(ev.length_figure({"x": ours}, paper=False).data) == 1
    heatmap = ev.length_matrix_figure(paper.matrix("memorize"))
    assert heatmap.data[0].z[6][0] == 100.0  # percent already: not scaled again


MEMORY_PROBE = textwrap.dedent("""
    import json, resource, sys
    sys.path.insert(0, sys.argv[1])
    import torch
    torch.set_num_threads(1)
    from conftest import make_tiny_rmt
    from rmt_core.tasks import TaskBuilder, default_tokenizer
    from rmt_core import evaluate as ev

    def peak_kib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    model = make_tiny_rmt(default_tokenizer(), segment_size=16, hidden=64, layers=2, heads=2)
    peaks = {}
    for n in (8, 512):
        ev.evaluate(model, "memorize", [n], 16, batch_size=16, progress=False)
        peaks[n] = peak_kib()
    # A control that keeps the autograd graph of every segment: its memory grows with the length.
    ids, labels = TaskBuilder("memorize", model.tokenizer, 16).batch(512, 16, seed=0)
    model(ids, labels=labels).loss
    peaks["graph"] = peak_kib()
    print(json.dumps(peaks))
""")


@pytest.mark.slow
def test_memory_is_flat_in_the_number_of_segments():
    # One fresh subprocess: peak RSS after 8 segments, after 512 segments, after the growing control.
    tests = str(Path(__file__).resolve().parent)
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, tests], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    peaks = json.loads(done.stdout.strip().splitlines()[-1])
    assert peaks["512"] <= 1.15 * peaks["8"], peaks
    assert peaks["graph"] > 1.15 * peaks["8"], peaks  # the measurement does see growth


def test_same_sources_goes_by_the_files_bytes_where_both_results_record_them():
    def result(babi, noise, split="test", digests=None):
        return {"sources": {"babi": babi, "noise": noise, "split": split}, **({"source_sha256": digests} if digests else {})}

    a = result("../data/qa1_test.txt", "../data/dev.txt", digests={"babi": "b1", "noise": "n1"})
    moved = result(".../gpu_data/qa1_test.txt", ".../gpu_data/dev.txt", digests={"babi": "b1", "noise": "n1"})
    edited = result("../data/qa1_test.txt", "../data/dev.txt", digests={"babi": "b1", "noise": "n2"})
    assert ev.same_sources(a, moved)  # copied elsewhere: the same bytes
    assert not ev.same_sources(a, edited)  # the same name, other bytes
    assert not ev.same_sources(a, result("../data/qa1_test.txt", "../data/dev.txt", split="train",
                                         digests={"babi": "b1", "noise": "n1"}))
    old = result("../data/qa1_test.txt", "../data/dev.txt")  # an eval.json from before the digests: paths decide
    assert ev.same_sources(a, old) and not ev.same_sources(moved, old)
    assert ev.same_sources(result("builtin", "builtin", digests={"babi": None, "noise": None}), result("builtin", "builtin"))


def test_rmt_eval_max_batch_tokens_reaches_the_batches_and_keeps_the_results(model, tmp_path, monkeypatch):
    from rmt_cli.main import main

    folder = save_checkpoint(model, tmp_path / "tiny", tokenizer=model.tokenizer)
    sizes = []
    real = ev.batch_plan
    monkeypatch.setattr(ev, "batch_plan", lambda *a, **k: sizes.append(real(*a, **k)) or sizes[-1])
    args = ["eval", "--checkpoint", str(folder), "--segments", "3", "--samples", "6", "--device", "cpu",
            "--no-progress", "--batch-size", "6"]
    assert main([*args, "--json", str(tmp_path / "default.json")]) == 0
    assert main([*args, "--max-batch-tokens", str(2 * 3 * SEGMENT), "--json", str(tmp_path / "small.json")]) == 0
    assert sizes == [[6], [2, 2, 2]]  # one batch of six, then three of two
    default, small = (json.loads((tmp_path / f"{n}.json").read_text())["results"][0] for n in ("default", "small"))
    assert (default["correct"], default["wrong_indexes"]) == (small["correct"], small["wrong_indexes"])


def test_pieces_from_first_sample_pool_into_the_row_of_one_run(model):
    from conftest import load_script

    merge = load_script("merge_eval").merge
    whole = ev.evaluate(model, "memorize", [2, 3], 9, batch_size=4, seed=2, progress=False)
    first = ev.evaluate(model, "memorize", [2, 3], 4, batch_size=4, seed=2, progress=False)
    rest = ev.evaluate(model, "memorize", [2, 3], 5, batch_size=2, seed=2, progress=False, first_sample=4)
    assert all(row["first_sample"] == 4 for row in rest["results"])
    assert all(0 < len(row["wrong_indexes"]) < 9 for row in whole["results"])  # the pieces have something to add
    for pooled, one_run in zip(merge([first, rest])["results"], whole["results"]):
        for key in ("samples", "correct", "accuracy", "ci_low", "ci_high", "wrong_indexes", "wrong_seeds"):
            assert pooled[key] == one_run[key], key
    with pytest.raises(TaskError, match="first sample must be a whole number"):
        ev.evaluate(model, "memorize", [2], 4, first_sample=-1, progress=False)
