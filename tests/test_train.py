"""Curriculum training: resume after a kill, several processes equal one, best checkpoint per stage."""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from rmt_core.checkpoint import read_config, read_weights
from rmt_core.errors import TrainError
from rmt_core.train import Stage, TrainConfig, parse_stages, train


def tiny_config(out, **overrides) -> TrainConfig:
    values = dict(
        task="memorize", out=str(out), stages=[Stage(1, 16), Stage(2, 16)], hidden_size=32, num_layers=2,
        num_heads=2, max_positions=64, num_mem_tokens=4, batch_size=8, lr=1e-3, warmup_steps=2, max_steps=6,
        eval_every=2, val_samples=16, target_accuracy=1.01, plateau=100, log_every=1, save_dtype="float32",
        threads=1, seed=3,
    )
    values.update(overrides)
    return TrainConfig(**values)


def log_entries(folder, event):
    lines = (folder / "training_log.jsonl").read_text().splitlines()
    return [json.loads(l) for l in lines if json.loads(l).get("event") == event]


def strip(entries, keys=("stage", "step", "loss", "val_accuracy", "lr")):
    return [{k: e.get(k) for k in keys} for e in entries]


def test_resume_after_kill_continues_with_the_same_losses(tmp_path):
    whole = train(tiny_config(tmp_path / "whole"), progress=False)
    cut = tiny_config(tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        train(cut, stop_after=9, progress=False)  # killed inside stage 2, after its resume point at step 2
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    train(cut, resume=True, progress=False)
    resumed = log_entries(tmp_path / "cut", "resume")
    assert [(e["stage"], e["step"]) for e in resumed] == [(1, 2)] and resumed[0]["config"] == json.loads(json.dumps(cut.to_json()))
    assert not log_entries(whole, "resume")
    assert "resumed at stage 2, step 2" in (tmp_path / "cut" / "README.md").read_text()
    assert strip(log_entries(whole, "step")) == strip(log_entries(tmp_path / "cut", "step"))
    assert strip(log_entries(whole, "eval")) == strip(log_entries(tmp_path / "cut", "eval"))
    a, b = read_weights(whole), read_weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_missing_or_existing_runs(tmp_path):
    with pytest.raises(TrainError, match="nothing to resume"):
        train(tiny_config(tmp_path / "none"), resume=True, progress=False)
    train(tiny_config(tmp_path / "done", stages=[Stage(1, 16)], max_steps=2), progress=False)
    with pytest.raises(TrainError, match="already holds a run"):
        train(tiny_config(tmp_path / "done"), progress=False)


def test_best_checkpoint_of_a_stage_is_its_best_validation_accuracy(tmp_path):
    out = train(tiny_config(tmp_path / "run", max_steps=12, lr=3e-3), progress=False)
    evals = log_entries(out, "eval")
    for index, stage in enumerate(["1x16", "2x16"]):
        # Best: highest accuracy, ties to the lower validation loss, further ties to the earlier step.
        scores = [(e["val_accuracy"], -e["val_loss"], -e["step"]) for e in evals if e["stage"] == index]
        best_acc, _, neg_step = max(scores)
        prov = read_config(out / "stages" / f"{index + 1:02d}-{stage}")["provenance"]
        assert prov["val_accuracy"] == best_acc and prov["step"] == -neg_step
    # The final checkpoint is the last stage's best, not its last step.
    final, best = read_weights(out), read_weights(out / "stages" / "02-2x16")
    assert all(torch.equal(final[k], best[k]) for k in best)
    assert read_config(out)["rmt"]["trained_segments"] == 2
    assert (out / "README.md").read_text().count("2x16") >= 1


def test_keep_last_keeps_the_last_evaluation_not_the_best(tmp_path):
    """--keep last: each stage keeps the weights of its last evaluation, and the next stage starts from them."""
    best_run = train(tiny_config(tmp_path / "best", max_steps=12, lr=3e-3), progress=False)
    out = train(tiny_config(tmp_path / "last", max_steps=12, lr=3e-3, keep="last"), progress=False)
    # Same seeds and batches: the two runs train alike up to the end of stage 1, so their logs agree there.
    first = lambda run: [(e["step"], e["val_accuracy"]) for e in log_entries(run, "eval") if e["stage"] == 0]
    assert first(out) == first(best_run)
    for index, stage in enumerate(["1x16", "2x16"]):
        prov = read_config(out / "stages" / f"{index + 1:02d}-{stage}")["provenance"]
        last = [e for e in log_entries(out, "eval") if e["stage"] == index][-1]
        assert prov["step"] == last["step"] == 12 and prov["val_accuracy"] == last["val_accuracy"]
        end = [e for e in log_entries(out, "stage_end") if e["stage"] == index][0]
        assert end["kept_step"] == 12 and end["kept_accuracy"] == last["val_accuracy"]
        best_end = [e for e in log_entries(best_run, "stage_end") if e["stage"] == index][0]
        best_prov = read_config(best_run / "stages" / f"{index + 1:02d}-{stage}")["provenance"]
        assert best_end["kept_step"] == best_prov["step"]  # --keep best reports the step it kept, too
    # In stage 2 the best run kept an earlier model, so the two runs' final weights differ.
    assert [e["kept_step"] for e in log_entries(best_run, "stage_end")] != [12, 12]
    final, kept = read_weights(out), read_weights(out / "stages" / "02-2x16")
    assert all(torch.equal(final[k], kept[k]) for k in kept)
    assert not all(torch.equal(final[k], v) for k, v in read_weights(best_run).items())
    card = (out / "README.md").read_text()
    assert "--keep last" in card and "12 (validation" in card


def test_stop_at_step_ends_with_the_model_a_longer_run_had_at_that_step(tmp_path):
    """--stop-at-step: the run ends at that evaluation with exactly the weights the full run had there (same
    schedule), written as the run's own checkpoint."""
    full = train(tiny_config(tmp_path / "full", stages=[Stage(2, 16)], max_steps=8, keep="last"), progress=False)
    cut = train(tiny_config(tmp_path / "cut", stages=[Stage(2, 16)], max_steps=8, keep="last", stop_at_step=4),
                progress=False)
    evals = log_entries(cut, "eval")
    assert [e["step"] for e in evals] == [0, 2, 4]
    assert [(e["step"], e["val_accuracy"]) for e in log_entries(full, "eval")][:3] == [(e["step"], e["val_accuracy"]) for e in evals]
    assert read_config(cut)["provenance"]["stopped_at_step"] == 4
    assert "stopped_at_step" not in read_config(full)["provenance"]
    # the full run's step-4 weights: rerun it and interrupt it after step 5, the resume state is that of step 4
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path / "again", stages=[Stage(2, 16)], max_steps=8, keep="last"), stop_after=5,
              progress=False)
    at_four, final = read_weights(tmp_path / "again" / "resume"), read_weights(cut)
    assert all(torch.equal(final[k], at_four[k]) for k in final)
    assert not all(torch.equal(final[k], v) for k, v in read_weights(full).items())


