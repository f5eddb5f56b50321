"""Traces: what a replay recorded, segment by segment, on disk (`Trace`) or in memory (`InMemoryTrace`).

A trace folder (format described for readers without this code in docs/trace-format.md):

    manifest.json                    format, version, checkpoint identity, model shapes, sample metadata,
                                     recording policy, what was recorded, array files with shapes and dtypes
    tokens.json                      {token id: token string} for every id that occurs in token_ids.npy
    token_ids.npy   [N, T] int32     ids fed to the backbone at each position; -1 at the memory positions
    roles.npy       [N, T] int8      role of each position (model.ROLE_NAMES)
    memory.npy      [N+1, m, d]      memory before segment 0, then after each segment
    segment_logits.npy [N, C] f32    the answer head at every segment (when recorded)
    final_logits.npy   [C] f32       the answer head at the last segment
    attention/read_000123.npy   [L, H, T, m]   every query position onto the memory keys
    attention/write_000123.npy  [L, H, m, T]   the memory queries onto every key
    attention/full_000123.npy   [L, H, T, T]   the whole attention of chosen segments

Arrays are plain NumPy .npy files. The per-segment arrays are preallocated and memory-mapped, so a reader
touches only the rows of the segments it asks for; attention lives in one file per segment and array.

Writing (`TraceWriter`) goes into `<out>.partial-<pid>` beside the final path and renames it when complete;
any exception deletes the partial folder, so nothing ever appears under the final name half written.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np

from rmt_core.errors import TraceError

FORMAT = "rmt-lens-trace"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TOKENS = "tokens.json"
ATTENTION_DIR = "attention"
ATTENTION_KINDS = ("read", "write", "full")
PARTIAL = ".partial-"
_DTYPES = ("float16", "bfloat16", "float32")


def attention_file(kind: str, t: int) -> str:
    """Path of segment t's attention array of kind read/write/full, relative to the trace folder."""
    return f"{ATTENTION_DIR}/{kind}_{t:06d}.npy"


# ----- the array writers (one place, so a test can make them fail) ---------------------------------------
def write_array(path: str | Path, array: np.ndarray) -> None:
    """Write `array` to `path` as a .npy file (no pickles)."""
    with open(path, "wb") as handle:
        np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)


def open_array(path: str | Path, shape: tuple[int, ...], dtype) -> np.memmap:
    """A preallocated .npy file of `shape` and `dtype`, memory-mapped for writing row by row."""
    return np.lib.format.open_memmap(str(path), mode="w+", dtype=np.dtype(dtype), shape=tuple(shape))


def _write_json(path: Path, value) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=1, allow_nan=False)
        handle.write("\n")


