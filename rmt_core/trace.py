"""Traces: what a replay recorded, segment by segment, on disk (`Trace`) or in memory (`InMemoryTrace`).

A trace folder (described for readers without this code in docs/trace-format.md). N segments, T positions
a segment, m memory slots, d hidden size, L layers, H heads, C classes, K / F segments with attention:

    manifest.json                                 format, version, checkpoint identity, model shapes, sample
                                                  metadata, recording policy, what was recorded, array files
    tokens.json                                   {token id: token string} for every id in token_ids.npy
    token_ids.npy       [N, T] int32              ids at each position; -1 at the memory positions
    roles.npy           [N, T] int8               role of each position (model.ROLE_NAMES)
    memory.npy          [N+1, m, d] float32       memory before segment 0, then after each segment
    segment_logits.npy  [N, C] float32            the answer head at every segment (when recorded)
    final_logits.npy    [C] float32               the answer head at the last segment
    read_attention.npy  [K, L, H, T, m] float16   row k: segment recorded.attention_segments[k], every
                                                  query position onto the memory keys
    write_attention.npy [K, L, H, m, T] float16   row k: the memory queries onto every key
    full_attention.npy  [F, L, H, T, T] float16   row f: segment recorded.full_attention_segments[f]

Every array is a plain NumPy .npy file (C order, version 1.0 header) whose first axis is the segment (or
the recorded segment). Files are preallocated at their final size and written row by row as the replay
goes, with positioned writes (no memory map, so a long replay's resident memory stays flat); a reader
reads one row from its byte offset (header + row * row bytes) and never touches the other segments.

Writing (`TraceWriter`) goes into `<out>.partial-<pid>` beside the final path, renamed when complete; any
exception deletes the partial folder, so nothing ever appears under the final name half written.
"""

from __future__ import annotations

import bisect
import errno
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np

from rmt_core.errors import TraceError
from rmt_core.layout import INPUT_ROLES, position_labels

FORMAT = "rmt-lens-trace"
FORMAT_VERSION = 2  # the newest; 2 adds the decoder layout (read and write memory at different positions)
READABLE_VERSIONS = (1, 2)  # an encoder's replay is still written as version 1, which older readers open
MANIFEST = "manifest.json"
TOKENS = "tokens.json"
PARTIAL = ".partial-"
ATTENTION_KINDS = ("read", "write", "full")
SEGMENT_ARRAYS = ("token_ids", "roles", "memory", "segment_logits", "read_attention", "write_attention",
                  "full_attention")  # arrays written row by row during the replay


# ----- .npy files written and read by rows (module functions, so tests can watch or fail them) ----------------
def write_block(fd: int, offset: int, data) -> None:
    """Write the bytes `data` at `offset` of the open file `fd` (the one place a trace's arrays are written)."""
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def read_block(path: str | Path, offset: int, nbytes: int) -> np.ndarray:
    """`nbytes` bytes of `path` from `offset`, as a uint8 array (the one place a trace's rows are read)."""
    buffer = np.empty(nbytes, dtype=np.uint8)
    with open(path, "rb") as handle:
        handle.seek(offset)
        got = handle.readinto(memoryview(buffer))
    if got != nbytes:
        raise EOFError(f"{Path(path).name} ends early: {got} of {nbytes} bytes at offset {offset}")
    return buffer


class NpyFile:
    """A .npy file of fixed `shape` and `dtype`, preallocated on disk and written row by row (first axis)."""

    def __init__(self, path: str | Path, shape, dtype):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            header = _npy_header(self.shape, self.dtype)
            write_block(self.fd, 0, header)
            self.offset = len(header)
            size = self.offset + self.shape[0] * self.row_bytes
            if size > self.offset:
                try:  # reserve the blocks now: a full disk fails here, before the replay computes anything
                    os.posix_fallocate(self.fd, self.offset, size - self.offset)
                except OSError as error:
                    if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                        raise
            os.ftruncate(self.fd, size)
        except BaseException:
            os.close(self.fd)
            raise

    def write(self, row: int, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, dtype=self.dtype)
        if array.nbytes != self.row_bytes:
            raise ValueError(f"{self.path.name}: row of {array.nbytes} bytes, expected {self.row_bytes}")
        write_block(self.fd, self.offset + row * self.row_bytes, array)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def create_array(path: str | Path, shape, dtype) -> NpyFile:
    """A new preallocated .npy file to write row by row."""
    return NpyFile(path, shape, dtype)


