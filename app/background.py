"""The background replays of this browser session (app/jobs.py) on every page: a progress bar each in the
sidebar, redrawn every second by a fragment while one runs, with a Cancel button; a finished replay's trace is
opened on every page."""

from __future__ import annotations

import streamlit as st

from app import jobs, state

JOBS = "replay_jobs"


def session_jobs() -> list[jobs.ReplayJob]:
    return st.session_state.setdefault(JOBS, [])


def add(job: jobs.ReplayJob) -> None:
    session_jobs().append(job)


def _cancel(job: jobs.ReplayJob) -> None:
    job.cancel()


def _dismiss(job: jobs.ReplayJob) -> None:
    found = session_jobs()
    if job in found:
        found.remove(job)


def _open(job: jobs.ReplayJob) -> None:
    state.request_open(str(job.out))
    _dismiss(job)


def _draw() -> None:
    for i, job in enumerate(list(session_jobs())):
        status = job.state()
        done, total = job.progress()
        minutes = job.elapsed() / 60
        if status == "running":
            if total:
                st.progress(done / total, text=f"{job.description}: {done:,} of {total:,} segments "
                                                f"({minutes:.1f} min)")
            else:
                st.progress(0.0, text=f"{job.description}: loading the checkpoint and the input…")
            st.button("Cancel", key=f"cancel_job_{i}_{job.process.pid}", on_click=_cancel, args=(job,))
        elif status == "done":
            st.success(f"{job.description}: recorded in {minutes:.1f} min → `{job.out}`")
            if not job.opened:  # open it once, on every page
                job.opened = True
                state.request_open(str(job.out))
                st.rerun(scope="app")
            st.button("Dismiss", key=f"dismiss_job_{i}_{job.process.pid}", on_click=_dismiss, args=(job,))
        elif status == "cancelled":
            st.info(f"{job.description}: cancelled; nothing was written to `{job.out}`.")
            st.button("Dismiss", key=f"dismiss_job_{i}_{job.process.pid}", on_click=_dismiss, args=(job,))
        else:
            st.error(f"{job.description}: {job.error()}")
            st.button("Dismiss", key=f"dismiss_job_{i}_{job.process.pid}", on_click=_dismiss, args=(job,))


@st.fragment(run_every=1.0)
def _polling() -> None:
    _draw()
    if not any(job.state() == "running" for job in session_jobs()):
        st.rerun(scope="app")  # stop polling: the next run draws the static panel


@st.fragment
def _static() -> None:
    _draw()


def sidebar_status() -> None:
    """The session's background replays, in the sidebar (nothing when there are none)."""
    found = session_jobs()
    if not found:
        return
    with st.sidebar:
        st.subheader("Background replays")
        if any(job.state() == "running" for job in found):
            _polling()
        else:
            _static()
