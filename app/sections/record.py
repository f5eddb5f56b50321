"""Record: replay a long input into a trace folder in the background (`rmt replay` in a child process), with a
progress bar in the sidebar; the app stays usable meanwhile and opens the trace when it is written. A cancelled
replay leaves nothing behind (the trace appears under its name only when complete)."""

from __future__ import annotations

import re
from pathlib import Path

import streamlit as st

from app import background, jobs, state
from rmt_core.errors import RMTError
from rmt_core.tasks import TASKS

st.title("Record")
st.caption("Replay an input of any length into a trace folder on the server, in the background. The sidebar "
           "shows its progress on every page; when it is done the trace opens (sidebar: Trace folder) and the "
           "Replay page shows the whole run.")
chosen = state.selection()
folder = state.require_checkpoint(chosen)
st.markdown(f"Checkpoint: `{folder}` (choose another in the sidebar)")

source = st.radio("Input", ["Task sample", "Text file on the server", "Upload a text file"], horizontal=True,
                  key="record_source")
with st.form("record_form"):
    upload = None
    if source == "Task sample":
        columns = st.columns(3)
        task = columns[0].selectbox("Task", TASKS, index=TASKS.index(chosen.task) if chosen.task in TASKS else 0,
                                    key="record_task")
        segments = int(columns[1].number_input("Segments", 1, 10_000_000, 4096, step=1024, key="record_segments"))
        seed = int(columns[2].number_input("Seed", 0, 2**31 - 1, 0, key="record_seed"))
        input_args = ["--task", task, "--segments", str(segments), "--seed", str(seed)]
        question = None
        name = f"{task}-{segments}-seed{seed}"
        description = f"{task}, {segments:,} segments, seed {seed}"
    else:
        if source == "Text file on the server":
            path = st.text_input("Text file (UTF-8, on the server)", placeholder="/path/to/book.txt",
                                 key="record_text_file").strip()
            input_args = ["--text-file", str(Path(path).expanduser())] if path else []
            name = Path(path).stem if path else "text"
        else:
            upload = st.file_uploader("Text file (UTF-8)", type=["txt", "md"], key="record_upload")
            input_args = []
            name = Path(upload.name).stem if upload is not None else "upload"
        question = st.text_input("Question (ends the last segment)", value=state.EXAMPLE_QUESTION,
                                 key="record_question")
        description = f"text {name}"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "trace"
    default_out = Path.cwd() / "traces" / slug
    out = st.text_input("Output folder (must not exist)", key="record_out",
                        placeholder=f"{default_out} (when left empty)").strip() or str(default_out)
    columns = st.columns(3)
    budget = columns[0].number_input("Attention budget (MiB)", 0.0, 65536.0, 64.0, step=16.0, key="record_budget",
                                     help="read/write attention of every segment while it fits, else the first and "
                                          "last segments, the fact segments and the ones below")
    full = columns[1].text_input("Full attention of segments", value="0,-1", key="record_full",
                                 help="comma-separated segment numbers (negative counts from the end); the bertviz "
                                      "views need a segment's full attention")
    logits = columns[2].checkbox("The head's answer at every segment", value=True, key="record_logits")
    submitted = st.form_submit_button("Record in the background")

if submitted:
    try:
        if source == "Text file on the server" and not input_args:
            raise RMTError("name a text file on the server to replay")
        if source == "Upload a text file" and upload is None:
            raise RMTError("choose a text file to upload")
        if source != "Task sample" and not (question or "").strip():
            raise RMTError("write the question that ends the text")
        job = jobs.start_replay(folder, Path(out), input_args, description, attention_budget_mib=float(budget),
                                full_attention=full, segment_logits=logits, question=question,
                                upload=None if upload is None else (upload.name, upload.getvalue()))
    except RMTError as error:
        state.show_error(error)
    else:
        background.add(job)
        st.rerun()  # the sidebar starts showing its progress

found = background.session_jobs()
if found:
    st.subheader("This session's replays")
    for job in found:
        done, total = job.progress()
        st.markdown(f"- {job.description} → `{job.out}`: {job.state()}"
                    + (f", {done:,} of {total:,} segments" if total else ""))
