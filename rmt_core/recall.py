"""The fact-recall objective of `rmt train --fact-recall` (reason, encoder): a linear read-out of the memory that
the question's segment reads must name the parts of every fact that memory alone carries there.

A reason sample holds two qa4 facts, "The <subject> is <direction> of the <reference>.". Its question needs one
of them, and which one is known only at the question, so memory has to carry both. Probes of the shipped
checkpoint's memory (scripts/reason_memory_probe.py) read the places of both facts well and their directions
barely above chance. This objective asks for all of it, in one of two forms (`targets`): "facts", for the fact
written first and the one written second, three classifiers over the flattened memory (all slots) name its
subject place, direction and reference place; "table", 24 classifiers answer every question of the form "What
is d of the p?" that the carried facts answer, and say "none" to the rest. Facts in the question's segment are
left out (IGNORE): the question reads those directly.

Where the read-out looks (`AT`): "question", the memory the question's segment reads; "every", the memory every
segment from the second on reads, each asked for the facts written before it (a position before any fact is not
asked). "every" asks for each fact right after its segment writes it, where the probes find the direction
missing first, and then at each segment that carries it on.

The head is for training only. `rmt_core.train` attaches it to the model as `model.fact_recall` so that the
optimizer, gradient averaging and resume states cover it; it is marked `training_only`, so checkpoints leave it
out (rmt_core.checkpoint.plain_state) and the trained RMT is the paper's architecture, unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from rmt_core.babi import DIRECTIONS, OPPOSITE, PLACES

ATTRIBUTE = "fact_recall"  # the model attribute the head lives on while training
LR_SCALE = 20.0  # the head's learning rate, in multiples of the model's: a fresh read-out beside a trained model
FACTS = 2  # a reason sample's facts: the one written first, the one written second
PARTS = (("subject", PLACES), ("direction", DIRECTIONS), ("reference", PLACES))
IGNORE = -100
QUESTIONS = [(d, p) for d in DIRECTIONS for p in PLACES]  # the table's entries: "What is d of the p?"
NONE = len(PLACES)  # the table's answer when no carried fact answers the entry
KINDS = ("facts", "table")  # --fact-recall-target
AT = ("question", "every")  # --fact-recall-at


def targets(samples, n_segments: int, kind: str = "facts", at: str = "question") -> torch.Tensor:
    """The read-out's targets: for at="question" those of the memory the last segment reads (`read_by`), for
    at="every" those of the memory each segment 1..N-1 reads, stacked on dim 1 ((B, N-1, ...)), a position whose
    memory carries no fact yet all IGNORE."""
    if at == "question":
        return read_by(samples, n_segments - 1, kind)
    if at != "every":
        raise ValueError(f"at must be one of {AT}, not {at!r}")
    if n_segments < 2:
        return torch.full((len(samples), 0, *sizes_shape(kind)), IGNORE, dtype=torch.long)
    out = torch.stack([read_by(samples, t, kind) for t in range(1, n_segments)], dim=1)
    first = torch.tensor([min((f.segment for f in s.facts), default=n_segments) for s in samples])
    out[first[:, None] >= torch.arange(1, n_segments)] = IGNORE  # nothing written before that position yet
    return out


def read_by(samples, segment: int, kind: str = "facts") -> torch.Tensor:
    """The targets of the memory that `segment` reads, which carries the facts of the segments before it.
    facts: (B, FACTS, 3) class indexes of each sample's facts in the order written (subject, direction,
    reference). table: (B, 24), for every "What is d of the p?" the place that answers it (a fact "The a is d of
    the b." answers (d, b) with a and (opposite d, a) with b), NONE where no fact does; a table asks no order of
    the facts, only what every question wants. Either way IGNORE marks what a fact in `segment` or after it would
    answer, and every target of a sample with another number of facts."""
    if kind == "table":
        return _table(samples, segment)
    out = torch.full((len(samples), FACTS, len(PARTS)), IGNORE, dtype=torch.long)
    for i, sample in enumerate(samples):
        facts = sorted(sample.facts, key=lambda f: f.start)
        if len(facts) != FACTS:
            continue
        for k, fact in enumerate(facts):
            if fact.segment >= segment:
                continue
            values = (fact.subject, fact.direction, fact.reference)
            out[i, k] = torch.tensor([names.index(v) for v, (_, names) in zip(values, PARTS)])
    return out


def _table(samples, segment: int) -> torch.Tensor:
    out = torch.full((len(samples), len(QUESTIONS)), NONE, dtype=torch.long)
    for i, sample in enumerate(samples):
        if len(sample.facts) != FACTS:
            out[i] = IGNORE
            continue
        for fact in sample.facts:
            carried = fact.segment < segment
            for (d, p), answer in (((fact.direction, fact.reference), fact.subject),
                                   ((OPPOSITE[fact.direction], fact.subject), fact.reference)):
                out[i, QUESTIONS.index((d, p))] = PLACES.index(answer) if carried else IGNORE
    return out


def sizes(kind: str) -> list[int]:
    """The class count of each target of `targets(..., kind)`, flattened in order."""
    return [len(names) for _, names in PARTS] * FACTS if kind == "facts" else [len(PLACES) + 1] * len(QUESTIONS)


def sizes_shape(kind: str) -> tuple[int, ...]:
    """The shape of one sample's targets of `kind` (at one position)."""
    return (FACTS, len(PARTS)) if kind == "facts" else (len(QUESTIONS),)


class RecallHead(nn.Module):
    """Linear classifiers from the flattened memory (..., m, d) to every target of `targets(..., kind)`."""

    training_only = True  # checkpoints leave it out

    def __init__(self, num_mem_tokens: int, hidden_size: int, kind: str = "facts"):
        super().__init__()
        self.sizes = sizes(kind)
        self.linear = nn.Linear(num_mem_tokens * hidden_size, sum(self.sizes))

    def forward(self, memory: torch.Tensor) -> list[torch.Tensor]:
        """One (..., classes) logits per target, in the order of `targets(..., kind)` flattened."""
        logits = self.linear(memory.flatten(-2).to(self.linear.weight.dtype))
        return list(torch.split(logits.float(), self.sizes, dim=-1))

    def loss(self, memory: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean cross-entropy over the parts that are asked for, their accuracy); zeros when none is. memory:
        (B, m, d) with target (B, ...) as `targets(at="question")` gives, or (B, T, m, d) with (B, T, ...)."""
        memory = memory.reshape(-1, *memory.shape[-2:])
        flat = target.reshape(len(memory), -1).to(memory.device)  # (B*, targets) in the order of forward's logits
        losses, hits, count = [], 0, 0
        for j, logits in enumerate(self(memory)):
            asked = flat[:, j] != IGNORE
            if asked.any():
                losses.append(F.cross_entropy(logits[asked], flat[asked, j], reduction="sum"))
                hits += int((logits[asked].argmax(-1) == flat[asked, j]).sum())
                count += int(asked.sum())
        if not count:
            zero = memory.new_zeros((), dtype=torch.float32)
            return zero + 0.0 * sum(p.sum() for p in self.parameters()), zero
        return torch.stack(losses).sum() / count, memory.new_tensor(hits / count, dtype=torch.float32)