def test_skip_grad_norm_skips_exactly_the_updates_whose_gradient_is_above_it(tmp_path):
    """--skip-grad-norm: a batch whose gradient norm (before clipping) is above the threshold does not move the
    model; the steps before it are those of a run without the option, and the schedule still advances."""
    one = dict(stages=[Stage(2, 16)], max_steps=6, keep="last")
    plain = log_entries(train(tiny_config(tmp_path / "plain", **one), progress=False), "step")
    norms = [e["grad_norm"] for e in plain]
    assert len(set(norms)) > 1 and all("skipped" not in e for e in plain)
    threshold = sorted(norms)[len(norms) // 2]  # some steps above it, some not
    first = next(i for i, n in enumerate(norms) if n > threshold)
    cut = train(tiny_config(tmp_path / "cut", skip_grad_norm=threshold, **one), progress=False)
    steps = log_entries(cut, "step")
    assert strip(steps[:first + 1]) == strip(plain[:first + 1])  # same batches, same updates until the first skip
    assert [e["skipped"] for e in steps[:first + 1]] == [0] * first + [1]
    assert [e["lr"] for e in steps] == [e["lr"] for e in plain]
    assert read_config(cut)["provenance"]["skipped_steps"] == sum(e["skipped"] for e in steps) >= 1

    # every update skipped: the model is the one it started from, whatever the length of the run
    short = train(tiny_config(tmp_path / "short", skip_grad_norm=1e-12, **dict(one, max_steps=2)), progress=False)
    long = train(tiny_config(tmp_path / "long", skip_grad_norm=1e-12, **one), progress=False)
    assert all(e["skipped"] == 1 for e in log_entries(long, "step"))
    a, b = read_weights(short), read_weights(long)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], v) for k, v in read_weights(tmp_path / "plain").items())


def _rows_per_call(monkeypatch):
    """Record the rows of every batch_loss call of a training run."""
    import rmt_core.train as core

    rows, real = [], core.batch_loss
    monkeypatch.setattr(core, "batch_loss", lambda model, ids, *rest: rows.append(len(ids)) or real(model, ids, *rest))
    return rows


