"""The `rmt` command line: one entry point, one module per subcommand in `rmt_cli.commands`.

A subcommand module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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


def _load(name: str):
    return importlib.import_module(f"rmt_cli.commands.{name}{'_' if name == 'import' else ''}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmt",
        description="RMT Lens: train, replay, probe and visualise Recurrent Memory Transformers.",
    )
    parser.add_argument("--version", action="version", version=f"rmt (RMT Lens) {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, summary in COMMANDS.items():
        module = _load(name)
        command = sub.add_parser(name, help=getattr(module, "HELP", summary), description=getattr(module, "HELP", summary))
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except RMTError as error:
        print(f"rmt {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rmt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
