"""Probes: linear probes on memory states, ablation and patching; accuracy by segment and slot, selectivity."""

from __future__ import annotations

import streamlit as st

from app import state
from app.downloads import show_figure, show_table
from rmt_core.viz import export
from rmt_core.errors import RMTError

from probes.figures import all_figures
from probes.run import run_probes

st.title("Probes")


@st.cache_data(show_spinner="Running the probes (collect states, fit probes, ablate, patch)…", max_entries=4)
def _run(folder: str, stamp: tuple, task: str, segments: int, samples: int, seed: int, interventions: bool,
         intervention_samples: int) -> dict:
    return run_probes(state._model(folder, stamp), task, segments, samples, seed=seed, out=None, progress=False,
                      ablation=interventions, patching=interventions, intervention_samples=intervention_samples,
                      figures=None)


@st.cache_data(show_spinner=False)
def _read(path: str, stamp: float) -> dict:
    return export.read_results(path)


def _figures(results: dict) -> dict:
    """Figures of the results, drawn by the one renderer of probe results (probes.figures)."""
    return all_figures(results)


chosen = state.selection()
source = st.radio("Results", ["Run the probes here", "Open a results folder"], horizontal=True, key="probe_source")
results = None
if source == "Run the probes here":
    folder = state.require_checkpoint(chosen)
    with st.form("probe_form"):
        columns = st.columns(5)
        tasks, index = state.task_choices(folder, chosen.task)
        task = columns[0].selectbox("Task", tasks, index=index)
        segments = columns[1].number_input("Segments", 1, state.MAX_SEGMENTS, max(chosen.n_segments, 2))
        samples = columns[2].number_input("Samples", 8, 5000, 64, help="split in half: fit and held-out test")
        seed = columns[3].number_input("Seed", 0, 2**31 - 1, 0)
        interventions = columns[4].checkbox("Ablation and patching", value=True)
        submitted = st.form_submit_button("Run probes")
    if submitted:
        st.session_state["probe_run"] = (task, int(segments), int(samples), int(seed), bool(interventions))
    if st.session_state.get("probe_run"):
        task, segments, samples, seed, interventions = st.session_state["probe_run"]
        try:
            results = _run(folder, state.checkpoint_stamp(folder), task, segments, samples, seed, interventions,
                           min(samples, 64))
        except RMTError as error:
            state.show_error(error)
    else:
        st.caption("Choose the probe run above: states of every segment are collected from fresh samples, "
                   "probes fitted on half and tested on the other half.")
else:
    path = st.text_input("Folder of `rmt probe --out` (or its results.json)", key="probe_results_path").strip()
    if path:
        try:
            from pathlib import Path

            target = Path(path)
            file = target / "results.json" if target.is_dir() else target
            results = _read(str(file), file.stat().st_mtime if file.exists() else 0.0)
        except RMTError as error:
            state.show_error(error)

if results:
    clean = results.get("clean") or {}
    if clean:
        st.markdown(f"Answer accuracy on these samples: **{clean['accuracy']:.0%}** "
                    f"(95% CI {clean['ci_low']:.0%}–{clean['ci_high']:.0%}, {clean['samples']} samples)")
    for note in results.get("notes") or []:
        st.caption(note)
    for name, fig in _figures(results).items():
        show_figure(fig, name, key=f"probe_{name}")
    for table in export.RESULTS_TABLES:
        rows = export.results_table(results, table)
        if rows:
            st.subheader(table.capitalize())
            show_table(rows, f"probe {table}", key=f"probe_table_{table}")
    if results.get("attention"):
        with st.expander("Attention read-outs"):
            st.json(results["attention"])