@pytest.mark.parametrize("parts", [2, 4])
def test_accumulate_trains_the_batch_in_parts_with_the_whole_batchs_update(tmp_path, monkeypatch, parts):
    """--accumulate: each step runs the batch in parts, one after another; their summed gradient is the whole
    batch's, so loss, gradient norm and weights are those of a run without it (a loss that is a mean over
    samples)."""
    one = dict(stages=[Stage(2, 16)], max_steps=4, keep="last")
    rows = _rows_per_call(monkeypatch)
    whole = train(tiny_config(tmp_path / "whole", **one), progress=False)
    assert rows == [8] * 4
    rows.clear()
    split = train(tiny_config(tmp_path / "split", accumulate=parts, **one), progress=False)
    assert rows == [8 // parts] * parts * 4
    a, b = log_entries(whole, "step"), log_entries(split, "step")
    for key in ("loss", "grad_norm"):
        assert [e[key] for e in b] == pytest.approx([e[key] for e in a], rel=1e-5)
    after, kept = read_weights(whole), read_weights(split)
    for key in after:
        torch.testing.assert_close(kept[key], after[key], atol=1e-5, rtol=0)
    assert read_config(split)["provenance"]["train_config"]["accumulate"] == parts


def test_accumulate_splits_every_term_and_pool_of_a_batch(tmp_path, monkeypatch):
    """The masks of reason's terms (stillness, write attention, slot recall) and the far-fact pool's rows and
    memory are split with the samples: the runs train, in parts, to a loss near the whole batch's."""
    from conftest import tiny_reason_config

    rows = _rows_per_call(monkeypatch)
    terms = dict(noise_stillness=1.0, write_attention=1.0, slot_recall=1.0, max_steps=2, log_every=1)
    whole = train(tiny_reason_config(tmp_path / "whole", **terms), progress=False)
    split = train(tiny_reason_config(tmp_path / "split", accumulate=2, **terms), progress=False)
    assert rows == [8, 8] + [4] * 4
    a, b = log_entries(whole, "step"), log_entries(split, "step")
    for key in ("loss", "stillness", "write_attention", "slot_recall"):
        assert b[0][key] == pytest.approx(a[0][key], rel=0.05), key
    rows.clear()
    far = dict(task="detect", stages=[Stage(2, 16)], batch_size=4, max_steps=2, noise_stillness=1.0, far_facts=0.5,
               far_segments=32)
    train(tiny_config(tmp_path / "far", accumulate=2, **far), progress=False)
    train(tiny_config(tmp_path / "deep", accumulate=2, **dict(far, far_facts=0.0, deep_memory=0.5)), progress=False)
    assert rows == [2] * 8


def test_accumulate_must_split_each_processs_share(tmp_path):
    with pytest.raises(TrainError, match="multiple of 4"):
        train(tiny_config(tmp_path / "x", batch_size=6, accumulate=4), progress=False)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("stop", [3, 8, 9])
def test_stop_at_step_must_be_an_evaluation_before_the_end(tmp_path, stop):
    from rmt_core.errors import TrainError

    with pytest.raises(TrainError, match="multiple of --eval-every"):
        train(tiny_config(tmp_path / "x", max_steps=8, stop_at_step=stop), progress=False)
    assert not (tmp_path / "x").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    train(tiny_config(out, stages=[Stage(2, 16)], max_steps=4, device="cpu"), progress=False)


def test_two_processes_equal_one_on_the_same_global_batch(tmp_path):
    single = train(tiny_config(tmp_path / "one", stages=[Stage(2, 16)], max_steps=4, device="cpu"), progress=False)
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path / "two")), nprocs=2, join=True, start_method="spawn")
    a = read_weights(single / "resume")
    b = read_weights(tmp_path / "two" / "resume")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)
    assert "x2" in read_config(tmp_path / "two")["provenance"]["device"]


def _grad_worker(rank, world, port, out):
    import datetime

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.distributed.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    from rmt_core.train import Processes

    model = torch.nn.ParameterDict({name: torch.nn.Parameter(torch.zeros(3)) for name in ("both", "first", "none")})
    model["both"].grad = torch.full((3,), float(rank + 1))
    if rank == 0:  # only the first process's share used this one
        model["first"].grad = torch.full((3,), 4.0)
    Processes("cpu").average_gradients(model)
    torch.save({name: q.grad for name, q in model.items()}, f"{out}/{rank}.pt")
    torch.distributed.destroy_process_group()