def write_array(path: str | Path, array: np.ndarray) -> None:
    """Write a whole (small) array as a new .npy file."""
    array = np.ascontiguousarray(array)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        header = _npy_header(array.shape, array.dtype)
        write_block(fd, 0, header)
        if array.size:
            write_block(fd, len(header), array)
    finally:
        os.close(fd)


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    import io

    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def _read_npy_header(path: Path) -> tuple[int, tuple[int, ...], np.dtype]:
    """(data offset, shape, dtype) of a C-order .npy file."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f".npy format version {version} is not one a trace uses")
        if fortran:
            raise ValueError("Fortran-ordered arrays are not trace arrays")
        return handle.tell(), tuple(shape), dtype


def _write_json(path: Path, value) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=1, allow_nan=False)
        handle.write("\n")


# ----- the manifest, checked when a trace is opened -------------------------------------------------------------
ARRAY_DTYPES = ("int8", "int32", "int64", "float16", "float32", "float64")  # what trace arrays may hold
MAX_SEGMENTS = 2**24


def _whole(value, low: int = 0, high: int = 2**40) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def manifest_problem(manifest: dict) -> str | None:
    """What is wrong with the types and sizes of a trace manifest, or None: everything a reader indexes with
    (segment counts, recorded segments, labels, answer, array files, shapes and dtypes) is checked here."""
    n = manifest["n_segments"]
    if not _whole(n, 1, MAX_SEGMENTS):
        return f"n_segments is {n!r}, expected a whole number from 1 to {MAX_SEGMENTS:,}"
    model, recorded, arrays = manifest["model"], manifest["recorded"], manifest["arrays"]
    if not isinstance(model, dict) or not isinstance(recorded, dict) or not isinstance(arrays, dict):
        return "model, recorded and arrays must be JSON objects"
    if not isinstance(manifest.get("metadata") or {}, dict):
        return "metadata must be a JSON object"
    m = model.get("num_mem_tokens")
    if not _whole(m, 1, 2**20):
        return f"model.num_mem_tokens is {m!r}, expected a whole number of 1 or more"
    labels = model.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        return "model.labels must be a list of class names"
    answer = manifest.get("answer")
    if answer is not None and not _whole(answer, 0, len(labels) - 1):
        return f"answer is {answer!r}, expected null or a class index from 0 to {len(labels) - 1}"
    for key in ("attention_segments", "full_attention_segments"):
        segments = recorded.get(key)
        if (not isinstance(segments, list) or not all(_whole(t, 0, n - 1) for t in segments)
                or segments != sorted(set(segments))):
            return f"recorded.{key} must be a sorted list of different segments from 0 to {n - 1}"
    rows = {"token_ids": n, "roles": n, "memory": n + 1, "segment_logits": n,
            "read_attention": len(recorded["attention_segments"]),
            "write_attention": len(recorded["attention_segments"]),
            "full_attention": len(recorded["full_attention_segments"])}
    for name in ("token_ids", "roles", "memory", "final_logits", *rows):
        spec = arrays.get(name)
        if spec is None and name in ("token_ids", "roles", "memory", "final_logits"):
            return f"arrays.{name} is missing"
        if spec is None:
            continue
        if not isinstance(spec, dict):
            return f"arrays.{name} must be an object with file, shape and dtype"
        file, shape, dtype = spec.get("file"), spec.get("shape"), spec.get("dtype")
        if (not isinstance(file, str) or not file or "/" in file or "\\" in file or file in (".", "..")
                or file.startswith(".")):
            return f"arrays.{name}.file is {file!r}; an array file must be a plain name inside the trace folder"
        if not isinstance(shape, list) or not shape or not all(_whole(x) for x in shape):
            return f"arrays.{name}.shape is {shape!r}, expected a list of whole numbers"
        if dtype not in ARRAY_DTYPES:
            return f"arrays.{name}.dtype is {dtype!r}, expected one of {', '.join(ARRAY_DTYPES)}"
        expected = len(labels) if name == "final_logits" else rows[name]
        if shape[0] != expected:
            return f"arrays.{name} has {shape[0]} rows, expected {expected}"
        if name == "memory" and (len(shape) != 3 or shape[1] != m):
            return f"arrays.memory has shape {shape}, expected [{n + 1}, {m}, hidden size]"
        if name == "segment_logits" and shape[1:] != [len(labels)]:
            return f"arrays.segment_logits has shape {shape}, expected [{n}, {len(labels)}]"
    return None


# ----- the reading API, shared by the on-disk and the in-memory trace --------------------------------------
class TraceView:
    """What every trace hands out. N segments, T positions a segment, m memory slots, d hidden size,
    L layers, H heads, C classes. Segment indexes may be negative (-1 is the last segment)."""

    manifest: dict

    # primitives a subclass provides
    def _row(self, name: str, row: int) -> np.ndarray:  # one row (first axis) of an array, as a fresh array
        raise NotImplementedError

    def _whole(self, name: str):  # a whole array (memory-mapped on disk); None when not recorded
        raise NotImplementedError

    def _rows(self, name: str, start: int, stop: int) -> np.ndarray:  # rows start..stop-1, a fresh array
        raise NotImplementedError

    def row_chunks(self, name: str, chunk_rows: int = 1024):
        """Yield (first row, rows [k, ...]) of the array `name` in blocks of at most `chunk_rows` rows, read one
        block at a time (a streaming pass over e.g. memory.npy holds one block in memory, whatever N is)."""
        spec = self.manifest["arrays"].get(name)
        if spec is None:
            raise TraceError(f"this trace did not record {name}; replay with a policy that keeps it")
        total = int(spec["shape"][0])
        for start in range(0, total, max(1, int(chunk_rows))):
            stop = min(start + max(1, int(chunk_rows)), total)
            yield start, self._rows(name, start, stop)

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
    def architecture(self) -> str:
        """"encoder" (memory read and written at the same positions) or "decoder" (read at the front, written at
        the end); traces of format version 1 are encoder traces."""
        return (self.manifest.get("layout") or {}).get("architecture", "encoder")

    @property
    def read_positions(self) -> slice:
        """Positions of the memory a segment reads (the key columns of read_attention)."""
        return self._positions("read_positions")

    @property
    def write_positions(self) -> slice:
        """Positions whose states are the memory a segment writes (the query rows of write_attention)."""
        return self._positions("write_positions")

    def _positions(self, key: str) -> slice:
        pair = (self.manifest.get("layout") or {}).get(key) or [1, self.num_mem_tokens]  # version 1: 1..m
        return slice(int(pair[0]), int(pair[1]) + 1)

    @property
    def generated_answer(self) -> str | None:
        """A decoder's generated answer (None for an encoder trace)."""
        return self.manifest.get("generated_answer")

    @property
    def attention_segments(self) -> list[int]:
        """Segments whose read and write attention were recorded (sorted)."""
        return list(self.manifest["recorded"]["attention_segments"])

    @property
    def full_attention_segments(self) -> list[int]:
        """Segments whose full attention was recorded (sorted)."""
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
        """[T] int32 ids fed at each position of segment t; -1 at the memory positions."""
        return self._row("token_ids", self.segment_index(t))

    def roles(self, t: int) -> np.ndarray:
        """[T] int8 role of each position of segment t (indexes into model.ROLE_NAMES)."""
        from rmt_core.model import ROLE_NAMES

        roles = self._row("roles", self.segment_index(t))
        if roles.size and not (0 <= int(roles.min()) and int(roles.max()) < len(ROLE_NAMES)):
            raise TraceError(f"roles of segment {t} hold {int(roles.min())}..{int(roles.max())}, outside the roles "
                             f"0..{len(ROLE_NAMES) - 1}; the trace is damaged, replay again")
        return roles

    def tokens(self, t: int) -> list[str]:
        """[T] token strings of segment t; memory positions are "[mem0]" .. "[mem{m-1}]"."""
        t = self.segment_index(t)
        write = self.write_positions.start if self.architecture == "decoder" else None
        return position_labels(self._vocab(), self.token_ids(t), self.roles(t), write_start=write)

    def segment_length(self, t: int) -> int:
        """Number of input tokens (text, facts, question) in segment t, special tokens and padding excluded."""
        return int(np.isin(self.roles(t), INPUT_ROLES).sum())

    # memory
    def memory_states(self) -> np.ndarray:
        """[N+1, m, d]: the memory before segment 0, then after each segment (memory-mapped on disk)."""
        return self._whole("memory")

    def memory_rows(self, start: int, stop: int) -> np.ndarray:
        """[stop - start, m, d]: memory states start..stop-1 (0 = before segment 0), read without the others."""
        total = self.n_segments + 1
        if not 0 <= start <= stop <= total:
            raise TraceError(f"memory states {start}..{stop - 1} are out of range: this trace has states 0..{total - 1}")
        return self._rows("memory", int(start), int(stop))

    def memory_in(self, t: int) -> np.ndarray:
        """[m, d] memory that segment t read."""
        return self._row("memory", self.segment_index(t))

    def memory_out(self, t: int) -> np.ndarray:
        """[m, d] memory that segment t wrote (= memory_in(t + 1))."""
        return self._row("memory", self.segment_index(t) + 1)

    # attention
    def has_attention(self, t: int) -> bool:
        return self._attention_row(self.attention_segments_cached, self.segment_index(t)) is not None

    def has_full_attention(self, t: int) -> bool:
        return self._attention_row(self.full_segments_cached, self.segment_index(t)) is not None

    def read_attention(self, t: int) -> np.ndarray | None:
        """[L, H, T, m]: every query position of segment t onto the memory keys; None when not recorded."""
        row = self._attention_row(self.attention_segments_cached, self.segment_index(t))
        return None if row is None else self._row("read_attention", row)

    def write_attention(self, t: int) -> np.ndarray | None:
        """[L, H, m, T]: the memory queries of segment t onto every key; None when not recorded."""
        row = self._attention_row(self.attention_segments_cached, self.segment_index(t))
        return None if row is None else self._row("write_attention", row)

    def full_attention(self, t: int) -> np.ndarray | None:
        """[L, H, T, T]: the whole attention of segment t; None when not recorded."""
        row = self._attention_row(self.full_segments_cached, self.segment_index(t))
        return None if row is None else self._row("full_attention", row)

    @property
    def attention_segments_cached(self) -> list[int]:
        return self.manifest["recorded"]["attention_segments"]

    @property
    def full_segments_cached(self) -> list[int]:
        return self.manifest["recorded"]["full_attention_segments"]

    @staticmethod
    def _attention_row(segments: list[int], t: int) -> int | None:
        row = bisect.bisect_left(segments, t)
        return row if row < len(segments) and segments[row] == t else None

    # the answer
    @property
    def final_logits(self) -> np.ndarray:
        """[C] the answer head's logits at the last segment."""
        return np.array(self._whole("final_logits"))

    @property
    def segment_logits(self) -> np.ndarray | None:
        """[N, C] the answer head's logits at every segment, or None when not recorded."""
        return self._whole("segment_logits")

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
        """The replayed task `Sample`, rebuilt from the metadata and the stored tokens (None for free text)."""
        from rmt_core.tasks import Sample

        meta = self.metadata
        if meta.get("kind") != "task":
            return None
        all_ids, all_roles = np.asarray(self._whole("token_ids")), np.asarray(self._whole("roles"))
        keep = np.isin(all_roles, INPUT_ROLES)  # row-major: segment order
        fields = {k: v for k, v in meta.items() if k != "kind"}
        try:
            return Sample.from_json({**fields, "input_ids": all_ids[keep].tolist(), "roles": all_roles[keep].tolist()})
        except (TypeError, KeyError, ValueError, AttributeError) as error:
            raise TraceError(f"the manifest's metadata does not describe a task sample ({type(error).__name__}: "
                             f"{str(error)[:100]}); the trace is damaged, replay again") from None

    def __repr__(self) -> str:
        where = getattr(self, "path", None)
        return (f"{type(self).__name__}({str(where) + ', ' if where else ''}{self.n_segments} segments, "
                f"attention for {len(self.attention_segments_cached)})")


