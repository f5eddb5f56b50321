"""Memory: how the memory changes across segments (norms, cosine similarity, a 2-D projection) and which slots
moved when the fact arrived."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import state
from app.downloads import show_figure, show_table
from rmt_core import export, figures
from rmt_core.errors import RMTError

st.title("Memory")
chosen = state.selection()
state.require_checkpoint(chosen)
try:
    trace = state.trace(chosen)
except RMTError as error:
    state.show_error(error)
    st.stop()

states = np.asarray(trace.memory_states(), dtype=np.float64)  # (N+1, m, d)
N, m, d = states.shape[0] - 1, states.shape[1], states.shape[2]
fact_segments = export.fact_segments(trace)
st.caption(f"{m} memory slots of {d} dimensions; state 0 is the trained initial memory, state t the memory "
           f"after segment t-1 ({N} segments).")

show_figure(figures.memory_norms_figure(states, fact_segments), "memory norms", key="norms")
left, right = st.columns(2)
with left:
    show_figure(figures.memory_similarity_figure(states), "memory similarity", key="similarity")
with right:
    show_figure(figures.memory_projection_figure(states), "memory projection", key="projection")

st.subheader("Which slots moved")
show_figure(figures.memory_change_figure(states, fact_segments), "memory change", key="change")
if fact_segments:
    segment, label = fact_segments[0], "the fact's segment"
    if len(fact_segments) > 1:
        segment = st.selectbox("Fact segment", fact_segments, key="fact_segment")
else:
    st.caption("This input has no marked fact (pasted text): choose a segment to inspect.")
    segment = st.number_input("Segment", 0, N - 1, 0, key="inspect_segment") if N > 1 else 0
    label = "chosen segment"
show_figure(figures.slot_change_figure(states, int(segment), label), "slot change", key="slot_change")
with st.expander("Tables"):
    show_table(export.trace_table(trace, "memory_change"), "memory change", key="change_table")
    show_table(export.trace_table(trace, "memory_norms"), "memory norms", key="norms_table")
