"""Figures and tables to files: PNG, SVG, PDF (plotly with kaleido and a local Chromium), HTML, CSV.

The dashboard's download buttons and `rmt export` share these functions, and name the figures of a trace and of
probe results the same way (`TRACE_FIGURES`, `RESULTS_FIGURES`, `TRACE_TABLES`, `RESULTS_TABLES`).
Files are written atomically (a temp name in the same folder, then a rename).
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rmt_core import figures
from rmt_core.errors import RMTError
from rmt_core.model import PLACES, ROLE_NAMES

FIGURE_FORMATS = ("png", "svg", "pdf", "html")
MIME_TYPES = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf", "html": "text/html",
              "csv": "text/csv"}
DEFAULT_SIZE = (1100, 520)  # width, height in CSS pixels of image exports when the figure sets none


class ExportError(RMTError):
    """A figure or table cannot be exported (unknown name or format, no Chromium for images, unwritable path)."""


# ----- trace helpers (a trace: rmt_core.trace.Trace, or any object with the same methods) ------------------
def trace_labels(trace) -> list[str]:
    """Class names of the trace's checkpoint (the six bAbI places unless the manifest says otherwise)."""
    for source in (getattr(trace, "labels", None), (getattr(trace, "manifest", None) or {}).get("labels")):
        if source:
            return list(source)
    config = (getattr(trace, "manifest", None) or {}).get("rmt") or {}
    return list(config.get("labels") or PLACES)


def fact_segments(trace) -> list[int]:
    """Segments the sample's facts landed in, from the trace metadata (empty for pasted text)."""
    metadata = getattr(trace, "metadata", None) or {}
    facts = metadata.get("facts") or []
    return sorted({int(f["segment"]) for f in facts if isinstance(f, dict) and f.get("segment") is not None})


def _answer(trace) -> int | None:
    answer = getattr(trace, "answer", None)
    return None if answer is None or int(answer) < 0 else int(answer)


def _segment(trace, segment: int | None) -> int:
    n = int(trace.n_segments)
    if segment is None:
        return n - 1
    if isinstance(segment, bool) or not isinstance(segment, (int, np.integer)) or not -n <= int(segment) < n:
        raise ExportError(f"segment {segment!r} is out of range; this trace has segments 0..{n - 1}")
    return int(segment) % n  # negative counts from the end


def _attention(array, name: str, segment: int):
    if array is None:
        raise ExportError(f"this trace did not record {name} for segment {segment}; replay again with it recorded")
    return np.asarray(array)


# name -> (what it shows, whether it is of one segment)
TRACE_FIGURES: dict[str, tuple[str, bool]] = {
    "tokens": ("the segment's tokens coloured by role", True),
    "read_attention": ("read attention: tokens onto memory slots", True),
    "write_attention": ("write attention: memory slots onto tokens", True),
    "answer": ("class probabilities at the last segment", False),
    "segment_answer": ("the head's class probabilities after each segment", False),
    "memory_norms": ("norm of every memory slot across segments", False),
    "memory_similarity": ("cosine similarity of memory states between segments", False),
    "memory_projection": ("2-D PCA paths of the memory slots", False),
    "memory_change": ("how far each slot moved in each segment", False),
}


def trace_figure(trace, name: str, segment: int | None = None, layer: int | None = None,
                 head: int | None = None):
    """The figure `name` of TRACE_FIGURES for a trace (segment: default the last; layer/head None = mean)."""
    if name not in TRACE_FIGURES:
        raise ExportError(f"unknown trace figure {name!r}; choose one of {', '.join(TRACE_FIGURES)}")
    labels = trace_labels(trace)
    if name == "answer":
        return figures.answer_figure(np.asarray(trace.final_logits), labels, _answer(trace))
    if name == "segment_answer":
        logits = getattr(trace, "segment_logits", None)
        if logits is None and getattr(trace, "architecture", "encoder") == "decoder":
            raise ExportError("a decoder answers once, by generation after its last segment: there is no answer "
                              "head at every segment; export the figure answer instead")
        if logits is None:
            raise ExportError("this trace did not record the head's logits at every segment; replay again with them")
        return figures.segment_answer_figure(np.asarray(logits), labels, _answer(trace),
                                             None if segment is None else _segment(trace, segment))
    if name.startswith("memory_"):
        states = np.asarray(trace.memory_states())
        if name == "memory_norms":
            return figures.memory_norms_figure(states, fact_segments(trace))
        if name == "memory_similarity":
            return figures.memory_similarity_figure(states)
        if name == "memory_projection":
            return figures.memory_projection_figure(states)
        return figures.memory_change_figure(states, fact_segments(trace))
    t = _segment(trace, segment)
    tokens, roles = list(trace.tokens(t)), np.asarray(trace.roles(t))
    if name == "tokens":
        return figures.token_strip_figure(tokens, roles, title=f"Segment {t}: tokens and roles")
    _check_head(trace, layer, head)
    if name == "read_attention":
        read = _attention(trace.read_attention(t), "read attention", t)
        return figures.read_attention_figure(read, tokens, roles, layer, head, segment=t,
                                             architecture=getattr(trace, "architecture", "encoder"))
    write = _attention(trace.write_attention(t), "write attention", t)
    return figures.write_attention_figure(write, tokens, roles, layer, head, segment=t,
                                          architecture=getattr(trace, "architecture", "encoder"))


