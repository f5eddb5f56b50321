"""RMT Lens dashboard: the entry script of `streamlit run` (started by `rmt app`).

It draws the shared sidebar (checkpoint and input) and runs the chosen page; an error of ours shows as one
line, never as a traceback.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import background, state
from rmt_core.errors import RMTError

SECTIONS = Path(__file__).resolve().parent / "sections"  # not "pages/": that name turns on Streamlit's older multipage mode

st.set_page_config(page_title="RMT Lens", layout="wide")
state.sidebar()
background.sidebar_status()
navigation = st.navigation([
    st.Page(SECTIONS / "replay.py", title="Replay", default=True),
    st.Page(SECTIONS / "memory.py", title="Memory"),
    st.Page(SECTIONS / "probes.py", title="Probes"),
    st.Page(SECTIONS / "length.py", title="Length"),
    st.Page(SECTIONS / "efficiency.py", title="Efficiency"),
    st.Page(SECTIONS / "record.py", title="Record"),
])
try:
    navigation.run()
except RMTError as error:
    state.show_error(error)
except Exception as error:  # a bug of ours: still one line, the details go to the server log
    import logging

    logging.getLogger("rmt_lens.app").exception("page failed")
    st.error(f"Something went wrong on this page ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
             "The server log has the details.")
