"""Memory: how the memory changes across segments (norms, cosine similarity, a 2-D projection) and which slots
moved when the fact arrived. A long run is shown through a window of at most WINDOW memory states (around the
segment chosen on the Replay page, movable here): only those states are read from the trace."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import state
from app.downloads import show_figure, show_table
from app.run_view import current_segment, tag
from rmt_core.viz import figures
from rmt_core.errors import RMTError

WINDOW = 256  # memory states drawn at once (the similarity heatmap grows with its square)


@st.cache_data(show_spinner=False, max_entries=16)
def _window(key: tuple, first: int, count: int) -> np.ndarray:
    """Memory states first .. first+count-1 (float64), read from the trace rows alone."""
    recorded = state.trace_for(key)
    return np.asarray(recorded.memory_rows(first, first + count), dtype=np.float64)


st.title("Memory")
chosen = state.selection()
state.require_input(chosen)
try:
    key = state.trace_key(chosen)
    trace = state.trace_for(key)
    found = state.stats(key)
except RMTError as error:
    state.show_error(error)
    st.stop()

N = trace.n_segments
m, d = trace.num_mem_tokens, trace.manifest["model"]["hidden_size"]
fact_segments = found.fact_segments
if N + 1 <= WINDOW:
    first, count = 0, N + 1
    st.caption(f"{m} memory slots of {d} dimensions; state 0 is the trained initial memory, state t the memory "
               f"after segment t-1 ({N} segments).")
else:
    t = current_segment(key, trace)
    count = WINDOW
    default = min(max(t - WINDOW // 2, 0), N + 1 - WINDOW)
    first = int(st.number_input(f"First memory state of the window ({WINDOW} states of {N + 1:,})", 0,
                                N + 1 - WINDOW, default, step=WINDOW // 2, key=f"memory_first_{tag(key)}"))
    st.caption(f"{m} memory slots of {d} dimensions; states {first:,}..{first + count - 1:,} of {N + 1:,} "
               f"(state 0 is the trained initial memory, state t the memory after segment t-1). The window starts "
               f"around the segment chosen on the Replay page, whose overview shows the whole run.")
try:
    states = _window(key, first, count)
except RMTError as error:
    state.show_error(error)
    st.stop()

show_figure(figures.memory_norms_figure(states, fact_segments, first=first), "memory norms", key="norms")
left, right = st.columns(2)
with left:
    show_figure(figures.memory_similarity_figure(states, first=first), "memory similarity", key="similarity")
with right:
    show_figure(figures.memory_projection_figure(states, first=first), "memory projection", key="projection")

st.subheader("Which slots moved")
show_figure(figures.memory_change_figure(states, fact_segments, first=first), "memory change", key="change")
if fact_segments:
    segment, label = fact_segments[0], "the fact's segment"
    if len(fact_segments) > 1:
        segment = st.selectbox("Fact segment", fact_segments, key="fact_segment")
else:
    st.caption("This input has no marked fact (pasted text): choose a segment to inspect.")
    segment = st.number_input("Segment", 0, N - 1, 0, key="inspect_segment") if N > 1 else 0
    label = "chosen segment"
# the whole run's relative change of every slot (trace_stats), not only the window's
show_figure(figures.slot_change_figure(None, int(segment), label, change=found.slot_change), "slot change",
            key="slot_change")
with st.expander("Tables (the states of the window)"):
    change = figures.memory_change(states)
    norms = np.linalg.norm(states, axis=-1)
    show_table([{"segment": first + t, "slot": k, "relative_change": float(v)}
                for t, row in enumerate(change) for k, v in enumerate(row)], "memory change", key="change_table")
    show_table([{"state": first + t, "slot": k, "norm": float(v)} for t, row in enumerate(norms)
                for k, v in enumerate(row)], "memory norms", key="norms_table")