def _check_head(trace, layer: int | None, head: int | None) -> None:
    read = trace.read_attention(0) if trace.n_segments else None
    if read is None:
        return
    L, H = np.asarray(read).shape[:2]
    if layer is not None and not 0 <= layer < L:
        raise ExportError(f"layer {layer} is out of range; the model has layers 0..{L - 1}")
    if head is not None and not 0 <= head < H:
        raise ExportError(f"head {head} is out of range; the model has heads 0..{H - 1}")


TRACE_TABLES: dict[str, str] = {
    "tokens": "position, token and role of every position of a segment",
    "answer": "class probabilities at the last segment",
    "segment_answer": "class probabilities after every segment",
    "memory_norms": "norm of every slot after every segment",
    "memory_change": "relative change of every slot in every segment",
}


def trace_table(trace, name: str, segment: int | None = None) -> list[dict]:
    """Rows of the table `name` of TRACE_TABLES."""
    labels = trace_labels(trace)
    if name == "tokens":
        t = _segment(trace, segment)
        return [{"segment": t, "position": p, "token": tok, "role": ROLE_NAMES[int(r)]}
                for p, (tok, r) in enumerate(zip(trace.tokens(t), np.asarray(trace.roles(t))))]
    if name == "answer":
        probs = figures.softmax(np.asarray(trace.final_logits).reshape(-1))
        return [{"class": labels[k], "probability": float(p), "answer": k == _answer(trace)}
                for k, p in enumerate(probs)]
    if name == "segment_answer":
        logits = getattr(trace, "segment_logits", None)
        if logits is None:
            raise ExportError("this trace did not record the head's logits at every segment; replay again with them")
        probs = figures.softmax(np.asarray(logits), axis=-1)
        return [{"segment": t, **{labels[k]: float(p) for k, p in enumerate(row)}} for t, row in enumerate(probs)]
    if name == "memory_norms":
        norms = np.linalg.norm(np.asarray(trace.memory_states(), dtype=np.float64), axis=-1)
        return [{"state": t, "slot": k, "norm": float(v)} for t, row in enumerate(norms) for k, v in enumerate(row)]
    if name == "memory_change":
        change = figures.memory_change(np.asarray(trace.memory_states()))
        return [{"segment": t, "slot": k, "relative_change": float(v)}
                for t, row in enumerate(change) for k, v in enumerate(row)]
    raise ExportError(f"unknown trace table {name!r}; choose one of {', '.join(TRACE_TABLES)}")


# ----- probe results (results.json of `rmt probe`) ---------------------------------------------------------
RESULTS_FIGURES: dict[str, str] = {
    "probe_accuracy": "probe accuracy by segment and slot with confidence intervals and majority baseline",
    "selectivity": "probe selectivity by segment and slot",
    "ablation": "answer accuracy drop when a slot is ablated",
    "patching": "interchange-intervention accuracy of memory patching",
}
RESULTS_TABLES = ("probes", "ablation", "patching")


