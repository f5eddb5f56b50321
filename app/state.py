"""What every page shares: the sidebar input (checkpoint, task sample or pasted text) and the cached calls into
`rmt_core`. Models are cached with `st.cache_resource`, traces and results with `st.cache_data`.

The entry script (`app/main.py`) draws the sidebar on every run and stores a `Selection` in
`st.session_state["selection"]`; the pages (app/sections/) read it with `selection()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from rmt_core.checkpoint import default_checkpoint, read_config, resolve_checkpoint, shipped_checkpoints
from rmt_core.errors import CheckpointError, RMTError
from rmt_core.tasks import TASKS

OTHER_FOLDER = "Other folder…"
MAX_SEGMENTS = 64  # the dashboard replays in memory; longer inputs belong to `rmt replay`
ATTENTION_BUDGET_MIB = 96.0  # read/write attention kept for every segment under this, else chosen segments
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
    """The input every page works on. kind: 'task' (task, n_segments, seed) or 'text' (text, question)."""

    checkpoint: str | None  # folder, None when none is chosen
    kind: str = "task"
    task: str = "memorize"
    n_segments: int = 2
    seed: int = 0
    text: str = ""
    question: str = ""
    problem: str | None = None  # a one-line reason the checkpoint cannot be used

    @property
    def input_key(self) -> tuple:
        if self.kind == "text":
            return ("text", self.text, self.question)
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

    kind = bar.radio("Input", ["Task sample", "Paste text"], horizontal=True, key="input_kind")
    if kind == "Task sample":
        tasks = tasks_for(config)
        task = bar.selectbox("Task", tasks, index=tasks.index(model_task), key=f"task_{folder}")
        n_segments = bar.number_input("Segments", min_value=1, max_value=MAX_SEGMENTS,
                                      value=default_segments(config), step=1, key=f"segments_{folder}")
        seed = bar.number_input("Seed", min_value=0, max_value=2**31 - 1, value=SEED, step=1, key="seed")
        chosen = Selection(folder or None, "task", task, int(n_segments), int(seed), problem=problem)
    else:
        text = bar.text_area("Text", value=EXAMPLE_TEXT, height=160, key="text")
        question = bar.text_input("Question (ends the last segment)", value=EXAMPLE_QUESTION, key="question")
        chosen = Selection(folder or None, "text", model_task, text=text, question=question, problem=problem)
    st.session_state["selection"] = chosen
    return chosen


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


def _policy(full_attention_segment: int | None = None):
    from rmt_core.replay import RecordingPolicy

    if full_attention_segment is None:
        return RecordingPolicy(attention_budget_mib=ATTENTION_BUDGET_MIB, segment_logits=True)
    # only the one segment's full attention: no other attention, no logits
    return RecordingPolicy(attention_budget_mib=0.0, edge_segments=0, fact_segments=False, segment_logits=False,
                           full_attention_segments=[full_attention_segment])


def _replay(folder: str, stamp: tuple, input_key: tuple, policy):
    from rmt_core.replay import replay_in_memory

    rmt = _model(folder, stamp)
    if input_key[0] == "text":
        from rmt_core.segmenting import segmenting_of, segments_from_text

        _, text, question = input_key
        segmented = segments_from_text(rmt.tokenizer, text, question, rmt.config.segment_size,
                                       *segmenting_of(rmt.config))
        return replay_in_memory(rmt, segmented, policy, metadata={"kind": "text", "question": question})
    from rmt_core.babilong import make_builder

    _, task, n_segments, seed = input_key
    sample = make_builder(task, rmt.tokenizer, rmt.config.segment_size).sample(n_segments, seed)
    return replay_in_memory(rmt, sample, policy)


@st.cache_data(show_spinner="Replaying the input segment by segment…", max_entries=8)
def _trace(folder: str, stamp: tuple, input_key: tuple):
    return _replay(folder, stamp, input_key, _policy())


def trace(chosen: Selection):
    """The in-memory trace of the selected input on the selected checkpoint (cached)."""
    folder = require_checkpoint(chosen)
    return _trace(folder, checkpoint_stamp(folder), chosen.input_key)


@st.cache_data(show_spinner="Recording the segment's full attention…", max_entries=4)
def _full_attention(folder: str, stamp: tuple, input_key: tuple, segment: int):
    from rmt_core import bertviz_offline

    return bertviz_offline.segment_attention(_model(folder, stamp), _trace(folder, stamp, input_key), segment)


def full_attention(chosen: Selection, segment: int):
    """[L, H, T, T] attention of one segment of the selected input (one segment step from its memory, cached)."""
    folder = require_checkpoint(chosen)
    return _full_attention(folder, checkpoint_stamp(folder), chosen.input_key, int(segment))


@st.cache_data(show_spinner="Building the bertviz view…", max_entries=32)
def _bertviz_html(view: str, folder: str, stamp: tuple, input_key: tuple, segment: int, positions: tuple,
                  layers: tuple, heads: tuple) -> str:
    from rmt_core import bertviz_offline

    attention = _full_attention(folder, stamp, input_key, segment)
    recorded = _trace(folder, stamp, input_key)
    tokens, roles = recorded.tokens(segment), recorded.roles(segment)
    build = bertviz_offline.head_view_html if view == "head" else bertviz_offline.model_view_html
    return build(attention, tokens, roles, list(positions), list(layers), list(heads))


def bertviz_html(view: str, chosen: Selection, segment: int, positions, layers, heads) -> str:
    """Offline bertviz 'head' or 'model' view of one segment, for the given positions, layers and heads."""
    folder = require_checkpoint(chosen)
    return _bertviz_html(view, folder, checkpoint_stamp(folder), chosen.input_key, int(segment),
                         tuple(int(p) for p in positions), tuple(layers), tuple(heads))


def default_view_positions(recorded, segment: int) -> list[int]:
    from rmt_core import bertviz_offline

    return bertviz_offline.window_positions(recorded.roles(segment), VIEW_CENTRE, VIEW_WIDTH)


def default_segment(recorded) -> int:
    """The segment the Replay slider starts on: where the (first) fact landed, else 0."""
    from rmt_core.export import fact_segments

    found = fact_segments(recorded)
    return found[0] if found else 0


def warm_up() -> bool:
    """Fill the caches for the default checkpoint and its ready sample, as the first page will ask for them
    (`rmt app` runs this in the server at launch, so the first page opens without waiting). False when there
    is no default checkpoint (only the libraries are loaded then)."""
    folder = default_checkpoint()
    try:
        config = read_config(folder)
    except CheckpointError:
        import rmt_core.replay  # noqa: F401  (still worth it: torch and transformers take seconds to load)
        return False
    folder = str(folder)
    stamp = checkpoint_stamp(folder)
    key = Selection(folder, "task", default_task(config), default_segments(config), SEED).input_key
    recorded = _trace(folder, stamp, key)
    L = recorded.manifest["model"]["num_layers"]
    H = recorded.manifest["model"]["num_heads"]
    t = default_segment(recorded)
    for view in ("head", "model"):
        _bertviz_html(view, folder, stamp, key, t, tuple(default_view_positions(recorded, t)), (L - 1,),
                      tuple(range(min(H, VIEW_HEADS))))
    return True
