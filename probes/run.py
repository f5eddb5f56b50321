"""A scripted probe run: samples -> memory states -> probes, interventions, attention read-outs -> results.

`run_probes` is the one entry point of `rmt probe` and of the dashboard's Probes page. Stages, in order:

    collect    memory states (K, N+1, m, d), final logits, attention read-outs of K samples
    probes     linear probes per target x segment x (all slots, each slot), with control tasks
    aligned    the all-slot probes against segment - (last) fact segment (detect, reason)
    ablation   each slot and all slots, modes mean / zeros / initial, at segments 0..N-2
    patching   each slot and all slots from a sample with another answer, at segments 0..N-2

With `out`, results.json is rewritten after each stage, with a key per stage; a rerun with the same model and
settings reuses finished stages and the cached states (states.npz), so an interrupted run resumes and a
finished one only rewrites its tables and figures.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from probes import interventions, linear, targets as targets_module
from probes.attention import summary as attention_summary
from probes.states import Collected, collect, small_model_threaded
from rmt_core.checkpoint import model_identity, portable_path
from rmt_core.errors import ProbeError
from rmt_core.files import write_atomic

FORMAT = "rmt-lens-probes"
FORMAT_VERSION = 1
STAGES = ("collect", "probes", "aligned", "ablation", "patching")
MAX_TOKENS = 2**25  # token ids of all samples, held at once (their lists and two int64 tensors: ~1 GB)
TABLES = {  # CSV file -> rows of results
    "probes.csv": ("probes",),
    "aligned.csv": ("aligned",),
    "ablation.csv": ("ablation",),
    "patching.csv": ("patching",),
    "attention_write.csv": ("attention", "write"),
    "attention_read.csv": ("attention", "read"),
}


# ----- identity and keys -----------------------------------------------------------------------------------
def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----- files -----------------------------------------------------------------------------------------------
def json_safe(value):
    """JSON-safe copy: numpy scalars to Python, NaN and infinities to None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, results: dict) -> None:
    write_atomic(Path(path), json.dumps(json_safe(results), indent=1, allow_nan=False).encode("utf-8"))


def _save_states(path: Path, key: str, collected: Collected) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, key=np.array(key), states=collected.states, logits=collected.logits)
    write_atomic(path, buffer.getvalue())


def _load_states(path: Path, key: str) -> Collected | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            return Collected(states=data["states"], logits=data["logits"])
    except (OSError, ValueError, KeyError):
        return None


def _load_partial(out: Path | None) -> dict:
    if out is None or not (out / "results.json").is_file():
        return {}
    try:
        results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return results if isinstance(results, dict) and results.get("format") == FORMAT else {}