def test_a_gradient_only_one_process_has_is_averaged_with_zero_from_the_others(tmp_path):
    # With a varied batch (random lengths, facts in some samples only) one process's share can leave a
    # parameter without a gradient; every process must still send the same values, or the collective breaks.
    mp.start_processes(_grad_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    for rank in (0, 1):
        grads = torch.load(tmp_path / f"{rank}.pt")
        torch.testing.assert_close(grads["both"], torch.full((3,), 1.5))
        torch.testing.assert_close(grads["first"], torch.full((3,), 2.0))
        assert grads["none"] is None  # no process gave it one: the optimizer leaves it alone, as with one process


def test_curriculum_parsing():
    assert [s.name for s in parse_stages("1x16, 2x32")] == ["1x16", "2x32"]
    assert [s.name for s in parse_stages(None, "1,2,3", 64)] == ["1x64", "2x64", "3x64"]
    with pytest.raises(TrainError):
        parse_stages("2by16")
    with pytest.raises(TrainError):
        parse_stages(None, "0,1", 64)


def test_init_from_starts_from_the_checkpoint_weights(tmp_path):
    from rmt_core.checkpoint import checkpoint_identity

    source = train(tiny_config(tmp_path / "source", stages=[Stage(1, 16)], max_steps=4), progress=False)
    # A learning rate of ~0 keeps the weights where they started: the continuation's final model is the source's.
    out = train(tiny_config(tmp_path / "more", stages=[Stage(2, 16)], max_steps=2, lr=1e-12, init_from=str(source)),
                progress=False)
    a, b = read_weights(source), read_weights(out)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)
    provenance = read_config(out)["provenance"]
    assert provenance["init_from"]["sha256"] == checkpoint_identity(source)["sha256"]
    assert "training started from checkpoint" in (out / "README.md").read_text()


def test_a_stage_with_longer_segments_than_the_last_trains_on_them(tmp_path):
    """A curriculum may lengthen the segments from one stage to the next (short segments hold less noise while a
    task is learned), in one run or from a checkpoint trained on shorter ones: each stage lays out its own."""
    from rmt_core.checkpoint import load_checkpoint

    out = train(tiny_config(tmp_path / "grow", stages=[Stage(1, 16), Stage(1, 32)], max_steps=2), progress=False)
    more = train(tiny_config(tmp_path / "more", stages=[Stage(1, 32), Stage(2, 48)], max_steps=2, init_from=str(out)),
                 progress=False)
    assert [e["segment_size"] for e in log_entries(tmp_path / "grow", "stage_end")] == [16, 32]
    assert [e["segment_size"] for e in log_entries(tmp_path / "more", "stage_end")] == [32, 48]
    model = load_checkpoint(more)
    assert model.config.segment_size == model.layout.segment_size == 48


def test_init_from_chain_keeps_the_whole_lineage(tmp_path):
    from rmt_core.checkpoint import checkpoint_identity

    first = train(tiny_config(tmp_path / "first", stages=[Stage(1, 16)], max_steps=2), progress=False)
    second = train(tiny_config(tmp_path / "second", stages=[Stage(1, 16)], max_steps=2, init_from=str(first)),
                   progress=False)
    third = train(tiny_config(tmp_path / "third", stages=[Stage(1, 16)], max_steps=2, init_from=str(second)),
                  progress=False)
    parent = read_config(third)["provenance"]["init_from"]
    assert parent["sha256"] == checkpoint_identity(second)["sha256"]
    assert parent["init_from"]["sha256"] == checkpoint_identity(first)["sha256"]
    assert parent["init_from"]["init_from"] is None
    stage = read_config(third / "stages" / "01-1x16")["provenance"]  # a stage's best can start a chain too
    assert stage["init_from"]["sha256"] == parent["sha256"] and stage["init_from"]["init_from"]["name"] == "first"
    card = (third / "README.md").read_text()
    assert "training started from checkpoint `second`" in card
    assert "that run started from checkpoint `first`" in card and "training_log.init2.jsonl" in card


def test_validation_pools_multiples_of_the_stage_length(tmp_path):
    from rmt_core.tasks import default_tokenizer
    from rmt_core.train import Data

    cfg = tiny_config(tmp_path / "v", val_samples=6, val_multiples=(1, 2))
    batches = Data(cfg, default_tokenizer()).validation(Stage(3, 16), batch_size=4)
    assert [ids.shape for ids, _ in batches] == [(4, 48), (2, 48), (4, 96), (2, 96)]
    out = train(tiny_config(tmp_path / "run", stages=[Stage(2, 16)], max_steps=2, val_multiples=(1, 2)),
                progress=False)
    assert read_config(out)["provenance"]["train_config"]["val_multiples"] == [1, 2]
    evals = log_entries(out, "eval")
    assert evals and all(e["val_segments"] == [2, 4] for e in evals)  # the starting model's score included
    assert "validates at 1x and 2x its number of segments, pooled" in (out / "README.md").read_text()


