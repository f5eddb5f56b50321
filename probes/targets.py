"""What the probes predict: per-sample, per-segment labels of fact properties, and their control tasks.

Targets (label of sample k for the memory written by segment t):

    answer   the answer place (6 classes, PLACES order)                                  every task
    person   the person of the qa1 fact (bAbI's four names, file order for other names)  memorize, detect
    seen     how many facts have landed in segments 0..t (0/1; 0/1/2 for reason)         detect, reason
    where_P  where person P is after the facts read by the end of segment t ("unknown"    qa1, qa2
             before P's first move): the state of the world, for each of bAbI's four people
    previous_P  P's place before P's latest move ("none" before P's second move): what     qa1, qa2
             memory would still hold if it did not overwrite an old place with a new one

`seen` is left out for memorize, whose fact is always in segment 0 (the label is constant).

Control tasks (Hewitt and Liang, 2019). A control task keeps the input structure and replaces the property
by a random function of the *fact type*, so that a probe which merely memorises which fact it saw can solve
it. The fact type of a sample is its bAbI item without wording: `person|place` for a qa1 fact (the verb is
dropped, the question is implied), the facts' `subject direction reference` triples in story order plus the
question for qa4. For `answer` and `person` the control label is a fixed random label of the fact type; for
`seen` it is a fixed random label of the facts seen so far (their types, or `none` before the first fact),
which is what the memory can know at that point. For `where_P` and `previous_P` it is a fixed random label of
the places P has been seen in so far (their sequence), the fact type of that target. Labels are drawn uniformly from the target's own C classes
by a seeded hash (sha256 of `seed/target/type`), so they are the same on any machine, for any order of samples.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from rmt_core.errors import ProbeError

PEOPLE = ("Mary", "John", "Daniel", "Sandra")
WORLD_TARGETS = tuple(f"{kind}_{person}" for kind in ("where", "previous") for person in PEOPLE)
TARGETS = ("answer", "person", "seen") + WORLD_TARGETS
TARGETS_BY_TASK = {"memorize": ("answer", "person"), "detect": ("answer", "person", "seen"), "reason": ("answer", "seen"),
                   "qa1": ("answer",) + WORLD_TARGETS, "qa2": ("answer",) + WORLD_TARGETS}


@dataclass
class Target:
    """Labels of one target. K samples, N segments; labels[k, t] is the label after segment t."""

    name: str
    classes: list[str]  # class names, index = label
    labels: np.ndarray  # (K, N) int64
    control: np.ndarray  # (K, N) int64, the control task's labels, same cardinality
    description: str = ""

    @property
    def cardinality(self) -> int:
        return len(self.classes)


def fact_type(sample) -> str:
    """The fact type of a sample: its bAbI item without wording (see the module docstring)."""
    facts = sorted(sample.facts, key=lambda f: f.story_index)
    if all(f.kind == "location" for f in facts):
        return ";".join(f"{f.person}|{f.place}" for f in facts)
    parts = [f"{f.subject} {f.direction} {f.reference}" for f in facts]
    return ";".join(parts) + f"?{sample.question}"


def _seen_type(sample, t: int) -> str:
    """The types of the facts that have landed in segments 0..t, in story order; 'none' before the first."""
    facts = sorted((f for f in sample.facts if f.segment <= t), key=lambda f: f.story_index)
    if not facts:
        return "none"
    if len(facts) == len(sample.facts):
        return fact_type(sample)
    if all(f.kind == "location" for f in facts):
        return ";".join(f"{f.person}|{f.place}" for f in facts)
    return ";".join(f"{f.subject} {f.direction} {f.reference}" for f in facts)


def control_label(seed: int, target: str, type_key: str, cardinality: int) -> int:
    """A fixed random label in [0, cardinality) for a fact type: sha256 of 'seed/target/type', mod C."""
    digest = hashlib.sha256(f"{seed}/{target}/{type_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % cardinality


def build_targets(samples, seed: int = 0, names: tuple[str, ...] | None = None) -> dict[str, Target]:
    """Targets and control tasks of a list of `rmt_core.tasks.Sample` (one task, one length N).

    names: which targets (default: those of the task, TARGETS_BY_TASK). Returns name -> Target.
    """
    if not samples:
        raise ProbeError("no samples to probe; give --samples 1 or more")
    task, n = samples[0].task, samples[0].n_segments
    if any(s.task != task or s.n_segments != n for s in samples):
        raise ProbeError("probe samples must share one task and one number of segments; build them with one TaskBuilder")
    names = tuple(names) if names is not None else TARGETS_BY_TASK.get(task, ("answer",))
    unknown = [name for name in names if name not in TARGETS]
    if unknown:
        raise ProbeError(f"unknown probe target {unknown[0]!r}; choose from {', '.join(TARGETS)}")
    K = len(samples)
    types = [fact_type(s) for s in samples]
    targets: dict[str, Target] = {}
    for name in names:
        if name == "answer":
            from rmt_core.tasks import PLACES

            classes = list(PLACES)
            per_sample = np.array([s.answer for s in samples], dtype=np.int64)
            labels = np.repeat(per_sample[:, None], n, axis=1)
            control = np.array([[control_label(seed, name, types[k], len(classes))] * n for k in range(K)])
            description = "the answer place"
        elif name == "person":
            persons = [s.facts[0].person if s.facts and s.facts[0].person else None for s in samples]
            if any(p is None for p in persons):
                raise ProbeError(f"target 'person' needs location facts (memorize, detect), not {task}; "
                                 "drop it from the targets")
            classes = list(PEOPLE) + sorted(set(persons) - set(PEOPLE))
            per_sample = np.array([classes.index(p) for p in persons], dtype=np.int64)
            labels = np.repeat(per_sample[:, None], n, axis=1)
            control = np.array([[control_label(seed, name, types[k], len(classes))] * n for k in range(K)])
            description = "the person of the fact"
        elif name in WORLD_TARGETS:
            kind, person = name.split("_", 1)
            classes, labels, control = _world_target(samples, kind, person, n, seed, name)
            description = (f"where {person} is after the facts read so far" if kind == "where" else
                           f"{person}'s place before their latest move")
        else:  # seen
            n_facts = max(len(s.facts) for s in samples)
            classes = ["not yet", "seen"] if n_facts == 1 else [f"{i} of {n_facts}" for i in range(n_facts + 1)]
            labels = np.array([[sum(f.segment <= t for f in s.facts) for t in range(n)] for s in samples])
            control = np.array([[control_label(seed, name, _seen_type(s, t), len(classes)) for t in range(n)]
                                for s in samples])
            description = "how many facts have landed so far"
        targets[name] = Target(name, classes, labels.astype(np.int64), control.astype(np.int64), description)
    return targets


def places_seen(sample, person: str, t: int) -> list[str]:
    """The places `person` moved to in the facts read completely by the end of segment t, in story order."""
    facts = sorted((f for f in sample.facts if f.segment <= t and f.person == person and f.place),
                   key=lambda f: f.story_index)
    return [f.place for f in facts]


def _world_target(samples, kind: str, person: str, n: int, seed: int, name: str):
    from rmt_core.tasks import PLACES

    empty = "unknown" if kind == "where" else "none"
    classes = [empty] + list(PLACES)
    labels = np.zeros((len(samples), n), dtype=np.int64)
    control = np.zeros((len(samples), n), dtype=np.int64)
    for k, sample in enumerate(samples):
        for t in range(n):
            places = places_seen(sample, person, t)
            pick = places[-1] if kind == "where" and places else places[-2] if len(places) >= 2 else None
            labels[k, t] = classes.index(pick) if pick else 0
            control[k, t] = control_label(seed, name, "|".join(places) or "none", len(classes))
    return classes, labels, control


def last_fact_segments(samples) -> np.ndarray:
    """(K,) the segment of each sample's last-arriving fact: where the memory first holds everything needed."""
    return np.array([max(f.segment for f in s.facts) for s in samples], dtype=np.int64)
