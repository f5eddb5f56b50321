"""Replay: run one input through an RMT segment by segment, with the one recurrence (rmt_core.recurrence), and record
what each segment read, wrote and attended to (SPEC section 5).

    replay(model, sample, out="traces/x")      -> Trace           written to disk as it goes, atomically
    replay_in_memory(model, sample)            -> InMemoryTrace   the same recording, kept in memory

Both run one recorder; only where it puts the arrays differs (a `TraceWriter` or a `MemorySink`). A
`RecordingPolicy` decides what is kept, so a replay of thousands of segments fits on a disk: memory states
for every segment (small), read/write attention for every segment while under a byte budget and afterwards
only for chosen segments (listed ones, the first and last few, the fact segments, optionally every k-th).
"""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from rmt_core.checkpoint import model_identity
from rmt_core.errors import ReplayError
from rmt_core.inputs import ModelInput, SegmentBatch, as_input
from rmt_core.model import RMT
from rmt_core.recurrence import run
from rmt_core.trace import (
    FORMAT,
    FORMAT_VERSION,
    InMemoryTrace,
    MemorySink,
    Trace,
    TraceWriter,
)

__all__ = ["RecordingPolicy", "replay", "replay_in_memory", "Trace", "InMemoryTrace", "ReplayError"]

_ATTENTION_DTYPES = {"float16": torch.float16, "float32": torch.float32}  # what .npy files hold
_MEMORY_DTYPES = {"float16": torch.float16, "float32": torch.float32}