def read_results(path: str | Path) -> dict:
    """The parsed results.json of a probe run (a folder holding it, or the file)."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    try:
        results = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{file} does not exist; pass --results with the folder or results.json of rmt probe") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExportError(f"{file} is not readable JSON ({error}); run rmt probe again") from None
    if not isinstance(results, dict):
        raise ExportError(f"{file} must hold a JSON object with probes/ablation/patching; run rmt probe again")
    return results


def results_figure(results: dict, name: str, target: str | None = None, mode: str | None = None):
    """The figure `name` of RESULTS_FIGURES from a results dict (SPEC section 7)."""
    if name not in RESULTS_FIGURES:
        raise ExportError(f"unknown results figure {name!r}; choose one of {', '.join(RESULTS_FIGURES)}")
    key = {"probe_accuracy": "probes", "selectivity": "probes"}.get(name, name)
    rows = results.get(key) or []
    if not rows:
        raise ExportError(f"the results hold no '{key}' rows; run rmt probe with them enabled")
    try:
        if name == "probe_accuracy":
            return figures.probe_accuracy_figure(rows, target)
        if name == "selectivity":
            return figures.selectivity_figure(rows, target)
        if name == "ablation":
            return figures.ablation_figure(rows, mode)
        return figures.patching_figure(rows)
    except (KeyError, ValueError, TypeError) as error:
        raise ExportError(f"the '{key}' rows cannot be drawn ({error}); check the results file") from None


def results_table(results: dict, name: str) -> list[dict]:
    if name not in RESULTS_TABLES:
        raise ExportError(f"unknown results table {name!r}; choose one of {', '.join(RESULTS_TABLES)}")
    return list(results.get(name) or [])


# ----- bytes of a figure -----------------------------------------------------------------------------------
_server_lock = threading.Lock()
_render_lock = threading.Lock()  # one image at a time: the shared kaleido server mixes up concurrent replies
_server_started = False


def _start_image_server() -> None:
    """Keep one headless Chromium for all image exports of this process (the first export costs seconds)."""
    global _server_started
    with _server_lock:
        if _server_started:
            return
        import atexit

        import kaleido

        kaleido.start_sync_server(silence_warnings=True)
        atexit.register(kaleido.stop_sync_server, silence_warnings=True)
        _server_started = True


def figure_bytes(fig, fmt: str, width: int | None = None, height: int | None = None, scale: float = 1.0) -> bytes:
    """The figure as PNG, SVG or PDF bytes (kaleido with the local Chromium) or a self-contained HTML page."""
    fmt = fmt.lower().lstrip(".")
    if fmt not in FIGURE_FORMATS:
        raise ExportError(f"unknown figure format {fmt!r}; choose one of {', '.join(FIGURE_FORMATS)}")
    if fmt == "html":  # plotly.js inlined: the page works offline
        return fig.to_html(full_html=True, include_plotlyjs=True).encode("utf-8")
    width = width or fig.layout.width or DEFAULT_SIZE[0]
    height = height or fig.layout.height or DEFAULT_SIZE[1]
    try:
        _start_image_server()
        with _render_lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # plotly warns that per-call browser options are unused with a server
            return fig.to_image(format=fmt, width=width, height=height, scale=scale)
    except ExportError:
        raise
    except Exception as error:  # kaleido and choreographer raise many types; all mean "no working browser"
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ExportError(
            f"{fmt.upper()} export needs a local Chromium for kaleido ({reason}); install it (apt-get install "
            "chromium) or export HTML instead"
        ) from None


def table_csv(rows: Sequence[dict]) -> str:
    """Rows (dicts; columns in first-seen order) as CSV text."""
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _plain(v) for k, v in row.items()})
    return buffer.getvalue()


def _plain(value):
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


# ----- files -----------------------------------------------------------------------------------------------
def format_of(path: str | Path, fmt: str | None = None) -> str:
    """The format named, else the one the file suffix says."""
    fmt = (fmt or Path(path).suffix).lower().lstrip(".")
    if fmt not in FIGURE_FORMATS + ("csv",):
        raise ExportError(f"cannot tell the format of {path}; pass --format {'|'.join(FIGURE_FORMATS)} or use a "
                          ".png/.svg/.pdf/.html/.csv name")
    return fmt


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write data to path atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path} is a folder; pass --out with a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # permissions follow the umask
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as error:
        raise ExportError(f"cannot write {path} ({error.strerror}); choose a writable --out") from None
    return path


def write_figure(fig, path: str | Path, fmt: str | None = None, **size) -> Path:
    """Write a figure to path in fmt (default: from the suffix)."""
    fmt = format_of(path, fmt)
    if fmt == "csv":
        raise ExportError("a figure cannot be written as CSV; export a table with --table, or choose png/svg/pdf/html")
    return write_bytes(path, figure_bytes(fig, fmt, **size))


def write_table(rows: Sequence[dict], path: str | Path) -> Path:
    return write_bytes(path, table_csv(rows).encode("utf-8"))
