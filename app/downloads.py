"""Export buttons under every figure (PNG, SVG, PDF, HTML) and a CSV download under every table.

Files are made by `rmt_core.viz.export`, the same code as `rmt export`; images only when the button is clicked.
"""

from __future__ import annotations

import re

import streamlit as st

from rmt_core.viz import export


def image_problem() -> str | None:
    """Why PNG, SVG and PDF cannot be made here (no working Chromium for kaleido), or None; HTML and CSV
    need no browser."""
    return export.no_browser_reason()


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "figure"


def _bytes_later(fig, fmt: str):
    """A no-argument callable for a deferred download (fig: a figure, or a no-argument callable that builds one
    when the button is clicked); an export failure becomes a text file saying why."""

    def make() -> bytes:
        try:
            return export.figure_bytes(fig() if callable(fig) else fig, fmt)
        except export.ExportError as error:
            return f"export failed: {error}\n".encode("utf-8")

    return make


def show_figure(fig, name: str, key: str | None = None, widget_key: str | None = None, **chart_args) -> None:
    """Draw a plotly figure with a row of export buttons under it (chart_args go to st.plotly_chart, e.g.
    on_select; widget_key names the chart's selection state in st.session_state)."""
    key = key or _slug(name)
    st.plotly_chart(fig, key=widget_key or f"chart_{key}", config={"displaylogo": False}, **chart_args)
    download_buttons(fig, name, key)


def download_buttons(fig, name: str, key: str | None = None) -> None:
    """The row of export buttons (PNG, SVG, PDF, HTML) of a figure, or of a no-argument callable building it
    (for content shown otherwise than as a plotly chart: the figure is built only when a button is clicked)."""
    key = key or _slug(name)
    row = st.container(horizontal=True, gap="small")
    problem = image_problem()
    for fmt in export.FIGURE_FORMATS:
        image = fmt != "html"
        row.download_button(
            fmt.upper(), data=_bytes_later(fig, fmt), file_name=f"{_slug(name)}.{fmt}",
            mime=export.MIME_TYPES[fmt], key=f"dl_{key}_{fmt}", on_click="ignore",
            disabled=image and problem is not None,
            help=f"Download as {fmt.upper()}" if not image or problem is None
            else f"PNG, SVG and PDF need Chromium: {problem}",
        )
    if problem is not None:
        row.caption(f"PNG, SVG and PDF: {problem.split(';')[0]} (apt-get install chromium); HTML works without it.")


def show_table(rows: list[dict], name: str, key: str | None = None, **dataframe_args) -> None:
    """Draw a table with a CSV download under it."""
    key = key or _slug(name)
    st.dataframe(rows, key=f"table_{key}", **dataframe_args)
    st.download_button("CSV", data=export.table_csv(rows), file_name=f"{_slug(name)}.csv", mime="text/csv",
                       key=f"dl_{key}_csv", on_click="ignore")
