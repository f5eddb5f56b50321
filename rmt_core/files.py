"""Writing files so that nothing is ever half-written: a temporary name in the same folder, then a rename.

    write_atomic(path, data)         bytes or str
    write_json_atomic(path, value)   JSON (NaN refused), indented, with a final newline
    read_json(path, error, ...)      JSON back, a missing or damaged file as one `error` naming the fix
    new_file(path, what, error)      a path for a file that must not exist yet, in a folder that does

A reader sees the old file or the new one, never a part; an error or interruption leaves the old file as it was
and no temporary file behind. The file gets the permissions a plain `open(path, "w")` would give it (the
temporary file is created private, 0600).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    """The process umask. Linux tells it without changing it (/proc/self/status), which matters in threaded
    programs such as the dashboard; elsewhere it is set and reset."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            return next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def _plain_mode() -> int:
    """0666 less the process umask: what open() gives a new file."""
    return 0o666 & ~_umask()


def make_plain(path: str | Path) -> None:
    """Give `path` (a file, or a folder and everything in it) the permissions plain open() and mkdir() would:
    tempfile creates private ones (0600 files, 0700 folders), and safetensors writes its files 0600."""
    path = Path(path)
    mask = _umask()
    items = [*path.rglob("*"), path] if path.is_dir() else [path]
    for item in items:
        os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~mask)


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write `data` to `path` under a temporary name in the same folder, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(payload)
            os.fchmod(out.fileno(), _plain_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, value, allow_nan: bool = False) -> Path:
    """`value` as indented JSON at `path`, atomically."""
    return write_atomic(path, json.dumps(value, indent=1, allow_nan=allow_nan) + "\n")


def read_json(path: str | Path, error: type[Exception], missing: str, damaged: str):
    """The JSON value in `path`; `error` "PATH does not exist; MISSING" or "PATH is not readable JSON (why);
    DAMAGED" when it cannot be read."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path} does not exist; {missing}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as why:
        raise error(f"{path} is not readable JSON ({why}); {damaged}") from None



def new_file(path: str | Path, what: str, error: type[Exception]) -> Path:
    """`path` for a new file (`what`, e.g. "figure"): `error` when something is there already or its folder is
    missing, so that nothing a user made is replaced."""
    out = Path(path)
    if out.exists() or out.is_symlink():
        raise error(f"{what} {out} exists; choose another path or remove it")
    if not out.parent.is_dir():
        raise error(f"{what} {out}: folder {out.parent} does not exist; create it or choose another path")
    return out


def check_ours(path: str | Path, fmt: str, error: type[Exception], example: str) -> None:
    """Refuse `path` as a script's --json unless it is new or a JSON file with "format" `fmt` (one the script
    wrote): `error` names the problem, a folder (with `example` as a file name in it) or another file."""
    path = Path(path)
    if path.is_dir():
        raise error(f"--json {path} is a folder; give a file name, such as {path / example}")
    not_ours = "it was not written by this script; give another --json"
    if path.exists():
        previous = read_json(path, error, not_ours, not_ours)
        if not isinstance(previous, dict) or previous.get("format") != fmt:
            raise error(f"{path} exists and {not_ours}")

def file_sha256(file: str | Path) -> str:
    """The sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
