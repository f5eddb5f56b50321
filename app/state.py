"""What every page shares: the sidebar input (checkpoint, then a task sample, pasted text or a trace folder)
and the cached calls into `rmt_core`. Models and traces are cached with `st.cache_resource` (one copy, shared,
never modified), statistics and results with `st.cache_data`.

The entry script (`app/main.py`) draws the sidebar on every run and stores a `Selection` in
`st.session_state["selection"]`; the pages (app/sections/) read it with `selection()`.

A trace folder (written by `rmt replay`, or by the Record page) is opened lazily (`rmt_core.trace.Trace`): only
its manifest at first, then the rows a view asks for, so the app's memory does not depend on the trace's
length. Its per-segment statistics (`rmt_core.trace_stats`) are computed in one streaming pass, kept in
memory keyed by the trace's path and file times, and in a small sidecar file in the cache folder
(`$RMT_CACHE_DIR`, else ~/.cache/rmt-lens); the trace folder itself is never written to.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from rmt_core.checkpoint import default_checkpoint, read_config, resolve_checkpoint, shipped_checkpoints
from rmt_core.errors import CheckpointError, RMTError, TraceError
from rmt_core.tasks import TASKS

OTHER_FOLDER = "Other folder…"
MAX_SEGMENTS = 64  # replayed when the page asks; longer inputs are recorded (Record page or `rmt replay`)
ATTENTION_BUDGET_MIB = 96.0  # read/write attention kept for every segment under this, else chosen segments
FULL_ATTENTION_BUDGET_MIB = 64.0  # an in-memory replay keeps every segment's full attention under this
INPUT_KINDS = ("Task sample", "Paste text", "Trace folder")
TRACE_ENV = "RMT_TRACE"  # the trace folder `rmt app --trace` opens
EXAMPLE_TEXT = (
    "The museum opened early on Sunday, and the guards walked through every hall before the doors were unlocked. "
    "Sandra travelled to the garden. A school group arrived at nine and spent the morning drawing the statues "
    "in the courtyard. Later the rain began, and most visitors stayed inside until the afternoon."
)
EXAMPLE_QUESTION = "Where is Sandra?"
SEED = 0
VIEW_CENTRE, VIEW_WIDTH, VIEW_HEADS = "fact", 24, 4  # bertviz defaults: window around the fact, first heads


def tasks_for(config: dict | None) -> tuple[str, ...]:
    """The tasks a checkpoint can run: the paper's three for an encoder, the generative ones for a decoder."""
    from rmt_core.babilong import GENERATIVE_TASKS

    decoder = ((config or {}).get("rmt") or {}).get("architecture", "encoder") == "decoder"
    return GENERATIVE_TASKS if decoder else TASKS


def task_choices(folder: str | None, current: str | None) -> tuple[tuple[str, ...], int]:
    """(the tasks a checkpoint folder can run, the index of `current` among them, else of its own task)."""
    try:
        config = read_config(folder) if folder else None
    except CheckpointError:
        config = None
    tasks = tasks_for(config)
    return tasks, tasks.index(current if current in tasks else default_task(config))


def default_task(config: dict | None) -> str:
    task = ((config or {}).get("rmt") or {}).get("task")
    tasks = tasks_for(config)
    return task if task in tasks else tasks[0]


def default_segments(config: dict | None) -> int:
    """The checkpoint's trained length (at least 2, at most 8): a sample the model knows, replayed quickly."""
    trained = int(((config or {}).get("rmt") or {}).get("trained_segments") or 0)
    return min(max(trained, 2), 8)


@dataclass(frozen=True)
class Selection:
    """The input every page works on. kind: 'task' (task, n_segments, seed), 'text' (text, question) or
    'trace' (trace_path: a trace folder; the checkpoint then serves the Probes, Length and Record pages)."""

    checkpoint: str | None  # folder, None when none is chosen
    kind: str = "task"
    task: str = "memorize"
    n_segments: int = 2
    seed: int = 0
    text: str = ""
    question: str = ""
    problem: str | None = None  # a one-line reason the checkpoint cannot be used
    trace_path: str = ""

    @property
    def input_key(self) -> tuple:
        if self.kind == "text":
            return ("text", self.text, self.question)
        if self.kind == "trace":
            return ("trace", self.trace_path)
        return ("task", self.task, int(self.n_segments), int(self.seed))