# ----- progress --------------------------------------------------------------------------------------------
class _Progress:
    """One tqdm bar (stderr; hidden when not a terminal) and/or a callback(stage, done, total)."""

    def __init__(self, progress, total: int):
        self.callback = progress if callable(progress) else None
        self.total, self.done, self.stage = total, 0, ""
        self.bar = None
        if progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="probe", unit="step", disable=None, leave=False)

    def set_stage(self, stage: str) -> None:
        self.stage = stage
        if self.bar is not None:
            self.bar.set_description(stage)
        if self.callback is not None:
            self.callback(stage, self.done, self.total)

    def step(self, count: int = 1) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
        if self.callback is not None:
            self.callback(self.stage, self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----- the run -----------------------------------------------------------------------------------------------
def _check_recorded(model, recorded) -> None:
    """The traces were recorded with this model's segment layout and weights."""
    samples, _, identities = recorded
    if samples[0].segment_size != model.config.segment_size:
        raise ProbeError(f"the traces have segments of {samples[0].segment_size} tokens but the checkpoint uses "
                         f"{model.config.segment_size}; pass the --checkpoint that recorded them")
    mine = model_identity(model).get("sha256")
    theirs = {i.get("sha256") for i in identities if isinstance(i, dict)}
    if mine is not None and theirs != {mine}:
        raise ProbeError("the traces were recorded with other weights than this checkpoint; pass the --checkpoint "
                         "that recorded them (their manifest.json names it)")


def _check_args(task, segments, samples, test_fraction, intervention_samples, modes):
    from rmt_core.babilong import GENERATIVE_TASKS
    from rmt_core.tasks import TASKS

    if task not in TASKS + GENERATIVE_TASKS:
        raise ProbeError(f"unknown task {task!r}; choose one of {', '.join(TASKS + GENERATIVE_TASKS)}")
    for value, name, minimum in ((segments, "--segments", 1), (samples, "--samples", 4)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ProbeError(f"{name} must be an integer of at least {minimum}, got {value!r}")
    if not 0 < test_fraction < 1:
        raise ProbeError(f"test fraction must lie strictly between 0 and 1, got {test_fraction}")
    if intervention_samples is not None and (not isinstance(intervention_samples, (int, np.integer))
                                             or intervention_samples < 2):
        raise ProbeError(f"--intervention-samples must be 2 or more, got {intervention_samples!r}")
    bad = [mode for mode in modes if mode not in interventions.MODES]
    if bad:
        raise ProbeError(f"unknown ablation mode {bad[0]!r}; choose from {', '.join(interventions.MODES)}")


DEFAULT_MAX_SEGMENTS = 64  # the longest default: interventions grow with the square of the length


def default_segments(trained_segments: int | None) -> int:
    """The length a probe run takes without --segments: the checkpoint's trained length, at least 2 and at most
    DEFAULT_MAX_SEGMENTS. Ablation and patching rerun every later segment for every earlier one, so a run at a
    random-length stage's longest (reason: 1,024) would take days; longer lengths are asked for by --segments."""
    return min(max(2, int(trained_segments or 0)), DEFAULT_MAX_SEGMENTS)


def check_probe_size(segments: int, samples: int, segment_size: int) -> None:
    """ProbeError, before any sample is built, when the run's samples would not fit in memory at once."""
    from rmt_core.tasks import check_sample_size

    check_sample_size(segments, segment_size)
    tokens = samples * segments * segment_size
    if tokens > MAX_TOKENS:
        raise ProbeError(f"{samples:,} samples of {segments:,} x {segment_size} tokens is {tokens:,} tokens, more than "
                         f"the {MAX_TOKENS:,} a probe run holds in memory; give fewer --samples or --segments")


@small_model_threaded
def run_probes(model, task: str, segments: int, samples: int, *, seed: int = 0, out=None, progress=True,
               babi_file=None, noise_file=None, babi_dir=None, split: str = "test", batch_size: int | None = None,
               test_fraction: float = 0.5, max_iter: int = 200, per_slot: bool = True, attention: bool = True,
               ablation: bool = True, patching: bool = True, intervention_samples: int | None = 100,
               modes=interventions.MODES, figures: str | None = "auto", traces=None) -> dict:
    """Probe the memory of `model` on `samples` samples of `task` with `segments` segments; return results.

    model: an RMT (rmt_core.model) in eval mode, with `.tokenizer`; its segment size is used.
    out: a folder for results.json, CSV tables, figures/ and the states cache; None keeps everything in memory.
    progress: True for a tqdm bar, False for none, or a callable(stage, done, total).
    split: the bAbI split when babi_dir is given. per_slot: probes for each slot too (not only all slots).
    intervention_samples: how many of the samples ablation and patching use (None: all).
    figures: 'auto' (PNG when Chromium works, else HTML), 'png', 'html' or None; only with `out`.
    traces: a trace folder of `rmt replay` or a folder of them: probe the memory states recorded there (task,
    segments and samples come from the traces; `model` must be the checkpoint that recorded them and is used
    by ablation and patching) instead of running fresh samples.
    Returns the results dict (SPEC section 7): settings, checkpoint, targets, clean, probes, aligned,
    ablation, patching, attention, timings, notes, files.
    """
    from rmt_core.evaluate import eval_sample_seed
    from rmt_core.inputs import ModelInput
    from rmt_core.babilong import check_task, make_builder
    from rmt_core.tasks import default_tokenizer

    from probes.states import auto_batch_size

    modes = tuple(modes)
    batch_size = int(batch_size) if batch_size else auto_batch_size(model)
    recorded = None
    if traces is not None:
        from probes.states import from_traces

        recorded = from_traces(traces)
        task, segments, samples = recorded[0][0].task, recorded[0][0].n_segments, len(recorded[0])
        _check_recorded(model, recorded)
        attention = False  # read-outs need attention of every fact segment; traces keep only some
    _check_args(task, segments, samples, test_fraction, intervention_samples, modes)
    # A decoder answers by generation; its "logits" here are the first answer token's scores over the labels at
    # the end of the prompt (DecoderRMT.answering), and its inputs are the prompts (the answer tokens cut off).
    decoder = getattr(model.config, "architecture", "encoder") == "decoder"
    check_task(task, "decoder" if decoder else "encoder")
    attention = attention and not decoder
    out = Path(out) if out is not None else None
    tokenizer = getattr(model, "tokenizer", None) or default_tokenizer()
    segment_size = model.config.segment_size
    check_probe_size(int(segments), int(samples), segment_size)
    builder = make_builder(task, tokenizer, segment_size, babi_file=babi_file, babi_dir=babi_dir,
                           noise_file=noise_file, split=split)
    # The samples of `rmt eval` with this seed: held out from training batches by construction.
    if recorded is not None:
        sample_list = recorded[0]
    else:
        sample_list = [builder.sample(int(segments), eval_sample_seed(int(seed), int(segments), i))
                       for i in range(int(samples))]
    if decoder:
        input_ids = [ModelInput.from_sample(s) for s in sample_list]  # K prompts
        roles = None
    else:
        input_ids = torch.tensor([s.input_ids for s in sample_list], dtype=torch.long)  # (K, N*S)
        roles = torch.tensor([s.roles for s in sample_list], dtype=torch.long)  # (K, N*S)
    answers = np.array([s.answer for s in sample_list])
    targets = targets_module.build_targets(sample_list, seed=int(seed))
    fact_segments = targets_module.last_fact_segments(sample_list)
    K, N, m = len(sample_list), int(segments), model.num_mem_tokens
    n_int = K if intervention_samples is None else min(K, int(intervention_samples))
    aligned_wanted = task != "memorize" and N > 1
    interventions_possible = N > 1

    identity = model_identity(model)
    settings = {
        "task": task, "segments": N, "samples": K, "seed": int(seed), "segment_size": segment_size,
        "num_mem_tokens": m, "hidden_size": getattr(model, "hidden_size", None),
        "babi_file": portable_path(babi_file or None), "babi_dir": portable_path(babi_dir or None),
        "noise_file": portable_path(noise_file or None), "split": split, "test_fraction": test_fraction,
        "max_iter": max_iter, "per_slot": per_slot, "attention": attention, "ablation": ablation,
        "patching": patching, "intervention_samples": n_int, "modes": list(modes), "batch_size": batch_size,
        "probe": "standardised features, multinomial logistic regression (lbfgs, L2 C=1)",
        "ci": "95% Wilson score interval over held-out samples",
    }
    if recorded is not None:
        settings["traces"] = portable_path(traces)
    data_key = [identity.get("sha256"), task, N, K, int(seed), segment_size, settings["babi_file"],
                settings["babi_dir"], settings["noise_file"], split, sample_list[0].sources.get("noise"),
                [s.seed for s in sample_list] if recorded is not None else None]
    keys = {"collect": _key(data_key, attention)}
    keys["probes"] = _key(keys["collect"], test_fraction, max_iter, per_slot)
    keys["aligned"] = _key(keys["collect"], test_fraction, max_iter, "aligned")
    keys["ablation"] = _key(keys["collect"], n_int, list(modes))
    keys["patching"] = _key(keys["collect"], n_int)
    cacheable = identity.get("sha256") is not None

    wanted = {"collect": True, "probes": True, "aligned": aligned_wanted,
              "ablation": ablation and interventions_possible, "patching": patching and interventions_possible}
    previous = _load_partial(out) if cacheable else {}
    done = {s for s in STAGES if wanted[s] and previous.get("stage_keys", {}).get(s) == keys[s]}

    results = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "checkpoint": identity, "settings": settings,
        "targets": {name: {"classes": t.classes, "description": t.description,
                           "control": "fixed random label of the fact type, uniform over the same classes"}
                    for name, t in targets.items()},
        "samples_meta": {"seeds": [s.seed for s in sample_list], "answers": answers.tolist(),
                         "fact_segments": [[f.segment for f in s.facts] for s in sample_list]},
        "probes": [], "aligned": [], "ablation": [], "patching": [], "attention": {},
        "timings": {}, "notes": [], "stage_keys": {}, "complete": False,
    }
    for stage in done:
        results["stage_keys"][stage] = keys[stage]
        results["timings"][stage] = previous.get("timings", {}).get(stage)
    for field in ("probes", "aligned", "ablation", "patching"):
        if field in done:
            results[field] = previous.get(field, [])
    if "collect" in done:
        results["clean"] = previous.get("clean")
        results["attention"] = previous.get("attention", {})
    if not aligned_wanted:
        results["notes"].append("aligned probes are for detect and reason with 2 or more segments (memorize's "
                                "fact is always in segment 0)")
    if not interventions_possible:
        results["notes"].append("ablation and patching change the memory written by segments 0..N-2; "
                                "use --segments 2 or more")
    if decoder:
        results["notes"].append("decoder: the answer scores are the first generated token's logits over the labels' "
                                "first tokens; the memory probed is the write memory; no attention read-outs")

    split_fit, split_test = linear.split_samples(K, test_fraction, int(seed))
    aligned_targets = {name: t for name, t in targets.items() if name != "seen"}
    steps_of = {
        "collect": math.ceil(K / batch_size) * N,
        "probes": len(targets) * N * (1 + (m if per_slot else 0)),
        "aligned": linear.count_aligned_fits(aligned_targets, fact_segments, N),
        "ablation": (N - 1) * (m + 1) * len(modes),
        "patching": (N - 1) * (m + 1),
    }
    todo = [s for s in STAGES if wanted[s] and s not in done]
    need_states = any(s != "collect" for s in todo)
    collected = None
    if need_states and "collect" in done and out is not None:
        collected = _load_states(out / "states.npz", keys["collect"])
        if collected is None:
            done.discard("collect")
            todo.insert(0, "collect")
    bar = _Progress(progress, sum(steps_of[s] for s in todo))
    answering = model.answering() if decoder else contextlib.nullcontext()

    def checkpoint_stage(stage: str, started: float) -> None:
        results["timings"][stage] = round(time.perf_counter() - started, 3)
        results["stage_keys"][stage] = keys[stage]
        if out is not None:
            write_json(out / "results.json", results)

    try:
        with answering:
            for stage in todo:
                bar.set_stage(stage)
                started, first_step = time.perf_counter(), bar.done
                if stage == "collect" and recorded is not None:
                    collected = recorded[1]  # the traces' own memory states and final logits
                    results["notes"].append(f"memory states read from {K} traces in {traces}; no attention read-outs")
                elif stage == "collect":
                    collected = collect(model, input_ids, roles if attention else None, batch_size=batch_size,
                                        on_step=bar.step)
                if stage == "collect":
                    predictions = collected.logits.argmax(-1)
                    correct = int((predictions == answers).sum())
                    low, high = linear.wilson_interval(correct, K)
                    results["clean"] = {"accuracy": correct / K, "ci_low": low, "ci_high": high, "samples": K,
                                        "predictions": predictions.tolist()}
                    results["attention"] = attention_summary(collected.write, collected.read) if attention else {}
                    if out is not None and cacheable:
                        _save_states(out / "states.npz", keys["collect"], collected)
                elif stage == "probes":
                    results["probes"] = linear.probe_grid(collected.states, targets, split_fit, split_test,
                                                          slots=per_slot, max_iter=max_iter, on_fit=bar.step)
                elif stage == "aligned":
                    results["aligned"] = linear.probe_aligned(collected.states, aligned_targets, fact_segments,
                                                              split_fit, split_test, max_iter=max_iter,
                                                              on_fit=bar.step)
                elif stage == "ablation":
                    results["ablation"] = _ablation(model, input_ids[:n_int], answers[:n_int], collected, n_int,
                                                    N, m, modes, batch_size, bar.step)
                elif stage == "patching":
                    if len(set(answers[:n_int].tolist())) < 2:  # no pair with different answers to patch between
                        results["notes"].append("patching skipped: the intervention samples all share one answer; "
                                                "give more --intervention-samples")
                    else:
                        results["patching"] = _patching(model, input_ids[:n_int], answers[:n_int], collected, n_int,
                                                        N, m, int(seed), batch_size, bar.step)
                if bar.done - first_step < steps_of[stage]:  # aligned offsets with too few samples are skipped
                    bar.step(steps_of[stage] - (bar.done - first_step))
                checkpoint_stage(stage, started)
    finally:
        bar.close()

    results["complete"] = True
    if out is not None:
        results["files"] = write_outputs(results, out, figures=figures)
        write_json(out / "results.json", results)
    return json_safe(results)


def _ablation(model, input_ids, answers, collected, n, N, m, modes, batch_size, step) -> list[dict]:
    rows = []
    states, logits = collected.states[:n], collected.logits[:n]
    for t in range(N - 1):
        for slot in ["all"] + list(range(m)):
            for mode in modes:
                rows.append(interventions.ablate(model, input_ids, answers, t, slot, mode, states=states,
                                                 clean_logits=logits, batch_size=batch_size))
                step()
    return rows


def _take(inputs, index):
    """Rows `index` of an id tensor or of a list of ModelInputs."""
    return [inputs[int(i)] for i in index] if isinstance(inputs, list) else inputs[index]


def _patching(model, input_ids, answers, collected, n, N, m, seed, batch_size, step) -> list[dict]:
    rows = []
    a, b = interventions.pair_samples(answers, seed)
    states, logits = collected.states[:n], collected.logits[:n]
    for t in range(N - 1):
        for slot in ["all"] + list(range(m)):
            rows.append(interventions.patch(model, _take(input_ids, a), _take(input_ids, b), answers[a], answers[b],
                                            t, slot,
                                            states_a=states[a], states_b=states[b], logits_a=logits[a],
                                            logits_b=logits[b], batch_size=batch_size))
            step()
    return rows


# ----- outputs -----------------------------------------------------------------------------------------------
def _rows(results: dict, path: tuple[str, ...]) -> list[dict]:
    value = results
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return list(value or [])


def _csv(rows: list[dict]) -> bytes:
    import csv

    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: " ".join(map(str, v)) if isinstance(v, list) else v for k, v in json_safe(row).items()})
    return buffer.getvalue().encode("utf-8")


