"""One input type for everything that runs through an RMT: a task sample or a free text with its question.

    ModelInput       one input, cut into segments: token ids and roles per segment (the last may be short),
                     the answer when known, the segments where facts land, and metadata for traces.
    make_input(...)  the one place that decides "text + question" or "task sample" and encodes it.
    SegmentBatch     one or more inputs of the same number of segments as tensors, one (B, n_t) block a
                     segment with a mask where rows are ragged: what the recurrence (rmt_core.recurrence) runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from rmt_core.errors import ReplayError
from rmt_core.layout import INPUT_ROLES, ROLE_NOISE


@dataclass
class ModelInput:
    """One input as segments. segments[t]: the token ids of segment t (no special tokens); roles[t]: their roles."""

    segments: list[list[int]]
    roles: list[list[int]]
    answer: int | None = None
    fact_segments: list[int] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    sample: object | None = None  # the tasks.Sample it came from, if any

    @property
    def n_segments(self) -> int:
        return len(self.segments)

    @property
    def n_tokens(self) -> int:
        return sum(len(s) for s in self.segments)

    @classmethod
    def from_sample(cls, sample) -> "ModelInput":
        """A tasks.Sample: full segments of sample.segment_size tokens, its answer, facts and metadata."""
        size = sample.segment_size
        roles = [sample.roles[t * size:(t + 1) * size] for t in range(sample.n_segments)]
        light = dataclasses.replace(sample, input_ids=[], roles=[])  # to_json without copying every token id
        meta = {"kind": "task", **{k: v for k, v in light.to_json().items() if k not in ("input_ids", "roles")}}
        segments = sample.segments()
        answer_span = getattr(sample, "answer_span", None)
        if answer_span is not None:  # a generative sample: the model reads up to the question, then answers
            end = answer_span[0]
            segments = [sample.input_ids[t:min(t + size, end)] for t in range(0, end, size)]
            roles = [sample.roles[t:min(t + size, end)] for t in range(0, end, size)]
        return cls(segments, roles, int(sample.answer), [int(f.segment) for f in sample.facts], meta, sample)

    @classmethod
    def from_text(cls, tokenizer, text, question, segment_size: int, metadata: dict | None = None,
                  segmenting: str = "lens", max_segments: int | None = None) -> "ModelInput":
        """Free text ending with a question, cut as `segmenting.segments_from_text` cuts it."""
        from rmt_core.segmenting import segments_from_text

        cut = segments_from_text(tokenizer, text, question, segment_size, segmenting, max_segments)
        meta = {"kind": "text", "question": question if isinstance(question, str) else None,
                "n_tokens": cut.n_tokens, **(metadata or {})}
        return cls(cut.segments, cut.roles, None, [], meta)

    @classmethod
    def from_segments(cls, segments, roles=None, metadata: dict | None = None) -> "ModelInput":
        """Token-id lists (or a segmenting.Segmented), with per-token roles (default: all noise)."""
        if hasattr(segments, "segments") and hasattr(segments, "roles"):
            segments, roles = segments.segments, (segments.roles if roles is None else roles)
        segments = [list(map(int, s)) for s in segments]
        roles = [[ROLE_NOISE] * len(s) for s in segments] if roles is None else [list(map(int, r)) for r in roles]
        return cls(segments, roles, None, [], {"kind": "segments", **(metadata or {})})

    def first(self, n: int) -> "ModelInput":
        """The input's first n segments (itself when it has no more): the paper's code truncates long inputs."""
        if self.n_segments <= n:
            return self
        kept = set(range(n))
        metadata = {**self.metadata, "truncated_from_segments": self.n_segments}
        return dataclasses.replace(self, segments=self.segments[:n], roles=self.roles[:n],
                                   fact_segments=[t for t in self.fact_segments if t in kept], metadata=metadata)

    def check(self, segment_size: int, vocab_size: int) -> "ModelInput":
        """ReplayError naming the first problem for this model (segment size, vocabulary), else self."""
        if not self.segments:
            raise ReplayError("the input has no segments; give some text or a sample with 1 or more segments")
        if len(self.roles) != len(self.segments):
            raise ReplayError(f"roles cover {len(self.roles)} segments but the input has {len(self.segments)}")
        for t, (seg, role) in enumerate(zip(self.segments, self.roles, strict=True)):
            if not seg:
                raise ReplayError(f"segment {t} is empty; every segment needs at least one token")
            if len(seg) > segment_size:
                raise ReplayError(f"segment {t} has {len(seg)} tokens, more than the checkpoint's segment size "
                                  f"{segment_size}; cut the input with rmt_core.segmenting.segments_from_text")
            if len(role) != len(seg):
                raise ReplayError(f"segment {t} has {len(seg)} tokens but {len(role)} roles")
            low, high = min(seg), max(seg)
            if low < 0 or high >= vocab_size:
                raise ReplayError(f"segment {t} holds token id {low if low < 0 else high}, outside the model's "
                                  f"vocabulary of {vocab_size}; tokenize with the checkpoint's tokenizer")
            if any(r not in INPUT_ROLES for r in role):
                raise ReplayError(f"segment {t} has a role outside noise/fact/question (0, 1, 2)")
        return self


def as_input(value, roles=None, metadata: dict | None = None) -> ModelInput:
    """A ModelInput from a ModelInput, a tasks.Sample, a segmenting.Segmented or token-id lists."""
    if isinstance(value, ModelInput):
        return value
    if hasattr(value, "n_segments") and hasattr(value, "segment_size") and hasattr(value, "facts"):
        return ModelInput.from_sample(value)
    return ModelInput.from_segments(value, roles, metadata)


def make_input(model, *, task: str | None = None, n_segments: int | None = None, seed: int = 0,
               text=None, question=None, babi_file=None, babi_dir=None, noise_file=None,
               split: str = "train", metadata: dict | None = None) -> ModelInput:
    """The input a user asked for: `text` and `question` (free text), else a sample of `task` (default: the
    model's) with `n_segments` segments and `seed`, built with the model's tokenizer and segment size."""
    from rmt_core.segmenting import segmenting_of

    size = model.config.segment_size
    segmenting, max_segments = segmenting_of(model.config)
    if text is not None:
        if task is not None or n_segments is not None:
            raise ReplayError("give either a task sample (task, segments, seed) or a text and a question, not both")
        if question is None:
            raise ReplayError("a text needs a question, the question that ends the input")
        return ModelInput.from_text(model.tokenizer, text, question, size, metadata, segmenting, max_segments)
    if question is not None:
        raise ReplayError("a question goes with a text; a task sample brings its own question")
    if n_segments is None:
        raise ReplayError("give a number of segments (with a task and a seed) or a text and a question")
    from rmt_core.babilong import check_task, make_builder

    check_task(task or model.config.task, getattr(model.config, "architecture", "encoder"))
    builder = make_builder(task or model.config.task, model.tokenizer, size, babi_file=babi_file, babi_dir=babi_dir,
                           noise_file=noise_file, split=split)
    item = ModelInput.from_sample(builder.sample(n_segments, seed))
    return item.first(max_segments) if max_segments else item  # task samples are whole segments: only truncation


class SegmentBatch:
    """B inputs of N segments for the recurrence. Segment t is a (B, n_t) block of ids with a (B, n_t) mask
    (None when every row fills it); blocks move to the model's device only when the loop reaches them, so a
    long input costs its int32 ids on the host and one segment on the device.

    Build one with `from_ids` (a rectangular (B, N, S) or (B, N*S) id array: task batches) or `from_inputs`
    (ModelInputs, ragged segments padded with masks).
    """

    def __init__(self, blocks: list, masks: list | None = None, roles: list | None = None):
        self._blocks = blocks  # N x (B, n_t) numpy or torch
        self._masks = masks if masks is not None else [None] * len(blocks)
        self._roles = roles  # N x (B, n_t) or None
        if not blocks:
            raise ReplayError("the input has no segments")

    @property
    def n_segments(self) -> int:
        return len(self._blocks)

    @property
    def batch_size(self) -> int:
        return int(self._blocks[0].shape[0])

    def segment(self, t: int, device=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(ids (B, n_t) long, mask (B, n_t) long or None) of segment t, on `device`."""
        ids = torch.as_tensor(np.ascontiguousarray(self._blocks[t]) if isinstance(self._blocks[t], np.ndarray)
                              else self._blocks[t])
        mask = self._masks[t]
        ids = ids.to(device=device, dtype=torch.long)
        if mask is not None:
            mask = torch.as_tensor(mask).to(device=device, dtype=torch.long)
        return ids, mask

    def roles(self, t: int) -> torch.Tensor | None:
        """Roles (B, n_t) of segment t's tokens, when known."""
        return None if self._roles is None else torch.as_tensor(np.asarray(self._roles[t]), dtype=torch.long)

    def first(self, n: int) -> "SegmentBatch":
        """The batch of the first n segments (itself when it has no more)."""
        if self.n_segments <= n:
            return self
        return SegmentBatch(self._blocks[:n], self._masks[:n], None if self._roles is None else self._roles[:n])

    def rows(self, index) -> "SegmentBatch":
        """The batch of the rows `index` (a slice or an index array)."""
        pick = (lambda a: None if a is None else a[index])
        return SegmentBatch([b[index] for b in self._blocks], [pick(m) for m in self._masks],
                            None if self._roles is None else [r[index] for r in self._roles])

    @classmethod
    def from_ids(cls, ids, segment_size: int, roles=None, masks=None) -> "SegmentBatch":
        """(B, N, S) or (B, N*S) ids (numpy or torch), with optional roles and masks (1: real token) of the
        same shape; without masks every row fills every segment."""
        def split(array):
            if array is None:
                return None
            if array.ndim == 3:
                return [array[:, t] for t in range(array.shape[1])]
            if array.ndim != 2 or array.shape[1] % segment_size:
                raise ReplayError(f"ids of shape {tuple(array.shape)} are not whole segments of {segment_size} tokens; "
                                  "build samples with the model's segment size")
            return [array[:, t * segment_size:(t + 1) * segment_size] for t in range(array.shape[1] // segment_size)]

        return cls(split(ids), split(masks), split(roles))

    @classmethod
    def from_inputs(cls, inputs, pad_id: int = 0) -> "SegmentBatch":
        """ModelInputs (or anything `as_input` takes) of one number of segments; short segments are padded."""
        inputs = [as_input(x) for x in inputs]
        counts = {x.n_segments for x in inputs}
        if len(counts) != 1:
            raise ReplayError(f"a batch needs inputs of one number of segments, got {sorted(counts)}")
        blocks, masks, roles = [], [], []
        for t in range(inputs[0].n_segments):
            width = max(len(x.segments[t]) for x in inputs)
            ids = np.full((len(inputs), width), pad_id, dtype=np.int64)
            mask = np.zeros((len(inputs), width), dtype=np.int64)
            role = np.full((len(inputs), width), ROLE_NOISE, dtype=np.int64)
            for i, x in enumerate(inputs):
                n = len(x.segments[t])
                ids[i, :n], mask[i, :n], role[i, :n] = x.segments[t], 1, x.roles[t]
            blocks.append(ids)
            masks.append(None if mask.all() else mask)
            roles.append(role)
        return cls(blocks, masks, roles)


def batch_of(model, inputs) -> SegmentBatch:
    """A SegmentBatch for `model` from a SegmentBatch, a ModelInput or task Sample (a batch of one), a list of
    them, or a (B, N, S) / (B, N*S) id array or tensor (rectangular task batches).

    A model whose config records `max_segments` (an imported checkpoint of the paper's code) runs only the
    first max_segments segments, as that code does."""
    if isinstance(inputs, SegmentBatch):
        batch = inputs
    elif isinstance(inputs, (np.ndarray, torch.Tensor)):
        batch = SegmentBatch.from_ids(inputs, model.config.segment_size)
    elif isinstance(inputs, (list, tuple)) and inputs and not isinstance(inputs[0], (int, np.integer, list)):
        batch = SegmentBatch.from_inputs(inputs, _pad_id(model))
    else:
        batch = SegmentBatch.from_inputs([as_input(inputs)], _pad_id(model))
    max_segments = getattr(getattr(model, "config", None), "max_segments", None)
    return batch.first(max_segments) if max_segments else batch


def _pad_id(model) -> int:
    layout = getattr(model, "layout", None)
    return int(layout.pad_id) if layout is not None else 0