# ----- the sidebar -----------------------------------------------------------------------------------------
def _checkpoint_options() -> tuple[list[str], dict[str, str], int]:
    """Labels of the checkpoint choices, label -> folder, and the index of the default."""
    labels, folders = [], {}
    default = default_checkpoint()
    for name, folder in shipped_checkpoints().items():
        labels.append(name)
        folders[name] = str(folder)
    if (default / "config.json").is_file() and str(default) not in folders.values():
        labels.insert(0, str(default))
        folders[str(default)] = str(default)
    labels.append(OTHER_FOLDER)
    index = next((i for i, label in enumerate(labels) if folders.get(label) == str(default)), len(labels) - 1)
    return labels, folders, index


def sidebar() -> Selection:
    """Draw the input choices in the sidebar; store and return the Selection."""
    requested = st.session_state.pop("_open_request", None)
    if requested:
        open_trace_folder(requested)
    bar = st.sidebar
    bar.header("Input")
    labels, folders, index = _checkpoint_options()
    default = default_checkpoint()
    if not (default / "config.json").is_file():
        bar.warning(f"The default checkpoint {default} is not there yet (train it with `make checkpoints`, or set "
                    "RMT_CHECKPOINT). Choose another checkpoint folder below.")
    choice = bar.selectbox("Checkpoint", labels, index=index, key="checkpoint_choice")
    if choice == OTHER_FOLDER:
        folder = bar.text_input("Checkpoint folder", key="checkpoint_folder",
                                placeholder="/path/to/a/checkpoint (the folder holding config.json), or a Hub "
                                "id owner/name").strip()
    else:
        folder = folders[choice]
    problem, config = None, None
    if folder:
        try:
            folder = str(resolve_checkpoint(folder))  # a Hub id: its folder in the Hugging Face cache
            config = read_config(folder)
        except CheckpointError as error:
            problem = str(error)
    model_task = default_task(config)

    if "input_kind" not in st.session_state and os.environ.get(TRACE_ENV):
        st.session_state["input_kind"] = "Trace folder"  # `rmt app --trace DIR`
    if "trace_folder" not in st.session_state:
        st.session_state["trace_folder"] = os.environ.get(TRACE_ENV, "")
    kind = bar.radio("Input", INPUT_KINDS, horizontal=True, key="input_kind")
    if kind == "Trace folder":
        path = bar.text_input("Trace folder (on the server)", key="trace_folder",
                              placeholder="/path/to/a/trace (the folder rmt replay wrote)").strip()
        recent = [p for p in st.session_state.get("recent_traces", []) if p != path]
        if recent:
            bar.selectbox("Recently recorded", ["", *recent], key="recent_choice", on_change=_open_recent,
                          format_func=lambda p: p or "open one…")
        chosen = Selection(folder or None, "trace", model_task, problem=problem,
                           trace_path=str(Path(path).expanduser()) if path else "")
    elif kind == "Task sample":
        tasks = tasks_for(config)
        task = bar.selectbox("Task", tasks, index=tasks.index(model_task), key=f"task_{folder}")
        n_segments = bar.number_input("Segments", min_value=1, max_value=MAX_SEGMENTS,
                                      value=default_segments(config), step=1, key=f"segments_{folder}",
                                      help=f"up to {MAX_SEGMENTS} here; the Record page replays any length")
        seed = bar.number_input("Seed", min_value=0, max_value=2**31 - 1, value=SEED, step=1, key="seed")
        chosen = Selection(folder or None, "task", task, int(n_segments), int(seed), problem=problem)
    else:
        text = bar.text_area("Text", value=EXAMPLE_TEXT, height=160, key="text")
        question = bar.text_input("Question (ends the last segment)", value=EXAMPLE_QUESTION, key="question")
        chosen = Selection(folder or None, "text", model_task, text=text, question=question, problem=problem)
    st.session_state["selection"] = chosen
    return chosen


def _open_recent() -> None:
    choice = st.session_state.get("recent_choice")
    if choice:
        st.session_state["trace_folder"] = choice
        st.session_state["recent_choice"] = ""


