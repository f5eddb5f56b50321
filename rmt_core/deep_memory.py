"""Memory states left by long stretches of noise, for training samples that start from them (`rmt train
--deep-memory P`).

A model trained on inputs of up to N segments only ever writes facts into, and reads them out of, memory that
at most N segments of noise have shaped. On longer inputs the memory can move on to states training never
showed it (`scripts/noise_switch.py` measures when), and facts written or held there are lost. Training on
inputs of thousands of segments would show them, at thousands of segments' cost per sample.

The pool shows them cheaply. It keeps one stream of pure noise (the training noise source) per pool slot, each
run through the model under `torch.no_grad()` up to its own depth, drawn uniformly from 1..max_depth segments;
every `refresh` training steps each stream goes `advance` segments further under the current weights, and a
stream that has reached its depth starts again from the model's initial memory with a new depth. A training
sample given a pool state is the tail of an input whose first (up to max_depth) segments were noise: no
gradient reaches those segments (truncated backpropagation, as with --bptt-depth), and the weights that wrote
their memory are at most a few hundred steps old. Filling the pool before the first step costs
size x max_depth segments in inference (about a minute for 16 x 1,024 on one CPU thread of the default model).
The pool is not part of the resume state: `rmt train --resume` refills it with the resumed weights, so a resumed
run's losses are close to an uninterrupted run's, not equal to them.

`FarFactPool` (`rmt train --far-facts P`) is the same pool with facts at the start of every stream: its states
hold a training sample's facts after up to max_depth segments of noise, and the rows given them ask that
sample's question.
"""

from __future__ import annotations

import random

import torch

from rmt_core import recurrence
from rmt_core.errors import TrainError
from rmt_core.inputs import SegmentBatch
from rmt_core.noise import NoiseSource, NoiseStream

REFRESH_STEPS = 10  # training steps between advances of the pool
ADVANCE_FRACTION = 64  # each advance moves every stream max_depth // 64 segments (at least 1)


