"""`rmt app`: start the Streamlit dashboard (app/main.py), on localhost unless --host says otherwise."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from rmt_core.errors import CheckpointError, RMTError

HELP = "open the dashboard in a browser (Streamlit, localhost only by default)"


def app_script() -> Path:
    """The dashboard's entry script, app/main.py, beside rmt_core (editable install or source tree)."""
    import app

    for folder in list(getattr(app, "__path__", [])):
        script = Path(folder) / "main.py"
        if script.is_file():
            return script
    raise RMTError("the dashboard (app/main.py) is not installed; reinstall rmt-lens (pip install -e .)")


def streamlit_command(host: str = "127.0.0.1", port: int = 8501, browser: bool = False) -> list[str]:
    """The `streamlit run` command line of the dashboard."""
    return [
        sys.executable, "-m", "streamlit", "run", str(app_script()),
        "--server.address", host, "--server.port", str(port), "--server.headless", "false" if browser else "true",
        "--browser.gatherUsageStats", "false",
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="checkpoint folder to open (default: the shipped default, "
                        "checkpoints/memorize, or $RMT_CHECKPOINT)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                        "only; 0.0.0.0 serves every network interface)")
    parser.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    parser.add_argument("--browser", action="store_true", help="also open a browser tab")


def run(args) -> int:
    env = dict(os.environ)
    if args.checkpoint:
        folder = Path(args.checkpoint)
        if not (folder / "config.json").is_file():
            raise CheckpointError(f"{folder} is not a checkpoint folder (no config.json); pass --checkpoint with one")
        env["RMT_CHECKPOINT"] = str(folder.resolve())
    if not 0 < args.port < 65536:
        raise RMTError(f"port {args.port} is out of range; pass --port between 1 and 65535")
    command = streamlit_command(args.host, args.port, args.browser)
    print(f"rmt app: serving on http://{args.host}:{args.port} (Ctrl+C stops it)", file=sys.stderr, flush=True)
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 130
