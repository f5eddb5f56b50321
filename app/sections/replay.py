"""Replay: one run, whole and segment by segment. The whole run's overview (how much memory changed, its norm,
how similar it stays to the memory written after the fact, the answer's probability at every segment, with
the fact and question segments marked); then the chosen segment's tokens and roles, read and write attention,
the answer after it, and bertviz's head and model views. The run is an input replayed here or a trace folder
of any length (the sidebar's "Trace folder")."""

from __future__ import annotations

import streamlit as st

from app import state
from app.run_view import run_view
from rmt_core.errors import RMTError

st.title("Replay")
chosen = state.selection()
state.require_input(chosen)
try:
    key = state.trace_key(chosen)
    trace = state.trace_for(key)
except RMTError as error:
    state.show_error(error)
    st.stop()

labels = trace.labels
meta = trace.metadata
N = trace.n_segments

# ----- what was replayed, and the answer -----------------------------------------------------------------
probs = trace.probabilities
prediction = trace.prediction
answer = trace.answer
verdict = "" if answer is None else (" ✓ correct" if prediction == answer else f" ✗ (answer: {labels[answer]})")
facts = meta.get("facts") or []
checkpoint_name = (trace.manifest.get("checkpoint") or {}).get("name")
lines = [f"**{checkpoint_name}**" if checkpoint_name else "",
         f"{N:,} segment{'s' if N != 1 else ''}, {trace.manifest.get('n_tokens', 0):,} tokens"]
if meta.get("kind") == "task":
    lines.append(f"task **{meta.get('task')}**, seed {meta.get('seed')}")
if key[0] == "trace":
    lines.append(f"trace `{key[1]}`")
st.markdown(" · ".join(x for x in lines if x))
for fact in facts[:4]:
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
if key[0] == "trace":
    st.caption(f"Recorded: memory of every segment; read/write attention of {len(trace.attention_segments):,} "
               f"segments; full attention of {len(trace.full_attention_segments):,}; the head's answer at every "
               f"segment: {'yes' if trace.segment_logits is not None else 'no'}.")

run_view(key)
