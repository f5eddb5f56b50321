"""Memory states of many samples, collected batched through the one recurrence (no traces on disk).

The model may be an `rmt_core.model.RMT` or any object with `segment_step(memory, tokens, mask=None,
output_attentions=False)` returning `.memory_out (B, m, d)`, `.logits (B, C)` and `.attentions`,
`initial_memory(B)`, `num_mem_tokens` and `config.segment_size` (tests use small hand-built ones).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from probes.attention import ReadoutSum, segment_readouts
from rmt_core.errors import ProbeError
from rmt_core.inputs import SegmentBatch, batch_of
from rmt_core.layout import ROLE_FACT
from rmt_core.recurrence import run


@dataclass
class Collected:
    """What one pass over K samples of N segments gives."""

    states: np.ndarray  # (K, N+1, m, d) float32: [:, 0] initial memory, [:, t+1] memory written by segment t
    logits: np.ndarray  # (K, C) float32: the answer head at the last segment
    write: ReadoutSum = field(default_factory=ReadoutSum)  # write read-outs in the segments where facts land
    read: ReadoutSum = field(default_factory=ReadoutSum)  # [CLS] read read-outs in the last segment


def model_device(model) -> torch.device:
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else torch.device("cpu")


def input_size(model) -> int:
    """Positions of one segment step: the model's input_size, or segment size + memory + 3."""
    config = model.config
    return int(getattr(config, "input_size", config.segment_size + model.num_mem_tokens + 3))


def auto_batch_size(model, token_budget: int = 16384) -> int:
    """Samples a segment step takes at once: about `token_budget` positions (16 for 512-position segments)."""
    return max(1, token_budget // input_size(model))


def auto_attention_batch(model, byte_budget: int = 256 * 2**20) -> int:
    """Rows a step with attention probabilities takes at once: L x H x T x T floats each, within byte_budget."""
    backbone = getattr(getattr(model, "backbone", None), "config", None)
    layers = getattr(backbone, "num_hidden_layers", 1)
    heads = getattr(backbone, "num_attention_heads", 1)
    T = input_size(model)
    return max(1, byte_budget // (4 * layers * heads * T * T))


@contextlib.contextmanager
def small_model_threads(model, max_hidden: int = 64):
    """One torch thread for small models: their ops are too small for threads to pay, and on shared cores
    spinning threads make each op cost milliseconds. Larger models keep the current setting."""
    hidden = getattr(model, "hidden_size", None)
    if not isinstance(hidden, int) or hidden > max_hidden or torch.get_num_threads() == 1:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def small_model_threaded(function):
    """Decorator: run `function(model, ...)` inside small_model_threads(model)."""

    @functools.wraps(function)
    def wrapper(model, *args, **kwargs):
        with small_model_threads(model):
            return function(model, *args, **kwargs)

    return wrapper


@small_model_threaded
@torch.no_grad()
def collect(model, input_ids, roles=None, batch_size: int | None = None, attention_batch: int | None = None,
            on_step=None) -> Collected:
    """Memory states of every sample after every segment, final logits, and attention read-outs.

    input_ids: (K, N*S) or (K, N, S) ids, or K ModelInputs of one number of segments (free text too).
    roles: same shape as ids, token roles (rmt_core.layout ROLE_*), or None for no attention read-outs (with
    ModelInputs, their own roles are used when roles is True). With roles, attention is computed at the
    segments where a fact lands in some row and at the last one, for batches of at most `attention_batch` rows.
    batch_size, attention_batch: None picks them from the model's size. on_step(): called after each batch x segment.
    """
    batch = batch_of(model, input_ids)
    if roles is not None and roles is not True:
        batch = SegmentBatch.from_ids(torch.as_tensor(input_ids), model.config.segment_size,
                                      roles=torch.as_tensor(roles))
    with_roles = roles is not None
    size = batch_size or auto_batch_size(model)
    if with_roles:
        size = min(size, attention_batch or auto_attention_batch(model))
    K, N, m = batch.batch_size, batch.n_segments, model.num_mem_tokens
    states, logits = None, None
    out = Collected(states=np.zeros(0), logits=np.zeros(0))
    for first in range(0, K, size):
        rows = batch.rows(slice(first, first + size))
        fact_rows = [(rows.roles(t) == ROLE_FACT).any(dim=1).numpy() for t in range(N)] if with_roles else None
        initial = model.initial_memory(rows.batch_size)  # (B, m, d)
        if states is None:
            states = np.zeros((K, N + 1, m, initial.shape[-1]), dtype=np.float32)
        states[first:first + rows.batch_size, 0] = initial.float().cpu().numpy()

        def segment_done(step, first=first, rows=rows, fact_rows=fact_rows):
            t = step.t
            states[first:first + rows.batch_size, t + 1] = step.memory_out.float().cpu().numpy()
            if with_roles and wants(t):
                if step.attentions is None:
                    raise ProbeError("the model returned no attention; attention read-outs need output_attentions support")
                write, read, counts = segment_readouts(step.attentions, rows.roles(t), model.layout)
                out.write.add(write[fact_rows[t]], counts[fact_rows[t]])
                if t == N - 1:
                    out.read.add(read, counts)
            if on_step is not None:
                on_step()

        wants = (lambda t: bool(fact_rows[t].any()) or t == N - 1) if with_roles else None
        result = run(model, rows, attention=wants, on_segment=segment_done)
        batch_logits = result.logits.float().cpu().numpy()
        if logits is None:
            logits = np.zeros((K, batch_logits.shape[-1]), dtype=np.float32)
        logits[first:first + rows.batch_size] = batch_logits
    out.states, out.logits = states, logits
    return out


def trace_folders(path) -> list:
    """The trace folders under `path`: `path` itself when it is one (it holds manifest.json), else its
    subfolders that are, sorted by name. ProbeError when there are none."""
    from pathlib import Path

    path = Path(path)
    if (path / "manifest.json").is_file():
        return [path]
    if not path.is_dir():
        raise ProbeError(f"{path} is not a folder; pass --traces with a trace folder of rmt replay or a folder of them")
    found = sorted(p for p in path.iterdir() if (p / "manifest.json").is_file())
    if not found:
        raise ProbeError(f"{path} holds no traces (folders with manifest.json); record some with rmt replay --out")
    return found


def from_traces(path) -> tuple[list, Collected, list[dict]]:
    """Task samples, memory states and final logits recorded in the traces under `path` (rmt replay).

    Returns (samples, Collected(states (K, N+1, m, d), logits (K, C)), checkpoint identities). All traces must
    be task samples (free text has no answer to probe) of one task and one number of segments.
    """
    from rmt_core.trace import Trace

    traces = [Trace.open(folder) for folder in trace_folders(path)]
    samples, states, logits = [], [], []
    for trace in traces:
        sample = trace.sample()
        if sample is None:
            raise ProbeError(f"{trace.path} is a free-text replay; probes need task samples (rmt replay --task ...)")
        samples.append(sample)
        states.append(np.asarray(trace.memory_states(), dtype=np.float32))
        logits.append(np.asarray(trace.final_logits, dtype=np.float32))
    kinds = {(s.task, s.n_segments, s.segment_size) for s in samples}
    if len(kinds) > 1:
        raise ProbeError("the traces mix tasks or lengths (" + ", ".join(f"{t} x{n}" for t, n, _ in sorted(kinds))
                         + "); put traces of one task and one number of segments in the folder")
    return samples, Collected(states=np.stack(states), logits=np.stack(logits)), [t.manifest["checkpoint"] for t in traces]