@dataclass
class RecordingPolicy:
    """What a replay keeps. Memory states are always kept for every segment.

    attention_budget_mib: read + write attention of every segment is kept while the total stays under this
        budget; beyond it, only the chosen segments below (which are kept whatever the budget).
    attention_segments: segments whose read/write attention is always kept (negative counts from the end).
    edge_segments: the first and the last this many segments are always kept.
    fact_segments: keep the segments where a sample's facts land.
    sample_every: beyond the budget, also keep every k-th segment (0: none).
    full_attention_segments: segments whose full attention [L, H, T, T] is kept too (read/write as well).
    segment_logits: keep the answer head's logits at every segment ([N, C] floats; cheap).
    attention_dtype: stored attention probabilities (float16 halves the disk of float32).
    memory_dtype: stored memory states.
    """

    attention_budget_mib: float = 512.0
    attention_segments: list[int] = field(default_factory=list)
    edge_segments: int = 2
    fact_segments: bool = True
    sample_every: int = 0
    full_attention_segments: list[int] = field(default_factory=list)
    segment_logits: bool = True
    attention_dtype: str = "float16"
    memory_dtype: str = "float32"

    def check(self) -> None:
        if not isinstance(self.attention_budget_mib, (int, float)) or self.attention_budget_mib < 0:
            raise ReplayError(f"attention budget must be 0 MiB or more, got {self.attention_budget_mib!r}")
        for name in ("edge_segments", "sample_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ReplayError(f"{name} must be an integer >= 0, got {value!r}")
        if self.attention_dtype not in _ATTENTION_DTYPES:
            raise ReplayError(f"attention dtype {self.attention_dtype!r} is not one of {', '.join(_ATTENTION_DTYPES)}")
        if self.memory_dtype not in _MEMORY_DTYPES:
            raise ReplayError(f"memory dtype {self.memory_dtype!r} is not one of {', '.join(_MEMORY_DTYPES)}")

    def plan(self, n_segments: int, bytes_per_segment: int, fact_segments=()) -> tuple[list[int], list[int]]:
        """(segments with read/write attention, segments with full attention), sorted, for an input of
        n_segments whose read + write attention takes bytes_per_segment a segment."""
        self.check()
        n = n_segments
        full = sorted(_resolve(self.full_attention_segments, n, "full attention segment"))
        chosen = set(_resolve(self.attention_segments, n, "attention segment")) | set(full)
        chosen |= set(range(min(self.edge_segments, n))) | set(range(max(n - self.edge_segments, 0), n))
        if self.fact_segments:
            chosen |= {int(s) for s in fact_segments if 0 <= int(s) < n}
        budget = int(self.attention_budget_mib * 2**20)
        if n * bytes_per_segment <= budget:
            return list(range(n)), full
        left = budget - len(chosen) * bytes_per_segment
        for t in range(n):  # every segment from the start while the budget lasts
            if t in chosen:
                continue
            if left < bytes_per_segment:
                break
            chosen.add(t)
            left -= bytes_per_segment
        if self.sample_every:
            chosen |= set(range(0, n, self.sample_every))
        return sorted(chosen), full


def _resolve(segments, n: int, what: str) -> list[int]:
    out = []
    for t in segments or ():
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            raise ReplayError(f"{what} {t!r} is not an integer segment index")
        if not -n <= t < n:
            raise ReplayError(f"{what} {t} is out of range for an input of {n} segments (0..{n - 1})")
        out.append(int(t) % n)
    return out


# ----- inputs ------------------------------------------------------------------------------------------------
def _prepare(model: RMT, sample, segments, roles, metadata) -> ModelInput:
    """The input as a ModelInput, checked against the model."""
    size = model.config.segment_size
    if sample is not None:
        if segments is not None:
            raise ReplayError("give a sample or segments, not both")
        if not isinstance(sample, ModelInput) and sample.segment_size != size:
            raise ReplayError(f"the sample has segments of {sample.segment_size} tokens but the checkpoint was built "
                              f"for {size}; build the sample with segment_size={size}")
        item = as_input(sample)
    elif segments is None:
        raise ReplayError("nothing to replay: give a sample or segments")
    else:
        item = as_input(segments, roles)
    if metadata:
        item = dataclasses.replace(item, metadata={**item.metadata, **metadata})
    if getattr(model.config, "max_segments", None):  # an imported checkpoint of the paper's code: its truncation
        item = item.first(model.config.max_segments)
    return item.check(size, model.backbone.get_input_embeddings().num_embeddings)


# ----- the recorder --------------------------------------------------------------------------------------------
def _manifest(model: RMT, item: ModelInput, policy: RecordingPolicy, attention: list[int], full: list[int],
              identity: dict) -> dict:
    n, m = len(item.segments), model.num_mem_tokens
    T, d = model.config.input_size, model.hidden_size
    L = model.backbone.config.num_hidden_layers
    H = model.backbone.config.num_attention_heads
    C = len(model.config.labels)
    adt = policy.attention_dtype
    decoder = _is_decoder(model)

    def spec(file, shape, dtype):
        return {"file": file, "shape": list(shape), "dtype": dtype}

    K, F = len(attention), len(full)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION if decoder else 1,  # version 2: the decoder layout
        "checkpoint": identity,
        "model": {
            "task": model.config.task, "labels": list(model.config.labels), "num_mem_tokens": m,
            "segment_size": model.config.segment_size, "input_size": T, "hidden_size": d, "num_layers": L,
            "num_heads": H, "num_classes": C, "backbone": model.backbone.config.model_type,
            "architecture": "decoder" if decoder else "encoder",
        },
        "n_segments": n,
        "n_tokens": sum(len(s) for s in item.segments),
        "layout": model.layout.describe(),
        "metadata": item.metadata,
        "answer": item.answer,
        "policy": asdict(policy),
        "recorded": {
            "memory": True,
            "segment_logits": bool(policy.segment_logits) and not decoder,
            "attention_segments": attention,
            "full_attention_segments": full,
        },
        "arrays": {
            "token_ids": spec("token_ids.npy", (n, T), "int32"),
            "roles": spec("roles.npy", (n, T), "int8"),
            "memory": spec("memory.npy", (n + 1, m, d), policy.memory_dtype),
            "segment_logits": spec("segment_logits.npy", (n, C), "float32")
            if policy.segment_logits and not decoder else None,
            "final_logits": spec("final_logits.npy", (C,), "float32"),
            "read_attention": spec("read_attention.npy", (K, L, H, T, m), adt),
            "write_attention": spec("write_attention.npy", (K, L, H, m, T), adt),
            "full_attention": spec("full_attention.npy", (F, L, H, T, T), adt),
        },
        "replayed_on": {"device": model.device.type, "torch": torch.__version__,
                        "python": platform.python_version()},
    }