# ----- the reading API, shared by the on-disk and the in-memory trace --------------------------------------
class TraceView:
    """What every trace hands out. N segments, T positions a segment, m memory slots, d hidden size,
    L layers, H heads, C classes. Segment indexes may be negative (-1 is the last segment)."""

    manifest: dict

    # primitives a subclass provides
    def _array(self, name: str):  # token_ids, roles, memory, segment_logits, final_logits; None if absent
        raise NotImplementedError

    def _segment_array(self, kind: str, t: int):  # kind in ATTENTION_KINDS; only called when recorded
        raise NotImplementedError

    def _vocab(self) -> dict[int, str]:
        raise NotImplementedError

    # shapes and bookkeeping
    @property
    def n_segments(self) -> int:
        return int(self.manifest["n_segments"])

    @property
    def metadata(self) -> dict:
        """The sample's metadata (task, facts, question, answer, seed, sources) or the text input's."""
        return self.manifest.get("metadata") or {}

    @property
    def num_mem_tokens(self) -> int:
        return int(self.manifest["model"]["num_mem_tokens"])

    @property
    def attention_segments(self) -> list[int]:
        """Segments whose read and write attention were recorded."""
        return list(self.manifest["recorded"]["attention_segments"])

    @property
    def full_attention_segments(self) -> list[int]:
        return list(self.manifest["recorded"]["full_attention_segments"])

    def segment_index(self, t: int) -> int:
        """`t` as an index in 0..N-1 (negative counts from the end); TraceError when out of range."""
        n = self.n_segments
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
            raise TraceError(f"segment index must be an integer, got {t!r}")
        if not -n <= t < n:
            raise TraceError(f"segment {t} is out of range: this trace has {n} segments (0..{n - 1})")
        return int(t) % n

    # tokens
    def token_ids(self, t: int) -> np.ndarray:
        """[T] int ids fed at each position of segment t; -1 at the memory positions."""
        return np.array(self._array("token_ids")[self.segment_index(t)])

    def roles(self, t: int) -> np.ndarray:
        """[T] int8 role of each position of segment t (indexes into model.ROLE_NAMES)."""
        return np.array(self._array("roles")[self.segment_index(t)])

    def tokens(self, t: int) -> list[str]:
        """[T] token strings of segment t; memory positions are "[mem0]" .. "[mem{m-1}]"."""
        vocab = self._vocab()
        ids = self.token_ids(t)
        m = self.num_mem_tokens
        return [f"[mem{i - 1}]" if 1 <= i <= m else vocab.get(int(v), f"[id{int(v)}]") for i, v in enumerate(ids)]

    def segment_length(self, t: int) -> int:
        """Number of input tokens (text, facts, question) in segment t, special tokens and padding excluded."""
        from rmt_core.model import ROLE_FACT, ROLE_NOISE, ROLE_QUESTION

        return int(np.isin(self.roles(t), (ROLE_NOISE, ROLE_FACT, ROLE_QUESTION)).sum())

    # memory
    def memory_states(self) -> np.ndarray:
        """[N+1, m, d]: the memory before segment 0, then after each segment (memory-mapped on disk)."""
        return self._array("memory")

    def memory_in(self, t: int) -> np.ndarray:
        """[m, d] memory that segment t read."""
        return np.array(self._array("memory")[self.segment_index(t)])

    def memory_out(self, t: int) -> np.ndarray:
        """[m, d] memory that segment t wrote (= memory_in(t + 1))."""
        return np.array(self._array("memory")[self.segment_index(t) + 1])

    # attention
    def has_attention(self, t: int) -> bool:
        return self.segment_index(t) in self._attention_set()

    def has_full_attention(self, t: int) -> bool:
        return self.segment_index(t) in self._full_set()

    def read_attention(self, t: int) -> np.ndarray | None:
        """[L, H, T, m]: every query position of segment t onto the memory keys; None when not recorded."""
        t = self.segment_index(t)
        return self._segment_array("read", t) if t in self._attention_set() else None

    def write_attention(self, t: int) -> np.ndarray | None:
        """[L, H, m, T]: the memory queries of segment t onto every key; None when not recorded."""
        t = self.segment_index(t)
        return self._segment_array("write", t) if t in self._attention_set() else None

    def full_attention(self, t: int) -> np.ndarray | None:
        """[L, H, T, T]: the whole attention of segment t; None when not recorded."""
        t = self.segment_index(t)
        return self._segment_array("full", t) if t in self._full_set() else None

    def _attention_set(self) -> set[int]:
        if getattr(self, "_attention_cache", None) is None:
            self._attention_cache = set(self.attention_segments)
        return self._attention_cache

    def _full_set(self) -> set[int]:
        if getattr(self, "_full_cache", None) is None:
            self._full_cache = set(self.full_attention_segments)
        return self._full_cache

    # the answer
    @property
    def final_logits(self) -> np.ndarray:
        """[C] the answer head's logits at the last segment."""
        return np.array(self._array("final_logits"))

    @property
    def segment_logits(self) -> np.ndarray | None:
        """[N, C] the answer head's logits at every segment, or None when not recorded."""
        return self._array("segment_logits")

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["model"]["labels"])

    @property
    def answer(self) -> int | None:
        """The true answer's label index (None for free text without a known answer)."""
        return self.manifest.get("answer")

    @property
    def prediction(self) -> int:
        return int(np.argmax(self.final_logits))

    @property
    def probabilities(self) -> np.ndarray:
        """[C] softmax of the final logits."""
        logits = self.final_logits.astype(np.float64)
        e = np.exp(logits - logits.max())
        return e / e.sum()

    def sample(self):
        """The replayed task `Sample` rebuilt from the metadata and the stored tokens (None for free text)."""
        from rmt_core.model import ROLE_FACT, ROLE_NOISE, ROLE_QUESTION
        from rmt_core.tasks import Sample

        meta = self.metadata
        if meta.get("kind") != "task":
            return None
        keep = (ROLE_NOISE, ROLE_FACT, ROLE_QUESTION)
        ids, roles = [], []
        all_ids, all_roles = self._array("token_ids"), self._array("roles")
        for t in range(self.n_segments):
            where = np.isin(all_roles[t], keep)
            ids.extend(int(v) for v in all_ids[t][where])
            roles.extend(int(v) for v in all_roles[t][where])
        fields = {k: v for k, v in meta.items() if k != "kind"}
        return Sample.from_json({**fields, "input_ids": ids, "roles": roles})

    def __repr__(self) -> str:
        where = getattr(self, "path", None)
        return (f"{type(self).__name__}({str(where) + ', ' if where else ''}{self.n_segments} segments, "
                f"attention for {len(self.attention_segments)})")


