"""Does memory overwrite? Probes of a person's old place around the segment where their new place lands (qa1).

An *overwrite event* of sample k and person P: a segment t_new after which P is somewhere else (the new
place) than after segment t_new - 1 (the old place, already known then); the latest one of each sample. Around
it, the memory written at t_new + o (o = -1: just before the new fact, when the old place is still
P's place; o >= 0: after it) is probed for the OLD place. A memory that keeps one place per person and
overwrites it shows high accuracy at o = -1 that falls at o >= 0, while a probe of the NEW place (the current
one, `where_P`) rises there; a memory that only appends keeps the old place decodable.

    rows = overwrite_test(states, samples, fit, test)    # states (K, N+1, m, d) from probes.states.collect

One probe per person and offset, fit on the events of the fit samples and scored on those of the test samples,
all slots flattened; the control task is a fixed random label of the person's places so far
(probes.targets.control_label). Offsets with fewer than `min_samples` events on either side are left out.
"""

from __future__ import annotations

import numpy as np

from probes.linear import _one_thread, score_probe
from probes.targets import PEOPLE, control_label, places_seen


def overwrite_events(samples, person: str) -> list[tuple[int, int, str, str, list[str]]]:
    """(sample index, t_new, old place, new place, places seen before t_new) of the latest overwrite event of
    `person` in each sample that has one: the last segment t_new after which P's place differs from P's place
    after segment t_new - 1 (both known)."""
    events = []
    for k, sample in enumerate(samples):
        for t_new in range(sample.n_segments - 1, 0, -1):
            before, after = places_seen(sample, person, t_new - 1), places_seen(sample, person, t_new)
            if before and after[-1] != before[-1]:
                events.append((k, t_new, before[-1], after[-1], before))
                break
    return events


def overwrite_test(states: np.ndarray, samples, fit: np.ndarray, test: np.ndarray, people=PEOPLE,
                   min_samples: int = 4, max_iter: int = 200, seed: int = 0) -> list[dict]:
    """Probe accuracy of each person's old and new place at offsets around the new fact (module docstring).

    Returns rows {person, offset, target ("old place" or "new place"), accuracy, ci_low, ci_high, majority,
    control_accuracy, selectivity, n_fit, n_test, events}."""
    from rmt_core.tasks import PLACES

    n = states.shape[1] - 1
    in_fit = np.zeros(len(samples), dtype=bool)
    in_fit[np.asarray(fit)] = True
    rows = []
    with _one_thread():
        for person in people:
            events = overwrite_events(samples, person)
            offsets = sorted({t - t_new for _, t_new, *_ in events for t in range(n)} & set(range(-1, n)))
            for offset in offsets:
                here = [e for e in events if 0 <= e[1] + offset < n]
                if not here:
                    continue
                x = np.stack([states[k, t_new + offset + 1] for k, t_new, *_ in here])  # memory after t_new + o
                is_fit = np.array([in_fit[k] for k, *_ in here])
                fit_here, test_here = np.flatnonzero(is_fit), np.flatnonzero(~is_fit)
                if len(fit_here) < min_samples or len(test_here) < min_samples:
                    continue
                for target, index in (("old place", 2), ("new place", 3)):
                    y = np.array([PLACES.index(e[index]) for e in here])
                    y_control = np.array([control_label(seed, f"{target}_{person}", "|".join(e[4]), len(PLACES))
                                          for e in here])
                    row = {"person": person, "offset": offset, "target": target, "events": len(here)}
                    row.update(score_probe(x, y, y_control, fit_here, test_here, max_iter))
                    rows.append(row)
    return rows