def request_open(path: str) -> None:
    """Open the trace folder `path` on the next run (safe to call anywhere; follow with st.rerun())."""
    st.session_state["_open_request"] = str(path)


def open_trace_folder(path: str) -> None:
    """Make `path` the input of every page (call before the sidebar is drawn, e.g. from a callback)."""
    st.session_state["input_kind"] = "Trace folder"
    st.session_state["trace_folder"] = str(path)
    recent = [p for p in st.session_state.get("recent_traces", []) if p != str(path)]
    st.session_state["recent_traces"] = [str(path), *recent][:8]


def selection() -> Selection:
    """The Selection of this run (drawn by main.py; drawn here when a page runs on its own)."""
    chosen = st.session_state.get("selection")
    return chosen if chosen is not None else sidebar()


def require_checkpoint(chosen: Selection) -> str:
    """The chosen checkpoint folder, or an error/info message and a stop."""
    if chosen.checkpoint is None:
        st.info("Choose a checkpoint folder in the sidebar to start.")
        st.stop()
    if chosen.problem:
        st.error(chosen.problem)
        st.stop()
    return chosen.checkpoint


def require_input(chosen: Selection) -> None:
    """Stop with a one-line message when the input cannot be shown (no checkpoint, or no trace folder named)."""
    if chosen.kind == "trace":
        if not chosen.trace_path:
            st.info("Name a trace folder in the sidebar (one written by `rmt replay` or the Record page).")
            st.stop()
        return
    require_checkpoint(chosen)


def show_error(error: RMTError) -> None:
    """One line, never a traceback."""
    st.error(str(error))


# ----- cached calls into rmt_core ------------------------------------------------------------------------
def checkpoint_stamp(folder: str) -> tuple:
    """Sizes and times of a checkpoint's files: a cache key that changes when the folder is rewritten."""
    path = Path(folder)
    try:
        return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file()))
    except OSError as error:
        raise CheckpointError(f"cannot read checkpoint folder {folder} ({error.strerror}); check the path") from None


@st.cache_resource(show_spinner="Loading the checkpoint…", max_entries=3)
def _model(folder: str, stamp: tuple):
    from rmt_core.checkpoint import load_checkpoint

    return load_checkpoint(folder)


def model(folder: str):
    """The loaded RMT of a checkpoint folder (cached; reloaded when the folder's files change)."""
    return _model(folder, checkpoint_stamp(folder))


def _policy(n_segments: int, rmt):
    """Read/write attention under ATTENTION_BUDGET_MIB; full attention of every segment when it fits in
    FULL_ATTENTION_BUDGET_MIB (so the bertviz views read it instead of running the model again)."""
    from rmt_core.replay import RecordingPolicy

    T, L = rmt.config.input_size, rmt.backbone.config.num_hidden_layers
    H = rmt.backbone.config.num_attention_heads
    full = n_segments * L * H * T * T * 2 <= FULL_ATTENTION_BUDGET_MIB * 2**20
    return RecordingPolicy(attention_budget_mib=ATTENTION_BUDGET_MIB, segment_logits=True,
                           full_attention_segments=list(range(n_segments)) if full else [])


REPLAY_CACHE_ENTRIES = 32  # replays kept on disk in the cache folder (the least recently used go first)
_REPLAY_SOURCES = ("model.py", "replay.py", "trace.py", "tasks.py", "segmenting.py", "babi.py", "noise.py")


@functools.lru_cache(maxsize=1)
def _code_stamp() -> str:
    """A digest of the rmt_core sources a replay's result depends on: a cached replay of older code is not used."""
    import rmt_core

    digest = hashlib.sha256()
    for name in _REPLAY_SOURCES:
        try:
            digest.update((Path(rmt_core.__file__).parent / name).read_bytes())
        except OSError:
            digest.update(name.encode())
    return digest.hexdigest()


def replay_cache_dir() -> Path:
    from rmt_core.trace_stats import cache_root

    return cache_root() / "replays"


def _cached_replay_path(folder: str, stamp: tuple, input_key: tuple) -> Path:
    key = json.dumps([str(Path(folder).resolve()), stamp, list(input_key), _code_stamp(),
                      FULL_ATTENTION_BUDGET_MIB, ATTENTION_BUDGET_MIB], default=str)
    return replay_cache_dir() / hashlib.sha256(key.encode()).hexdigest()[:32]


