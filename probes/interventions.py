"""Causal interventions on memory: ablation and patching (interchange) of the memory written by segment t.

Both run segments 0..t, change the memory written by segment t (what segment t+1 reads), and continue to the
last segment, where the answer head reads [CLS]. The memory written by the last segment is read by nothing,
so t ranges over 0..N-2. `states` from `probes.states.collect` (memory after each segment, (K, N+1, m, d))
may be passed to skip re-running segments 0..t; the result is the same.

Slots: an index k, a list of indices, or "all".
"""

from __future__ import annotations

import numpy as np
import torch

from probes.states import as_segments, auto_batch_size, model_device, run_segments, small_model_threaded
from rmt_core.errors import ProbeError

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


@torch.no_grad()
def memory_after(model, segments: torch.Tensor, segment: int, batch_size: int | None = None) -> torch.Tensor:
    """(K, m, d) memory written by segment `segment` for every sample. segments: (K, N, S)."""
    batch_size = batch_size or auto_batch_size(model)
    device = model_device(model)
    out = []
    for first in range(0, len(segments), batch_size):
        batch = segments[first:first + batch_size].to(device)
        memory = model.initial_memory(batch.shape[0])
        for t in range(segment + 1):
            memory = model.segment_step(memory, batch[:, t]).memory_out
        out.append(memory.float().cpu())
    return torch.cat(out)


@torch.no_grad()
def final_logits(model, segments: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """(K, C) logits of the last segment of a clean run."""
    batch_size = batch_size or auto_batch_size(model)
    device = model_device(model)
    out = []
    for first in range(0, len(segments), batch_size):
        batch = segments[first:first + batch_size].to(device)
        logits, _ = run_segments(model, model.initial_memory(batch.shape[0]), batch, 0)
        out.append(logits.float().cpu())
    return torch.cat(out)


@torch.no_grad()
def continue_from(model, memory: torch.Tensor, segments: torch.Tensor, segment: int,
                  batch_size: int | None = None) -> torch.Tensor:
    """(K, C) final logits when segments segment+1.. run from the given memory (K, m, d) written by `segment`."""
    batch_size = batch_size or auto_batch_size(model)
    device = model_device(model)
    dtype = model.initial_memory(1).dtype
    out = []
    for first in range(0, len(segments), batch_size):
        batch = segments[first:first + batch_size].to(device)
        start = memory[first:first + batch_size].to(device=device, dtype=dtype)
        logits, _ = run_segments(model, start, batch, segment + 1)
        out.append(logits.float().cpu())
    return torch.cat(out)


def _clean(model, segments, segment, states, logits, batch_size):
    if states is not None:
        written = torch.as_tensor(np.asarray(states)[:, segment + 1], dtype=torch.float32)  # (K, m, d)
    else:
        written = memory_after(model, segments, segment, batch_size)
    if logits is not None:
        clean = torch.as_tensor(np.asarray(logits), dtype=torch.float32)
    else:
        clean = final_logits(model, segments, batch_size)
    return written, clean


@small_model_threaded
def ablate(model, input_ids, answers, segment: int, slot, mode: str, *, states=None, clean_logits=None,
           batch_size: int | None = None) -> dict:
    """Replace slot(s) of the memory written by `segment` and measure the change in the answer.

    input_ids: (K, N*S) or (K, N, S); answers: (K,) right labels. mode: 'mean' (the slot's mean over these K
    samples at that segment), 'zeros', or 'initial' (the model's initial memory of that slot).
    Returns {segment, slot, mode, accuracy, clean_accuracy, accuracy_drop, logit_change, samples}; logit_change
    is the mean change of the right answer's logit.
    """
    if mode not in MODES:
        raise ProbeError(f"unknown ablation mode {mode!r}; choose from {', '.join(MODES)}")
    segments = as_segments(model, input_ids)
    _check_segment(segment, segments.shape[1])
    answers = torch.as_tensor(np.asarray(answers), dtype=torch.long)
    slots = slot_indices(slot, model.num_mem_tokens)
    written, clean = _clean(model, segments, segment, states, clean_logits, batch_size)
    changed = written.clone()
    if mode == "mean":
        changed[:, slots] = written[:, slots].mean(dim=0)
    elif mode == "zeros":
        changed[:, slots] = 0.0
    else:
        changed[:, slots] = model.initial_memory(1)[0, slots].detach().float().cpu()
    logits = continue_from(model, changed, segments, segment, batch_size)
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

    input_a, input_b: (P, N*S) or (P, N, S), pair i = (A_i, B_i) with different answers; answers_*: (P,).
    Returns {segment, slots, iia, logit_effect, b_prediction_rate, pairs}:
      iia: fraction of pairs whose patched answer is B's answer (interchange intervention accuracy);
      logit_effect: normalised logit effect, with LD = logit[answer_B] - logit[answer_A],
        mean(LD_patched - LD_A) / mean(LD_B - LD_A) (1: as if run on B, 0: no effect; None if the
        denominator is 0);
      b_prediction_rate: fraction whose patched prediction equals the model's clean prediction on B.
    """
    segments_a, segments_b = as_segments(model, input_a), as_segments(model, input_b)
    if segments_a.shape != segments_b.shape:
        raise ProbeError(f"patching needs inputs of one shape, got {tuple(segments_a.shape)} and {tuple(segments_b.shape)}")
    _check_segment(segment, segments_a.shape[1])
    answers_a = torch.as_tensor(np.asarray(answers_a), dtype=torch.long)
    answers_b = torch.as_tensor(np.asarray(answers_b), dtype=torch.long)
    slots = slot_indices(slot, model.num_mem_tokens)
    written_a, clean_a = _clean(model, segments_a, segment, states_a, logits_a, batch_size)
    written_b, clean_b = _clean(model, segments_b, segment, states_b, logits_b, batch_size)
    changed = written_a.clone()
    changed[:, slots] = written_b[:, slots]
    logits = continue_from(model, changed, segments_a, segment, batch_size)
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
