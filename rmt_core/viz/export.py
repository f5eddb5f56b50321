"""Figures and tables to files: PNG, SVG, PDF (plotly with kaleido and a local Chromium), HTML, CSV.

The dashboard's download buttons and `rmt export` share these functions, and name the figures of a trace and of
probe results' tables the same way (`TRACE_FIGURES`, `TRACE_TABLES`, `RESULTS_TABLES`); figures of probe
results are drawn by their one renderer, `probes.figures`.
Files are written atomically (a temp name in the same folder, then a rename).
"""

from __future__ import annotations

import csv
import io
import os
import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rmt_core.viz import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, figures
from rmt_core.errors import RMTError
from rmt_core.files import read_json
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
        finite = np.isfinite(states).reshape(len(states), -1).all(axis=1)
        if not finite.all():
            row = int(np.argmin(finite))
            where = "the initial memory" if row == 0 else f"the memory after segment {row - 1}"
            raise ExportError(f"{where} holds NaN or infinite values, which cannot be drawn; the model that "
                              "replayed this trace is broken, replay with a good checkpoint")
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
RESULTS_TABLES = ("probes", "ablation", "patching")


def read_results(path: str | Path) -> dict:
    """The parsed results.json of a probe run (a folder holding it, or the file)."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    results = read_json(file, ExportError, "pass --results with the folder or results.json of rmt probe",
                        "run rmt probe again")
    if not isinstance(results, dict):
        raise ExportError(f"{file} must hold a JSON object with probes/ablation/patching; run rmt probe again")
    return results


def results_table(results: dict, name: str) -> list[dict]:
    if name not in RESULTS_TABLES:
        raise ExportError(f"unknown results table {name!r}; choose one of {', '.join(RESULTS_TABLES)}")
    return list(results.get(name) or [])


# ----- bytes of a figure -----------------------------------------------------------------------------------
# Images come from kaleido, which draws them in a headless Chromium. Every wait on it has a timeout, so a
# machine without a working Chromium gets a one-line ExportError within seconds, never a hang.
IMAGE_TIMEOUT_S = 30.0  # the longest wait for Chromium to start, and for one image; $RMT_IMAGE_TIMEOUT_S overrides
IMAGE_SIGNATURES = {"png": (b"\x89PNG\r\n\x1a\n",), "pdf": (b"%PDF",), "svg": (b"<svg", b"<?xml")}
GET_CHROMIUM = ("install Chromium (apt-get install chromium, or kaleido_get_chrome) or set BROWSER_PATH to "
                "one; HTML export needs none")


def image_timeout() -> float:
    try:
        value = float(os.environ.get("RMT_IMAGE_TIMEOUT_S", IMAGE_TIMEOUT_S))
    except ValueError:
        return IMAGE_TIMEOUT_S
    return value if 0 < value < float("inf") else IMAGE_TIMEOUT_S


def browser_path() -> str | None:
    """The Chromium kaleido would start (its own download, $BROWSER_PATH, or one on PATH) when that is an
    executable file; None when there is none."""
    try:
        from choreographer.browsers.chromium import Chromium

        path = Chromium.find_browser(skip_local=False)
    except Exception:  # a broken install of kaleido's helpers means no browser either
        return None
    if path and os.path.isfile(path) and os.access(path, os.X_OK):
        return str(path)
    return None


def no_browser_reason() -> str | None:
    """Why PNG, SVG and PDF export cannot work here (no Chromium, or one that failed), or None when it may."""
    if _renderer is not None and _renderer.failure:
        return _renderer.failure
    if browser_path() is None:
        where = os.environ.get("BROWSER_PATH")
        found = f"BROWSER_PATH={where} is not a program" if where else "no Chromium found"
        return f"{found}; {GET_CHROMIUM}"
    return None


class _ImageRenderer:
    """One headless Chromium (kaleido) drawing every image of this process, in a daemon thread. Requests go
    in one at a time with their own reply queue; a caller waits at most `timeout` seconds for the browser to
    start and for its image, and a renderer that failed or hung once refuses at once from then on."""

    def __init__(self, browser: str):
        self.browser = browser
        self.requests: queue.Queue = queue.Queue()
        self.ready = threading.Event()
        self.failure: str | None = None
        self.kaleido = None
        self.thread = threading.Thread(target=self._run, name="rmt-image-export", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import asyncio
        import logging

        for name in ("choreographer", "kaleido", "browser_proc", "logistro"):  # failures are reported as ExportError
            logging.getLogger(name).setLevel(logging.CRITICAL)
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # a browser that will not start, or dies
            self.failure = f"Chromium at {self.browser} failed ({_first_line(error)}); {GET_CHROMIUM}"
        finally:
            self.failure = self.failure or "the image renderer has stopped"
            self.ready.set()

    async def _serve(self) -> None:
        import asyncio

        import kaleido

        self.kaleido = kaleido.Kaleido(path=self.browser, mathjax=False)  # no MathJax: no network
        async with self.kaleido as renderer:
            self.ready.set()
            while True:
                try:
                    request = self.requests.get_nowait()
                except queue.Empty:
                    await asyncio.sleep(0.02)
                    continue
                if request is None:
                    return
                fig, opts, reply = request
                try:
                    reply.put(await renderer.calc_fig(fig, opts=opts))
                except Exception as error:  # one bad figure; the renderer goes on
                    reply.put(error)

    def _give_up(self, why: str) -> None:
        """Remember why images cannot be drawn, and stop a browser that hangs (it would outlive the command)."""
        self.failure = why
        process = getattr(self.kaleido, "subprocess", None)
        if process is not None and process.poll() is None:
            process.kill()

    def render(self, fig: dict, opts: dict, timeout: float) -> bytes:
        if not self.failure and not self.ready.wait(timeout):
            self._give_up(f"Chromium at {self.browser} did not start within {timeout:g} s; check that it runs, "
                          f"or {GET_CHROMIUM}")
        if self.failure:
            raise ExportError(f"{opts['format'].upper()} export: {self.failure}")
        reply: queue.Queue = queue.Queue(maxsize=1)
        self.requests.put((fig, opts, reply))
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = reply.get(timeout=0.1)
            except queue.Empty:
                if not self.failure and time.monotonic() > deadline:
                    self._give_up(f"Chromium at {self.browser} drew no image within {timeout:g} s; check that it "
                                  "runs, or export HTML")
                if self.failure:
                    raise ExportError(f"{opts['format'].upper()} export: {self.failure}") from None
                continue
            if isinstance(result, BaseException):
                raise ExportError(f"{opts['format'].upper()} export failed ({_first_line(result)}); try "
                                  "a smaller --width/--height, or export HTML") from None
            return result

    def close(self) -> None:
        self.requests.put(None)
        self.thread.join(timeout=5)


_renderer: _ImageRenderer | None = None
_renderer_lock = threading.Lock()


def _first_line(error: BaseException) -> str:
    first = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)  # not a tuple's repr
    text = " ".join(first.split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _image_renderer(fmt: str) -> _ImageRenderer:
    """The process's renderer, started on first use; ExportError at once when there is no Chromium."""
    global _renderer
    with _renderer_lock:
        if _renderer is None:
            browser = browser_path()
            if browser is None:
                raise ExportError(f"{fmt.upper()} export needs Chromium: {no_browser_reason()}")
            import atexit

            _renderer = _ImageRenderer(browser)
            atexit.register(_renderer.close)
        return _renderer


