"""Memory states of many samples, collected batched with `segment_step` (no traces on disk).

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
from rmt_core.model import ROLE_FACT


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


def as_segments(model, input_ids) -> torch.Tensor:
    """(K, N, S) token ids from (K, N*S) flat ids (S = model.config.segment_size) or (K, N, S)."""
    input_ids = torch.as_tensor(input_ids, dtype=torch.long)
    if input_ids.dim() == 3:
        return input_ids
    if input_ids.dim() != 2:
        raise ProbeError(f"token ids must be (samples, tokens) or (samples, segments, size), got {tuple(input_ids.shape)}")
    size = model.config.segment_size
    if input_ids.shape[1] % size:
        raise ProbeError(f"{input_ids.shape[1]} tokens per sample is not a multiple of the segment size {size}; "
                         "build samples with the model's segment size")
    return input_ids.view(input_ids.shape[0], -1, size)


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


def recording(model):
    """The model's eager-attention context when it has one (RMT), else nothing."""
    return model.recording() if hasattr(model, "recording") else contextlib.nullcontext()


@torch.no_grad()
def run_segments(model, memory: torch.Tensor, segments: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Continue a replay: segments[:, start:] from `memory` (B, m, d). segments: (B, N, S) on the model's device.

    Returns (logits (B, C) of the last segment, memory (B, m, d) after it). With start == N nothing runs and
    logits is None.
    """
    logits = None
    for t in range(start, segments.shape[1]):
        step = model.segment_step(memory, segments[:, t])
        memory, logits = step.memory_out, step.logits
    return logits, memory


@small_model_threaded
@torch.no_grad()
def collect(model, input_ids, roles=None, batch_size: int | None = None, attention_batch: int | None = None,
            on_step=None) -> Collected:
    """Memory states of every sample after every segment, final logits, and attention read-outs.

    input_ids: (K, N*S) or (K, N, S). roles: same shape, token roles (rmt_core.tasks ROLE_*), or None for no
    attention read-outs; with roles, attention is computed only for the rows of a step that need it (a fact
    lands in that segment, or it is the last one), `attention_batch` rows at a time, under `model.recording()`.
    batch_size, attention_batch: None picks them from the model's size. on_step(): called after each batch x segment.
    """
    batch_size = batch_size or auto_batch_size(model)
    attention_batch = attention_batch or auto_attention_batch(model)
    segments = as_segments(model, input_ids)  # (K, N, S)
    K, N, S = segments.shape
    role_segments = as_segments(model, roles) if roles is not None else None
    device = model_device(model)
    m = model.num_mem_tokens
    states, logits = None, None
    out = Collected(states=np.zeros(0), logits=np.zeros(0))
    for first in range(0, K, batch_size):
        rows = slice(first, min(K, first + batch_size))
        batch = segments[rows].to(device)  # (B, N, S)
        B = batch.shape[0]
        memory = model.initial_memory(B)  # (B, m, d)
        if states is None:
            states = np.zeros((K, N + 1, m, memory.shape[-1]), dtype=np.float32)
        states[rows, 0] = memory.float().cpu().numpy()
        for t in range(N):
            want = np.zeros(B, dtype=bool)
            if role_segments is not None:
                token_roles = role_segments[rows, t]  # (B, S)
                has_fact = (token_roles == ROLE_FACT).any(dim=1).numpy()
                want = has_fact | (t == N - 1)
            step_memory = torch.empty_like(memory)
            step_logits = None
            plain = np.flatnonzero(~want)
            if plain.size:
                index = torch.as_tensor(plain, device=device)
                step = model.segment_step(memory[index], batch[index, t])
                step_memory[index] = step.memory_out.to(step_memory.dtype)
                step_logits = torch.empty((B, step.logits.shape[-1]), dtype=step.logits.dtype, device=device)
                step_logits[index] = step.logits
            for start in range(0, int(want.sum()), attention_batch):
                chosen = np.flatnonzero(want)[start:start + attention_batch]
                index = torch.as_tensor(chosen, device=device)
                with recording(model):
                    step = model.segment_step(memory[index], batch[index, t], output_attentions=True)
                step_memory[index] = step.memory_out.to(step_memory.dtype)
                if step_logits is None:
                    step_logits = torch.empty((B, step.logits.shape[-1]), dtype=step.logits.dtype, device=device)
                step_logits[index] = step.logits
                if step.attentions is None:
                    raise ProbeError("the model returned no attention; attention read-outs need output_attentions support")
                write, read, counts = segment_readouts(step.attentions, role_segments[rows, t][chosen], m)
                facts_here = has_fact[chosen]
                out.write.add(write[facts_here], counts[facts_here])
                if t == N - 1:
                    out.read.add(read, counts)
            memory = step_memory
            states[rows, t + 1] = memory.float().cpu().numpy()
            if t == N - 1:
                batch_logits = step_logits.float().cpu().numpy()
                if logits is None:
                    logits = np.zeros((K, batch_logits.shape[-1]), dtype=np.float32)
                logits[rows] = batch_logits
            if on_step is not None:
                on_step()
    out.states, out.logits = states, logits
    return out