class DeepMemoryPool:
    """`size` memory states (size, m, d), each the memory after its own stretch of noise (see the module doc)."""

    def __init__(self, model, noise: NoiseSource, size: int, max_depth: int, seed: int = 0):
        if getattr(model.config, "architecture", "encoder") != "encoder":
            raise TrainError("--deep-memory is for the encoder (the paper's RMT); drop it for a decoder")
        if size < 1 or max_depth < 1:
            raise TrainError(f"a deep-memory pool needs at least one stream and one segment, got {size} x {max_depth}")
        self.noise, self.size, self.max_depth = noise, size, max_depth
        self.segment_size = model.config.segment_size
        self.advance_segments = max(1, max_depth // ADVANCE_FRACTION)
        self.rng = random.Random(seed)
        self.streams = [self._stream() for _ in range(size)]
        self.depth = [0] * size  # segments of noise each stream has read since its start
        self.target = [self.rng.randint(1, max_depth) for _ in range(size)]
        self.memory = model.initial_memory(size).detach().clone()  # (size, m, d), on the model's device
        self.last_ids = None  # the noise ids of the last advance (size, k * S), for tests and checks

    def _stream(self) -> NoiseStream:
        return NoiseStream(self.noise, random.Random(self.rng.randrange(2**63)))

    def fill(self, model) -> None:
        """Advance until every stream has read its first depth's worth of noise (before the first step)."""
        for _ in range(-(-self.max_depth // self.advance_segments)):
            self.advance(model)

    @torch.no_grad()
    def advance(self, model, segments: int | None = None) -> None:
        """Every stream reads `segments` (default advance_segments) more noise segments under the current
        weights; streams past their depth then restart from the initial memory with a new depth."""
        k = segments or self.advance_segments
        S = self.segment_size
        ids = torch.tensor([stream.take_ids(k * S) for stream in self.streams], dtype=torch.long)
        was_training = model.training
        model.eval()
        try:
            self.memory = recurrence.run(model, SegmentBatch.from_ids(ids, S), memory=self.memory).memory.detach()
        finally:
            model.train(was_training)
        self.last_ids = ids
        done = []
        for i in range(self.size):
            self.depth[i] += k
            if self.depth[i] >= self.target[i]:
                done.append(i)
        if done:
            self.restart(model, done)

    def restart(self, model, indexes: list[int]) -> None:
        """Streams `indexes` start again: the initial memory, a new noise stream and a new depth."""
        initial = model.initial_memory(1)[0].detach()
        for i in indexes:
            self.memory[i] = initial
            self.depth[i], self.target[i] = 0, self.rng.randint(1, self.max_depth)
            self.streams[i] = self._stream()

    def batch_memory(self, model, batch_size: int, share: float, step: int) -> torch.Tensor:
        """(batch_size, m, d): the first round(share * batch_size) rows from pool states drawn at random (with the
        step's own generator, so a resumed run draws the same), the rest the model's initial memory (which keeps
        its gradient)."""
        k = min(batch_size, round(share * batch_size))
        picks = random.Random(step).choices(range(self.size), k=k)
        return torch.cat([self.memory[picks], model.initial_memory(batch_size - k)], dim=0)


FACT_DRAWS = 100  # draws of a two-segment sample until its facts all lie in the first segment
FAR_FACT_TERMS = ("--far-facts trains with --noise-stillness and --write-attention only; drop --fact-recall, "
                  "--question-read and --slot-recall")


class FarFactPool(DeepMemoryPool):
    """Memory states that hold a training sample's facts after up to `max_depth` segments of noise (`rmt train
    --far-facts P`).

    A model trained on inputs of up to N segments only learns to carry facts N segments: the question never lies
    further from them. Each stream of this pool starts with the first segment of a two-segment training sample
    whose facts all lie in that segment (the memory it writes, under the current weights), then reads noise as a
    DeepMemoryPool stream does, to a depth drawn from 1..max_depth. A training row given a stream is that
    sample's question after more noise: the row's first segments are fresh noise, its last the sample's second
    segment (noise, then the question), its label the sample's answer. So the question lies depth + N segments
    from the facts, and the row trains the last segments to keep, and the question to read, what a long stretch
    of noise left of them; no gradient reaches the write (as with --bptt-depth). The memory each stream's facts
    wrote is kept (`written`): --noise-anchor and --answer-hold hold a row to it, not to the drifted state the row
    starts from.
    """

    def __init__(self, model, builder, size: int, max_depth: int, seed: int = 0):
        super().__init__(model, builder.noise, size, max_depth, seed=seed)
        self.builder = builder
        self.samples: list = [None] * size
        self.written = self.memory.clone()  # (size, m, d): the memory each stream's facts wrote, before any noise
        self.restart(model, list(range(size)))

    def _draw(self):
        for _ in range(FACT_DRAWS):
            sample = self.builder.sample(2, self.rng.randrange(2**31))
            if all(fact.segment == 0 for fact in sample.facts):
                return sample
        raise TrainError(f"no two-segment {self.builder.task} sample in {FACT_DRAWS} draws put its facts in the "
                         "first segment; drop --far-facts for this task")

    @torch.no_grad()
    def restart(self, model, indexes: list[int]) -> None:
        """Streams `indexes` start again from a new sample: the memory its first segment (the facts) writes."""
        super().restart(model, indexes)
        S = self.segment_size
        for i in indexes:
            self.samples[i] = self._draw()
        ids = torch.tensor([self.samples[i].input_ids[:S] for i in indexes], dtype=torch.long)
        was_training = model.training
        model.eval()
        try:
            written = recurrence.run(model, SegmentBatch.from_ids(ids, S), memory=self.memory[indexes]).memory
        finally:
            model.train(was_training)
        self.memory[indexes] = written.detach()
        self.written[indexes] = written.detach()

    def rows(self, model, ids: torch.Tensor, labels: torch.Tensor, masks: tuple, share: float, step: int):
        """(memory, ids, labels, masks, anchor) of a training batch whose first round(share * B) rows are
        questions about pool streams (see the class doc; streams drawn with the step's own generator), the rest as
        given with the model's initial memory. masks: the (still, write, recall, read, answer, slots, anchored) of
        `Data.batch`, already this process's rows; in a far row every segment but the question's is noise that
        should leave memory still (and, its memory holding the facts already, where it is), and none holds a fact
        to write or read (recall, answer and slots must be None). anchor: (B, m, d) where each row's `anchored`
        segments hold memory (`RMT.forward`'s anchor_start): for a pool row the memory its facts wrote before the
        stream's noise, for the others the memory they start from."""
        still, write, recall, read, answer, slots, anchored = masks
        if recall is not None or answer is not None or slots is not None:
            raise TrainError(FAR_FACT_TERMS)
        B, S = len(ids), self.segment_size
        n = ids.shape[1] // S
        k = min(B, round(share * B))
        rng = random.Random(step)
        picks = rng.choices(range(self.size), k=k)
        ids, labels = ids.clone(), labels.clone()
        still = None if still is None else still.clone()
        anchored = None if anchored is None else anchored.clone()
        write = None if write is None else write.clone()
        read = None if read is None else read.clone()
        for row, i in enumerate(picks):
            sample = self.samples[i]
            noise = NoiseStream(self.noise, random.Random(rng.randrange(2**63))).take_ids((n - 1) * S)
            ids[row] = torch.tensor(noise + sample.input_ids[S:2 * S], dtype=torch.long, device=ids.device)
            labels[row] = sample.answer
            if still is not None:
                still[row] = True
                still[row, -1] = False  # the question's segment: its memory nothing reads
            if anchored is not None:
                anchored[row] = True
                anchored[row, -1] = False
            if write is not None:
                write[row] = False
            if read is not None:
                read[row] = False
        initial = model.initial_memory(B - k)
        memory = torch.cat([self.memory[picks], initial], dim=0)
        anchor = torch.cat([self.written[picks], initial.detach()], dim=0)
        return memory, ids, labels, (still, write, recall, read, answer, slots, anchored), anchor
