"""Causal interventions on memory: ablation and patching (interchange) of the memory written by segment t.

Both are hooks on the one recurrence (rmt_core.recurrence): a hook on `seg.{t}.mem_out` replaces the memory
segment t writes (what segment t+1 reads), and the run continues to the last segment, where the answer head
reads [CLS]. The memory written by the last segment is read by nothing, so t ranges over 0..N-2.

Inputs are task batches ((K, N*S) or (K, N, S) ids) or lists of ModelInputs, free text included (a short last
segment is masked). `states` from `probes.states.collect` (memory after each segment, (K, N+1, m, d)) may be
passed so that the hooked run starts at segment t instead of 0; the result is the same.

Slots: an index k, a list of indices, or "all".
"""

from __future__ import annotations

import numpy as np
import torch

from probes.states import auto_batch_size, model_device, small_model_threaded
from rmt_core.errors import ProbeError
from rmt_core.inputs import SegmentBatch, batch_of
from rmt_core.recurrence import run

MODES = ("mean", "zeros", "initial")


def slot_indices(slot, num_mem_tokens: int) -> list[int]:
    """Slot argument -> list of slot indices, checked against the model's m."""
    if isinstance(slot, str):
        if slot != "all":
            raise ProbeError(f"slot must be an index or 'all', got {slot!r}")
        return list(range(num_mem_tokens))
    chosen = [int(slot)] if np.isscalar(slot) else [int(k) for k in slot]
    bad = [k for k in chosen if not 0 <= k < num_mem_tokens]
    if bad or not chosen:
        raise ProbeError(f"memory slot {bad[0] if bad else slot!r} does not exist; "
                         f"the model has slots 0..{num_mem_tokens - 1}")
    return chosen


def _slot_label(slot):
    """'all', an int, or a list of ints: how results name the slots changed."""
    if isinstance(slot, str):
        return slot
    return int(slot) if np.isscalar(slot) else [int(k) for k in slot]


def _check_segment(segment: int, n_segments: int) -> None:
    if not 0 <= segment < n_segments - 1:
        raise ProbeError(f"interventions change the memory written by segment t in 0..{n_segments - 2} "
                         f"(the last segment's memory is read by nothing), got t={segment}; use --segments 2 or more")


def _batches(batch: SegmentBatch, batch_size: int | None, model):
    size = batch_size or auto_batch_size(model)
    for first in range(0, batch.batch_size, size):
        yield first, batch.rows(slice(first, first + size))


@torch.no_grad()
def memory_after(model, inputs, segment: int, batch_size: int | None = None) -> torch.Tensor:
    """(K, m, d) memory written by segment `segment` for every sample."""
    batch = batch_of(model, inputs)
    return torch.cat([run(model, rows, stop=segment + 1).memory.float().cpu() for _, rows in _batches(batch, batch_size, model)])


@torch.no_grad()
def final_logits(model, inputs, batch_size: int | None = None) -> torch.Tensor:
    """(K, C) logits of the last segment of a clean run."""
    batch = batch_of(model, inputs)
    return torch.cat([run(model, rows).logits.float().cpu() for _, rows in _batches(batch, batch_size, model)])


@torch.no_grad()
def with_memory(model, inputs, segment: int, memory: torch.Tensor, *, states=None,
                batch_size: int | None = None) -> torch.Tensor:
    """(K, C) final logits when the memory written by `segment` is replaced by `memory` (K, m, d): a hook on
    `seg.{segment}.mem_out`. With `states` (K, N+1, m, d) the run starts at `segment` from the stored memory."""
    batch = batch_of(model, inputs)
    dtype = model.initial_memory(1).dtype
    device = model_device(model)
    out = []
    for first, rows in _batches(batch, batch_size, model):
        new = memory[first:first + rows.batch_size].to(device=device, dtype=dtype)
        start, start_memory = 0, None
        if states is not None:
            start = segment
            start_memory = torch.as_tensor(np.asarray(states)[first:first + rows.batch_size, segment]).to(device, dtype)
        hooked = run(model, rows, start=start, memory=start_memory,
                     hooks=[(f"seg.{segment}.mem_out", lambda value, name, new=new: new)])
        out.append(hooked.logits.float().cpu())
    return torch.cat(out)


def _clean(model, inputs, segment, states, logits, batch_size):
    if states is not None:
        written = torch.as_tensor(np.asarray(states)[:, segment + 1], dtype=torch.float32)  # (K, m, d)
    else:
        written = memory_after(model, inputs, segment, batch_size)
    if logits is not None:
        clean = torch.as_tensor(np.asarray(logits), dtype=torch.float32)
    else:
        clean = final_logits(model, inputs, batch_size)
    return written, clean