def _evict_replays(keep: Path) -> None:
    """Delete the least recently used cached replays beyond REPLAY_CACHE_ENTRIES (only folders named as ours)."""
    import re
    import shutil

    try:
        entries = [p for p in replay_cache_dir().iterdir()
                   if re.fullmatch(r"[0-9a-f]{32}", p.name) and p.is_dir() and p != keep]
        entries.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    for old in entries[REPLAY_CACHE_ENTRIES - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def _replay(folder: str, stamp: tuple, input_key: tuple):
    """The input replayed by the checkpoint, written as a trace folder in the cache (so the next launch opens
    it without loading the model), or kept in memory when the cache cannot be written."""
    from rmt_core.replay import replay, replay_in_memory
    from rmt_core.trace import Trace

    out = _cached_replay_path(folder, stamp, input_key)
    if (out / "manifest.json").is_file():
        try:
            os.utime(out)  # recently used
            return Trace.open(out)
        except (OSError, TraceError):
            pass
    from rmt_core.inputs import make_input

    rmt = _model(folder, stamp)
    if input_key[0] == "text":
        _, text, question = input_key
        item = make_input(rmt, text=text, question=question)
    else:
        _, task, n_segments, seed = input_key
        item = make_input(rmt, task=task, n_segments=n_segments, seed=seed)
    n, extra = item.n_segments, {}
    policy = _policy(n, rmt)
    try:
        trace = replay(rmt, item, out=out, policy=policy, progress=False, checkpoint_dir=folder, **extra)
    except TraceError:  # the cache cannot be written (or another server wrote it meanwhile)
        if (out / "manifest.json").is_file():
            return Trace.open(out)
        return replay_in_memory(rmt, item, policy, checkpoint_dir=folder, **extra)
    _evict_replays(out)
    return trace


@st.cache_resource(show_spinner="Replaying the input segment by segment…", max_entries=8)
def _replayed(folder: str, stamp: tuple, input_key: tuple):
    return _replay(folder, stamp, input_key)


@st.cache_resource(show_spinner=False, max_entries=16)
def _opened(path: str, stamp: tuple):
    from rmt_core.trace import Trace

    return Trace.open(path)


def trace_key(chosen: Selection) -> tuple:
    """What identifies the trace of the selected input: ('trace', path, file stamp) for a trace folder,
    ('replay', checkpoint folder, checkpoint stamp, input key) for an input replayed in memory."""
    if chosen.kind == "trace":
        from rmt_core.trace_stats import trace_stamp

        path = Path(chosen.trace_path)
        if not path.is_dir():
            from rmt_core.trace import Trace

            Trace.open(path)  # raises the one-line TraceError saying what is wrong
        return ("trace", str(path.resolve()), trace_stamp(path))
    folder = require_checkpoint(chosen)
    return ("replay", folder, checkpoint_stamp(folder), chosen.input_key)


def trace_for(key: tuple):
    """The trace (a lazily read `Trace`, or an `InMemoryTrace`) of a trace_key; cached, shared, read-only."""
    if key[0] == "trace":
        return _opened(key[1], key[2])
    return _replayed(key[1], key[2], key[3])


@st.cache_data(show_spinner="Reading the run's memory once (statistics of every segment)…", max_entries=8)
def stats(key: tuple):
    """Per-segment statistics of the whole run (`rmt_core.trace_stats`), in memory and in a sidecar file."""
    from rmt_core.trace_stats import cached_trace_stats

    return cached_trace_stats(trace_for(key))


OVERVIEW_BINS = 400  # bins across the shown range (a chart is about 1,200 pixels wide)


@st.cache_data(show_spinner=False, max_entries=64)
def overview_rows(key: tuple, first: int, last: int, bins: int = OVERVIEW_BINS) -> list:
    """[(name, Envelope or None)] of the overview for segments first..last."""
    from rmt_core.trace_stats import envelope

    found = stats(key)
    stop = last + 1
    rows = [
        ("memory change ‖M_out − M_in‖", envelope(found.change, first, stop, bins)),
        ("memory norm ‖M_out‖", envelope(found.norm[1:], first, stop, bins)),
        (f"cosine to the {found.reference}", envelope(found.similarity[1:], first, stop, bins)),
    ]
    name = "answer" if found.answer_kind == "answer" else "final prediction"
    probability = found.answer_probability
    rows.append((f"p({name}) after each segment",
                 None if probability is None else envelope(probability, first, stop, bins)))
    return rows


@st.cache_resource(show_spinner="Drawing the whole run…", max_entries=32)
def overview_figure(key: tuple, first: int, last: int, log_change: bool = False):
    """The overview figure of segments first..last (shared; never modified after it is built); log_change draws
    the memory change on a log scale (the fact segment's change can dwarf every other)."""
    from rmt_core.viz import figures

    found = stats(key)
    return figures.overview_figure(overview_rows(key, first, last), found.fact_segments, found.question_segments,
                                   span=(first, last), log_rows=(0,) if log_change else ())


@st.cache_resource(show_spinner=False, max_entries=16)
def final_answer_figure(key: tuple):
    from rmt_core.viz import figures

    recorded = trace_for(key)
    title = ("First answer token at the last segment, over the labels" if recorded.architecture == "decoder"
             else "Answer probabilities at the last segment")
    return figures.answer_figure(recorded.final_logits, recorded.labels, recorded.answer, title=title)


# ----- per-segment figures, cached (a segment change redraws from here; the next segments are prefetched) -----
@st.cache_resource(show_spinner=False, max_entries=256)
def tokens_figure(key: tuple, t: int):
    from rmt_core.viz import figures

    recorded = trace_for(key)
    return figures.token_strip_figure(recorded.tokens(t), recorded.roles(t), title=f"Segment {t}: tokens and roles")


@st.cache_resource(show_spinner=False, max_entries=256)
def attention_figure(key: tuple, kind: str, t: int, layer: int | None, head: int | None):
    """Read or write attention of segment t (None when the trace did not keep it)."""
    from rmt_core.viz import figures

    recorded = trace_for(key)
    if not recorded.has_attention(t):
        return None
    tokens, roles = recorded.tokens(t), recorded.roles(t)
    if kind == "read":  # positions on the axis, tokens in the hover: far quicker for the browser to draw
        return figures.read_attention_figure(recorded.read_attention(t), tokens, roles, layer, head, segment=t,
                                             token_labels=False, architecture=recorded.architecture)
    return figures.write_attention_figure(recorded.write_attention(t), tokens, roles, layer, head, segment=t,
                                          token_labels=False, architecture=recorded.architecture)


@st.cache_resource(show_spinner=False, max_entries=256)
def segment_answer_figure(key: tuple, t: int):
    """The head's class probabilities after segment t (None without segment logits)."""
    from rmt_core.viz import figures

    recorded = trace_for(key)
    if recorded.segment_logits is None:
        return None
    logits = np.asarray(recorded.segment_logits[recorded.segment_index(t)], dtype=np.float32)
    return figures.answer_figure(logits, recorded.labels, recorded.answer,
                                 title=f"Answer probabilities after segment {t}")


@st.cache_resource(show_spinner=False, max_entries=256)
def slot_change_figure(key: tuple, t: int):
    """How far each memory slot moved in segment t, beside its mean over the other segments (trace_stats)."""
    from rmt_core.viz import figures

    found = stats(key)
    label = ("the fact's segment" if t in found.fact_segments else
             "the question's segment" if t in found.question_segments else "chosen segment")
    return figures.slot_change_figure(None, t, label, change=found.slot_change)


def full_attention_source(key: tuple, t: int) -> str | None:
    """'trace' when segment t's full attention was recorded, 'model' when it can be computed from the
    checkpoint (an input replayed here), None when neither."""
    recorded = trace_for(key)
    if recorded.has_full_attention(t):
        return "trace"
    return "model" if key[0] == "replay" else None


@st.cache_data(show_spinner="Computing the segment's full attention…", max_entries=8)
def _computed_attention(key: tuple, t: int):
    from rmt_core.viz import bertviz_offline

    return bertviz_offline.segment_attention(_model(key[1], key[2]), trace_for(key), t)


def full_attention(key: tuple, t: int):
    """[L, H, T, T] attention of segment t: as recorded, else one segment step of the model (replays only)."""
    source = full_attention_source(key, t)
    if source == "trace":
        return trace_for(key).full_attention(t)
    if source == "model":
        return _computed_attention(key, t)
    raise TraceError(f"this trace did not record the full attention of segment {t}; replay with "
                     f"--full-attention {t} to see it in bertviz")


@st.cache_data(show_spinner="Building the bertviz view…", max_entries=32)
def bertviz_html(view: str, key: tuple, t: int, positions: tuple, layers: tuple, heads: tuple) -> str:
    """Offline bertviz 'head' or 'model' view of segment t, for the given positions, layers and heads."""
    from rmt_core.viz import bertviz_offline

    attention = full_attention(key, t)
    recorded = trace_for(key)
    build = bertviz_offline.head_view_html if view == "head" else bertviz_offline.model_view_html
    return build(attention, recorded.tokens(t), recorded.roles(t), list(positions), list(layers), list(heads))


def default_segment(recorded) -> int:
    """The segment the Replay page starts on: where the (first) fact landed, else 0."""
    from rmt_core.viz.export import fact_segments

    found = fact_segments(recorded)
    return found[0] if found else 0


# ----- prefetch: what a person asks for next (the neighbouring segments), built in a background thread -------
_PREFETCH = None


def prefetch(key: tuple, segments, layer: int | None, head: int | None, view: tuple | None = None) -> None:
    """Build the figures of `segments` in one background thread, so stepping to them redraws from the cache;
    view = (kind, centre, width, layers, heads) of the bertviz view also builds that view of the first segment."""
    global _PREFETCH
    import concurrent.futures

    if _PREFETCH is None:
        _PREFETCH = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="rmt-app-prefetch")
    n = trace_for(key).n_segments
    wanted = [int(t) for t in dict.fromkeys(segments) if 0 <= int(t) < n]
    _PREFETCH.submit(_prefetch, key, wanted, layer, head, view)


