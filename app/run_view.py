"""The Replay page's body: the whole run (overview), the chosen segment, and that segment's detail views.

Everything that depends on the chosen segment runs in one `st.fragment`, so a segment change reruns this
part alone, not the sidebar and the page around it; each figure of a segment is built once and cached
(`state.tokens_figure`, ...), and the neighbouring segments are built in the background while the person
looks at this one (`state.prefetch`). The overview figure of the shown range is built once per range and
kept in the session; a segment change only moves its marker.

The chosen segment and the shown range live in `st.session_state` under keys made from the trace's key, so
every page (Replay, Memory) follows the same segment of the same trace.
"""

from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st

from app import state
from app.downloads import show_figure, show_table
from rmt_core import export
from rmt_core.errors import RMTError

AROUND = 100  # "zoom to the segment" shows this many segments either side


def tag(key: tuple) -> str:
    return hashlib.sha1(repr(key).encode()).hexdigest()[:10]


# ----- the chosen segment and the shown range, shared by the pages ------------------------------------------
def segment_key(key: tuple) -> str:
    return f"segment_{tag(key)}"


def range_key(key: tuple) -> str:
    return f"range_{tag(key)}"


def current_segment(key: tuple, recorded) -> int:
    name = segment_key(key)
    if name not in st.session_state:
        st.session_state[name] = state.default_segment(recorded)
    return min(max(int(st.session_state[name]), 0), recorded.n_segments - 1)


def shown_range(key: tuple, n: int) -> tuple[int, int]:
    name = range_key(key)
    if name not in st.session_state:
        st.session_state[name] = (0, n - 1)
    lo, hi = st.session_state[name]
    return max(0, int(lo)), min(n - 1, int(hi))