@small_model_threaded
def ablate(model, input_ids, answers, segment: int, slot, mode: str, *, states=None, clean_logits=None,
           batch_size: int | None = None) -> dict:
    """Replace slot(s) of the memory written by `segment` and measure the change in the answer.

    input_ids: (K, N*S) or (K, N, S) ids, or K ModelInputs of one length; answers: (K,) right labels. mode: 'mean' (the slot's mean over these K
    samples at that segment), 'zeros', or 'initial' (the model's initial memory of that slot).
    Returns {segment, slot, mode, accuracy, clean_accuracy, accuracy_drop, logit_change, samples}; logit_change
    is the mean change of the right answer's logit.
    """
    if mode not in MODES:
        raise ProbeError(f"unknown ablation mode {mode!r}; choose from {', '.join(MODES)}")
    inputs = batch_of(model, input_ids)
    _check_segment(segment, inputs.n_segments)
    answers = torch.as_tensor(np.asarray(answers), dtype=torch.long)
    slots = slot_indices(slot, model.num_mem_tokens)
    written, clean = _clean(model, inputs, segment, states, clean_logits, batch_size)
    changed = written.clone()
    if mode == "mean":
        changed[:, slots] = written[:, slots].mean(dim=0)
    elif mode == "zeros":
        changed[:, slots] = 0.0
    else:
        changed[:, slots] = model.initial_memory(1)[0, slots].detach().float().cpu()
    logits = with_memory(model, inputs, segment, changed, states=states, batch_size=batch_size)
    rows = torch.arange(len(answers))
    accuracy = float((logits.argmax(-1) == answers).double().mean())
    clean_accuracy = float((clean.argmax(-1) == answers).double().mean())
    return {
        "segment": int(segment), "slot": _slot_label(slot),
        "mode": mode, "accuracy": accuracy, "clean_accuracy": clean_accuracy,
        "accuracy_drop": clean_accuracy - accuracy,
        "logit_change": float((logits[rows, answers] - clean[rows, answers]).mean()),
        "samples": int(len(answers)),
    }


@small_model_threaded
def patch(model, input_a, input_b, answers_a, answers_b, segment: int, slot="all", *, states_a=None,
          states_b=None, logits_a=None, logits_b=None, batch_size: int | None = None) -> dict:
    """Interchange intervention: copy memory (slot k, or all) written by `segment` on input B into the run on A.

    input_a, input_b: (P, N*S) or (P, N, S) ids, or P ModelInputs each (free text too; A and B may differ in
    length, both reach past `segment`); pair i = (A_i, B_i) with different answers; answers_*: (P,).
    Returns {segment, slots, iia, logit_effect, b_prediction_rate, pairs}:
      iia: fraction of pairs whose patched answer is B's answer (interchange intervention accuracy);
      logit_effect: normalised logit effect, with LD = logit[answer_B] - logit[answer_A],
        mean(LD_patched - LD_A) / mean(LD_B - LD_A) (1: as if run on B, 0: no effect; None if the
        denominator is 0);
      b_prediction_rate: fraction whose patched prediction equals the model's clean prediction on B.
    """
    inputs_a, inputs_b = batch_of(model, input_a), batch_of(model, input_b)
    if inputs_a.batch_size != inputs_b.batch_size:
        raise ProbeError(f"patching needs as many B inputs as A inputs, got {inputs_a.batch_size} and {inputs_b.batch_size}")
    _check_segment(segment, min(inputs_a.n_segments, inputs_b.n_segments))
    answers_a = torch.as_tensor(np.asarray(answers_a), dtype=torch.long)
    answers_b = torch.as_tensor(np.asarray(answers_b), dtype=torch.long)
    slots = slot_indices(slot, model.num_mem_tokens)
    written_a, clean_a = _clean(model, inputs_a, segment, states_a, logits_a, batch_size)
    written_b, clean_b = _clean(model, inputs_b, segment, states_b, logits_b, batch_size)
    changed = written_a.clone()
    changed[:, slots] = written_b[:, slots]
    logits = with_memory(model, inputs_a, segment, changed, states=states_a, batch_size=batch_size)
    rows = torch.arange(len(answers_a))

    def difference(values):  # (P,) logit of B's answer minus logit of A's answer
        return values[rows, answers_b] - values[rows, answers_a]

    denominator = float((difference(clean_b) - difference(clean_a)).mean())
    numerator = float((difference(logits) - difference(clean_a)).mean())
    predicted = logits.argmax(-1)
    return {
        "segment": int(segment), "slots": _slot_label(slot),
        "iia": float((predicted == answers_b).double().mean()),
        "logit_effect": numerator / denominator if abs(denominator) > 1e-9 else None,
        "b_prediction_rate": float((predicted == clean_b.argmax(-1)).double().mean()),
        "pairs": int(len(answers_a)),
    }


def pair_samples(answers, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (A, B) for patching: every sample is an A once, its B drawn (seeded) among samples with another answer.

    Returns index arrays (a (P,), b (P,)); samples whose answer no other sample differs from are left out.
    """
    answers = np.asarray(answers)
    rng = np.random.default_rng(seed)
    a_rows, b_rows = [], []
    for i, answer in enumerate(answers):
        others = np.flatnonzero(answers != answer)
        if others.size:
            a_rows.append(i)
            b_rows.append(int(rng.choice(others)))
    if not a_rows:
        raise ProbeError("patching needs samples with at least two different answers; give more --samples")
    return np.array(a_rows), np.array(b_rows)
