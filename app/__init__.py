"""The RMT Lens dashboard (Streamlit): layout only; it calls `rmt_core` and `probes`. Start it with `rmt app`."""
