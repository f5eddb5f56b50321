"""The slot-recall objective of `rmt train --slot-recall` (reason, encoder): the memory slot that took a fact as it
was written must name that fact's subject and direction at every later segment, to the question's.

Probes of the reason checkpoints (scripts/reason_slot_read.py, docs/experiments/reason-dense-two-facts/) find that
the slot which took a fact keeps its subject for hundreds of segments, but its direction hardly at all, and that the
code of a slot drifts with its age: one probe per age reads far more than one probe over all ages. The question
then cannot tell two facts' slots apart by direction and answers with the later fact. This objective asks one
read-out, shared by every slot and every age, for the subject and the direction of the fact each slot took: a code
that stays readable the same way from the write to the question.

Which slot took a fact is the model's own choice, as `--question-read` takes it: where the fact's segment is read,
the slot whose head of the last layer pays the fact's direction word the most attention (`RMT.strongest_slot`, no
gradient). Facts in the question's segment are left out: no later segment reads the memory they write.

The head is for training only: `rmt_core.train` attaches it to the model as `model.slot_recall`, so that the
optimizer, gradient averaging and resume states cover it; it is marked `training_only`, so checkpoints leave it
out (rmt_core.checkpoint.plain_state) and the trained RMT is the paper's architecture, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from rmt_core.babi import DIRECTIONS, PLACES

ATTRIBUTE = "slot_recall"  # the model attribute the head lives on while training


@dataclass
class SlotFacts:
    """The facts a batch's memory carries, one row each: sample `b`, the segment `t` that holds it, the position
    `j` of its direction word in that segment, and the class indexes of its `subject` (PLACES) and `direction`
    (DIRECTIONS). All (K,) long."""

    b: torch.Tensor
    t: torch.Tensor
    j: torch.Tensor
    subject: torch.Tensor
    direction: torch.Tensor

    def __len__(self) -> int:
        return len(self.b)

    def marks(self, batch_size: int, n_segments: int, segment_size: int) -> torch.Tensor:
        """(B, N, S) bool: the direction words whose slot the model should note as they are written."""
        out = torch.zeros(batch_size, n_segments, segment_size, dtype=torch.bool)
        out[self.b, self.t, self.j] = True
        return out

    def select(self, rows: torch.Tensor, offset: int = 0) -> "SlotFacts":
        """The facts of the samples in `rows` (bool (K,)), their sample index moved down by `offset` (a rank's
        slice of the batch)."""
        return SlotFacts(self.b[rows] - offset, self.t[rows], self.j[rows], self.subject[rows], self.direction[rows])

    def rank_slice(self, part: slice) -> "SlotFacts":
        """The facts of the samples a process trains on (`part` of the batch), renumbered from 0."""
        return self.select((self.b >= part.start) & (self.b < part.stop), part.start)


def slot_facts(samples, n_segments: int, segment_size: int, position) -> SlotFacts:
    """The carried qa4 facts of `samples` laid out in n_segments segments of segment_size tokens: every relation
    fact before the question's segment. position(fact, sample) gives the index of a fact's direction word in the
    sample's tokens (rmt_core.train's `_direction_position`)."""
    rows = []
    for i, sample in enumerate(samples):
        for fact in sample.facts:
            if fact.kind != "relation" or fact.segment >= n_segments - 1:
                continue
            where = position(fact, sample)
            rows.append((i, where // segment_size, where % segment_size, PLACES.index(fact.subject),
                         DIRECTIONS.index(fact.direction)))
    columns = torch.tensor(rows, dtype=torch.long).reshape(-1, 5).T
    return SlotFacts(*columns)


class SlotHead(nn.Module):
    """One linear read-out from a single memory slot's state (..., d) to a fact's subject and direction."""

    training_only = True  # checkpoints leave it out

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, len(PLACES) + len(DIRECTIONS))

    def forward(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(subject logits, direction logits) of each slot state."""
        logits = self.linear(state.to(self.linear.weight.dtype)).float()
        return logits[..., :len(PLACES)], logits[..., len(PLACES):]

    def loss(self, reads: torch.Tensor, slots: torch.Tensor, facts: SlotFacts) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean cross-entropy of subject and direction, the share of both named right) over every fact and every
        segment after its own: reads (B, N-1, m, d) the memory segments 1..N-1 read (`RMTOutput.memory_reads`),
        slots (B, N, S) long the slot each marked token went to (`RMTOutput.noted_slots`), facts the batch's
        carried facts. Zero (still in the head's graph) when no fact is carried."""
        states, subjects, directions = [], [], []
        n_reads = reads.shape[1]
        for k in range(len(facts)):
            b, t = int(facts.b[k]), int(facts.t[k])
            slot = int(slots[b, t, facts.j[k]])
            if slot < 0 or t >= n_reads:  # no slot noted, or no later segment reads this memory
                continue
            states.append(reads[b, t:, slot])  # read by segments t+1 .. N-1: index t .. N-2
            subjects.append(facts.subject[k].expand(n_reads - t))
            directions.append(facts.direction[k].expand(n_reads - t))
        if not states:
            zero = reads.new_zeros((), dtype=torch.float32)
            return zero + 0.0 * sum(p.sum() for p in self.parameters()), zero
        subject_logits, direction_logits = self(torch.cat(states))
        subjects, directions = torch.cat(subjects).to(reads.device), torch.cat(directions).to(reads.device)
        loss = (F.cross_entropy(subject_logits, subjects) + F.cross_entropy(direction_logits, directions)) / 2
        right = (subject_logits.argmax(-1) == subjects) & (direction_logits.argmax(-1) == directions)
        return loss, right.float().mean()