def _prefetch(key: tuple, segments: list[int], layer, head, view: tuple | None = None) -> None:
    import logging

    try:
        with _quiet_context_warnings():
            for t in segments:
                attention_figure(key, "read", t, layer, head)
                attention_figure(key, "write", t, layer, head)
                segment_answer_figure(key, t)
                slot_change_figure(key, t)
            if view and segments and full_attention_source(key, segments[0]) is not None:
                from rmt_core.viz import bertviz_offline

                kind, centre, width, layers, heads = view
                t = segments[0]
                positions = bertviz_offline.window_positions(trace_for(key).roles(t), centre, width)
                bertviz_html(kind, key, t, tuple(int(p) for p in positions), tuple(layers), tuple(heads))
    except Exception:  # a cache warm-up: the page reports the same problem when it asks
        logging.getLogger("rmt_lens.app").debug("prefetch failed", exc_info=True)


class _quiet_context_warnings:
    """Silence Streamlit's 'missing ScriptRunContext' warning: expected for cache calls outside a page run."""

    def __enter__(self):
        import logging

        self.logger = logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)
        return False


def warm_up() -> bool:
    """Fill the caches for what the first page will ask for (`rmt app` runs this in the server at launch, so the
    first page opens without waiting): the trace of `rmt app --trace` and its statistics, else the default
    checkpoint and its ready sample. False when there is neither (only the libraries are loaded then)."""
    path = os.environ.get(TRACE_ENV)
    if path:
        key = trace_key(Selection(None, "trace", trace_path=path))
    else:
        folder = default_checkpoint()
        try:
            config = read_config(folder)
        except CheckpointError:
            import rmt_core.replay  # noqa: F401  (still worth it: torch and transformers take seconds to load)
            return False
        key = trace_key(Selection(str(folder), "task", default_task(config), default_segments(config), SEED))
    recorded = trace_for(key)
    overview_figure(key, 0, recorded.n_segments - 1)
    final_answer_figure(key)
    L = recorded.manifest["model"]["num_layers"]
    H = recorded.manifest["model"]["num_heads"]
    _prefetch(key, [default_segment(recorded)], None, None,
              view=("head", VIEW_CENTRE, VIEW_WIDTH, (L - 1,), tuple(range(min(H, VIEW_HEADS)))))
    return True
