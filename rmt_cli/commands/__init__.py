"""Subcommands of `rmt`, one module each (see rmt_cli/main.py), and what several of them share: the device
flag, number types that refuse what cannot work (with the allowed range in the message), and checks of
output paths made before any work starts."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

MAX_SEED = 2**63 - 1


def parse_device(name: str | None, error: type[Exception]):
    """--device as a torch.device (None: the default, CUDA when present); `error` for an unusable name."""
    import torch

    if not name:
        return None
    try:
        device = torch.device(name)
    except RuntimeError:
        raise error(f"unknown --device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise error(f"--device {name}: CUDA is not available here; use --device cpu")
    return device


# ----- numbers ---------------------------------------------------------------------------------------------
def _range_text(minimum, maximum) -> str:
    if maximum is None:
        return f"{minimum:,} or more"
    return f"from {minimum:,} to {maximum:,}"


def whole(minimum: int = 1, maximum: int | None = None):
    """An argparse type: a whole number from `minimum` to `maximum` (None: no upper limit)."""

    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number {_range_text(minimum, maximum)}, "
                                             f"got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"{value:,} is out of range; give a whole number "
                                             f"{_range_text(minimum, maximum)}")
        return value

    parse.__name__ = "whole number"
    return parse


def whole_list(minimum: int = 1, maximum: int | None = None, *, allow_empty: bool = False):
    """An argparse type: comma-separated whole numbers (such as 1,2,4), each as `whole` takes it; none at all
    only when `allow_empty`."""
    item = whole(minimum, maximum)

    def parse(text: str) -> list[int]:
        values = [item(part) for part in text.split(",") if part.strip()]
        if not values and not allow_empty:
            raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers such as 1,2,4, got {text!r}")
        return values

    parse.__name__ = "list of whole numbers"
    return parse


def real(minimum: float | None = None, maximum: float | None = None, *, above: float | None = None,
         below: float | None = None):
    """An argparse type: a finite number with `minimum <= x <= maximum` and `above < x < below` (None: no bound)."""
    def shown(x: float) -> str:
        return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"

    bounds = []
    if above is not None:
        bounds.append(f"above {shown(above)}")
    if minimum is not None:
        bounds.append(f"at least {shown(minimum)}")
    if below is not None:
        bounds.append(f"below {shown(below)}")
    if maximum is not None:
        bounds.append(f"at most {shown(maximum)}")
    allowed = "a finite number" + (" " + " and ".join(bounds) if bounds else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}") from None
        if (not math.isfinite(value) or (minimum is not None and value < minimum)
                or (maximum is not None and value > maximum) or (above is not None and value <= above)
                or (below is not None and value >= below)):
            raise argparse.ArgumentTypeError(f"{text} is out of range; give {allowed}")
        return value

    parse.__name__ = "number"
    return parse


SEED = whole(0, MAX_SEED)


# ----- output paths ----------------------------------------------------------------------------------------
def _existing_ancestor(path: Path) -> Path:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _writable_folder(folder: Path, flag: str, path: Path, error: type[Exception]) -> None:
    """`error` unless a file can be made in `folder`: tried for real (a read-only disk, or a folder such as
    /proc, passes os.access for root), with a temp file removed at once."""
    import tempfile

    if not folder.is_dir():
        raise error(f"{flag} {path}: {folder} is a file, not a folder; choose another {flag}")
    try:
        handle, name = tempfile.mkstemp(prefix=".rmt-write-test-", dir=folder)
    except OSError as problem:
        raise error(f"{flag} {path}: cannot write in {folder} ({problem.strerror or 'not writable'}); "
                    f"choose another {flag}") from None
    os.close(handle)
    os.unlink(name)


def check_output_file(path: str | Path, flag: str, error: type[Exception]) -> Path:
    """Check, before any work, that `path` can be written as a file: not a folder, in a folder that exists
    (or can be made) and is writable. An existing file there is replaced, as the user asked."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{flag} {path} is a folder; give a file name, such as {path / 'out.json'}")
    _writable_folder(_existing_ancestor(path), flag, path, error)
    if path.exists() and not os.access(path, os.W_OK):
        raise error(f"{flag} {path} exists and is read-only; choose another {flag} or make it writable")
    return path


def check_output_folder(path: str | Path, flag: str, error: type[Exception]) -> Path:
    """Check, before any work, that `path` can be written as a folder: not a file, and it or the nearest
    folder above it that exists is writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise error(f"{flag} {path} is a file, not a folder; choose another {flag}")
    if path.is_dir():
        _writable_folder(path, flag, path, error)
    else:
        _writable_folder(_existing_ancestor(path), flag, path, error)
    return path