class Trace(TraceView):
    """A trace folder opened lazily: `Trace.open(path)` reads only manifest.json; each array is opened when
    first asked for, memory-mapped, and attention is read from the asked segment's own files only."""

    def __init__(self, path: Path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest
        self._arrays: dict[str, np.ndarray | None] = {}
        self._tokens: dict[int, str] | None = None

    @classmethod
    def open(cls, path: str | Path) -> "Trace":
        path = Path(path)
        if not path.exists():
            raise TraceError(f"trace {path} does not exist; write one with rmt replay --out {path}")
        if not path.is_dir():
            raise TraceError(f"{path} is a file, not a trace folder; pass the folder rmt replay wrote")
        file = path / MANIFEST
        if not file.is_file():
            hint = " (an unfinished replay)" if PARTIAL in path.name else ""
            raise TraceError(f"{path} has no {MANIFEST}{hint}; it is not a complete trace, replay again")
        try:
            manifest = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise TraceError(f"{file} is not valid JSON ({error}); the trace is damaged, replay again") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise TraceError(f"{file} is not an RMT Lens trace manifest (format {FORMAT!r} expected)")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise TraceError(f"{file} has format_version {manifest.get('format_version')!r}, this RMT Lens reads "
                             f"version {FORMAT_VERSION}; upgrade RMT Lens or replay again")
        for key in ("n_segments", "model", "recorded", "arrays"):
            if key not in manifest:
                raise TraceError(f"{file} lacks '{key}'; the trace is damaged, replay again")
        return cls(path, manifest)

    def _load(self, relative: str, mmap: bool) -> np.ndarray:
        file = self.path / relative
        try:
            return np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
        except FileNotFoundError:
            raise TraceError(f"trace {self.path} is missing {relative}; the trace is incomplete, replay again") from None
        except (ValueError, OSError) as error:
            raise TraceError(f"{file} is not a readable .npy file ({error}); the trace is damaged, replay again") from None

    def _array(self, name: str):
        if name not in self._arrays:
            spec = self.manifest["arrays"].get(name)
            self._arrays[name] = None if spec is None else self._load(spec["file"], mmap=True)
        return self._arrays[name]

    def _segment_array(self, kind: str, t: int) -> np.ndarray:
        return self._load(attention_file(kind, t), mmap=kind == "full")

    def _vocab(self) -> dict[int, str]:
        if self._tokens is None:
            file = self.path / TOKENS
            try:
                self._tokens = {int(k): v for k, v in json.loads(file.read_text(encoding="utf-8")).items()}
            except FileNotFoundError:
                raise TraceError(f"trace {self.path} is missing {TOKENS}; the trace is incomplete, replay again") from None
            except (UnicodeDecodeError, json.JSONDecodeError, ValueError, AttributeError) as error:
                raise TraceError(f"{file} is damaged ({error}); replay again") from None
        return self._tokens


class InMemoryTrace(TraceView):
    """A replay kept in memory (short inputs, the dashboard), with the reading API of `Trace`."""

    def __init__(self, manifest: dict, arrays: dict[str, np.ndarray | None], attention: dict[str, dict[int, np.ndarray]],
                 vocab: dict[int, str]):
        self.manifest = manifest
        self.arrays = arrays
        self.attention = attention  # kind -> {segment: array}
        self.vocab = vocab

    def _array(self, name: str):
        return self.arrays.get(name)

    def _segment_array(self, kind: str, t: int) -> np.ndarray:
        return self.attention[kind][t]

    def _vocab(self) -> dict[int, str]:
        return self.vocab

    def save(self, out: str | Path) -> Trace:
        """Write this trace as a trace folder at `out` (atomically) and return it opened."""
        writer = TraceWriter(out)
        try:
            writer.begin(self.manifest, self.arrays["memory"][0])
            for t in range(self.n_segments):
                writer.segment(
                    t, self.arrays["token_ids"][t], self.arrays["roles"][t], self.arrays["memory"][t + 1],
                    None if self.arrays.get("segment_logits") is None else self.arrays["segment_logits"][t],
                    {kind: self.attention[kind].get(t) for kind in ATTENTION_KINDS},
                )
            return writer.finish(self.manifest, self.arrays["final_logits"], self.vocab)
        except BaseException:
            writer.abort()
            raise


# ----- sinks: where a replay puts what it records ----------------------------------------------------------
class MemorySink:
    """Collects a replay into numpy arrays and returns an `InMemoryTrace`."""

    def begin(self, manifest: dict, initial_memory: np.ndarray) -> None:
        arrays = manifest["arrays"]
        self.arrays = {name: np.zeros(spec["shape"], dtype=spec["dtype"]) for name, spec in arrays.items()
                       if spec is not None and name in ("token_ids", "roles", "memory", "segment_logits")}
        self.arrays.setdefault("segment_logits", None)
        self.arrays["memory"][0] = initial_memory
        self.attention: dict[str, dict[int, np.ndarray]] = {kind: {} for kind in ATTENTION_KINDS}

    def segment(self, t, token_ids, roles, memory_out, logits, attention) -> None:
        self.arrays["token_ids"][t] = token_ids
        self.arrays["roles"][t] = roles
        self.arrays["memory"][t + 1] = memory_out
        if logits is not None and self.arrays["segment_logits"] is not None:
            self.arrays["segment_logits"][t] = logits
        for kind, array in attention.items():
            if array is not None:
                self.attention[kind][t] = array

    def finish(self, manifest: dict, final_logits: np.ndarray, vocab: dict[int, str]) -> InMemoryTrace:
        self.arrays["final_logits"] = np.asarray(final_logits, dtype=np.float32)
        return InMemoryTrace(manifest, self.arrays, self.attention, vocab)

    def abort(self) -> None:
        self.arrays, self.attention = {}, {}


class TraceWriter:
    """Writes a trace folder as a replay goes: into `<out>.partial-<pid>`, renamed to `out` by `finish`.

    begin(manifest, initial_memory) preallocates the per-segment arrays; segment(...) writes one segment;
    finish(manifest, final_logits, vocab) completes the folder and returns it opened as a `Trace`;
    abort() deletes the partial folder. Disk errors become TraceError; an existing `out` is refused.
    """

    def __init__(self, out: str | Path):
        self.final = Path(out)
        if self.final.exists() or self.final.is_symlink():
            raise TraceError(f"{self.final} already exists; choose another --out or delete it")
        self.partial = self.final.with_name(f"{self.final.name}{PARTIAL}{os.getpid()}")
        self._maps: dict[str, np.memmap] = {}
        with self._writing(self.final.parent):
            self.final.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_partials(self.final)
            if self.partial.exists():  # left by an earlier failure of this very process
                shutil.rmtree(self.partial, ignore_errors=True)
            self.partial.mkdir()

    def _writing(self, path: Path):
        return _DiskErrors(self.final, path)

    def begin(self, manifest: dict, initial_memory: np.ndarray) -> None:
        for name, spec in manifest["arrays"].items():
            if spec is not None and name in ("token_ids", "roles", "memory", "segment_logits"):
                with self._writing(self.partial / spec["file"]):
                    self._maps[name] = open_array(self.partial / spec["file"], spec["shape"], spec["dtype"])
        with self._writing(self.partial / ATTENTION_DIR):
            (self.partial / ATTENTION_DIR).mkdir()
        self._maps["memory"][0] = initial_memory

    def segment(self, t, token_ids, roles, memory_out, logits, attention) -> None:
        self._maps["token_ids"][t] = token_ids
        self._maps["roles"][t] = roles
        self._maps["memory"][t + 1] = memory_out
        if logits is not None and "segment_logits" in self._maps:
            self._maps["segment_logits"][t] = logits
        for kind, array in attention.items():
            if array is not None:
                path = self.partial / attention_file(kind, t)
                with self._writing(path):
                    write_array(path, array)

    def finish(self, manifest: dict, final_logits: np.ndarray, vocab: dict[int, str]) -> Trace:
        with self._writing(self.partial):
            for array in self._maps.values():
                array.flush()
            self._maps.clear()
            write_array(self.partial / manifest["arrays"]["final_logits"]["file"], np.asarray(final_logits, np.float32))
            _write_json(self.partial / TOKENS, {str(k): vocab[k] for k in sorted(vocab)})
            _write_json(self.partial / MANIFEST, manifest)  # last: a folder with a manifest is complete
        if self.final.exists() or self.final.is_symlink():
            raise TraceError(f"{self.final} appeared while replaying; choose another --out or delete it")
        with self._writing(self.final):
            os.rename(self.partial, self.final)
        return Trace.open(self.final)

    def abort(self) -> None:
        self._maps.clear()
        shutil.rmtree(self.partial, ignore_errors=True)


class _DiskErrors:
    """Turns an OSError while writing `path` into a one-line TraceError about the trace `final`."""

    def __init__(self, final: Path, path: Path):
        self.final, self.path = final, path

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is None or not isinstance(error, OSError):
            return False
        if error.errno == errno.ENOSPC:
            fix = "free disk space or choose another --out on a disk with room"
        elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            fix = "choose an --out folder you can write to"
        else:
            fix = "check the disk and choose another --out"
        reason = error.strerror or str(error) or type(error).__name__
        raise TraceError(f"cannot write trace {self.final} ({reason} while writing {self.path.name}); {fix}") from None


def _remove_stale_partials(final: Path) -> None:
    """Delete `<final>.partial-<pid>` folders whose process is gone (a replay killed without cleanup)."""
    prefix = final.name + PARTIAL
    if not final.parent.is_dir():
        return
    for entry in final.parent.iterdir():
        if not entry.name.startswith(prefix) or not entry.is_dir():
            continue
        pid = entry.name[len(prefix):]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass  # alive but not ours: leave it