def check_image_size(width: int, height: int, scale: float) -> None:
    """ExportError unless an image of width x height CSS pixels at `scale` is one Chromium can draw."""
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ExportError(f"image {name} must be a whole number of pixels, 1 or more, got {value!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (0 < scale <= 16):
        raise ExportError(f"image scale must be a number above 0 and at most 16, got {scale!r}")
    w, h = round(width * scale), round(height * scale)
    if max(w, h) > MAX_IMAGE_SIDE or w * h > MAX_IMAGE_PIXELS:
        raise ExportError(f"an image of {width} x {height} at scale {scale:g} is {w:,} x {h:,} pixels, more than "
                          f"the {MAX_IMAGE_SIDE:,} a side and {MAX_IMAGE_PIXELS:,} in all an export may have; "
                          "use a smaller --width, --height or --scale")


def figure_bytes(fig, fmt: str, width: int | None = None, height: int | None = None, scale: float = 1.0) -> bytes:
    """The figure as PNG, SVG or PDF bytes (kaleido with the local Chromium) or a self-contained HTML page.

    ExportError, within `image_timeout()` seconds, when there is no working Chromium, the size is more than
    Chromium draws, or what comes back is not an image of the format asked for."""
    fmt = fmt.lower().lstrip(".")
    if fmt not in FIGURE_FORMATS:
        raise ExportError(f"unknown figure format {fmt!r}; choose one of {', '.join(FIGURE_FORMATS)}")
    if fmt == "html":  # plotly.js inlined: the page works offline
        return fig.to_html(full_html=True, include_plotlyjs=True).encode("utf-8")
    width = width or fig.layout.width or DEFAULT_SIZE[0]
    height = height or fig.layout.height or DEFAULT_SIZE[1]
    check_image_size(width, height, scale)
    opts = {"format": fmt, "width": width, "height": height, "scale": scale}
    data = _image_renderer(fmt).render(fig.to_dict(), opts, image_timeout())
    if not isinstance(data, bytes) or not data.lstrip().startswith(IMAGE_SIGNATURES[fmt]):
        raise ExportError(f"{fmt.upper()} export gave {len(data or b''):,} bytes that are not a {fmt.upper()} "
                          "image; try a smaller --width/--height, or export HTML")
    return data


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
