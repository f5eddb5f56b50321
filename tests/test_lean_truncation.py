"""Truncated backpropagation that keeps training memory flat in the input's length: segments before the
--bptt-depth cut run without a graph where no loss term reaches them, and with activation checkpointing where
one does (a local term on their memory), with the gradients of the run that keeps every graph."""

import functools

import pytest
import torch

from conftest import make_tiny_rmt
from rmt_core import recurrence


def random_ids(model, batch, n_segments, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1000, 2000, (batch, n_segments * model.config.segment_size), generator=g)


def marks(batch, n, *segments):
    out = torch.zeros(batch, n, dtype=torch.bool)
    out[:, list(segments)] = True
    return out


def gradients(model, **kwargs):
    model.zero_grad()
    torch.manual_seed(7)  # the same dropout masks in both runs
    model(**kwargs).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def grad_modes(model) -> list[bool]:
    """A list that gets, for each segment step `model` runs from now on, whether it ran with gradients."""
    calls = []
    original = model.segment_step

    def spy(memory, *args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return original(memory, *args, **kwargs)

    model.segment_step = spy
    return calls


def keeping_every_graph(monkeypatch):
    """recurrence.run as before the change: every segment before the cut keeps its graph."""
    original = recurrence.run

    def run(*args, graph_before=None, recompute=False, **kwargs):
        return original(*args, **kwargs)

    monkeypatch.setattr(recurrence, "run", run)


@pytest.mark.parametrize("terms", ["task", "still", "step", "write", "read", "given memory"])
def test_the_gradients_are_those_of_the_run_that_keeps_every_graph(tokenizer, monkeypatch, terms):
    model = make_tiny_rmt(tokenizer, bptt_depth=2).train()  # dropout on: the recomputation must replay it
    N = 7
    kwargs = dict(input_ids=random_ids(model, 3, N), labels=torch.tensor([0, 1, 2]))
    if terms == "still":
        kwargs.update(still=marks(3, N, 1, 2, 5), still_weight=2.0)
    elif terms == "step":
        kwargs.update(step=marks(3, N, 2, 5), step_weight=3.0)
    elif terms == "write":
        kwargs.update(write=marks(3, N, 1), write_weight=1.0, still=marks(3, N, 3), still_weight=1.0)
    elif terms == "read":  # a term on attention: the recomputation runs the eager kernel the segment ran with
        read = torch.zeros(3, N, model.config.segment_size, dtype=torch.bool)
        read[:, 2, 3] = True
        kwargs.update(read=read, read_weight=1.0)
    elif terms == "given memory":  # without a gradient: the first segment is checkpointed another way
        kwargs.update(memory=model.initial_memory(3).detach() * 1.5, still=marks(3, N, 0, 3), still_weight=1.0)
    lean = gradients(model, recompute=True, **kwargs)
    keeping_every_graph(monkeypatch)
    full = gradients(model, **kwargs)
    assert lean.keys() == full.keys()
    assert ("memory" in full) == (terms not in ("task", "given memory"))  # only a term before the cut reaches it
    for name in full:
        torch.testing.assert_close(lean[name], full[name], rtol=1e-5, atol=1e-7, msg=name)


def test_segments_no_loss_reaches_run_without_a_graph_and_those_one_does_are_recomputed(tokenizer):
    model = make_tiny_rmt(tokenizer, bptt_depth=2).train()
    N = 7  # cut at 5: segments 5 and 6 take the task's gradient
    calls = grad_modes(model)
    out = model(random_ids(model, 2, N), labels=torch.tensor([0, 1]), still=marks(2, N, 1), still_weight=1.0,
                recompute=True)
    # Segments 0 and 1 reach the stillness term at 1, and run whole checkpointed (no graph inside the step);
    # 2, 3 and 4 reach no loss; 5 and 6 the task's.
    assert calls == [False, False, False, False, False, True, True]
    out.loss.backward()
    assert calls[7:] == [True, True]  # the backward pass ran segments 0 and 1 again, with a graph; not 2-4
    assert model.memory.grad is not None and model.memory.grad.abs().sum() > 0

    calls.clear()
    model(random_ids(model, 2, N), labels=torch.tensor([0, 1])).loss.backward()
    assert calls == [False] * 5 + [True, True]  # the task alone: nothing before the cut keeps a graph


def test_inference_and_hooked_runs_are_untouched(tokenizer):
    model = make_tiny_rmt(tokenizer, bptt_depth=2)
    ids = random_ids(model, 2, 6)
    with torch.no_grad():
        plain = model(ids).logits
    run = functools.partial(recurrence.run, model, ids, detach_before=4, graph_before=2, recompute=True)
    hooked = run(hooks=[("seg.1.mem_out", lambda v, name: v * 0)])  # hooks see one run of each segment
    torch.testing.assert_close(run().logits, plain)
    assert not torch.allclose(hooked.logits, plain)


def test_without_recompute_reached_segments_keep_their_graph_and_unweighted_marks_reach_nothing(tokenizer):
    model = make_tiny_rmt(tokenizer, bptt_depth=2).train()
    N = 7
    calls = grad_modes(model)
    ids, labels = random_ids(model, 2, N), torch.tensor([0, 1])
    model(ids, labels=labels, still=marks(2, N, 1), still_weight=1.0).loss.backward()
    assert calls == [True, True, False, False, False, True, True]  # no second run of 0 and 1
    calls.clear()
    out = model(ids, labels=labels, still=marks(2, N, 1))  # weight 0: the term is reported, not trained
    assert calls == [False] * 5 + [True, True] and out.stillness is not None


@pytest.mark.parametrize("architecture", ["encoder", "decoder"])
def test_training_with_recompute_takes_the_same_steps(tmp_path, monkeypatch, architecture):
    """`rmt train --recompute` changes where activations live, not the updates: the same losses, step by step."""
    import json

    from conftest import tiny_reason_config
    from rmt_core.train import Stage, train

    def losses(folder):
        return [e["loss"] for e in map(json.loads, (folder / "training_log.jsonl").read_text().splitlines())
                if e["event"] == "step"]

    cfg = dict(stages=[Stage(6, 24)], bptt_depth=2, noise_stillness=5.0, max_steps=4, log_every=1, eval_every=4,
               dropout=0.0)
    if architecture == "decoder":
        cfg.update(task="qa1", architecture="decoder", stages=[Stage(4, 40)], bptt_depth=None, noise_stillness=0.0,
                   max_positions=128)
    plain = train(tiny_reason_config(tmp_path / "plain", **cfg), progress=False)
    checkpointed = []
    original = recurrence._checkpointed
    monkeypatch.setattr(recurrence, "_checkpointed", lambda *a, **k: checkpointed.append(1) or original(*a, **k))
    again = train(tiny_reason_config(tmp_path / "again", recompute=True, **cfg), progress=False)
    assert checkpointed  # the flag reached the model
    assert losses(again) == pytest.approx(losses(plain), rel=1e-4) and len(losses(plain)) == 4
    config = json.loads((again / "config.json").read_text())
    assert config["provenance"]["train_config"]["recompute"] is True


def test_recomputed_segments_hand_the_free_heap_back_every_sixteen(tokenizer, monkeypatch):
    model = make_tiny_rmt(tokenizer, bptt_depth=2).train()
    released = []
    monkeypatch.setattr(recurrence, "release_free_heap", lambda: released.append(True))
    N = 36  # cut at 34; stillness marks segment 33, so 0-33 are recomputed
    model(random_ids(model, 1, N), labels=torch.tensor([0]), still=marks(1, N, 33), still_weight=1.0,
          recompute=True).loss.backward()
    assert len(released) == 2  # after segments 15 and 31
    released.clear()
    model(random_ids(model, 1, N), labels=torch.tensor([0]), still=marks(1, N, 33), still_weight=1.0)
    assert not released
    monkeypatch.undo()
    recurrence.release_free_heap()  # glibc's malloc_trim where there is one, else nothing; never an error


def test_recompute_where_it_would_change_nothing_is_refused(tmp_path, capsys):
    from rmt_cli.main import main

    assert main(["train", "--task", "memorize", "--recompute", "--out", str(tmp_path / "run")]) != 0
    err = capsys.readouterr().err
    assert "give --bptt-depth too" in err and "Traceback" not in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("depth", [None, 1])
def test_a_decoder_recomputes_every_segment_with_the_same_gradients(depth):
    from test_decoder import S, _ids, make_decoder

    ids = _ids(2, 3 * S + 2)
    labels_mask = torch.ones_like(ids)
    model = make_decoder("gpt2", bptt_depth=depth).train()  # dropout on
    calls = grad_modes(model)
    grads = []
    for recompute in (False, True):
        model.zero_grad()
        torch.manual_seed(7)
        out = model(ids, labels_mask=labels_mask, recompute=recompute)
        out.loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert calls == [True] * 12  # 4 segments without recompute, 4 with it, and the same 4 in the backward pass
    assert grads[0].keys() == grads[1].keys() and "memory" in grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7, msg=name)


def test_the_recomputation_runs_the_kernel_the_step_ran_with(tokenizer, monkeypatch):
    """A model that rests on the eager kernel runs its plain steps on sdpa (the fast one): the backward pass must
    recompute those on sdpa too, or the saved tensors do not match."""
    model = make_tiny_rmt(tokenizer, bptt_depth=2).train()
    model.set_attention_kernel("eager")
    assert recurrence.fast_kernel(model) == "sdpa"
    N = 6
    kwargs = dict(input_ids=random_ids(model, 2, N), labels=torch.tensor([0, 1]), still=marks(2, N, 1, 3),
                  still_weight=1.0)
    lean = gradients(model, recompute=True, **kwargs)
    assert model.attention_kernel == "eager"
    keeping_every_graph(monkeypatch)
    full = gradients(model, **kwargs)
    for name in full:
        torch.testing.assert_close(lean[name], full[name], rtol=1e-5, atol=1e-7, msg=name)
