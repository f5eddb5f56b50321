"""Efficiency: forward FLOPs of RMT against a full-attention Transformer (the paper's Figure 3)."""

from __future__ import annotations

import streamlit as st

from app.downloads import show_figure, show_table
from rmt_core import flops, paper


@st.cache_data(show_spinner=False)
def _rows(models: tuple, segment: int, mem: int, counting: str) -> list[dict]:
    return flops.flops_table(list(models), segment=segment, mem=mem, counting=counting)


st.title("Efficiency")
st.caption(f"Forward-pass FLOPs counted as in Hoffmann et al. 2022 (appendix F) with the OPT configurations. "
           f"The paper reports x{paper.FLOPS_RATIOS['OPT-175B']} fewer FLOPs for OPT-175B and "
           f"x{paper.FLOPS_RATIOS['OPT-125M']} for OPT-125M at {paper.FLOPS_TOKENS:,} tokens with "
           f"{paper.FLOPS_SEGMENT}-token segments.")
columns = st.columns(4)
names = list(flops.OPT_CONFIGS)
models = columns[0].multiselect("Models", names, default=[n for n in ("OPT-125M", "OPT-175B") if n in names] or names[:2])
segment = columns[1].number_input("Segment (tokens)", 16, 8192, paper.FLOPS_SEGMENT, step=16)
mem = columns[2].number_input("Memory tokens", 0, 512, paper.FLOPS_MEMORY)
counting = columns[3].selectbox("Counting", list(flops.COUNTINGS), help="paper: embeddings free, memory inside "
                                "the segment (reproduces x29); chinchilla: every term of appendix F")
if not models:
    st.info("Choose at least one model.")
    st.stop()
rows = _rows(tuple(models), int(segment), int(mem), counting)
show_figure(flops.flops_figure(rows), "flops", key="flops")
at = [r for r in rows if r["tokens"] == paper.FLOPS_TOKENS]
if at:
    st.markdown(" · ".join(f"{r['model']}: **x{r['ratio']:.0f}** fewer FLOPs at {r['tokens']:,} tokens" for r in at))
show_table([{**r, "full_flops": float(r["full_flops"]), "rmt_flops": float(r["rmt_flops"])} for r in rows],
           "flops", key="flops_table")