def set_segment(key: tuple, n: int, t: int) -> None:
    """Choose segment t (a widget callback: runs before the next run draws anything)."""
    t = min(max(int(t), 0), n - 1)
    tg = tag(key)
    st.session_state[segment_key(key)] = t
    st.session_state[f"slider_{tg}"] = t
    st.session_state[f"number_{tg}"] = t
    lo, hi = shown_range(key, n)
    if not lo <= t <= hi:  # keep the chosen segment in view: same width, centred on it
        width = hi - lo
        lo = min(max(t - width // 2, 0), max(n - 1 - width, 0))
        set_range(key, n, lo, lo + width)


def set_range(key: tuple, n: int, lo: int, hi: int) -> None:
    lo, hi = sorted((min(max(int(lo), 0), n - 1), min(max(int(hi), 0), n - 1)))
    st.session_state[range_key(key)] = (lo, hi)
    st.session_state[f"rangeslider_{tag(key)}"] = (lo, hi)


def _on_widget(key: tuple, n: int, widget: str) -> None:
    set_segment(key, n, st.session_state[f"{widget}_{tag(key)}"])


def _on_range(key: tuple, n: int) -> None:
    lo, hi = st.session_state[f"rangeslider_{tag(key)}"]
    set_range(key, n, lo, hi)


def _on_overview(key: tuple, n: int) -> None:
    """A click on the overview jumps to that segment (a bin's highest point); a dragged box zooms to its range."""
    event = st.session_state.get(f"overview_{tag(key)}") or {}
    selection = event.get("selection") or {}
    boxes = selection.get("box") or []
    if boxes and boxes[0].get("x"):
        x0, x1 = sorted(boxes[0]["x"][:2])
        set_range(key, n, int(np.ceil(x0)), int(np.floor(x1)) if np.floor(x1) >= np.ceil(x0) else int(np.ceil(x0)))
        return
    points = selection.get("points") or []
    if points:
        point = points[0]
        data = point.get("customdata")
        if isinstance(data, (list, tuple)) and len(data) >= 3:  # a bin: go to its highest point
            set_segment(key, n, int(round(float(data[2]))))
        elif point.get("x") is not None:
            set_segment(key, n, int(round(float(point["x"]))))


# ----- the overview ---------------------------------------------------------------------------------------------
def _overview_figure(key: tuple, lo: int, hi: int, t: int, found):
    """The session's overview figure of segments lo..hi with the marker on segment t (built once per range)."""
    from rmt_core import figures

    name = f"overview_figure_{tag(key)}"
    kept = st.session_state.get(name)
    if kept is None or kept[0] != (lo, hi):
        fig = figures.overview_figure(state.overview_rows(key, lo, hi), found.fact_segments, found.question_segments,
                                      current=t, span=(lo, hi))
        kept = ((lo, hi), fig)
        st.session_state[name] = kept
    fig = kept[1]
    if fig.layout.shapes[-1].x0 != t:  # the current-segment marker is the last shape and annotation
        fig.layout.shapes[-1].update(x0=t, x1=t)
        fig.layout.annotations[-1].update(x=t, text=f"segment {t}")
    return fig


def overview(key: tuple, recorded, t: int) -> None:
    n = recorded.n_segments
    found = state.stats(key)
    lo, hi = shown_range(key, n)
    tg = tag(key)
    fig = _overview_figure(key, lo, hi, t, found)
    show_figure(fig, "whole run", key=f"overview_{tg}_fig", on_select=lambda: _on_overview(key, n),
                selection_mode=("points", "box"), widget_key=f"overview_{tg}")
    notes = [f"memory state 0 is the trained initial memory; the cosine compares each segment's memory with the "
             f"{found.reference}"]
    if found.answer_probability is None:
        notes.append("this trace did not record the head's logits at every segment, so there is no answer curve "
                     "(replay without --no-segment-logits to get it)")
    elif found.answer_kind == "prediction":
        notes.append("free text: the curve is the probability of the final prediction")
    st.caption("Click the chart to go to a segment (a bin's highest point); drag across it to zoom. " +
               "; ".join(notes) + ".")
    if n > 1:
        columns = st.columns([6, 1, 1])
        if f"rangeslider_{tg}" not in st.session_state:
            st.session_state[f"rangeslider_{tg}"] = (lo, hi)
        columns[0].slider("Segments shown", 0, n - 1, key=f"rangeslider_{tg}", on_change=_on_range, args=(key, n))
        columns[1].button("Whole run", key=f"whole_{tg}", on_click=set_range, args=(key, n, 0, n - 1),
                          disabled=(lo, hi) == (0, n - 1))
        columns[2].button(f"±{AROUND} around", key=f"around_{tg}", on_click=set_range,
                          args=(key, n, t - AROUND, t + AROUND), help="zoom to the segments around the chosen one")


# ----- choosing a segment -----------------------------------------------------------------------------------------
def navigator(key: tuple, recorded, t: int) -> None:
    n = recorded.n_segments
    tg = tag(key)
    if n == 1:
        st.caption("The input is one segment long.")
        return
    found = state.stats(key)
    for widget in ("slider", "number"):
        st.session_state.setdefault(f"{widget}_{tg}", t)
    st.slider("Segment", 0, n - 1, key=f"slider_{tg}", on_change=_on_widget, args=(key, n, "slider"))
    row = st.container(horizontal=True, gap="small")
    row.number_input("Go to segment", 0, n - 1, step=1, key=f"number_{tg}", on_change=_on_widget,
                     args=(key, n, "number"), width=180)
    row.button("◀ previous", key=f"prev_{tg}", on_click=set_segment, args=(key, n, t - 1), disabled=t == 0)
    row.button("next ▶", key=f"next_{tg}", on_click=set_segment, args=(key, n, t + 1), disabled=t == n - 1)
    facts = found.fact_segments
    for s in facts[:4]:
        row.button(f"fact segment {s}", key=f"fact_{tg}_{s}", on_click=set_segment, args=(key, n, s))
    if len(facts) > 4:
        row.caption(f"(+{len(facts) - 4} more fact segments)")
    for s in found.question_segments[-1:]:
        row.button(f"question segment {s}", key=f"question_{tg}", on_click=set_segment, args=(key, n, s))


# ----- the chosen segment's views -----------------------------------------------------------------------------------
def _nearest_with_attention(recorded, t: int) -> tuple[int | None, int | None]:
    import bisect

    segments = recorded.attention_segments
    i = bisect.bisect_left(segments, t)
    before = segments[i - 1] if i > 0 else None
    after = segments[i] if i < len(segments) else None
    return before, after


def details(key: tuple, recorded, t: int) -> tuple[int | None, int | None]:
    """Tokens and roles, read and write attention, the answer after this segment; returns (layer, head)."""
    n = recorded.n_segments
    L, H = recorded.manifest["model"]["num_layers"], recorded.manifest["model"]["num_heads"]
    heads_row = st.columns(2)
    layer = heads_row[0].selectbox("Layer", [None, *range(L)], key="layer",
                                   format_func=lambda v: "mean of layers" if v is None else f"layer {v}")
    head = heads_row[1].selectbox("Head", [None, *range(H)], key="head",
                                  format_func=lambda v: "mean of heads" if v is None else f"head {v}")
    show_figure(state.tokens_figure(key, t), "tokens", key="tokens")
    read = state.attention_figure(key, "read", t, layer, head)
    if read is not None:
        show_figure(read, "read attention", key="read")
        show_figure(state.attention_figure(key, "write", t, layer, head), "write attention", key="write")
    else:
        before, after = _nearest_with_attention(recorded, t)
        kept = len(recorded.attention_segments)
        st.info(f"The read and write attention of segment {t} were not kept: this trace kept them for {kept} of "
                f"{n} segments (the first and last, the fact segments, and what fitted its attention budget).")
        row = st.container(horizontal=True, gap="small")
        for label, s in (("◀ previous with attention", before), ("next with attention ▶", after)):
            if s is not None:
                row.button(f"{label}: {s}", key=f"att_{label[:4]}_{tag(key)}", on_click=set_segment,
                           args=(key, n, s))
    left, right = st.columns(2)
    with left:
        answer = state.segment_answer_figure(key, t)
        if answer is not None:
            show_figure(answer, "answer after the segment", key="segment_answer")
        else:
            st.info("This trace did not record the head's logits at every segment.")
    with right:
        from rmt_core import figures

        show_figure(figures.answer_figure(recorded.final_logits, recorded.labels, recorded.answer,
                                          title="Answer probabilities at the last segment"), "answer", key="answer")
    with st.expander(f"Tokens of segment {t} (table)"):
        show_table(export.trace_table(recorded, "tokens", t), f"segment {t} tokens", key="tokens_table")
    return layer, head


def bertviz(key: tuple, recorded, t: int) -> None:
    from rmt_core import bertviz_offline

    st.subheader("bertviz views of the segment")
    source = state.full_attention_source(key, t)
    if source is None:
        segments = recorded.full_attention_segments
        listed = ", ".join(map(str, segments[:12])) + (" …" if len(segments) > 12 else "")
        st.info(f"This trace did not record the full attention of segment {t}, which the bertviz views draw. "
                + (f"Segments with full attention: {listed}." if segments else "It recorded none.")
                + f" Replay with `--full-attention {t}` to keep it.")
        row = st.container(horizontal=True, gap="small")
        for s in segments[:6]:
            row.button(f"segment {s}", key=f"full_{tag(key)}_{s}", on_click=set_segment,
                       args=(key, recorded.n_segments, s))
        return
    st.caption(("The full attention recorded in the trace. " if source == "trace" else
                "The full attention of one segment step of the checkpoint from the recorded memory. ") +
               "Offline: d3 and jQuery come from the locally installed npm packages. The view shows [CLS], the "
               "memory tokens ([mem k]), [SEP] and a window of tokens; weights are the model's, not renormalised.")
    L, H = recorded.manifest["model"]["num_layers"], recorded.manifest["model"]["num_heads"]
    options = st.columns(4)
    centres = ["fact", "question", "start"]
    centre = options[0].selectbox("Window around", centres, index=centres.index(state.VIEW_CENTRE), key="bv_centre")
    width = options[1].slider("Tokens in the window", 4, 96, state.VIEW_WIDTH, step=4, key="bv_width")
    layers = options[2].multiselect("Layers", list(range(L)), default=[L - 1], key="bv_layers")
    heads = options[3].multiselect("Heads", list(range(H)), default=list(range(min(H, state.VIEW_HEADS))),
                                   key="bv_heads")
    try:
        positions = tuple(int(p) for p in bertviz_offline.window_positions(recorded.roles(t), centre, width))
        bertviz_offline.js_library_paths()
        head_tab, model_tab = st.tabs(["Head view", "Model view"])
        with head_tab:
            st.iframe(state.bertviz_html("head", key, t, positions, tuple(layers), tuple(heads)), height=760)
        with model_tab:
            st.iframe(state.bertviz_html("model", key, t, positions, tuple(layers), tuple(heads)), height=760)
    except RMTError as error:
        state.show_error(error)


@st.fragment
def run_view(key: tuple) -> None:
    """The overview, the segment chooser and the chosen segment's views: rerun alone on a segment change."""
    try:
        recorded = state.trace_for(key)
        t = current_segment(key, recorded)
        if recorded.n_segments > 1:
            st.subheader("The whole run")
            overview(key, recorded, t)
        st.subheader(f"Segment {t}")
        navigator(key, recorded, t)
        layer, head = details(key, recorded, t)
        bertviz(key, recorded, t)
    except RMTError as error:
        state.show_error(error)
        return
    found = state.stats(key)
    state.prefetch(key, [t + 1, t - 1, *found.fact_segments[:2], *found.question_segments[-1:]], layer, head)