def _record(model: RMT, item: ModelInput, sink, policy: RecordingPolicy, checkpoint_dir, progress: bool):
    """Run the replay into `sink` (TraceWriter or MemorySink) and return what its finish() returns."""
    n, m = item.n_segments, model.num_mem_tokens
    T = model.config.input_size
    L = model.backbone.config.num_hidden_layers
    H = model.backbone.config.num_attention_heads
    adt = _ATTENTION_DTYPES[policy.attention_dtype]
    mdt = _MEMORY_DTYPES[policy.memory_dtype]
    itemsize = torch.tensor([], dtype=adt).element_size()
    attention, full = policy.plan(n, 2 * L * H * T * m * itemsize, item.fact_segments)
    full_set = set(full)
    manifest = _manifest(model, item, policy, attention, full, model_identity(model, checkpoint_dir))
    layout = model.layout
    read, write = layout.read_positions, layout.write_positions
    decoder = _is_decoder(model)
    used_ids: set[int] = {getattr(model, name) for name in ("cls_id", "sep_id", "pad_id") if hasattr(model, name)}
    last_memory = {}

    def record(step) -> None:  # one segment into the sink
        t = step.t
        tokens = item.segments[t]
        used_ids.update(tokens)
        arrays = {"read": None, "write": None, "full": None}
        if step.attentions is not None:
            att = torch.stack([a[0] for a in step.attentions]).to(adt)  # (L, H, T, T)
            arrays["read"] = att[:, :, :, read].to("cpu").numpy()  # (L, H, T, m)
            arrays["write"] = att[:, :, write, :].to("cpu").numpy()  # (L, H, m, T)
            if t in full_set:
                arrays["full"] = att.to("cpu").numpy()  # (L, H, T, T)
        token_row, role_row = layout.build_numpy(tokens, item.roles[t])
        logits = step.logits[0].float().to("cpu").numpy() if policy.segment_logits and not decoder else None
        last_memory["in"] = step.memory_in
        sink.segment(t, token_row, role_row, step.memory_out[0].to("cpu", mdt).numpy(), logits, arrays)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            sink.begin(manifest, model.initial_memory(1)[0].to("cpu", mdt).numpy())
            batch = SegmentBatch.from_inputs([item], model.pad_id)
            if decoder:
                with model.lean():  # the segments' language-model logits are not recorded
                    run(model, batch, attention=set(attention), on_segment=record, progress=progress)
                final_logits, generated = _decoder_answer(model, item, last_memory["in"])
                used_ids.update(generated["ids"])
                manifest.update(generated_answer=generated["text"], generated_ids=generated["ids"],
                                label_token_ids=generated["label_ids"])
            else:
                out = run(model, batch, attention=set(attention), on_segment=record, progress=progress)
                final_logits = out.logits[0].float().to("cpu").numpy()
    finally:
        model.train(was_training)
    manifest["prediction"] = int(np.argmax(final_logits))
    manifest["final_logits"] = [float(v) for v in final_logits]  # readable copy of final_logits.npy
    tokenizer = model.tokenizer
    ids = sorted(used_ids)
    strings = tokenizer.convert_ids_to_tokens(ids) if tokenizer is not None else [f"[id{i}]" for i in ids]
    return sink.finish(manifest, final_logits, dict(zip(ids, strings, strict=True)))


def _is_decoder(model) -> bool:
    return getattr(model.config, "architecture", "encoder") == "decoder"


def _decoder_answer(model, item: ModelInput, memory: torch.Tensor) -> tuple[np.ndarray, dict]:
    """A decoder's answer to a replayed input: greedy generation from [memory, last segment] (the memory the
    last segment read), and as `final_logits` the first generated token's logits at each label's first token."""
    tokens = torch.tensor([item.segments[-1]], device=model.device)
    generation = model.generate_from(memory, tokens, None, model.config.max_new_tokens)
    label_ids = model.label_token_ids()
    scores = generation.scores[0, label_ids].float().to("cpu").numpy()
    length = int(generation.lengths[0])
    ids = [int(i) for i in generation.tokens[0, :length + 1 if length < generation.tokens.shape[1] else length]]
    return scores, {"text": model.answers(generation)[0], "ids": ids, "label_ids": label_ids}


# ----- public entry points ------------------------------------------------------------------------------------
def replay(model: RMT, sample=None, *, segments=None, roles=None, out: str | Path,
           policy: RecordingPolicy | None = None, metadata: dict | None = None, progress: bool = True,
           checkpoint_dir=None) -> Trace:
    """Replay `sample` (a tasks.Sample) or `segments` (lists of token ids, or a segmenting.Segmented, with
    per-token `roles`) through `model` on its device, writing a trace folder at `out` as it goes.

    The folder appears under `out` only when complete; on any error (TraceError for disk faults, ReplayError
    for bad input) or interruption nothing is left there. Returns the finished trace, opened.
    """
    policy = policy or RecordingPolicy()
    if sample is not None and not hasattr(sample, "n_segments"):  # segments given positionally
        sample, segments = None, sample
    item = _prepare(model, sample, segments, roles, metadata)
    policy.plan(item.n_segments, 0, item.fact_segments)  # bad policy fails before any file is made
    writer = TraceWriter(out)
    try:
        return _record(model, item, writer, policy, checkpoint_dir, progress)
    except BaseException:
        writer.abort()
        raise


def replay_in_memory(model: RMT, sample_or_segments, policy: RecordingPolicy | None = None, *, roles=None,
                     metadata: dict | None = None, progress: bool = False, checkpoint_dir=None) -> InMemoryTrace:
    """The same replay as `replay`, kept in memory: for short inputs (the dashboard). `sample_or_segments` is a
    tasks.Sample, a segmenting.Segmented, or a list of token-id lists (with `roles`, else all noise)."""
    policy = policy or RecordingPolicy()
    if isinstance(sample_or_segments, ModelInput) or hasattr(sample_or_segments, "facts"):
        item = _prepare(model, sample_or_segments, None, None, metadata)
    else:
        item = _prepare(model, None, sample_or_segments, roles, metadata)
    return _record(model, item, MemorySink(), policy, checkpoint_dir, progress)
