"""The `rmt` command line: one entry point, one module per subcommand in `rmt_cli.commands`.

A subcommand module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.

Whatever goes wrong ends in one line on stderr: bad input (an `RMTError`, or a usage error) exits 1, an
interrupt 130, SIGTERM 143, and any other exception exits 1 with a line that names the file holding its
traceback. `rmt --debug COMMAND ...` (or `--debug` anywhere after the command) lets tracebacks through.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import tempfile
import time
import traceback

from rmt_core import __version__
from rmt_core.errors import RMTError

# Order of SPEC section 7.
COMMANDS: dict[str, str] = {
    "train": "curriculum training of an RMT checkpoint",
    "eval": "accuracy of a checkpoint against the number of segments",
    "replay": "replay one input segment by segment into an on-disk trace",
    "probe": "linear probes, ablation and patching on memory states",
    "export": "export a figure of a trace or of probe results",
    "sample": "show one task sample, readable or as JSON",
    "flops": "FLOPs of RMT against a full-attention Transformer (paper Figure 3)",
    "app": "open the dashboard in a browser",
    "import": "convert an RMT checkpoint trained with the authors' code",
}
USAGE_ERROR = 1  # the README: bad input ends with one line and exit code 1, usage errors included
INTERRUPTED, TERMINATED = 130, 143


class Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line (exit 1) that points at --help instead of printing the usage."""

    def error(self, message: str):
        self.exit(USAGE_ERROR, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that `finally` blocks and partial-file cleanup run."""


def _terminate(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
    raise Terminated()


def _load(name: str):
    return importlib.import_module(f"rmt_cli.commands.{name}{'_' if name == 'import' else ''}")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="rmt",
        description="RMT Lens: train, replay, probe and visualise Recurrent Memory Transformers.",
    )
    parser.add_argument("--version", action="version", version=f"rmt (RMT Lens) {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, summary in COMMANDS.items():
        module = _load(name)
        command = sub.add_parser(name, help=getattr(module, "HELP", summary), description=getattr(module, "HELP", summary))
        module.add_arguments(command)
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the traceback of an unexpected error")
        command.set_defaults(_run=module.run)
    return parser


def _traceback_file(command: str) -> str | None:
    """Write the current exception's traceback to a file in the temp folder; its path, or None."""
    try:
        handle, path = tempfile.mkstemp(prefix=f"rmt-{command}-{time.strftime('%Y%m%d-%H%M%S')}-",
                                        suffix=".txt")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write("rmt " + " ".join(sys.argv[1:]) + "\n\n")
            traceback.print_exc(file=out)
        return path
    except OSError:
        return None


def _first_line(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _os_error(error: OSError) -> str:
    """An OSError the command did not foresee (a disk full or a folder gone mid-run) as one sentence."""
    reason = error.strerror or _first_line(error)
    where = f" ({error.filename})" if error.filename else ""
    return f"{reason}{where}; check the path, its permissions and the free disk space"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing the command line does may reach for the network
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help still exits; a usage error is an exit code like any bad input
        if not exit_.code:
            raise
        return int(exit_.code) if isinstance(exit_.code, int) else USAGE_ERROR
    args._argv = argv  # what results and model cards record as the command
    if args.command is None:
        parser.print_help()
        return USAGE_ERROR
    debug = bool(args.debug)
    prefix = f"rmt {args.command}"
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread (an embedding program): leave signals alone
        pass
    try:
        return int(args._run(args) or 0)
    except RMTError as error:
        if debug:
            raise
        print(f"{prefix}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Terminated:
        print(f"{prefix}: terminated", file=sys.stderr)
        return TERMINATED
    except Exception as error:
        if debug:
            raise
        if isinstance(error, MemoryError):
            print(f"{prefix}: error: out of memory; ask for less (fewer samples, segments or a smaller batch)",
                  file=sys.stderr)
            return 1
        if isinstance(error, OSError):
            print(f"{prefix}: error: {_os_error(error)}", file=sys.stderr)
            return 1
        where = _traceback_file(args.command)
        details = f"traceback in {where}" if where else "rerun with --debug for the traceback"
        print(f"{prefix}: unexpected error ({type(error).__name__}: {_first_line(error)}); this is a bug in "
              f"RMT Lens, please report it; {details} (or rerun with --debug)", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
