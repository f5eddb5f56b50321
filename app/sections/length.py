"""Length: accuracy against the number of segments, beside the paper's curve."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import state
from app.downloads import show_figure, show_table
from rmt_core import error_split, evaluate, paper
from rmt_core.errors import RMTError
from rmt_core.tasks import TASKS


@st.cache_data(show_spinner=False)
def _eval_file(path: str, stamp: tuple) -> dict:
    return evaluate.read_results(path)


@st.cache_data(show_spinner="Evaluating…", max_entries=8)
def _evaluate(folder: str, stamp: tuple, task: str, segments: tuple, samples: int, seed: int) -> dict:
    return evaluate.evaluate(state._model(folder, stamp), task, list(segments), samples, seed=seed, progress=False)


@st.cache_data(show_spinner=False, max_entries=8)
def _split(folder: str, stamp: tuple, path: str, file_stamp: tuple, by: str) -> list[dict]:
    result = _eval_file(path, file_stamp)  # the page has read it already: cached
    return error_split.split_errors(result, state._model(folder, stamp).tokenizer, by)


def _split_section(folder: str, name: str, path: Path, result: dict) -> None:
    """eval.json's answers split by where each sample's fact was (rmt_core.error_split), on request."""
    st.caption("The samples of eval.json are rebuilt from its seed and sources (no model runs) and split by where "
               "the last fact was. Errors among late facts and few among early ones: the model holds what it "
               "wrote but misses facts that come after much noise; the opposite: it forgets.")
    try:
        error_split.check_splittable(result)
    except RMTError as error:
        st.info(f"This eval.json cannot be split: {error}")
        return
    columns = st.columns([3, 1, 1])
    axes = error_split.axes_for(result.get("task"))  # a key per set of axes: a choice kept for reason stays valid
    by = columns[0].radio("Split by", axes, format_func=lambda a: error_split.AXIS_LABELS[a], horizontal=True,
                          key=f"split_by_{len(axes)}")
    least = columns[1].number_input("Least samples a point", 1, 1000, 20, key="split_least")
    if columns[2].button("Split", key="split_run"):
        st.session_state["length_split"] = str(path)
    if st.session_state.get("length_split") != str(path):
        return
    try:
        stat = path.stat()
        with st.spinner(f"Rebuilding {error_split.sample_count(result):,} samples…"):
            rows = _split(folder, state.checkpoint_stamp(folder), str(path), (stat.st_mtime_ns, stat.st_size), by)
    except (RMTError, OSError) as error:
        state.show_error(error if isinstance(error, RMTError) else RMTError(f"cannot read {path}: {error}"))
        return
    label = error_split.AXIS_LABELS[by]
    show_figure(error_split.split_figure(rows, by, f"{name}: accuracy by {label}", int(least)),
                f"{name} accuracy by {by}", key="split")
    table = [dict(r, **{by: f"{r[by][0]}-{r[by][1]}"}) for r in rows]
    show_table(table, f"{name} answers by {by}", key="split_table")


st.title("Length")
st.caption("Accuracy against the number of segments (log scale), with 95% intervals; the paper's curve for "
           f"models trained on {paper.HEADLINE_TRAINED_SEGMENTS} segments is dashed beside ours.")
chosen = state.selection()
results: dict[str, dict] = {}
task = chosen.task
if chosen.checkpoint and not chosen.problem:
    file = Path(chosen.checkpoint) / "eval.json"
    name = Path(chosen.checkpoint).name
    if file.is_file():
        try:
            results[f"{name} (eval.json)"] = _eval_file(str(file), (file.stat().st_mtime_ns, file.stat().st_size))
            task = results[f"{name} (eval.json)"].get("task") or task
        except RMTError as error:
            state.show_error(error)
    else:
        st.info(f"{name} has no eval.json yet (write one with `rmt eval --checkpoint {chosen.checkpoint} "
                f"--json {file}`); the paper's curves are shown alone. You can run a short evaluation below.")
    with st.form("evaluate"):
        st.markdown("**Evaluate now** (fresh samples; a few per length keep it quick on a CPU)")
        columns = st.columns(4)
        tasks, index = state.task_choices(chosen.checkpoint, task)
        run_task = columns[0].selectbox("Task", tasks, index=index)
        lengths = columns[1].text_input("Segments", "1,2,4,8")
        samples = columns[2].number_input("Samples per length", 1, 1000, 16)
        seed = columns[3].number_input("Seed", 0, 2**31 - 1, 0)
        submitted = st.form_submit_button("Evaluate")
    if submitted:
        try:
            segments = tuple(int(x) for x in lengths.replace(" ", "").split(",") if x)
            st.session_state["length_eval"] = (run_task, segments, int(samples), int(seed))
        except ValueError:
            st.error(f"segments must be whole numbers separated by commas, got {lengths!r}")
    if st.session_state.get("length_eval"):
        run_task, segments, samples, seed = st.session_state["length_eval"]
        try:
            folder = chosen.checkpoint
            results[f"{name} (now: {run_task}, {samples} samples)"] = _evaluate(
                folder, state.checkpoint_stamp(folder), run_task, segments, samples, seed)
        except RMTError as error:
            state.show_error(error)
else:
    st.info("No checkpoint chosen: the paper's curves are shown alone.")

show_figure(evaluate.length_figure(results, paper=True), "length", key="length")
for label, result in results.items():
    rows = [{k: v for k, v in row.items() if k not in ("wrong_seeds", "wrong_indexes", "pieces")}
            for row in result["results"]]
    show_table(rows, f"accuracy {label}", key=f"table_{label}")

if chosen.checkpoint and not chosen.problem and results.get(f"{Path(chosen.checkpoint).name} (eval.json)"):
    with st.expander("Where the answers are lost: eval.json split by where the fact was"):
        _split_section(chosen.checkpoint, Path(chosen.checkpoint).name, Path(chosen.checkpoint) / "eval.json",
                       results[f"{Path(chosen.checkpoint).name} (eval.json)"])

with st.expander("The paper's trained against evaluated length (Figure 5)"):
    shown = st.selectbox("Task", TASKS, index=TASKS.index(task) if task in TASKS else 0, key="matrix_task")
    show_figure(evaluate.length_matrix_figure(paper.matrix(shown)), f"paper matrix {shown}", key="paper_matrix")
