"""The Replay page's body: the whole run (overview), the chosen segment, and that segment's detail views.

Speed (issue 16): a segment change reruns only the `segment_view` fragment, not the sidebar, the header and the
overview; each figure of a segment is built once and cached (`state.attention_figure`, ...) and the figures
of the neighbouring segments are built in the background while the person looks at this one
(`state.prefetch`). What the browser has to draw on a segment change is kept small: the tokens are HTML (a
plotly axis of 70 rotated token labels takes a browser longer to lay out than the rest of the page), the
attention heatmaps carry positions on their axis and the tokens in their hover, the overview is not redrawn,
one bertviz view is shown at a time, and the token table only on request.

The chosen segment and the shown range live in `st.session_state` under keys made from the trace's key, so
every page (Replay, Memory) follows the same segment of the same trace.
"""

from __future__ import annotations

import hashlib
import html

import numpy as np
import streamlit as st

from app import state
from app.downloads import download_buttons, show_figure, show_table
from rmt_core.viz import export
from rmt_core.errors import RMTError

AROUND = 100  # "zoom around the segment" shows this many segments either side


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
    """A click on the overview goes to that segment (a bin's highest point); a dragged box zooms to its range."""
    event = st.session_state.get(f"overview_{tag(key)}") or {}
    selection = event.get("selection") or {}
    boxes = selection.get("box") or []
    if boxes and boxes[0].get("x"):
        x0, x1 = sorted(float(x) for x in boxes[0]["x"][:2])
        lo, hi = int(np.ceil(x0)), int(np.floor(x1))
        set_range(key, n, lo, max(lo, hi))
        return
    points = selection.get("points") or []
    if points:
        lo, hi = shown_range(key, n)
        t = point_segment(state.overview_rows(key, lo, hi), points[0])
        if t is not None:
            set_segment(key, n, t)