def write_outputs(results: dict, out, figures: str | None = "auto") -> dict:
    """Write the CSV tables and figures of `results` into `out`; return {"tables": [...], "figures": {...}}.

    figures: 'auto' (PNG through kaleido when a Chromium works, else HTML, with a note in results['notes']),
    'png', 'html', or None for none.
    """
    from probes import figures as builders

    out = Path(out)
    written = {"tables": [], "figures": {}}
    for name, path in TABLES.items():
        rows = _rows(results, path)
        if rows:
            write_atomic(out / name, _csv(rows))
            written["tables"].append(name)
    if not figures:
        return written
    if figures not in ("auto", "png", "html"):
        raise ProbeError(f"unknown figure format {figures!r}; choose auto, png or html")
    built = builders.all_figures(results)
    fmt = "html" if figures == "html" else "png"
    for name, fig in built.items():
        path = out / "figures" / f"{name}.{fmt}"
        try:
            write_atomic(path, _figure_bytes(fig, fmt))
        except ProbeError as error:
            if figures == "png":
                raise
            results["notes"].append(f"figures written as HTML: {error}")
            fmt = "html"
            path = out / "figures" / f"{name}.html"
            write_atomic(path, _figure_bytes(fig, "html"))
        written["figures"][name] = str(path.relative_to(out))
    if fmt == "html" and built:  # the pages share one local copy of plotly.js: offline, and 4 MB once, not per page
        from plotly.offline import get_plotlyjs

        write_atomic(out / "figures" / "plotly.min.js", get_plotlyjs().encode("utf-8"))
    return written


def _figure_bytes(fig, fmt: str) -> bytes:
    """PNG through rmt_core.viz.export (kaleido, local Chromium, with a timeout) or an HTML page reading
    plotly.min.js beside it."""
    from rmt_core.viz.export import ExportError, figure_bytes

    if fmt == "html":
        return fig.to_html(full_html=True, include_plotlyjs="directory").encode("utf-8")
    try:
        return figure_bytes(fig, fmt)
    except ExportError as error:
        raise ProbeError(f"{error}; or use --figures html") from None
