"""Replays recorded in the background: `rmt replay` in a child process (niced, so the dashboard stays quick),
watched from the page by reading how far its trace has been written.

`rmt replay` writes into `<out>.partial-<pid>` and renames the folder to `<out>` only when it is complete
(docs/trace-format.md): every array file is created at its final size, filled with zeros, and written a
segment at a time, in order. So the progress is the number of rows of the partial folder's `roles.npy` that
are no longer all zero (every written row holds at least the memory positions' role, which is not 0),
found by bisection, and the total is the first axis in that file's header. Cancelling sends the child SIGINT:
the replay deletes its partial folder on the way out; if it has not exited after CANCEL_WAIT seconds it is
killed and its partial folder (named by its pid, so ours) deleted here. Nothing appears under `<out>` unless
the replay finished.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CANCEL_WAIT = 15.0  # seconds a cancelled replay has to clean up before it is killed
_CHILD = "import os, sys; os.nice(10); from rmt_cli.main import main; sys.exit(main(sys.argv[1:]))"


@dataclass
class ReplayJob:
    out: Path
    description: str
    process: subprocess.Popen
    log: Path  # the child's output (its one-line error, if any)
    workdir: Path  # a temp folder of ours: the log, an uploaded text
    started: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    finished: float | None = None
    opened: bool = False  # the dashboard opened the finished trace

    @property
    def partial(self) -> Path:
        return self.out.with_name(f"{self.out.name}.partial-{self.process.pid}")

    def state(self) -> str:
        """'running', 'done', 'failed' or 'cancelled'."""
        code = self.process.poll()
        if code is None:
            return "running"
        if self.finished is None:
            self.finished = time.monotonic()
            shutil.rmtree(self.workdir / "input", ignore_errors=True)  # an uploaded text is not needed any more
        if self.cancelled:
            return "cancelled"
        return "done" if code == 0 and (self.out / "manifest.json").is_file() else "failed"

    def progress(self) -> tuple[int, int | None]:
        """(segments written, segments in all; None before the replay has created its files)."""
        if self.state() == "done":
            from rmt_core.trace import Trace

            try:
                n = Trace.open(self.out).n_segments
                return n, n
            except Exception:
                return 0, None
        return written_rows(self.partial / "roles.npy")

    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def error(self) -> str:
        """The child's last error line (its one-line message), or a note that it stopped without one."""
        try:
            lines = [line.strip() for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            lines = []
        errors = [line for line in lines if "error:" in line]
        if errors:
            return errors[-1]
        return lines[-1] if lines else f"rmt replay stopped with exit code {self.process.returncode}"

    def cancel(self) -> None:
        """Stop the replay; no half-written trace is left behind."""
        if self.process.poll() is not None:
            return
        self.cancelled = True
        try:
            self.process.send_signal(signal.SIGINT)  # KeyboardInterrupt: the replay deletes its partial folder
            self.process.wait(timeout=CANCEL_WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        except ProcessLookupError:
            pass
        shutil.rmtree(self.partial, ignore_errors=True)  # named by our child's pid: ours to delete
        self.state()


def written_rows(roles_file: Path) -> tuple[int, int | None]:
    """(rows written, rows in all) of a trace's roles.npy that is being written in order (see the module note)."""
    try:
        with open(roles_file, "rb") as handle:
            np.lib.format.read_magic(handle)
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            offset = handle.tell()
    except (OSError, ValueError, EOFError):
        return 0, None
    total = int(shape[0])
    row_bytes = int(np.prod(shape[1:])) * dtype.itemsize

    def written(row: int) -> bool:
        try:
            with open(roles_file, "rb") as handle:
                handle.seek(offset + row * row_bytes)
                return any(handle.read(row_bytes))
        except OSError:
            return False

    lo, hi = 0, total  # rows < lo are written, rows >= hi are not
    while lo < hi:
        mid = (lo + hi) // 2
        if written(mid):
            lo = mid + 1
        else:
            hi = mid
    return lo, total


def start_replay(checkpoint: str, out: Path, input_args: list[str], description: str, *,
                 attention_budget_mib: float, full_attention: str = "", segment_logits: bool = True,
                 upload: tuple[str, bytes] | None = None, question: str | None = None) -> ReplayJob:
    """Start `rmt replay --checkpoint CHECKPOINT --out OUT ...` in the background and return its job.

    input_args: ['--task', T, '--segments', N, '--seed', S] or ['--text-file', PATH]; upload: (file name,
    bytes) of an uploaded text, written to a temp folder of ours and replayed from there (with `question`)."""
    from rmt_core.errors import TraceError

    out = Path(out).expanduser().resolve()
    if out.exists() or out.is_symlink():
        raise TraceError(f"{out} already exists; choose another output folder or delete it")
    if not out.parent.is_dir():
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise TraceError(f"cannot create {out.parent} ({error.strerror}); choose an output folder you can "
                             "write to") from None
    if not os.access(out.parent, os.W_OK):
        raise TraceError(f"{out.parent} is not writable; choose an output folder you can write to")
    workdir = Path(tempfile.mkdtemp(prefix="rmt-lens-replay-"))
    args = list(input_args)
    if upload is not None:
        name, data = upload
        folder = workdir / "input"
        folder.mkdir()
        file = folder / (Path(name).name or "upload.txt")
        temp = file.with_name(file.name + ".tmp")
        temp.write_bytes(data)
        os.replace(temp, file)
        args = ["--text-file", str(file)]
    if question is not None:
        args += ["--question", question]
    command = [sys.executable, "-c", _CHILD, "replay", "--checkpoint", str(checkpoint), "--out", str(out),
               "--quiet", "--attention-budget-mib", str(attention_budget_mib), *args]
    if full_attention.strip():
        command += ["--full-attention", full_attention.strip()]
    if not segment_logits:
        command.append("--no-segment-logits")
    log = workdir / "replay.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return ReplayJob(out, description, process, log, workdir)