def test_question_form_restricts_training_and_validation(tmp_path):
    from rmt_core import babi
    from rmt_core.tasks import default_tokenizer
    from rmt_core.train import Data

    cfg = tiny_config(tmp_path / "q", task="reason", stages=[Stage(1, 32)], max_steps=2, question_form="is")
    data = Data(cfg, default_tokenizer())
    for builder in (data.builder(32, training=True), data.builder(32)):
        assert {babi.parse_relation_question(s.question)[0] for s in builder.samples(1, 40, 0)} == {"is"}
    out = train(cfg, progress=False)
    assert read_config(out)["provenance"]["train_config"]["question_form"] == "is"
    assert "trains and validates on 'is' questions only" in (out / "README.md").read_text()


def test_random_length_stages(tmp_path):
    from rmt_core.train import Data, load_tokenizer

    stages = parse_stages("1-4x16,2x16")
    assert stages[0] == Stage(4, 16, 1) and [s.name for s in stages] == ["1-4x16", "2x16"]
    for bad in ("0-4x16", "5-4x16", "-1x16", "a-4x16"):
        with pytest.raises(TrainError):
            parse_stages(bad)
    cfg = tiny_config(tmp_path / "random", stages=stages[:1], max_steps=3)
    data = Data(cfg, load_tokenizer(cfg))
    lengths = {data.batch(stages[0], 0, step)[0].shape[1] // 16 for step in range(40)}
    assert lengths == {1, 2, 3, 4}  # every length from low to high, drawn per batch
    assert data.batch(stages[0], 0, 7)[0].shape == data.batch(stages[0], 0, 7)[0].shape  # one seed, one length
    out = train(cfg, progress=False)
    config = read_config(out)
    assert config["rmt"]["trained_segments"] == 4 and config["provenance"]["curriculum"] == "1-4x16"
    assert "| 1 | 1-4x16 | 3 |" in (out / "README.md").read_text()  # the card names the stage as it was given
    assert "log-uniformly" not in (out / "README.md").read_text()
    logged = train(tiny_config(tmp_path / "log", stages=stages[:1], max_steps=2, length_draw="log"), progress=False)
    assert "log-uniformly (`--length-draw log`" in (logged / "README.md").read_text()


def test_log_length_draw_gives_every_scale_alike_and_uniform_is_unchanged(tmp_path):
    stage = Stage(1024, 64, 1)
    uniform = [stage.batch_segments(seed) for seed in range(4000)]
    log = [stage.batch_segments(seed, "log") for seed in range(4000)]
    assert uniform == [stage.batch_segments(seed, "uniform") for seed in range(4000)]  # the default draw as before
    assert min(log) == 1 and max(log) <= 1024 and max(log) > 512
    scales = [sum(2 ** k <= n < 2 ** (k + 1) for n in log) / len(log) for k in range(10)]
    assert all(0.07 < share < 0.13 for share in scales), scales  # each doubling about a tenth of the batches
    assert sum(n <= 64 for n in uniform) < 0.08 * len(uniform) < 0.5 * len(log) < sum(n <= 64 for n in log)
    assert Stage(8, 64).batch_segments(3, "log") == 8  # a fixed-length stage draws nothing
    with pytest.raises(TrainError, match="length_draw 'loglog'"):
        train(TrainConfig(out=str(tmp_path / "bad"), length_draw="loglog"), progress=False)


def test_model_card_of_a_stage_folder_from_a_stopped_run(tmp_path):
    """A run stopped inside a stage leaves its stage's best model; a card for that folder (with the run's log
    beside it) reads the run's command, data and curriculum from the log's start event and says it stopped."""
    import shutil

    from rmt_core.model_card import model_card

    cut = tiny_config(tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        train(cut, stop_after=9, progress=False)  # stopped inside stage 2
    stage = tmp_path / "cut" / "stages" / "02-2x16"
    shipped = tmp_path / "shipped"
    shutil.copytree(stage, shipped)
    shutil.copy(tmp_path / "cut" / "training_log.jsonl", shipped / "training_log.jsonl")
    card = model_card(shipped)
    step = read_config(stage)["provenance"]["step"]
    last = log_entries(tmp_path / "cut", "eval")[-1]
    assert f"| 2 | 2x16 | {last['step']} (stopped) |" in card
    assert f"this checkpoint is that stage's best model up to then, saved at step {step}" in card
    assert "- curriculum (segments x segment size): 1x16,2x16" in card and "built-in noise" in card
    assert "?" not in card.split("## Training")[1].split("|")[0].replace("wall time ? s", "")
