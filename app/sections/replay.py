"""Replay: step through the segments of one input; tokens and roles, read and write attention, the answer,
and bertviz's head and model views of the segment with the memory tokens labelled."""

from __future__ import annotations

import streamlit as st

from app import state
from app.downloads import show_figure, show_table
from rmt_core import bertviz_offline, export, figures
from rmt_core.errors import RMTError

st.title("Replay")
chosen = state.selection()
folder = state.require_checkpoint(chosen)
try:
    trace = state.trace(chosen)
except RMTError as error:
    state.show_error(error)
    st.stop()

labels = trace.labels
meta = trace.metadata
N = trace.n_segments
L, H = trace.manifest["model"]["num_layers"], trace.manifest["model"]["num_heads"]

# ----- what was replayed, and the answer -----------------------------------------------------------------
probs = trace.probabilities
prediction = trace.prediction
answer = trace.answer
verdict = "" if answer is None else (" ✓ correct" if prediction == answer else f" ✗ (answer: {labels[answer]})")
facts = meta.get("facts") or []
checkpoint_name = (trace.manifest.get("checkpoint") or {}).get("name")
lines = [f"**{checkpoint_name}**" if checkpoint_name else "",
         f"{N} segment{'s' if N != 1 else ''}, {trace.manifest.get('n_tokens', 0):,} tokens"]
if chosen.kind == "task":
    lines.append(f"task **{meta.get('task')}**, seed {meta.get('seed')}")
st.markdown(" · ".join(x for x in lines if x))
for fact in facts:
    st.markdown(f"Fact in segment **{fact['segment']}**: “{fact['text']}”")
decoder = trace.architecture == "decoder"
if decoder:  # the answer is generated; exact match, as rmt eval scores it
    generated = trace.generated_answer
    verdict = "" if answer is None else (" ✓ correct" if generated == labels[answer]
                                         else f" ✗ (answer: {labels[answer]})")
    st.markdown(f"Question: “{meta.get('question') or chosen.question}” · generated answer "
                f"**{generated}**{verdict}")
    st.caption("Decoder RMT: each segment reads memory at its front ([read k]) and writes memory at its end "
               "([write k]); the write slots' last-layer states are the next segment's read memory.")
else:
    st.markdown(f"Question: “{meta.get('question') or chosen.question}” · prediction **{labels[prediction]}** "
                f"({probs[prediction]:.0%}){verdict}")

# ----- the segment -------------------------------------------------------------------------------------------
if N > 1:
    t = st.slider("Segment", 0, N - 1, value=state.default_segment(trace), key=f"segment_{chosen.input_key}")
else:
    t = 0
    st.caption("The input is one segment long.")
heads_row = st.columns(2)
layer = heads_row[0].selectbox("Layer", [None, *range(L)], format_func=lambda v: "mean of layers" if v is None
                               else f"layer {v}", key="layer")
head = heads_row[1].selectbox("Head", [None, *range(H)], format_func=lambda v: "mean of heads" if v is None
                              else f"head {v}", key="head")

tokens, roles = trace.tokens(t), trace.roles(t)
show_figure(figures.token_strip_figure(tokens, roles, title=f"Segment {t}: tokens and roles"), "tokens",
            key="tokens")
if trace.has_attention(t):
    read, write = trace.read_attention(t), trace.write_attention(t)
    show_figure(figures.read_attention_figure(read, tokens, roles, layer, head, segment=t,
                                              architecture=trace.architecture), "read attention", key="read")
    show_figure(figures.write_attention_figure(write, tokens, roles, layer, head, segment=t,
                                               architecture=trace.architecture), "write attention", key="write")
else:
    recorded = trace.attention_segments
    st.info(f"The read and write attention of segment {t} were not kept (the dashboard keeps attention for "
            f"{state.ATTENTION_BUDGET_MIB:.0f} MiB of segments, then only the first, last and fact segments). "
            f"Segments with attention: {', '.join(map(str, recorded))}.")

left, right = st.columns(2)
with left:
    show_figure(figures.answer_figure(trace.final_logits, labels, answer,
                                      title="First answer token, over the labels" if decoder
                                      else "Answer probabilities"), "answer", key="answer")
with right:
    if trace.segment_logits is not None:
        show_figure(figures.segment_answer_figure(trace.segment_logits, labels, answer, current=t),
                    "answer by segment", key="segment_answer")
with st.expander(f"Tokens of segment {t} (table)"):
    show_table(export.trace_table(trace, "tokens", t), f"segment {t} tokens", key="tokens_table")

# ----- bertviz ---------------------------------------------------------------------------------------------
st.subheader("bertviz views of the segment")
st.caption("Offline: the d3 and jQuery they need ship with rmt-lens. The view shows [CLS], the "
           "memory tokens ([mem k]), [SEP] and a window of tokens; weights are the model's, not renormalised.")
options = st.columns(4)
centres = ["fact", "question", "start"]
centre = options[0].selectbox("Window around", centres, index=centres.index(state.VIEW_CENTRE), key="bv_centre")
width = options[1].slider("Tokens in the window", 4, 96, state.VIEW_WIDTH, step=4, key="bv_width")
layers = options[2].multiselect("Layers", list(range(L)), default=[L - 1], key="bv_layers")
heads = options[3].multiselect("Heads", list(range(H)), default=list(range(min(H, state.VIEW_HEADS))),
                               key="bv_heads")
try:
    positions = bertviz_offline.window_positions(roles, centre, width)
    bertviz_offline.js_library_paths()
    head_tab, model_tab = st.tabs(["Head view", "Model view"])
    with head_tab:
        st.iframe(state.bertviz_html("head", chosen, t, positions, layers, heads), height=760)
    with model_tab:
        st.iframe(state.bertviz_html("model", chosen, t, positions, layers, heads), height=760)
except RMTError as error:
    state.show_error(error)