class Trace(TraceView):
    """A trace folder opened lazily: `Trace.open(path)` reads only manifest.json; a segment's values are read
    from their byte offsets in the array files, and whole arrays are memory-mapped when asked for."""

    def __init__(self, path: Path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest
        self._headers: dict[str, tuple[int, tuple[int, ...], np.dtype]] = {}
        self._maps: dict[str, np.ndarray | None] = {}
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
        if manifest.get("format_version") not in READABLE_VERSIONS:
            raise TraceError(f"{file} has format_version {manifest.get('format_version')!r}, this RMT Lens reads "
                             f"versions {', '.join(map(str, READABLE_VERSIONS))}; upgrade RMT Lens or replay again")
        for key in ("n_segments", "model", "recorded", "arrays"):
            if key not in manifest:
                raise TraceError(f"{file} lacks '{key}'; the trace is damaged, replay again")
        problem = manifest_problem(manifest)
        if problem:
            raise TraceError(f"{file}: {problem}; the trace is damaged, replay again")
        return cls(path, manifest)

    def _file(self, name: str) -> Path:
        spec = self.manifest["arrays"].get(name)
        if spec is None:
            raise TraceError(f"trace {self.path} did not record {name}; replay with a policy that keeps it")
        file = self.path / spec["file"]
        try:  # a link may not lead out of the trace folder either
            inside = file.resolve().parent == self.path.resolve()
        except (OSError, RuntimeError):
            inside = False
        if not inside:
            raise TraceError(f"{self.path / MANIFEST} points {name} at {spec['file']}, outside the trace folder; "
                             "the trace is damaged, replay again")
        return file

    def _header(self, name: str, file: Path) -> tuple[int, tuple[int, ...], np.dtype]:
        """The .npy header of array `name`, which must hold the shape and dtype the manifest gives."""
        if name not in self._headers:
            offset, shape, dtype = _read_npy_header(file)
            spec = self.manifest["arrays"][name]
            if dtype != np.dtype(spec["dtype"]) or list(shape) != list(spec["shape"]):
                raise ValueError(f"it holds {dtype} {list(shape)}, the manifest says {spec['dtype']} {spec['shape']}")
            self._headers[name] = offset, shape, dtype
        return self._headers[name]

    def _damaged(self, file: Path, error: Exception) -> TraceError:
        if isinstance(error, FileNotFoundError):
            return TraceError(f"trace {self.path} is missing {file.name}; the trace is incomplete, replay again")
        return TraceError(f"{file} is not a readable .npy file ({error}); the trace is damaged, replay again")

    def _row(self, name: str, row: int) -> np.ndarray:
        file = self._file(name)
        try:
            offset, shape, dtype = self._header(name, file)
            if not 0 <= row < shape[0]:
                raise ValueError(f"row {row} of an array of {shape[0]} rows")
            row_bytes = math.prod(shape[1:]) * dtype.itemsize
            data = read_block(file, offset + row * row_bytes, row_bytes)
        except (OSError, ValueError, EOFError) as error:
            raise self._damaged(file, error) from None
        return data.view(dtype).reshape(shape[1:])

    def _rows(self, name: str, start: int, stop: int) -> np.ndarray:
        file = self._file(name)
        try:
            if name not in self._headers:
                self._headers[name] = _read_npy_header(file)
            offset, shape, dtype = self._headers[name]
            if not 0 <= start <= stop <= shape[0]:
                raise ValueError(f"rows {start}..{stop - 1} of an array of {shape[0]} rows")
            row_bytes = math.prod(shape[1:]) * dtype.itemsize
            data = read_block(file, offset + start * row_bytes, (stop - start) * row_bytes)
        except (OSError, ValueError, EOFError) as error:
            raise self._damaged(file, error) from None
        return data.view(dtype).reshape((stop - start, *shape[1:]))

    def _whole(self, name: str):
        if name not in self._maps:
            if self.manifest["arrays"].get(name) is None:
                self._maps[name] = None
            else:
                file = self._file(name)
                try:
                    self._header(name, file)
                    self._maps[name] = np.load(file, mmap_mode="r", allow_pickle=False)
                except (OSError, ValueError, EOFError) as error:
                    raise self._damaged(file, error) from None
        return self._maps[name]

    def _vocab(self) -> dict[int, str]:
        if self._tokens is None:
            file = self.path / TOKENS
            try:
                self._tokens = {int(k): v for k, v in json.loads(file.read_text(encoding="utf-8")).items()}
                if not all(isinstance(v, str) for v in self._tokens.values()):
                    raise ValueError("a token is not a string")
            except FileNotFoundError:
                raise TraceError(f"trace {self.path} is missing {TOKENS}; the trace is incomplete, replay again") \
                    from None
            except (UnicodeDecodeError, json.JSONDecodeError, ValueError, AttributeError) as error:
                raise TraceError(f"{file} is damaged ({error}); replay again") from None
        return self._tokens


class InMemoryTrace(TraceView):
    """A replay kept in memory (short inputs, the dashboard), with the reading API of `Trace`."""

    def __init__(self, manifest: dict, arrays: dict[str, np.ndarray | None], vocab: dict[int, str]):
        self.manifest = manifest
        self.arrays = arrays  # name -> the whole array, as the file of that name would hold it
        self.vocab = vocab

    def _row(self, name: str, row: int) -> np.ndarray:
        return np.array(self.arrays[name][row])

    def _rows(self, name: str, start: int, stop: int) -> np.ndarray:
        return np.array(self.arrays[name][start:stop])

    def _whole(self, name: str):
        return self.arrays.get(name)

    def _vocab(self) -> dict[int, str]:
        return self.vocab

    def save(self, out: str | Path) -> Trace:
        """Write this trace as a trace folder at `out` (atomically) and return it opened."""
        writer = TraceWriter(out)
        try:
            writer.begin(self.manifest, self.arrays["memory"][0])
            attention, full = self.attention_segments_cached, self.full_segments_cached
            for t in range(self.n_segments):
                row = self._attention_row(attention, t)
                frow = self._attention_row(full, t)
                writer.segment(
                    t, self.arrays["token_ids"][t], self.arrays["roles"][t], self.arrays["memory"][t + 1],
                    None if self.arrays.get("segment_logits") is None else self.arrays["segment_logits"][t],
                    {"read": None if row is None else self.arrays["read_attention"][row],
                     "write": None if row is None else self.arrays["write_attention"][row],
                     "full": None if frow is None else self.arrays["full_attention"][frow]},
                )
            return writer.finish(self.manifest, self.arrays["final_logits"], self.vocab)
        except BaseException:
            writer.abort()
            raise


# ----- sinks: where a replay puts what it records ----------------------------------------------------------
class _RowSink:
    """What both sinks share: where each segment's values go, row by row, in the arrays of the manifest."""

    def begin(self, manifest: dict, initial_memory: np.ndarray) -> None:
        recorded = manifest["recorded"]
        self.attention_rows = {t: k for k, t in enumerate(recorded["attention_segments"])}
        self.full_rows = {t: k for k, t in enumerate(recorded["full_attention_segments"])}
        self.out = {name: self._create(name, spec) for name, spec in manifest["arrays"].items()
                    if spec is not None and name in SEGMENT_ARRAYS}
        self._put("memory", 0, initial_memory)

    def segment(self, t, token_ids, roles, memory_out, logits, attention) -> None:
        """Segment t's values: token_ids [T], roles [T], memory_out [m, d], logits [C] or None, and
        attention {"read": [L,H,T,m], "write": [L,H,m,T], "full": [L,H,T,T]} (None where not recorded)."""
        self._put("token_ids", t, token_ids)
        self._put("roles", t, roles)
        self._put("memory", t + 1, memory_out)
        if logits is not None and "segment_logits" in self.out:
            self._put("segment_logits", t, logits)
        if attention.get("read") is not None:
            self._put("read_attention", self.attention_rows[t], attention["read"])
            self._put("write_attention", self.attention_rows[t], attention["write"])
        if attention.get("full") is not None:
            self._put("full_attention", self.full_rows[t], attention["full"])


class MemorySink(_RowSink):
    """Collects a replay into numpy arrays and returns an `InMemoryTrace`."""

    def _create(self, name, spec):
        return np.zeros(spec["shape"], dtype=spec["dtype"])

    def _put(self, name, row, array):
        self.out[name][row] = array

    def finish(self, manifest: dict, final_logits: np.ndarray, vocab: dict[int, str]) -> InMemoryTrace:
        arrays = dict(self.out)
        arrays.setdefault("segment_logits", None)
        arrays["final_logits"] = np.asarray(final_logits, dtype=np.float32)
        return InMemoryTrace(manifest, arrays, vocab)

    def abort(self) -> None:
        self.out = {}


class TraceWriter(_RowSink):
    """Writes a trace folder as a replay goes: into `<out>.partial-<pid>`, renamed to `out` by `finish`.

    begin(manifest, initial_memory) preallocates every array file; segment(...) writes one segment's rows;
    finish(manifest, final_logits, vocab) completes the folder and returns it opened as a `Trace`;
    abort() deletes the partial folder. Disk errors become TraceError; an existing `out` is refused.
    """

    def __init__(self, out: str | Path):
        self.final = Path(out)
        if self.final.exists() or self.final.is_symlink():
            raise TraceError(f"{self.final} already exists; choose another --out or delete it")
        self.partial = self.final.with_name(f"{self.final.name}{PARTIAL}{os.getpid()}")
        self.out: dict[str, NpyFile] = {}
        with _DiskErrors(self.final, self.final.parent):
            self.final.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_partials(self.final)
            if self.partial.exists():  # left by an earlier failure of this very process
                shutil.rmtree(self.partial, ignore_errors=True)
            self.partial.mkdir()

    def _create(self, name, spec):
        with _DiskErrors(self.final, self.partial / spec["file"]):
            return create_array(self.partial / spec["file"], spec["shape"], spec["dtype"])

    def _put(self, name, row, array):
        with _DiskErrors(self.final, self.out[name].path):
            self.out[name].write(row, array)

    def finish(self, manifest: dict, final_logits: np.ndarray, vocab: dict[int, str]) -> Trace:
        self._close()
        with _DiskErrors(self.final, self.partial / manifest["arrays"]["final_logits"]["file"]):
            write_array(self.partial / manifest["arrays"]["final_logits"]["file"], np.asarray(final_logits, np.float32))
        with _DiskErrors(self.final, self.partial / TOKENS):
            _write_json(self.partial / TOKENS, {str(k): vocab[k] for k in sorted(vocab)})
        with _DiskErrors(self.final, self.partial / MANIFEST):
            _write_json(self.partial / MANIFEST, manifest)  # last: a folder with a manifest is complete
        if self.final.exists() or self.final.is_symlink():
            raise TraceError(f"{self.final} appeared while replaying; choose another --out or delete it")
        with _DiskErrors(self.final, self.final):
            os.rename(self.partial, self.final)
        return Trace.open(self.final)

    def _close(self) -> None:
        for array in self.out.values():
            array.close()
        self.out = {}

    def abort(self) -> None:
        self._close()
        shutil.rmtree(self.partial, ignore_errors=True)


class _DiskErrors:
    """Turns an OSError while writing `path` into a one-line TraceError about the trace `final`."""

    def __init__(self, final: Path, path: Path):
        self.final, self.path = final, Path(path)

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
