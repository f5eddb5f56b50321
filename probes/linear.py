"""Linear probes on memory states: logistic regression fit on one set of samples, scored on another.

Everything here works on plain arrays, so planted data tests it as well as real memory:

    states   (K, N+1, m, d)  [:, 0] the initial memory, [:, t+1] the memory written by segment t
    labels   (K, N)          a target's label of sample k after segment t (see probes.targets)

A probe standardises its features on the fit set, then fits a multinomial logistic regression (lbfgs, L2,
capped iterations). Accuracy comes with a 95% Wilson interval, the majority baseline (the fit set's most
frequent class scored on the held-out set) and selectivity (accuracy minus the same probe's accuracy on the
control task).
"""

from __future__ import annotations

import warnings

import numpy as np

from rmt_core.errors import ProbeError
from rmt_core.stats import Z95, wilson_interval  # noqa: F401  (re-exported)

def split_samples(count: int, test_fraction: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, held_out) of a seeded split of `count` samples; each side gets at least one."""
    if count < 2:
        raise ProbeError(f"probes need at least 2 samples (one to fit, one to score), got {count}; give more --samples")
    if not 0 < test_fraction < 1:
        raise ProbeError(f"test fraction must lie strictly between 0 and 1, got {test_fraction}")
    order = np.random.default_rng(seed).permutation(count)
    n_test = min(count - 1, max(1, int(round(count * test_fraction))))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def fit_probe(x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray, max_iter: int = 200,
              strength: float = 1.0) -> np.ndarray:
    """Fit a standardised logistic regression on (x_fit (n, f), y_fit (n,)); return predictions for x_test.

    With a single class in y_fit the probe predicts that class. strength: inverse L2 strength (sklearn's C).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    classes = np.unique(y_fit)
    if classes.size < 2:
        return np.full(len(x_test), classes[0] if classes.size else 0, dtype=np.int64)
    mean = x_fit.mean(axis=0)
    scale = x_fit.std(axis=0)
    scale[scale < 1e-8] = 1.0  # constant features (an unused slot) stay zero instead of dividing by zero
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(C=strength, max_iter=max_iter, solver="lbfgs")
        model.fit((x_fit - mean) / scale, y_fit)
    return model.predict((x_test - mean) / scale).astype(np.int64)


def score_probe(x: np.ndarray, y: np.ndarray, y_control: np.ndarray, fit: np.ndarray, test: np.ndarray,
                max_iter: int = 200) -> dict:
    """Fit and score one probe and its control. x: (K, f) features; y, y_control: (K,) labels.

    Returns accuracy, ci_low, ci_high, majority, control_accuracy, selectivity, n_fit, n_test.
    """
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    predicted = fit_probe(x[fit], y[fit], x[test], max_iter)
    correct = int((predicted == y[test]).sum())
    accuracy = correct / len(test)
    low, high = wilson_interval(correct, len(test))
    values, counts = np.unique(y[fit], return_counts=True)
    majority = float((y[test] == values[np.argmax(counts)]).mean())
    predicted_control = fit_probe(x[fit], y_control[fit], x[test], max_iter)
    control_accuracy = float((predicted_control == y_control[test]).mean())
    return {
        "accuracy": accuracy, "ci_low": low, "ci_high": high, "majority": majority,
        "control_accuracy": control_accuracy, "selectivity": accuracy - control_accuracy,
        "n_fit": int(len(fit)), "n_test": int(len(test)),
    }


def _one_thread():
    """BLAS on one thread: many small fits run far faster than with threads fighting over shared cores."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def probe_grid(states: np.ndarray, targets: dict, fit: np.ndarray, test: np.ndarray, slots: bool = True,
               max_iter: int = 200, on_fit=None) -> list[dict]:
    """Probes for every target, every segment t (the memory written by t), all slots together and each slot.

    states: (K, N+1, m, d); targets: name -> probes.targets.Target (labels (K, N)). on_fit(): called after each
    probe (for progress bars). Returns records {target, segment, slot ("all" or k), accuracy, ci_low, ci_high,
    majority, control_accuracy, selectivity, n_fit, n_test}.
    """
    with _one_thread():
        return _probe_grid(states, targets, fit, test, slots, max_iter, on_fit)


def _probe_grid(states, targets, fit, test, slots, max_iter, on_fit) -> list[dict]:
    K, steps, m, _ = states.shape
    records = []
    for name, target in targets.items():
        if target.labels.shape != (K, steps - 1):
            raise ProbeError(f"target {name} has labels {target.labels.shape}, states imply ({K}, {steps - 1})")
        for t in range(steps - 1):
            y, y_control = target.labels[:, t], target.control[:, t]
            choices = ["all"] + (list(range(m)) if slots else [])
            for slot in choices:
                x = states[:, t + 1] if slot == "all" else states[:, t + 1, slot]
                record = {"target": name, "segment": t, "slot": slot}
                record.update(score_probe(x, y, y_control, fit, test, max_iter))
                records.append(record)
                if on_fit is not None:
                    on_fit()
    return records


def aligned_offsets(fact_segments: np.ndarray, n_segments: int) -> list[int]:
    """Offsets t - fact_segment that occur for some sample, in order."""
    low = -int(fact_segments.max()) if len(fact_segments) else 0
    high = n_segments - 1 - int(fact_segments.min()) if len(fact_segments) else 0
    return list(range(low, high + 1))


def probe_aligned(states: np.ndarray, targets: dict, fact_segments: np.ndarray, fit: np.ndarray,
                  test: np.ndarray, min_samples: int = 4, max_iter: int = 200, on_fit=None) -> list[dict]:
    """Probes (all slots) against the offset o = t - fact_segment: the memory written o segments after the fact.

    For each offset the probe is fit on the fit-set samples that have a segment t = fact_segment + o, and
    scored on the held-out samples that have one. Offsets with fewer than `min_samples` on either side are
    skipped. Returns records {target, offset, accuracy, ci_low, ci_high, majority, control_accuracy,
    selectivity, n_fit, n_test}.
    """
    with _one_thread():
        return _probe_aligned(states, targets, fact_segments, fit, test, min_samples, max_iter, on_fit)


def _probe_aligned(states, targets, fact_segments, fit, test, min_samples, max_iter, on_fit) -> list[dict]:
    K, steps, _, _ = states.shape
    n = steps - 1
    records = []
    rows = np.arange(K)
    for name, target in targets.items():
        for offset in aligned_offsets(fact_segments, n):
            t = fact_segments + offset  # (K,) the segment of each sample at this offset
            valid = (t >= 0) & (t < n)
            fit_here, test_here = fit[valid[fit]], test[valid[test]]
            if len(fit_here) < min_samples or len(test_here) < min_samples:
                continue
            tt = np.clip(t, 0, n - 1)
            x = states[rows, tt + 1]  # (K, m, d)
            y, y_control = target.labels[rows, tt], target.control[rows, tt]
            record = {"target": name, "offset": offset}
            record.update(score_probe(x, y, y_control, fit_here, test_here, max_iter))
            records.append(record)
            if on_fit is not None:
                on_fit()
    return records


def count_aligned_fits(targets: dict, fact_segments: np.ndarray, n_segments: int) -> int:
    """Upper bound of the number of probes probe_aligned fits (for progress bars)."""
    return len(targets) * len(aligned_offsets(fact_segments, n_segments))
