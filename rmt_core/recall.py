"""The fact-recall objective of `rmt train --fact-recall` (reason, encoder): a linear read-out of the memory that
the question's segment reads must name the parts of every fact that memory alone carries there.

A reason sample holds two qa4 facts, "The <subject> is <direction> of the <reference>.". Its question needs one
of them, and which one is known only at the question, so memory has to carry both. Probes of the shipped
checkpoint's memory (scripts/reason_memory_probe.py) read the places of both facts well and their directions
barely above chance. This objective asks for all of it: for the fact written first and the one written second,
three classifiers over the flattened memory (all slots) name its subject place, direction and reference place.
Facts in the question's segment are left out (-100): the question reads those directly.

The head is for training only. `rmt_core.train` attaches it to the model as `model.fact_recall` so that the
optimizer, gradient averaging and resume states cover it; it is marked `training_only`, so checkpoints leave it
out (rmt_core.checkpoint.plain_state) and the trained RMT is the paper's architecture, unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from rmt_core.babi import DIRECTIONS, PLACES

ATTRIBUTE = "fact_recall"  # the model attribute the head lives on while training
LR_SCALE = 20.0  # the head's learning rate, in multiples of the model's: a fresh read-out beside a trained model
FACTS = 2  # a reason sample's facts: the one written first, the one written second
PARTS = (("subject", PLACES), ("direction", DIRECTIONS), ("reference", PLACES))
IGNORE = -100


def targets(samples, n_segments: int) -> torch.Tensor:
    """(B, FACTS, 3) class indexes of each sample's facts in the order written (subject, direction, reference);
    IGNORE for a fact in the question's segment (the last) or a sample with another number of facts."""
    out = torch.full((len(samples), FACTS, len(PARTS)), IGNORE, dtype=torch.long)
    for i, sample in enumerate(samples):
        facts = sorted(sample.facts, key=lambda f: f.start)
        if len(facts) != FACTS:
            continue
        for k, fact in enumerate(facts):
            if fact.segment >= n_segments - 1:
                continue
            values = (fact.subject, fact.direction, fact.reference)
            out[i, k] = torch.tensor([names.index(v) for v, (_, names) in zip(values, PARTS)])
    return out


class RecallHead(nn.Module):
    """Linear classifiers from the flattened memory (B, m, d) to every part of every fact."""

    training_only = True  # checkpoints leave it out

    def __init__(self, num_mem_tokens: int, hidden_size: int):
        super().__init__()
        self.sizes = [len(names) for _, names in PARTS] * FACTS
        self.linear = nn.Linear(num_mem_tokens * hidden_size, sum(self.sizes))

    def forward(self, memory: torch.Tensor) -> list[torch.Tensor]:
        """FACTS * 3 logits (B, classes), fact by fact, part by part."""
        logits = self.linear(memory.flatten(1).to(self.linear.weight.dtype))
        return list(torch.split(logits.float(), self.sizes, dim=-1))

    def loss(self, memory: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean cross-entropy over the parts that are asked for, their accuracy); zeros when none is."""
        flat = target.flatten(1).to(memory.device)  # (B, FACTS * 3) in the order of forward's logits
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