def point_segment(rows, point: dict) -> int | None:
    """The segment a clicked point of the overview stands for: the segment itself, or for a bin (max line) the
    segment of the bin's highest value. rows: the overview's (name, Envelope or None); the figure draws 3
    traces for a binned row (max, min, mean), 1 for a row of single segments, none for a missing one."""
    curve, x = point.get("curve_number"), point.get("x")
    index = point.get("point_index", point.get("point_number"))
    first = 0
    for _, env in rows:
        count = 0 if env is None or not len(env.first) else (3 if env.binned else 1)
        if curve is not None and first <= curve < first + count:
            if not env.binned:
                return int(env.first[index]) if index is not None else int(round(float(x)))
            if index is None:  # the bin whose centre is nearest the point
                index = int(np.abs((env.first + env.last) / 2 - float(x)).argmin())
            return int(env.high_at[index] if curve == first else env.low_at[index] if curve == first + 1
                       else (env.first[index] + env.last[index]) // 2)
        first += count
    return None if x is None else int(round(float(x)))


# ----- the overview: drawn once per shown range, not on segment changes ------------------------------------------
def overview(key: tuple, recorded) -> None:
    """The whole run (or the shown range of it) with its zoom controls."""
    n = recorded.n_segments
    found = state.stats(key)
    lo, hi = shown_range(key, n)
    tg = tag(key)
    log_change = bool(st.session_state.get("overview_log"))
    show_figure(state.overview_figure(key, lo, hi, log_change), "whole run", key=f"overview_{tg}_fig",
                on_select=lambda: _on_overview(key, n), selection_mode=("points", "box"), widget_key=f"overview_{tg}")
    notes = [f"the cosine compares each segment's memory with the {found.reference}"]
    if found.answer_probability is None:
        notes.append("this trace did not record the head's logits at every segment, so there is no answer curve "
                     "(replay without --no-segment-logits to get it)")
    elif found.answer_kind == "prediction":
        notes.append("free text: the answer curve is the probability of the final prediction")
    st.caption("Click a point of the chart to go to that segment (a bin's highest point); to zoom in, pick the "
               "box-select tool above the chart and drag across a range, or use Segments shown. "
               + "; ".join(notes) + ".")
    columns = st.columns([6, 1, 1, 1])
    st.session_state.setdefault(f"rangeslider_{tg}", (lo, hi))
    columns[0].slider("Segments shown", 0, n - 1, key=f"rangeslider_{tg}", on_change=_on_range, args=(key, n))
    columns[1].button("Whole run", key=f"whole_{tg}", on_click=set_range, args=(key, n, 0, n - 1),
                      disabled=(lo, hi) == (0, n - 1))
    t = current_segment(key, recorded)
    columns[2].button(f"±{AROUND} around {t}", key=f"around_{tg}", on_click=set_range,
                      args=(key, n, t - AROUND, t + AROUND), help="zoom to the segments around the chosen one")
    columns[3].toggle("log scale", key="overview_log", help="the memory change on a log scale")


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
    row = st.container(horizontal=True, gap="small", vertical_alignment="bottom")
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
def tokens_html(tokens, roles, t: int) -> str:
    """The segment's tokens as coloured chips in reading order (role in the colour, position and role on hover)."""
    from rmt_core.viz.figures import ROLE_COLOURS
    from rmt_core.model import ROLE_NAMES, ROLE_PAD

    dark = {"#d62728", "#1f77b4", "#555555", "#9467bd"}
    chips, memory = [], 0
    for p, (token, role) in enumerate(zip(tokens, np.asarray(roles).tolist())):
        if role == ROLE_PAD:
            continue
        if ROLE_NAMES[role] == "memory":
            token, memory = f"[mem {memory}]", memory + 1
        colour = ROLE_COLOURS[role]
        chips.append(f'<span title="pos {p} · {ROLE_NAMES[role]}" style="background:{colour};color:'
                     f'{"#fff" if colour in dark else "#222"};padding:1px 4px;margin:1px;border-radius:3px;'
                     f'display:inline-block;font:13px monospace">{html.escape(str(token))}</span>')
    shown = sorted({int(r) for r in np.asarray(roles).tolist() if r != ROLE_PAD})
    legend = " ".join(f'<span style="background:{ROLE_COLOURS[r]};width:10px;height:10px;display:inline-block;'
                      f'margin:0 3px 0 10px"></span>{ROLE_NAMES[r]}' for r in shown)
    return (f'<div data-rmt-segment="{t}"><div style="font:600 15px sans-serif;margin:4px 0">Segment {t}: tokens and '
            f'roles <span style="font-weight:400;font-size:12px;color:#555">{legend}</span></div>'
            f'<div style="line-height:1.9">{"".join(chips)}</div></div>')


def _nearest_with_attention(recorded, t: int) -> tuple[int | None, int | None]:
    import bisect

    segments = recorded.attention_segments
    i = bisect.bisect_left(segments, t)
    before = segments[i - 1] if i > 0 else None
    after = segments[i] if i < len(segments) else None
    return before, after


def details(key: tuple, recorded, t: int) -> tuple[int | None, int | None]:
    """Tokens and roles, read and write attention, the answer after this segment, which memory slots it moved;
    returns (layer, head)."""
    n = recorded.n_segments
    L, H = recorded.manifest["model"]["num_layers"], recorded.manifest["model"]["num_heads"]
    tokens, roles = recorded.tokens(t), recorded.roles(t)
    st.html(tokens_html(tokens, roles, t))
    download_buttons(lambda: state.tokens_figure(key, t), "tokens", key="tokens")
    heads_row = st.columns(2)
    layer = heads_row[0].selectbox("Layer", [None, *range(L)], key="layer",
                                   format_func=lambda v: "mean of layers" if v is None else f"layer {v}")
    head = heads_row[1].selectbox("Head", [None, *range(H)], key="head",
                                  format_func=lambda v: "mean of heads" if v is None else f"head {v}")
    read = state.attention_figure(key, "read", t, layer, head)
    if read is not None:
        show_figure(read, "read attention", key="read")
        show_figure(state.attention_figure(key, "write", t, layer, head), "write attention", key="write")
    else:
        before, after = _nearest_with_attention(recorded, t)
        kept = len(recorded.attention_segments)
        st.info(f"The read and write attention of segment {t} were not kept: this trace kept them for {kept:,} of "
                f"{n:,} segments (the first and last, the fact segments, and what fitted its attention budget).")
        row = st.container(horizontal=True, gap="small")
        for label, s in (("◀ previous with attention", before), ("next with attention ▶", after)):
            if s is not None:
                row.button(f"{label}: {s}", key=f"att_{label[:4]}_{tag(key)}", on_click=set_segment,
                           args=(key, n, s))
    left, middle, right = st.columns(3)
    with left:
        answer = state.segment_answer_figure(key, t)
        if answer is not None:
            show_figure(answer, "answer after the segment", key="segment_answer")
        else:
            st.info("This trace did not record the head's logits at every segment.")
    with middle:
        show_figure(state.slot_change_figure(key, t), "memory slots", key="slots")
    with right:
        show_figure(state.final_answer_figure(key), "answer", key="answer")
    if st.toggle("The segment's tokens as a table", key="tokens_table_shown"):
        show_table(export.trace_table(recorded, "tokens", t), f"segment {t} tokens", key="tokens_table")
    return layer, head


def bertviz(key: tuple, recorded, t: int) -> tuple | None:
    """The bertviz view of the segment; returns its options (kind, centre, width, layers, heads), or None."""
    from rmt_core.viz import bertviz_offline

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
        return None
    st.caption(("The full attention recorded in the trace. " if source == "trace" else
                "The full attention of one segment step of the checkpoint from the recorded memory. ") +
               "Offline: d3 and jQuery come from the locally installed npm packages. The view shows [CLS], the "
               "memory tokens ([mem k]), [SEP] and a window of tokens; weights are the model's, not renormalised.")
    L, H = recorded.manifest["model"]["num_layers"], recorded.manifest["model"]["num_heads"]
    options = st.columns([1.1, 1, 1, 1, 1.5])
    view = options[0].radio("View", ["Head view", "Model view"], key="bv_view", horizontal=True)
    centres = ["fact", "question", "start"]
    centre = options[1].selectbox("Window around", centres, index=centres.index(state.VIEW_CENTRE), key="bv_centre")
    width = options[2].slider("Tokens in the window", 4, 96, state.VIEW_WIDTH, step=4, key="bv_width")
    layers = options[3].multiselect("Layers", list(range(L)), default=[L - 1], key="bv_layers")
    heads = options[4].multiselect("Heads", list(range(H)), default=list(range(min(H, state.VIEW_HEADS))),
                                   key="bv_heads")
    try:
        positions = tuple(int(p) for p in bertviz_offline.window_positions(recorded.roles(t), centre, width))
        bertviz_offline.js_library_paths()
        kind = "head" if view == "Head view" else "model"
        st.iframe(state.bertviz_html(kind, key, t, positions, tuple(layers), tuple(heads)), height=760)
    except RMTError as error:
        state.show_error(error)
        return None
    return kind, centre, width, tuple(layers), tuple(heads)


@st.fragment
def segment_view(key: tuple) -> None:
    """The segment chooser and the chosen segment's views: rerun alone on a segment change."""
    try:
        recorded = state.trace_for(key)
        t = current_segment(key, recorded)
        navigator(key, recorded, t)
        layer, head = details(key, recorded, t)
        view = bertviz(key, recorded, t)
    except RMTError as error:
        state.show_error(error)
        return
    found = state.stats(key)
    state.prefetch(key, [t + 1, t - 1, *found.fact_segments[:2], *found.question_segments[-1:]], layer, head, view)


def run_view(key: tuple) -> None:
    """The whole run's overview (when there is more than one segment), then the segment views."""
    recorded = state.trace_for(key)
    try:
        if recorded.n_segments > 1:
            st.subheader("The whole run")
            overview(key, recorded)
    except RMTError as error:
        state.show_error(error)
    st.subheader("One segment")
    segment_view(key)
